"""One pinned log: the light client of a root's log, persisted through a small store (DESIGN §5).

The gateway (pin in its SQLite store) and the CLI (pin in a file under the config directory) both go
through :class:`PinnedLog`, so a checkpoint is judged the same way everywhere:

1. its signatures are verified once under the trust policy (log signature, witness quorum);
2. when it is newer than the pin, the root is asked for one consistency proof from the pinned size
   (one proof covers any offline gap), and :meth:`chain_lite.light_client.LightClient.advance` decides;
3. two signed, inconsistent checkpoints are saved through the store as evidence and raise
   :class:`~rootclient.errors.EquivocationDetected`; nothing is pinned from them;
4. a consistency proof of the wrong shape (bad base64, a 31-byte hash, too few hashes) proves nothing
   either way: it raises :class:`~rootclient.errors.ProtocolError` and is never evidence;
5. the pin is saved when it moves, and never moves backwards.

Receipts and resolution answers are then checked against the checkpoint verified in step 1; nothing
is parsed or verified twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError, FormatError, ProofLengthError, SizeOrderError, StaleCheckpoint
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.merkle import leaf_hash
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt
from chain_lite.resolution import ProvenRecord, ResolutionProof, verify_resolution
from rootclient.errors import EquivocationDetected, PinError, ProtocolError


class PinStore(Protocol):
    """Where a :class:`PinnedLog` keeps its state (the light client's JSON-able state) and evidence."""

    async def load_pin(self) -> dict[str, Any] | None:
        """The saved state, or None when nothing is pinned yet."""
        ...

    async def save_pin(self, state: dict[str, Any]) -> None:
        """Replace the saved state (atomically: a crash leaves the old or the new pin)."""
        ...

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        """Keep equivocation evidence; returns where it went (said to the user)."""
        ...


class ConsistencySource(Protocol):
    """The part of the root client a pinned log needs (see :class:`rootclient.client.AsyncRootClient`)."""

    async def consistency(self, old: int, new: int) -> list[bytes]: ...


def evidence_json(evidence: Evidence) -> dict[str, Any]:
    """Evidence as stored by every :class:`PinStore`: both signed notes and the proof that failed."""
    return {
        "reason": evidence.reason,
        "pinned": evidence.pinned.decode(),
        "conflicting": evidence.conflicting.decode(),
        "proof": [b64.encode(h) for h in evidence.proof],
    }


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified resolution answer and where the pin stands after it."""

    proven: ProvenRecord
    pinned_size: int
    moved: bool


class PinnedLog:
    """The light client of the log ``origin`` under ``policy``; call :meth:`load` before use."""

    def __init__(self, policy: Policy, origin: str, root: ConsistencySource, store: PinStore) -> None:
        self.policy = policy
        self.origin = origin
        self.root = root
        self.store = store
        self.light = LightClient(policy, origin)
        # The syncer and the registry cache update one pin concurrently: one update at a time, so a
        # consistency proof is always fetched from the pin it is applied to.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, policy: Policy, origin: str, root: ConsistencySource, store: PinStore) -> PinnedLog:
        pinned = cls(policy, origin, root, store)
        await pinned.load()
        return pinned

    @property
    def size(self) -> int:
        return self.light.size

    async def load(self) -> None:
        """Resume from the stored pin (verified again under the policy), if there is one."""
        state = await self.store.load_pin()
        if state is None:
            return
        try:
            light = LightClient.from_state(self.policy, state)
        except ChainError as exc:
            raise PinError(f"stored pin for {self.origin} is unusable: {exc}") from exc
        if light.origin != self.origin:
            raise PinError(f"stored pin is for {light.origin}, not {self.origin}")
        self.light = light

    async def accept(self, signed: SignedCheckpoint, *, older_ok: bool) -> Accepted:
        """Verify ``signed`` and move the pin to it when it is newer.

        A checkpoint older than the pin is never pinned. With ``older_ok`` it is still returned
        (verified, ``moved=False``) so a receipt or answer against it can be checked; without it, it
        raises :class:`StaleCheckpoint` (a current answer must not roll back behind the pin).
        Raises ChainError (signatures, quorum, origin), ProtocolError (malformed consistency proof),
        ClientError (root unreachable), EquivocationDetected (evidence saved).
        """
        verified = self.policy.verify_checkpoint(signed, self.origin)
        async with self._lock:
            old, new = self.light.size, verified.checkpoint.size
            proof = await self.root.consistency(old, new) if 0 < old < new else []
            outcome = self.light.advance(verified, proof)
            if isinstance(outcome, Evidence):
                where = await self.store.save_evidence(evidence_json(outcome))
                message = f"the log showed two inconsistent checkpoints ({outcome.reason})"
                raise EquivocationDetected(f"{message}; evidence saved to {where}", where)
            if isinstance(outcome, Rejected):
                reason = outcome.reason
                if isinstance(reason, StaleCheckpoint) and older_ok:
                    return Accepted(verified, moved=False)
                if isinstance(reason, ProofLengthError | SizeOrderError | FormatError):
                    raise ProtocolError(f"consistency proof {old}->{new}", str(reason)) from reason
                raise reason
            if outcome.moved:
                await self.store.save_pin(self.light.state())
            return outcome

    async def verify_receipt(self, receipt: Receipt, entry: bytes) -> VerifiedCheckpoint:
        """Verify that ``entry`` (the logged bytes) is in the log, by ``receipt``; moves the pin when
        the receipt's checkpoint is newer. Receipts against an older checkpoint pass only when this
        client verified that checkpoint before (the root serves receipts against its latest one)."""
        accepted = await self.accept(receipt.checkpoint, older_ok=True)
        return self.light.verify_receipt(receipt, leaf_hash(entry), verified=accepted.checkpoint)

    async def verify_resolution(
        self, proof: ResolutionProof, *, as_of: bool = False, older_ok: bool = False
    ) -> Verified:
        """Verify a resolution answer's proof against its checkpoint, moving the pin when it is newer."""
        accepted = await self.accept(proof.receipt.checkpoint, older_ok=older_ok)
        proven = verify_resolution(proof, accepted.checkpoint, as_of=as_of)
        return Verified(proven, self.light.size, accepted.moved)
