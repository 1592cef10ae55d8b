"""One pinned log: the light client of a root's log, persisted through a small store (DESIGN §5).

The gateway (pin in its SQLite store) and the CLI (pin in a file under the config directory) both go
through :class:`PinnedLog`, so a checkpoint is judged the same way everywhere:

1. its signatures are verified once under the trust policy (log signature, witness quorum);
2. it is checked for consistency with the pin, whatever its size: when it is newer, with one
   consistency proof from the pinned size (one proof covers any offline gap); when it is *older*, with
   one proof from its size to the pinned size (none when the pin's state already remembers that size,
   or for the empty tree); :meth:`chain_lite.light_client.LightClient.advance` decides;
3. two signed, inconsistent checkpoints are saved through the store as evidence and raise
   :class:`~rootclient.errors.EquivocationDetected`; nothing is pinned or used from them. A fork below
   the pin is evidence like one above it: no caller can skip the check;
4. a consistency proof of the wrong shape (bad base64, a 31-byte hash, too few hashes) proves nothing
   either way: it raises :class:`~rootclient.errors.ProtocolError` and is never evidence; a root that
   cannot be asked for the proof raises :class:`~rootclient.errors.ClientError`. Either way nothing is
   used, and the caller retries later;
5. the pin is saved when it moves, and never moves backwards. An older checkpoint proven consistent is
   remembered in the pin's state (so it is not proven again) but never pinned.

What an older checkpoint, once proven consistent, may be used for is the one choice left to the
caller, said with :class:`Older`:

* ``Older.USE``: for what it proves as of its own size. Receipts always (an entry included in the log
  at size N stays included); the gateway's registry lookups (its syncer moves the same pin
  concurrently, so an answer made just before the pin moved is older; revocations are caught by the
  hourly refresh); the CLI's ``resolve --at N`` (the user asked for a past state).
* ``Older.REFUSE``: :class:`~chain_lite.errors.StaleCheckpoint`, raised only *after* the consistency
  check. The CLI's ``resolve --verify`` without ``--at`` asks for the current record, and this client
  has already seen a newer log: an older answer is stale or rolled back (DESIGN §8), so it is refused
  even when consistent, and the user retries (the answer may come from a lagging replica).

Receipts and resolution answers are then checked against the checkpoint verified in step 1; nothing
is parsed or verified twice: the parts every answer of one checkpoint shares (the map head's
inclusion, the prefix records) are checked once per log (:class:`chain_lite.resolution.ProofMemo`).

What was proven at a checkpoint may be used later while this log still vouches for that checkpoint
(:meth:`PinnedLog.vouches_for`: it is the pin or an earlier one proven consistent with it, and the log
never showed two inconsistent checkpoints to this client); a referral cache relies on it (D-091).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, Protocol

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError, StaleCheckpoint
from chain_lite.light_client import MALFORMED_PROOF, Accepted, Evidence, LightClient, Rejected
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt
from chain_lite.resolution import ProofMemo, ProvenRecord, ResolutionProof, verify_resolution
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


class Older(enum.Enum):
    """What a caller does with a checkpoint older than the pin once it is proven consistent with the pin
    (an inconsistent one is always evidence; see the module docstring for who uses which)."""

    USE = "use"
    """Use it for what it proves as of its own size; the pin does not move."""
    REFUSE = "refuse"
    """Refuse it as :class:`~chain_lite.errors.StaleCheckpoint`: the caller wants the current state."""


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
        # The last checkpoints verified under the policy, by their bytes: the same bytes under the same
        # policy verify the same way, so a warm client does not verify every answer's signatures again.
        self._verified: dict[bytes, VerifiedCheckpoint] = {}
        self._memo = ProofMemo()
        self._equivocated = False
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

    async def accept(self, signed: SignedCheckpoint, *, older: Older) -> Accepted:
        """Verify ``signed``, check it for consistency with the pin, and move the pin to it when newer.

        A checkpoint older than the pin is checked with a proof from its size to the pin's, never
        pinned, and then returned (``moved=False``) or refused as ``StaleCheckpoint``, as ``older``
        says. Raises ChainError (signatures, quorum, origin; StaleCheckpoint), ProtocolError
        (malformed consistency proof), ClientError (root unreachable or refusing the proof),
        EquivocationDetected (evidence saved).
        """
        note = signed.to_bytes()
        verified = self._verified.get(note)
        if verified is None:
            verified = self.policy.verify_checkpoint(signed, self.origin)
            if len(self._verified) >= 4:
                del self._verified[next(iter(self._verified))]
            self._verified[note] = verified
        async with self._lock:
            sizes = self.light.needs_proof(verified.checkpoint)
            proof = [] if sizes is None else await self.root.consistency(*sizes)
            outcome = self.light.advance(verified, proof)
            if isinstance(outcome, Evidence):
                self._equivocated = True
                where = await self.store.save_evidence(evidence_json(outcome))
                message = f"the log showed two inconsistent checkpoints ({outcome.reason})"
                raise EquivocationDetected(f"{message}; evidence saved to {where}", where)
            if isinstance(outcome, Rejected):
                reason = outcome.reason
                if sizes is not None and isinstance(reason, MALFORMED_PROOF):
                    raise ProtocolError(f"consistency proof {sizes[0]}->{sizes[1]}", str(reason)) from reason
                raise reason
            if outcome.moved or sizes is not None:
                # Moved, or an older checkpoint proven and now remembered: either way the state changed.
                await self.store.save_pin(self.light.state())
            size = verified.checkpoint.size
            if size < self.light.size and older is Older.REFUSE:
                raise StaleCheckpoint(self.light.size, size)
            return outcome

    def vouches_for(self, verified: VerifiedCheckpoint) -> bool:
        """Whether what was proven at ``verified`` may still be used: it is the pinned checkpoint or an
        earlier one this log proved consistent with the pin and remembers, and this log has shown no
        two inconsistent checkpoints (evidence) since this object was opened."""
        return not self._equivocated and self.light.knows(verified.checkpoint)

    async def verify_receipt(self, receipt: Receipt, entry: bytes) -> VerifiedCheckpoint:
        """Verify that ``entry`` (the logged bytes) is in the log, by ``receipt``; moves the pin when
        the receipt's checkpoint is newer. A receipt against an older checkpoint is used once that
        checkpoint is proven consistent with the pin (``Older.USE``: inclusion at size N holds later)."""
        accepted = await self.accept(receipt.checkpoint, older=Older.USE)
        # is_hash=False: the light client hashes the entry with the log's own profile (SHA-256 or SM3).
        return self.light.verify_receipt(receipt, entry, is_hash=False, verified=accepted.checkpoint)

    async def verify_resolution(
        self, proof: ResolutionProof, *, older: Older, as_of: bool = False
    ) -> Verified:
        """Verify a resolution answer's proof against its checkpoint, moving the pin when it is newer;
        ``older`` says whether an answer whose checkpoint is older than the pin may be used."""
        accepted = await self.accept(proof.receipt.checkpoint, older=older)
        proven = verify_resolution(proof, accepted.checkpoint, as_of=as_of, memo=self._memo)
        return Verified(proven, self.light.size, accepted.moved)
