"""The light client: a pure state machine over a pinned, verified checkpoint (DESIGN §5).

It accepts a new checkpoint only with a valid log signature, a witness quorum and a consistency proof
from the pinned one; it never moves backwards; it keeps two signed, inconsistent checkpoints as
evidence; and it checks receipts only against checkpoints it has verified itself.

A checkpoint *older* than the pin is judged too, never just set aside: with a consistency proof from
its size to the pinned size it is accepted (``moved=False``: the pin stays) and remembered, so receipts
against it verify; if the proof fails, the two checkpoints are evidence. Otherwise a fork below the pin
would go unnoticed. :meth:`LightClient.needs_proof` names the proof a checkpoint needs.

Every proof is hashed with the checkpoints' own profile (SHA-256 or SM3), which the policy has already
checked against the profile it pins for the log, so both checkpoints of a proof use the same one.

An empty tree is consistent with every tree, so the first checkpoint a new client sees needs an empty
proof (as C2SP tlog-witness does for ``old 0``); everything after that needs a real proof.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite import b64
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint
from chain_lite.errors import (
    ChainError,
    FormatError,
    HashSizeError,
    OriginMismatch,
    ProofError,
    ProofLengthError,
    SizeOrderError,
    UnverifiedCheckpoint,
)
from chain_lite.merkle import leaf_hash, verify_consistency
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt, check_inclusion

MAX_REMEMBERED = 4096
"""How many earlier verified (size, root) pairs are kept for checking older receipts."""

MALFORMED_PROOF = (ProofLengthError, SizeOrderError, HashSizeError, FormatError)
"""Errors of a consistency proof of the wrong shape (hash count, sizes, a hash not 32 bytes): such a
proof proves nothing either way, so it is refused and never turned into evidence."""


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
            # The oldest other size goes: the one just proven stays, a receipt against it comes next.
            del self._known[min(size for size in self._known if size != cp.size)]

    def knows(self, checkpoint: Checkpoint) -> bool:
        """Whether ``checkpoint`` is the pinned one or an earlier one this client verified and remembers
        (so it is consistent with the pin)."""
        return checkpoint.origin == self.origin and self._known.get(checkpoint.size) == checkpoint.root

    def needs_proof(self, checkpoint: Checkpoint) -> tuple[int, int] | None:
        """The (old, new) sizes of the consistency proof :meth:`advance` needs to judge ``checkpoint``:
        from the pin to a newer size, or from an older size to the pin. None when it needs none:
        nothing is pinned yet, the size is the pinned one or 0 (the empty tree has one root), or an
        older size whose root this client remembers (it is judged against that root)."""
        if self.pinned is None:
            return None
        pinned, size = self.pinned.checkpoint.size, checkpoint.size
        if size > pinned:
            return (pinned, size)
        if size in (pinned, 0) or size in self._known:
            return None
        return (size, pinned)

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
        signatures are checked once), with the consistency proof :meth:`needs_proof` names (empty when
        it names none).

        Newer than the pin: the pin moves to it. Older: it is accepted without moving the pin, and
        remembered. Either way a failing proof is :class:`Evidence`, a proof of the wrong shape
        :class:`Rejected` (see :data:`MALFORMED_PROOF`).
        """
        cp = new.checkpoint
        if cp.origin != self.origin:
            return Rejected(OriginMismatch(self.origin, cp.origin))
        if self.pinned is None:
            if proof:
                return Rejected(ProofLengthError(0, len(proof)))
            return self._advance(new)
        old = self.pinned.checkpoint
        known_root = cp.suite.empty_root if cp.size == 0 else self._known.get(cp.size)
        if cp.size <= old.size and known_root is not None:
            if cp.root != known_root:
                return Evidence(self.pinned.to_bytes(), new.to_bytes(), (), "two roots for the same size")
            return Accepted(new, moved=False)
        older, newer = (cp, old) if cp.size < old.size else (old, cp)
        try:
            verify_consistency(older.size, newer.size, proof, older.root, newer.root, suite=cp.suite)
        except MALFORMED_PROOF as exc:
            return Rejected(exc)
        except ProofError as exc:
            return Evidence(self.pinned.to_bytes(), new.to_bytes(), tuple(proof), str(exc))
        if cp.size < old.size:
            self._remember(new)
            return Accepted(new, moved=False)
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
        check_inclusion(r, leaf if is_hash else leaf_hash(leaf, suite=cp.suite), verified)
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
