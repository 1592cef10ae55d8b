"""Signature verification on every core: a pool of worker processes the writer hands batches to (D-081).

The writer thread (:mod:`edge.writer`) still decodes each envelope, finds its signer's key, judges its
counter and commits; only the signature check, the one CPU-bound step that needs nothing but the
message and the key, crosses to a worker. A batch is cut into one chunk per worker, the chunks are
verified in parallel and their results read back in order, so the writer sees the same list of
verdicts the in-process path gives (tests/test_verify_workers.py compares the two).

A worker that dies (killed, out of memory) breaks the executor: every chunk of the batch under way
fails at once (nothing waits forever), the pool is started again and the *whole* batch is verified
again. Nothing of that batch was committed or acknowledged meanwhile (the writer verifies before it
opens its transaction), so its readings are simply judged a little later. When the pool breaks
:data:`MAX_RESTARTS` times in a row on one batch (an input that kills every worker, a machine out of
memory), :class:`VerificationUnavailable` is raised: the ingest loop stops with it and the gateway's
Service exits non-zero with that message (systemd restarts it), rather than acknowledge anything
unverified or retry forever.

Workers are forked from the gateway's process, first thing in its start, after ``gc.freeze()``: they
share its pages copy-on-write, and the collector in a worker never walks (so never copies) the
gateway's objects. Measured with 2 workers after verifying 6,000 signatures: 7 to 8 MB private memory
per worker, the three processes 62 MB PSS together, against 129 MB with a ``forkserver`` (whose
workers import the gateway's ``__main__`` again, the whole CLI, 30 MB each; D-081). A worker ignores
SIGTERM and SIGINT and drops the event loop's wakeup descriptor it inherited: systemd signals the whole
control group at stop, and a worker writing the signal into the *gateway's* wakeup pipe would count as
a second stop signal there (which exits at once); the gateway stops its workers itself, last in its
shutdown order, after the drain that still needs them.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from chain_lite.cose import Sign1, verify_sign1
from chain_lite.errors import SignatureError
from chain_lite.keys import PublicKey, load_public_der
from edge.errors import GatewayError

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
"""Consecutive breaks of the pool on one batch before the gateway gives up (a clear error, exit 1)."""
MIN_CHUNK = 32
"""A batch is cut into chunks of at least this many messages: a crossing costs about as much as
verifying a few messages, so a small batch goes to one worker."""
INLINE_BELOW = 4
"""Batches smaller than this are verified on the writer thread: at a trickle the crossing would cost
more than the check, and the other core is idle anyway."""

VerifyItem = tuple[Sign1, bytes]
"""A message whose structure and signer are checked, and its signer's public key (DER)."""
Result = str | None
"""None: the signature is good; else why not (the detail of ``bad-signature``)."""

_keys: dict[bytes, PublicKey] = {}
"""A worker's loaded keys, by DER; a gateway sees a few thousand signers over and over."""
_MAX_KEYS = 4096


def verify_items(items: list[VerifyItem]) -> list[Result]:
    """Check each message's signature with its key, in order (in a worker, or in-process)."""
    results: list[Result] = []
    for msg, der in items:
        key = _keys.get(der)
        if key is None:
            if len(_keys) >= _MAX_KEYS:
                _keys.clear()
            key = _keys[der] = load_public_der(der)
        try:
            verify_sign1(msg, key)
        except SignatureError as exc:
            results.append(str(exc))
        else:
            results.append(None)
    return results


AUTO = -1
"""``verify.workers = -1`` (the default): one worker per core this process may run on."""


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(gateway: int) -> None:
    """In each worker, first: signals are the gateway's business (the module docstring says why), and a
    worker dies with the gateway. A worker holds copies of the gateway's descriptors, the state
    directory's ``flock`` among them, and its task pipe never reaches end-of-file (it holds the writing
    end too): a worker outliving a gateway killed with SIGKILL outside systemd (which kills the whole
    control group) would keep the state locked, and the next ``gateway run`` would be refused."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGKILL when the thread that forked this worker ends: the gateway's main thread at its start, its
    # writer thread after a restart; both live as long as the gateway (the writer's ends only after the
    # store is closed, and the workers are stopped next anyway).
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != gateway:  # it died before the line above
        os._exit(1)


def pool_size(setting: int) -> int:
    """Worker processes for ``verify.workers``: the setting when 0 (none: the writer thread verifies) or
    more; for :data:`AUTO`, one per core this process may run on (``os.sched_getaffinity``, so a CPU
    quota set by taskset or a cgroup cpuset counts), none on a one-core box."""
    if setting != AUTO:
        return setting
    cores = len(os.sched_getaffinity(0))
    return cores if cores > 1 else 0


class VerificationUnavailable(GatewayError):
    """The verification workers keep dying: the gateway cannot check signatures and stops."""


class VerifyPool:
    """``workers`` processes verifying batches for the writer thread (blocking calls, from that thread)."""

    def __init__(
        self, workers: int, *, inline_below: int = INLINE_BELOW, max_restarts: int = MAX_RESTARTS
    ) -> None:
        if workers < 1:
            raise ValueError(f"a verification pool needs at least one worker, not {workers}")
        self.workers = workers
        self.inline_below = inline_below
        self.max_restarts = max_restarts
        self.restarts = 0
        """How often a broken pool was started again (a status fact: each is a dead worker)."""
        self._executor: ProcessPoolExecutor | None = None
        self.task = verify_items
        """What a worker runs on a chunk (tests swap in one that dies); a module-level function."""

    def start(self) -> None:
        """Fork the workers (blocking: they are up when it returns). Call it before the gateway starts
        threads of its own where possible (a restart after a dead worker forks from the writer thread)."""
        gc.freeze()  # the workers' collectors leave the objects inherited from here alone
        ctx = multiprocessing.get_context("fork")
        self._executor = ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
        )
        # Start every worker now, not at the first reading: a first batch should not pay for it, and a
        # worker that cannot start fails the gateway's start, not its first reading.
        for future in [self._executor.submit(os.getpid) for _ in range(self.workers)]:
            future.result()
        log.info("signature verification in %d worker processes", self.workers)

    def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def pids(self) -> list[int]:
        """The workers' process ids (for memory accounting and the tests' kill drills)."""
        executor = self._executor
        # ProcessPoolExecutor keeps its processes in a private map; reading it is the only way to see them.
        return [] if executor is None else list(executor._processes)

    def verify(self, items: list[VerifyItem]) -> list[Result]:
        """Verify ``items`` in order; blocking. Starts the pool again after a worker died (the whole batch
        is verified again); raises :class:`VerificationUnavailable` when it keeps dying."""
        if len(items) < self.inline_below:
            return verify_items(items)
        size = max(MIN_CHUNK, -(-len(items) // self.workers))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        for attempt in range(self.max_restarts + 1):
            executor = self._executor
            if executor is None:
                raise VerificationUnavailable("the verification workers are stopped")
            try:
                futures: list[Future[list[Result]]] = [executor.submit(self.task, chunk) for chunk in chunks]
                return [result for future in futures for result in future.result()]
            except BrokenProcessPool as exc:
                if attempt == self.max_restarts:
                    raise VerificationUnavailable(
                        f"a signature verification worker died {attempt + 1} times in a row on a batch of "
                        f"{len(items)} readings ({exc}); nothing of it was acknowledged"
                    ) from exc
                log.error(  # noqa: TRY400 (the cause is a dead process: its traceback is not ours)
                    "a signature verification worker died (%s); starting the pool again and verifying the "
                    "batch of %d readings again (none of it was acknowledged)", exc, len(items)
                )
                self._restart()
        raise AssertionError("unreachable")  # pragma: no cover

    def _restart(self) -> None:
        broken, self._executor = self._executor, None
        if broken is not None:
            # The executor ends the survivors of a broken pool with SIGTERM, which workers ignore (see
            # _worker_init): kill them, or its shutdown would wait for them forever. A survivor may be
            # stuck anyway, on a queue lock the dead worker held.
            for process in list((broken._processes or {}).values()):
                process.kill()
            broken.shutdown(wait=True, cancel_futures=True)
        self.restarts += 1
        self.start()
