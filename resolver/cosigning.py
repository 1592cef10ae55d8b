"""The root's side of C2SP tlog-witness: ask each witness to cosign a new checkpoint.

For each witness the node remembers the size it last had cosigned (``witness_sizes``), sends
``old <that size>`` with a consistency proof, and on ``409 text/x.tlog.size`` retries once from the
size the witness reports. Only cosignatures that verify with the configured witness key are attached.
A witness that is down or refuses costs its cosignature, never the checkpoint: the checkpoint is
published with whatever cosignatures came back, and clients' policies decide whether that is enough.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint, parse_uint64
from chain_lite.cosignature import witness_verifier
from chain_lite.errors import ChainError
from chain_lite.note import NoteSignature, parse_note
from resolver.config import WitnessConfig
from resolver.db import Database
from resolver.log_store import checkpoint_at, consistency
from resolver.metrics import RootMetrics
from resolver.witness_server import SIZE_CONTENT_TYPE
from rootclient import routes
from runtime.clock import now_ms
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
# A refusing witness is asked again every RETRY_FAILING_S: its refusal is logged once a minute, not each time.
peer_log = RateLimitedLog(log, every_s=60.0)
WITNESS_TIMEOUT_S = 5.0
RETRY_FAILING_S = 2.0  # how often a witness that missed the latest checkpoint is asked again


def request_body(old: int, proof: Sequence[bytes], checkpoint: SignedCheckpoint) -> bytes:
    lines = [f"old {old}", *(b64.encode(h) for h in proof)]
    return ("\n".join(lines) + "\n\n").encode() + checkpoint.to_bytes()


def _parse_cosignatures(
    body: bytes, witness: WitnessConfig, checkpoint: SignedCheckpoint
) -> list[NoteSignature]:
    # The response is signature lines only; parse them as the signature block of the checkpoint's note.
    note = parse_note(checkpoint.note.text.encode() + b"\n" + body)
    verifier = witness_verifier(witness.vkey)
    text = note.text.encode()
    mine = (verifier.name, verifier.key_id)
    return [s for s in note.signatures if (s.name, s.key_id) == mine and verifier.verify(text, s.signature)]


class Cosigner:
    def __init__(
        self,
        db: Database,
        witnesses: Sequence[WitnessConfig],
        client: httpx.AsyncClient,
        metrics: RootMetrics | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.metrics = metrics
        self.witnesses: list[WitnessConfig] = []
        self.failures: dict[str, int] = {}
        self._last_retry = 0.0
        self.set_witnesses(witnesses)

    def set_witnesses(self, witnesses: Sequence[WitnessConfig]) -> None:
        """Ask these witnesses from the next checkpoint on (``root.toml`` reloaded)."""
        self.witnesses = list(witnesses)
        self.failures = {w.name: self.failures.get(w.name, 0) for w in witnesses}
        if self.metrics is not None:
            self.metrics.witness_failing.clear()
            for name, count in self.failures.items():
                self.metrics.witness_failing.labels(witness=name).set(count)

    async def retry_failing(self) -> int:
        """Ask the witnesses that missed the latest checkpoint again, at most every
        :data:`RETRY_FAILING_S`; add what they sign to the published checkpoint. Without this, a
        witness back from an outage would cosign nothing until the next batch, and clients that need
        its cosignature would wait for new leaves. Returns the signatures added."""
        failing = [w for w in self.witnesses if self.failures.get(w.name, 0) > 0]
        now = time.monotonic()
        if not failing or now - self._last_retry < RETRY_FAILING_S:
            return 0
        self._last_retry = now
        checkpoint = await asyncio.to_thread(self._latest_published)  # database: off the loop
        if checkpoint is None:
            return 0
        answers = await asyncio.gather(*(self._ask_safely(w, checkpoint, again=True) for w in failing))
        new = [sig for sigs in answers for sig in sigs]
        if new:
            cosigned = SignedCheckpoint(checkpoint.checkpoint, checkpoint.note.with_signatures(new))
            await asyncio.to_thread(self._store_cosignatures, cosigned)
            log.info(
                "checkpoint %d now cosigned by %d more witness(es)",
                checkpoint.checkpoint.size,
                sum(1 for sigs in answers if sigs),
            )
        return len(new)

    # Blocking database work, one transaction each; the async methods run them in a worker thread so the
    # event loop never waits on a database round trip.

    def _checkpoint(self, size: int) -> SignedCheckpoint | None:
        with self.db.transaction(write=False) as tx:
            return checkpoint_at(tx, size)

    def _latest_published(self) -> SignedCheckpoint | None:
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT MAX(size) FROM checkpoints WHERE published = 1")
            return None if row is None or row[0] is None else checkpoint_at(tx, int(row[0]))

    def _request(self, name: str, old: int | None, checkpoint: SignedCheckpoint) -> tuple[int, bytes]:
        """(old size, add-checkpoint body): ``old`` the witness reported, or (``None``) the size it last
        cosigned; the body is empty when ``old`` is above the checkpoint."""
        size = checkpoint.checkpoint.size
        with self.db.transaction(write=False) as tx:
            if old is None:
                row = tx.one("SELECT size FROM witness_sizes WHERE name = ?", (name,))
                old = 0 if row is None else int(row[0])
            if old > size:
                return old, b""
            proof = consistency(tx, old, size) if 0 < old < size else []
        return old, request_body(old, proof, checkpoint)

    def _cosigned_up_to(self, name: str, size: int) -> int | None:
        """Remember the witness's size; the checkpoint's signing time (ms), for the lag metric."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO witness_sizes (name, size) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET size = excluded.size",
                (name, size),
            )
            row = tx.one("SELECT created_ms FROM checkpoints WHERE size = ?", (size,))
        return None if row is None else int(row[0])

    def _store_cosignatures(self, cosigned: SignedCheckpoint) -> None:
        with self.db.transaction() as tx:
            size = cosigned.checkpoint.size
            tx.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (cosigned.to_bytes(), size))

    def _publish(self, cosigned: SignedCheckpoint) -> None:
        """Store the checkpoint with its cosignatures and publish it, and any before it."""
        size = cosigned.checkpoint.size
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE checkpoints SET note = ?, published = 1 WHERE size = ?", (cosigned.to_bytes(), size)
            )
            tx.execute("UPDATE checkpoints SET published = 1 WHERE size < ? AND published = 0", (size,))

    async def _ask(self, witness: WitnessConfig, checkpoint: SignedCheckpoint) -> list[NoteSignature]:
        size = checkpoint.checkpoint.size
        reported_size: int | None = None
        for _ in range(2):
            # One worker-thread crossing per request: the witness's size and the consistency proof.
            old, body = await asyncio.to_thread(self._request, witness.name, reported_size, checkpoint)
            if old > size:
                log.warning("witness %s has size %d, above checkpoint %d", witness.name, old, size)
                return []
            response = await self.client.post(
                witness.url + routes.WITNESS_ADD_CHECKPOINT, content=body, timeout=WITNESS_TIMEOUT_S
            )
            # Media type only: a witness may add parameters (``; charset=...``) to text/x.tlog.size.
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if response.status_code == 409 and media_type == SIZE_CONTENT_TYPE:
                reported = parse_uint64(response.text.removesuffix("\n"))
                if reported is None:
                    break
                log.info("witness %s is at size %d, not %d; retrying from there", witness.name, reported, old)
                reported_size = reported
                continue
            if response.status_code != 200:
                peer_log.warning(
                    f"refused:{witness.name}", "witness %s refused checkpoint %d: %d %s",
                    witness.name, size, response.status_code, response.text.strip()[:200],
                )  # fmt: skip
                return []
            sigs = _parse_cosignatures(response.content, witness, checkpoint)
            if not sigs:
                log.warning("witness %s answered without a valid cosignature", witness.name)
                return []
            created_ms = await asyncio.to_thread(self._cosigned_up_to, witness.name, size)
            if self.metrics is not None:
                self.metrics.witness_cosigned_size.labels(witness=witness.name).set(size)
                if created_ms is not None:
                    lag = max(0.0, (now_ms() - created_ms) / 1000)
                    self.metrics.witness_cosign_lag.labels(witness=witness.name).set(lag)
            return sigs
        return []

    async def _ask_safely(
        self, witness: WitnessConfig, checkpoint: SignedCheckpoint, *, again: bool = False
    ) -> list[NoteSignature]:
        """Ask one witness; count a missed checkpoint. ``again``: a retry of a checkpoint already
        counted as missed, so a failure neither counts nor logs a second time (retries come every 2 s)."""
        try:
            sigs = await self._ask(witness, checkpoint)
        except (httpx.HTTPError, ChainError) as exc:
            if not again:
                log.warning("witness %s unreachable or answered garbage: %s", witness.name, exc)
            sigs = []
        if sigs:
            self.failures[witness.name] = 0
        elif not again:
            self.failures[witness.name] = self.failures.get(witness.name, 0) + 1
        if self.metrics is not None:
            self.metrics.witness_failing.labels(witness=witness.name).set(self.failures.get(witness.name, 0))
        if not sigs and not again and self.failures[witness.name] in (1, 10, 100, 1000):
            log.error(
                "witness %s has not cosigned the last %d checkpoint(s): clients that require its "
                "cosignature cannot accept new checkpoints",
                witness.name, self.failures[witness.name],
            )  # fmt: skip
        return sigs

    async def cosign_and_publish(self, size: int) -> SignedCheckpoint:
        """Collect cosignatures for the checkpoint at ``size`` and publish it (and any before it)."""
        checkpoint = await asyncio.to_thread(self._checkpoint, size)
        assert checkpoint is not None, f"no checkpoint at size {size}"
        answers = await asyncio.gather(*(self._ask_safely(w, checkpoint) for w in self.witnesses))
        note = checkpoint.note.with_signatures(sig for sigs in answers for sig in sigs)
        cosigned = SignedCheckpoint(checkpoint.checkpoint, note)
        await asyncio.to_thread(self._publish, cosigned)
        return cosigned
