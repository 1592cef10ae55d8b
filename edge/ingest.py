"""The gateway's one door for readings: the implementation of the ingest contract (:mod:`edge.intake`).

``await ingest.submit(raw, source)`` returns once the reading is durable or durably rejected, or at once
with a refusal (``store-full``, ``shutting-down``) that the connector must not acknowledge.
If the ingest loop itself dies, every waiting ``submit`` (and every later one) raises
:class:`edge.errors.IngestStopped` at once instead of waiting forever.

Held readings (:data:`edge.intake.HELD`): a reading whose signer has no key here is written to the
writer's ``held`` table and answered at once as held (durable: acknowledged); the lookup runs in a task
of its own, off the writer's path, bounded by the registry cache
(:meth:`edge.registry_cache.RegistryCache.lookup`), and when it ends the writer judges the signer's held
readings in arrival order (:meth:`Writer.release`). A lookup that fails or is deferred leaves them held:
a retry task asks again for every held signer, within the registry's bounds, also for the rows left in
the table by an earlier run (D-059). No submission ever waits for a lookup, so readings of known devices
are never delayed by one.

Signature checks may run in worker processes (:mod:`edge.verify_pool`, D-081): the writer hands them
a batch and waits for its verdicts, in order. A dead worker is replaced and the batch verified again,
unacknowledged meanwhile; when workers keep dying this loop stops with
:class:`edge.verify_pool.VerificationUnavailable` and so does the gateway (exit 1).

Back-pressure: submissions wait in a bounded queue; when the writer falls behind, ``submit`` blocks
and connectors stop reading from their transport instead of buffering in memory. The writer thread
takes up to ``max_batch`` submissions at a time and commits them in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from edge.admission import DUPLICATE
from edge.errors import IngestStopped
from edge.intake import HELD, KEY_LOOKUP, SHUTTING_DOWN, STORE_FULL, Outcome, Submission
from edge.verify_pool import VerificationUnavailable
from edge.writer import Writer
from runtime.clock import now_ms
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
RETRY_TICK_S = 1.0
"""How often the retry task looks for held signers without a running lookup (the registry's own
``retry_s`` spaces the root's lookups of one signer; its token bucket spaces all of them)."""


@dataclass
class IngestStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    batches: int = 0
    held: int = 0
    """Readings answered as held (durably, or refused when too many were held) while their signer's key
    was looked up."""


class KeyLookup(Protocol):
    """Where keys of unknown signers are looked up (:class:`edge.registry_cache.RegistryCache`)."""

    def proven_absent(self, signer: str) -> bool:
        """True when a verified answer proved ``signer`` has no key; called on the writer thread."""
        ...

    async def lookup(self, signer: str) -> bool:
        """Bounded; True when ``signer`` can be judged now (key found, or absence proven)."""
        ...

    def may_retry(self, signer: str) -> bool:
        """Whether a lookup of ``signer`` is worth starting now (not running, not failed moments ago)."""
        ...

    def has_room(self) -> bool:
        """Whether a lookup started now would be made (not deferred by the bounds)."""
        ...


Batch = list[tuple[list[Submission], asyncio.Future[list[Outcome]]]]


class Ingest:
    def __init__(self, writer: Writer, *, max_batch: int = 1000, max_pending: int = 5000) -> None:
        self.writer = writer
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[list[Submission], asyncio.Future[list[Outcome]]]] = asyncio.Queue(
            max_pending
        )
        # One thread owns the SQLite write connection: every writer call crosses to it through here.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-writer")
        self.stats = IngestStats()
        self._rejects = RateLimitedLog(log)
        self._closing = False
        self._stopped = False
        self._in_hand: Batch = []
        self._registry: KeyLookup | None = None
        self.looking: dict[str, asyncio.Task[None]] = {}
        """Signers whose lookup runs now, with the task that releases their held readings once it ends."""
        self._retry_task: asyncio.Task[None] | None = None
        self.retry_tick_s = RETRY_TICK_S

    def use_registry(self, registry: KeyLookup) -> None:
        """Hold readings of signers without a key while ``registry`` is asked, instead of refusing them
        as ``unknown-device`` (which stays final only for a signer whose absence is proven)."""
        self._registry = registry
        # Crossing: the writer thread calls this to judge a reading; it reads one dict entry.
        self.writer.may_hold = lambda signer: not registry.proven_absent(signer)
        # Held readings (from this run, or left in the table by an earlier one) are looked up again until
        # judged: nothing acknowledged is dropped because a lookup failed.
        self._retry_task = asyncio.create_task(self._retry_held(), name="retry held lookups")

    async def call(self, fn: object, *args: object) -> object:
        """Run ``fn(*args)`` on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]

    async def open(self) -> None:
        await self.call(self.writer.open)

    async def submit(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome:
        """Hand one envelope to the gateway; returns when it is durable or durably rejected.

        ``reject`` quarantines the input with that reason without verifying it (a connector's own
        verdict, such as a wrong content format)."""
        return (await self.submit_many([(raw, source)], reject=reject))[0]

    async def submit_many(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]:
        """Like :meth:`submit` for several envelopes at once (one crossing, one future): outcomes in order."""
        if self._closing:
            return [SHUTTING_DOWN] * len(items)
        if self.writer.store_full:
            self.stats.refused += len(items)
            return [STORE_FULL] * len(items)
        received = now_ms()
        return await self._store([Submission(raw, source, received, reject) for raw, source in items])

    async def _store(self, submissions: list[Submission]) -> list[Outcome]:
        if self._stopped:
            raise IngestStopped("the gateway's ingest loop has stopped")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._queue.put((submissions, future))
        if self._stopped:  # the loop died while this submitter waited for room in the queue
            self._fail(self._take_queued())
        return await future

    def _take_queued(self) -> Batch:
        taken: Batch = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    def _settle(self, batch: Batch, outcomes: list[Outcome]) -> None:
        at = 0
        for subs, fut in batch:
            if not fut.done():
                fut.set_result(outcomes[at : at + len(subs)])
            at += len(subs)
            self._queue.task_done()

    def _fail(self, batch: Batch, exc: BaseException | None = None) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc or IngestStopped("the ingest loop stopped before storing this"))
            self._queue.task_done()

    async def run(self) -> None:
        """Drain the queue in batches until cancelled; each batch is one transaction on the writer thread.

        However it ends (cancelled at shutdown, or a crash), whoever still waits gets
        :class:`IngestStopped` at once: an outcome nobody will ever set is a submitter hung forever."""
        try:
            while True:
                await self._one_batch()
        finally:
            self._stopped = True
            in_hand, self._in_hand = self._in_hand, []
            self._fail(in_hand + self._take_queued())
            for task in [*self.looking.values(), self._retry_task]:  # held rows stay in the table
                if task is not None:
                    task.cancel()

    async def _one_batch(self) -> None:
        batch = [await self._queue.get()]
        size = len(batch[0][0])
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            batch.append(item)
            size += len(item[0])
        self._in_hand = batch
        subs = [sub for subs, _ in batch for sub in subs]
        try:
            outcomes = await self.call(self.writer.process, subs)
        except VerificationUnavailable:
            # Signatures cannot be checked any more (the workers keep dying): this loop stops, every
            # waiting submitter gets IngestStopped (none is acknowledged), and the service exits with it.
            raise
        except Exception as exc:
            # Nothing of this batch is stored: no sender is acknowledged, so every one will retry.
            log.exception("storing a batch of %d failed", size)
            self._fail(batch, exc)
            self._in_hand = []
            return
        assert isinstance(outcomes, list)
        self.stats.batches += 1
        self._count(list(zip(subs, outcomes, strict=True)))
        self._settle(batch, outcomes)
        self._in_hand = []  # only now: until settled, a crash of this loop fails them (run's finally)

    def _count(self, judged: list[tuple[Submission, Outcome]], *, released: bool = False) -> None:
        """Count outcomes (and log rejects, rate-limited); start a lookup for each newly held signer.
        ``released``: held readings judged again, counted as held already."""
        for sub, outcome in judged:
            if outcome.reason == DUPLICATE:  # acknowledged, but not a new reading (D-052)
                self.stats.duplicates += 1
            elif outcome.accepted:
                self.stats.accepted += 1
            elif outcome.reason in (HELD, KEY_LOOKUP):  # held (or refused to hold), not a reject
                if not released:
                    self.stats.held += 1
                signer = str(outcome.signer)
                if signer not in self.looking and not released:
                    self._look_up(signer)
            elif outcome.reason is not None:
                self.stats.rejected[outcome.reason] = self.stats.rejected.get(outcome.reason, 0) + 1
                self._rejects.warning(
                    outcome.reason,
                    "quarantined %s from %s: %s",
                    outcome.reason,
                    sub.source,
                    outcome.detail,
                )

    def _look_up(self, signer: str) -> None:
        self.looking[signer] = asyncio.create_task(self._release(signer), name=f"lookup {signer}")

    async def _release(self, signer: str) -> None:
        """Look ``signer`` up (off the writer's path), then have the writer judge its held readings."""
        assert self._registry is not None, "a reading is held only with a registry (use_registry)"
        try:
            judge = await self._registry.lookup(signer)
        except Exception:  # not a typed root failure (those are judged by the registry): retried, logged
            log.exception("looking up the key of %s failed", signer)
            judge = False
        finally:
            # Before the release is queued: a reading of this signer held from now on starts a lookup
            # of its own, so no held reading is left without one (a second release finds it or nothing).
            del self.looking[signer]
        if not judge:
            return  # the readings stay in the held table; the retry task asks again
        try:
            released = await self.call(self.writer.release, signer)
        except Exception:  # rolled back: the readings stay held, and the retry task tries again
            log.exception("judging the held readings of %s failed", signer)
            return
        assert isinstance(released, list)
        self._count(released, released=True)

    async def _retry_held(self) -> None:
        """Every :attr:`retry_tick_s`, start a lookup for each held signer that has none running and may
        be asked again, as fast as the registry's bounds allow (a root back after an outage judges the
        backlog at its token rate, not in one burst)."""
        registry = self._registry
        assert registry is not None
        while True:
            signers = await self.call(lambda: list(self.writer.held))
            assert isinstance(signers, list)
            for signer in signers:
                if signer in self.looking or not registry.may_retry(signer):
                    continue
                while not registry.has_room():
                    await asyncio.sleep(self.retry_tick_s / 10)
                if signer not in self.looking:
                    self._look_up(signer)
                    await asyncio.sleep(0)  # the lookup takes its token before the next one is checked
            await asyncio.sleep(self.retry_tick_s)

    async def drain(self) -> None:
        """Stop taking new input and wait until everything queued or in hand is stored (shutdown: after
        stopping intake). Event-based (the queue's ``join``); its deadline is the caller's (the service's
        one shutdown deadline cancels it). When the loop is gone the queue was already failed, so this
        returns at once."""
        self._closing = True
        try:
            await self._queue.join()
        except asyncio.CancelledError:
            log.error("drain cut short: %d submission(s) not stored (their senders were not acknowledged)",  # noqa: TRY400 (the deadline is the cause; no traceback to show)
                      self._queue.qsize() + len(self._in_hand))  # fmt: skip
            raise

    async def close(self) -> None:
        # Lookups and retries cross to the writer: stop them before it closes (held rows stay on disk and
        # are looked up again at the next start).
        for task in [*self.looking.values(), self._retry_task]:
            if task is not None:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.call(self.writer.close)
        # Joining the writer thread blocks: wait for it in a worker thread, so the loop (and a shutdown
        # deadline that may cancel this step) keeps running meanwhile.
        await asyncio.to_thread(self._executor.shutdown, True)
