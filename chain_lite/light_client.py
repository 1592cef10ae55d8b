"""The light client: a pure state machine over a pinned, verified checkpoint (DESIGN §5).

It accepts a new checkpoint only with a valid log signature, a witness quorum and a consistency proof
from the pinned one; it never moves backwards; it keeps two signed, inconsistent checkpoints as
evidence; and it checks receipts only against checkpoints it has verified itself.

An empty tree is consistent with every tree, so the first checkpoint a new client sees needs an empty
proof (as C2SP tlog-witness does for ``old 0``); everything after that needs a real proof.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import (
    ChainError,
    FormatError,
    OriginMismatch,
    ProofError,
    ProofLengthError,
    SizeOrderError,
    StaleCheckpoint,
    UnverifiedCheckpoint,
)
from chain_lite.merkle import leaf_hash, verify_consistency
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt, check_inclusion

MAX_REMEMBERED = 4096
"""How many earlier verified (size, root) pairs are kept for checking older receipts."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The checkpoint verified; ``moved`` says whether it advanced the pinned checkpoint."""

    checkpoint: VerifiedCheckpoint
    moved: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """The checkpoint (or its proof) could not be verified; the pinned state is unchanged."""

    reason: ChainError


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two checkpoints, both validly signed, that cannot both be true: the log equivocated.

    ``proof`` is the consistency proof the log served, which failed; for equal sizes it is empty and
    the two differing roots are the whole proof.
    """

    pinned: bytes
    conflicting: bytes
    proof: tuple[bytes, ...]
    reason: str


Outcome = Accepted | Rejected | Evidence


class LightClient:
    def __init__(self, policy: Policy, origin: str, pinned: bytes | SignedCheckpoint | None = None) -> None:
        """A client trusting ``policy`` for the log ``origin``, resuming from ``pinned`` if given."""
        self.policy = policy
        self.origin = origin
        self.pinned: VerifiedCheckpoint | None = None
        self._known: dict[int, bytes] = {}
        if pinned is not None:
            self.pinned = policy.verify_checkpoint(pinned, origin)
            self._remember(self.pinned)

    @property
    def size(self) -> int:
        return self.pinned.checkpoint.size if self.pinned else 0

    def _remember(self, verified: VerifiedCheckpoint) -> None:
        cp = verified.checkpoint
        self._known[cp.size] = cp.root
        if len(self._known) > MAX_REMEMBERED:
            del self._known[min(self._known)]

    def update(self, signed_checkpoint: bytes | SignedCheckpoint, proof: Sequence[bytes]) -> Outcome:
        """Consider a new checkpoint with a consistency proof from the pinned one: verify its signatures
        under the policy, then :meth:`advance`."""
        try:
            new = self.policy.verify_checkpoint(signed_checkpoint, self.origin)
        except ChainError as exc:
            return Rejected(exc)
        return self.advance(new, proof)

    def advance(self, new: VerifiedCheckpoint, proof: Sequence[bytes]) -> Outcome:  # noqa: PLR0911 (one return per verdict)
        """Consider a checkpoint the caller has already verified under this client's policy (so its
        signatures are checked once), with a consistency proof from the pinned one."""
        cp = new.checkpoint
        if cp.origin != self.origin:
            return Rejected(OriginMismatch(self.origin, cp.origin))
        if self.pinned is None:
            if proof:
                return Rejected(ProofLengthError(0, len(proof)))
            return self._advance(new)
        old = self.pinned.checkpoint
        if cp.size < old.size:
            known_root = self._known.get(cp.size)
            if known_root is not None and known_root != cp.root:
                return Evidence(self.pinned.to_bytes(), new.to_bytes(), (), "two roots for the same size")
            return Rejected(StaleCheckpoint(old.size, cp.size))
        if cp.size == old.size:
            if cp.root != old.root:
                return Evidence(self.pinned.to_bytes(), new.to_bytes(), (), "two roots for the same size")
            return Accepted(new, moved=False)
        try:
            verify_consistency(old.size, cp.size, proof, old.root, cp.root)
        except (ProofLengthError, SizeOrderError, FormatError) as exc:
            # A proof of the wrong shape proves nothing either way: refuse it, keep no evidence.
            return Rejected(exc)
        except ProofError as exc:
            return Evidence(self.pinned.to_bytes(), new.to_bytes(), tuple(proof), str(exc))
        return self._advance(new)

    def _advance(self, new: VerifiedCheckpoint) -> Accepted:
        self.pinned = new
        self._remember(new)
        return Accepted(new, moved=True)

    def verify_receipt(
        self,
        receipt: Receipt | bytes,
        leaf: bytes,
        *,
        is_hash: bool = True,
        verified: VerifiedCheckpoint | None = None,
    ) -> VerifiedCheckpoint:
        """Verify a receipt whose checkpoint this client has already verified (pinned or earlier).

        ``verified`` is the receipt's own checkpoint when the caller has just verified it (e.g. by
        :meth:`advance`); without it the receipt's copy of the note has its signatures checked here.
        """
        r = receipt if isinstance(receipt, Receipt) else Receipt.parse(receipt)
        cp = r.checkpoint.checkpoint
        if cp.origin != self.origin:
            raise OriginMismatch(self.origin, cp.origin)
        if self._known.get(cp.size) != cp.root:
            raise UnverifiedCheckpoint(cp.size, cp.root)
        if verified is None:
            verified = self.policy.verify_checkpoint(r.checkpoint, self.origin)
        elif verified.checkpoint != cp:
            raise FormatError("receipt", "the receipt's checkpoint is not the verified checkpoint")
        check_inclusion(r, leaf if is_hash else leaf_hash(leaf), verified)
        return verified

    # --- persistence: callers store this JSON-able state and pass it back ------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "pinned": self.pinned.to_bytes().decode() if self.pinned else None,
            "known": {str(size): b64.encode(root) for size, root in sorted(self._known.items())},
        }

    @classmethod
    def from_state(cls, policy: Policy, state: dict[str, Any]) -> LightClient:
        """Restore a client; the pinned checkpoint is verified again under ``policy``.

        The remembered (size, root) pairs of earlier checkpoints are taken from ``state`` as they are:
        the state file is the client's own storage and must be protected like its policy file.
        """
        try:
            pinned = state["pinned"]
            client = cls(policy, str(state["origin"]), pinned.encode() if pinned else None)
            for size_text, root_text in dict(state.get("known", {})).items():
                root = b64.decode(str(root_text))
                if root is None:
                    raise FormatError("light client state", "root is not base64")
                client._known[int(size_text)] = root
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError("light client state", str(exc)) from exc
        return client
