"""Sync: push chained blocks to the root in order, fetch their receipts, verify them as a light client.

Block states move ``chained`` → ``submitted`` (the root accepted the block) → ``anchored`` (its receipt
verified against a checkpoint this gateway's light client accepted: log signature, witness quorum, and
a consistency proof from the pinned checkpoint). The light client's state is kept in the store's
``meta`` table, so the pin survives restarts and never moves backwards.

Root unreachable or refusing: keep ingesting (blocks pile up as ``chained``), retry with jittered
exponential backoff (1 s doubling to 60 s), then catch up in order, ``batch`` blocks a request, at most
``max_blocks_per_s``. An answer of the wrong shape (a malformed proof, hostile JSON) is retried the
same way and counted (:attr:`Syncer.protocol_errors`); it proves nothing, so it is never evidence.
A fork refusal (409) or two inconsistent signed checkpoints (a receipt's checkpoint older than the
pin included) are equivocation evidence: stored under ``meta['evidence']``, logged at ERROR, and sync
stops until an operator looks.

Health: a root that *answers* and refuses our blocks (e.g. this gateway is not registered), or whose
answers do not verify under our trust policy, stops anchoring for good until someone acts, so it is a
problem (:attr:`Syncer.problem`: ``/healthz`` 503, ``gateway status``, a metric) logged once at ERROR
when it starts, and at INFO when sync works again. A root that cannot be reached is not: the gateway is
built to work offline for days, blocks wait as ``chained`` and the backlog shows in the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3

from chain_lite.block import parse_block
from chain_lite.errors import ChainError
from chain_lite.log_leaf import block_leaf
from edge.errors import BlocksRefused, SyncError
from edge.pin_store import SqlitePinStore
from rootclient.client import AsyncRootClient
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError, RootClientError
from rootclient.pinned_log import PinnedLog

log = logging.getLogger(__name__)
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0


class Syncer:
    def __init__(
        self,
        root: AsyncRootClient,
        pinned: PinnedLog,
        pins: SqlitePinStore,
        *,
        mode: str = "replicate",
        batch: int = 64,
        interval_s: float = 0.5,
        max_blocks_per_s: float = 200.0,
        max_request_bytes: int = 900 * 1024,
    ) -> None:
        self.root = root
        self.pinned = pinned
        self.pins = pins
        self._db = pins.db
        self.mode = mode
        self.batch = batch
        self.interval_s = interval_s
        self.max_blocks_per_s = max_blocks_per_s
        self.max_request_bytes = max_request_bytes
        self.state = "starting"
        self.last_error = ""
        self.protocol_errors = 0
        """Root answers of the wrong shape in this run (e.g. a malformed proof): retried, never evidence."""
        self.failures = 0
        """Sync attempts that failed in this run, for any reason (each retried with backoff)."""
        self.problem: str | None = None
        """Why blocks cannot be anchored until someone acts (see the module docstring); None otherwise."""

    # --- the loop ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = BACKOFF_MIN_S
        while not stop.is_set():
            if await self.pins.has_evidence():
                self.state = "stopped: equivocation evidence"
                await _sleep(stop, 30)
                continue
            try:
                pushed = await self.push()
                anchored = await self.fetch_receipts()
            except Exception as exc:  # a sync failure of any kind is retried, never fatal
                self.failures += 1
                if isinstance(exc, ProtocolError):
                    self.protocol_errors += 1
                problem = _anchoring_stopped(exc)
                if not isinstance(exc, RootClientError | SyncError | ChainError):
                    log.exception("unexpected sync failure; backing off")
                elif problem is not None:
                    self._anchoring_stopped(problem)
                elif self.state != "backing off":
                    log.warning("sync with the root failed, backing off: %s", exc)
                self.state, self.last_error = "backing off", str(exc)
                await _sleep(stop, backoff * random.uniform(0.5, 1.0))  # noqa: S311 (jitter, not crypto)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if self.state == "backing off":
                log.info("sync with the root restored")
            self.problem = None
            self.state, backoff = "synced", BACKOFF_MIN_S
            if pushed:
                await _sleep(stop, pushed / self.max_blocks_per_s)  # paced catch-up
            elif not anchored:
                await _sleep(stop, self.interval_s)

    def _anchoring_stopped(self, problem: str) -> None:
        """Report a problem that stops anchoring: at ERROR once, when it starts, not at every retry."""
        if self.problem is None:
            log.error("blocks cannot be anchored: %s (retrying with backoff)", problem)
        self.problem = problem

    async def push(self) -> int:
        """Send the oldest chained blocks; returns how many the root accepted."""
        replicate = self.mode == "replicate"

        def pending(c: sqlite3.Connection) -> list[tuple[int, bytes, list[bytes] | None]]:
            rows = c.execute(
                "SELECT height, raw FROM blocks WHERE state = 'chained' ORDER BY height LIMIT ?",
                (self.batch,),
            ).fetchall()
            out: list[tuple[int, bytes, list[bytes] | None]] = []
            size = 0
            for height, raw in rows:
                body = None
                if replicate:
                    body = [
                        bytes(r[0])
                        for r in c.execute("SELECT raw FROM readings WHERE block = ? ORDER BY id", (height,))
                    ]
                # Base64 in JSON: 4/3 of the bytes plus quotes and commas. Stay under the root's body cap,
                # but always send at least one block (the root refuses a block that alone is too big).
                size += (len(raw) + sum(len(e) + 6 for e in body or ())) * 4 // 3 + 64
                if out and size > self.max_request_bytes:
                    break
                out.append((int(height), bytes(raw), body))
            return out

        blocks = await self._db(pending)
        if not blocks:
            return 0
        answer = await self.root.submit_blocks([(raw, body) for _, raw, body in blocks])
        accepted = {a.block_id for a in answer.accepted}
        heights = [h for h, raw, _ in blocks if _block_id(raw) in accepted]

        def mark(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE blocks SET state = 'submitted' WHERE height = ? AND state = 'chained'",
                [(h,) for h in heights],
            )

        await self._db(mark)
        if answer.status == 409:
            reason = "the root holds a different block at one of our heights"
            where = await self.pins.save_evidence(
                {
                    "reason": reason,
                    "message": answer.message,
                    "accepted": [a.block_id.hex() for a in answer.accepted],
                }
            )
            raise EquivocationDetected(str(answer.message), where)
        if answer.status != 200:
            refused = next((h for h, raw, _ in blocks if _block_id(raw) not in accepted), None)
            if refused is None:  # a refusal that accepted every block contradicts itself
                raise ProtocolError("block batch answer", f"status {answer.status} with every block accepted")
            refusal = BlocksRefused if answer.status < 500 else SyncError  # 5xx: the root's own trouble
            raise refusal(f"root refused block {refused}: {answer.status} {answer.message}")
        return len(heights)

    async def fetch_receipts(self) -> int:
        """Fetch and verify receipts for submitted blocks, oldest first; returns how many got anchored."""
        rows = await self._db(
            lambda c: c.execute(
                "SELECT height, block_id, raw FROM blocks WHERE state = 'submitted' ORDER BY height LIMIT 256"
            ).fetchall()
        )
        anchored = 0
        for height, block_id, raw in rows:
            info = await self.root.block(bytes(block_id))
            if info.receipt is None or info.receipt_text is None:
                break  # not sequenced yet; later blocks cannot be either
            # The receipt was parsed once by the codec; its checkpoint is verified once by the pin.
            await self.pinned.verify_receipt(info.receipt, block_leaf(bytes(raw)))

            def mark(
                c: sqlite3.Connection,
                h: int = height,
                i: int = info.receipt.index,
                t: str = info.receipt_text,
            ) -> None:
                c.execute(
                    "UPDATE blocks SET state = 'anchored', log_index = ?, receipt = ? WHERE height = ?",
                    (i, t, h),
                )

            await self._db(mark)
            anchored += 1
        return anchored


def _anchoring_stopped(exc: Exception) -> str | None:
    """Why ``exc`` stops anchoring until someone acts, or None when it is transient (the root is away
    or failing on its side: 5xx) or is evidence (reported as such). A malformed answer is a protocol
    error: counted, retried, not a verdict either."""
    if isinstance(exc, EquivocationDetected | ProtocolError):
        return None
    if isinstance(exc, BlocksRefused):
        return f"the root refuses them: {exc}"
    if isinstance(exc, ClientError) and 400 <= exc.status < 500:
        return f"the root refuses our requests: {exc}"
    if isinstance(exc, ChainError | PinError):
        return f"the root's answers do not verify under the trust policy: {exc}"
    return None


def _block_id(raw: bytes) -> bytes:
    return parse_block(raw).block_id


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
