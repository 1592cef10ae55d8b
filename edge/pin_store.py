"""The gateway's light client of the root's log, pinned in the store (DESIGN §5).

Shared by the syncer (block receipts) and the registry cache (resolution proofs), so both move one
pin: a checkpoint is accepted only with the log's signature, the policy's witness quorum and a
consistency proof from the pinned one; two inconsistent signed checkpoints are stored as evidence
and raise :class:`EquivocationError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.light_client import Evidence, LightClient, Rejected
from chain_lite.policy import Policy, VerifiedCheckpoint
from edge import store
from edge.errors import SyncError

log = logging.getLogger(__name__)
T = TypeVar("T")


class EquivocationError(SyncError):
    """The root (or the gateway's own chain) showed two histories; sync stops."""


class PinnedLog:
    def __init__(self, db_path: Path, http: httpx.AsyncClient, policy: Policy) -> None:
        self.db_path = db_path
        self.http = http
        self.policy = policy
        self.origin = policy.logs[0].verifier.name
        self.client = LightClient(policy, self.origin)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with this component's own SQLite connection, in a worker thread (it blocks)."""

        def call() -> T:
            if self._conn is None:
                self._conn = store.connect(self.db_path)
            return fn(self._conn)

        return await asyncio.to_thread(call)

    async def load(self) -> None:
        saved = await self.db(lambda c: store.read_meta(c, "light_client"))
        if saved is not None:
            self.client = LightClient.from_state(self.policy, json.loads(saved))

    async def save(self) -> None:
        state = json.dumps(self.client.state())
        await self.db(lambda c: store.write_meta(c, "light_client", state))

    async def record_evidence(self, what: dict[str, Any]) -> None:
        text = json.dumps(what)
        await self.db(lambda c: store.write_meta(c, "evidence", text))
        log.error("EQUIVOCATION EVIDENCE stored (gateway status shows it): %s", what.get("reason"))

    async def has_evidence(self) -> bool:
        return await self.db(lambda c: store.read_meta(c, "evidence")) is not None

    async def accept(self, checkpoint: SignedCheckpoint) -> VerifiedCheckpoint | None:
        """Verify ``checkpoint`` and move the pin to it when newer; None for an older, known one."""
        async with self._lock:
            cp = checkpoint.checkpoint
            old = self.client.size
            if cp.size < old:
                return None  # verify_receipt accepts it only if this client verified it before
            proof: list[bytes] = []
            if 0 < old < cp.size:
                r = await self.http.get("/v1/proof/consistency", params={"old": old, "new": cp.size})
                if r.status_code != 200:
                    raise SyncError(f"consistency proof {old}->{cp.size}: root answered {r.status_code}")
                proof = [b64.decode(h) or b"" for h in r.json().get("proof", [])]
            outcome = self.client.update(checkpoint.to_bytes(), proof)
            if isinstance(outcome, Evidence):
                await self.record_evidence(
                    {
                        "reason": outcome.reason,
                        "pinned": outcome.pinned.decode(),
                        "conflicting": outcome.conflicting.decode(),
                    }
                )
                raise EquivocationError(outcome.reason)
            if isinstance(outcome, Rejected):
                raise outcome.reason
            if outcome.moved:
                await self.save()
            return outcome.checkpoint
