"""Signature verification on every core: a pool of worker processes the writer hands batches to (D-081).

The writer thread (:mod:`edge.writer`) still decodes each envelope, finds its signer's key, judges its
counter and commits; only the signature check, the one CPU-bound step that needs nothing but the
message and the key, crosses to a worker. A batch is cut into one chunk per worker, the chunks are
verified in parallel and their results read back in order, so the writer sees the same list of
verdicts the in-process path gives (tests/test_verify_workers.py compares the two).

The writer thread talks to each worker over two pipes of its own: one length-prefixed pickle of
``(task, items)`` per chunk, one of the results back (D-150). No feeder or queue-management thread runs
in the gateway, and a message crosses as the parts a check reads, plain bytes and ints: the
``concurrent.futures`` pool this replaced cost the gateway 6 to 30 µs per reading (its threads, and
pickling each ``Sign1`` as a dataclass), these pipes 1.5 to 8.

A worker that dies (killed, out of memory) is seen at once by the writer: its pipe closes. Every chunk
of the batch under way is then abandoned, the pool is started again and the *whole* batch is verified
again. Nothing of that batch was committed or acknowledged meanwhile (the writer verifies before it
opens its transaction), so its readings are simply judged a little later. When the pool breaks
:data:`MAX_RESTARTS` times in a row on one batch (an input that kills every worker, a machine out of
memory), :class:`VerificationUnavailable` is raised: the ingest loop stops with it and the gateway's
Service exits non-zero with that message (systemd restarts it), rather than acknowledge anything
unverified or retry forever.

Workers are forked from the gateway's process, first thing in its start, after ``gc.freeze()``: they
share its pages copy-on-write, and the collector in a worker never walks (so never copies) the
gateway's objects. A forked worker costs 7 MB of private memory beside the gateway; a fresh interpreter
that imports only what a check needs costs 15 MB, and the gateway's pages are then shared with nobody
(D-150 measured both). A worker keeps only its two pipe ends of the descriptors it inherited (not the
state directory's ``flock``, not another worker's pipes), so it ends when its request pipe closes: when
the gateway stops it, and when the gateway is killed. It ignores SIGTERM and SIGINT and drops the event
loop's wakeup descriptor it inherited: systemd signals the whole control group at stop, and a worker
writing the signal into the *gateway's* wakeup pipe would count as a second stop signal there (which
exits at once); the gateway stops its workers itself, last in its shutdown order, after the drain that
still needs them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from chain_lite.cose import HDR_ALG, HDR_KID, Sign1, verify_sign1
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
STOP_WAIT_S = 10.0
"""How long :meth:`VerifyPool.stop` waits for a worker to finish its chunk before killing it."""

VerifyItem = tuple[Sign1, bytes]
"""A message whose structure and signer are checked, and its signer's public key (DER)."""
Result = str | None
"""None: the signature is good; else why not (the detail of ``bad-signature``)."""
WireItem = tuple[bytes, bytes, bytes, int, bytes, bytes]
"""What crosses to a worker for one message: protected header bytes, payload, signature, alg, kid, and
the signer's key (DER; one bytes object per signer, which pickle sends once per chunk)."""
Task = Callable[[list[WireItem]], list[Result]]

_keys: dict[bytes, PublicKey] = {}
"""A worker's loaded keys, by DER; a gateway sees a few thousand signers over and over."""
_MAX_KEYS = 4096
_HEAD = 4  # bytes of a frame's length, big-endian


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


def to_wire(items: list[VerifyItem]) -> list[WireItem]:
    """The parts of each message a signature check reads (:func:`verify_sign1`), as plain values."""
    return [(m.protected_bytes, m.payload, m.signature, m.alg, m.protected[HDR_KID], der) for m, der in items]


def verify_wire(items: list[WireItem]) -> list[Result]:
    """:func:`verify_items` on what :func:`to_wire` made (a worker's default task). The message is rebuilt
    from the parts a check reads: its other fields (``raw``, the rest of the protected header) were
    checked by the writer and are not needed here."""
    return verify_items(
        [
            (Sign1(b"", protected, {HDR_ALG: alg, HDR_KID: kid}, payload, signature), der)
            for protected, payload, signature, alg, kid, der in items
        ]
    )


AUTO = -1
"""``verify.workers = -1``: one worker per core this process may run on."""


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


class _WorkerGone(Exception):
    """A worker's pipe closed (it died) while the writer talked to it."""


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(len(data).to_bytes(_HEAD, "big") + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame, or None at end of file (the other side is gone)."""
    head = stream.read(_HEAD)
    if len(head) < _HEAD:
        return None
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    return data if len(data) == size else None


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """A worker's loop: answer each request, ``(task, items)``, with ``task(items)``, until the request
    pipe closes (the gateway stopped the pool, or is gone)."""
    while (frame := _read_frame(requests)) is not None:
        task, items = pickle.loads(frame)  # noqa: S301 (from the gateway that forked this process)
        _write_frame(answers, pickle.dumps(task(items), protocol=pickle.HIGHEST_PROTOCOL))


def _worker(requests: int, answers: int) -> None:
    """The forked child: keep only its two pipes, leave signals to the gateway, serve, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
            if fd > 2 and fd not in (requests, answers):
                with contextlib.suppress(OSError):  # the listing's own descriptor is closed already
                    os.close(fd)
        with os.fdopen(requests, "rb") as reader, os.fdopen(answers, "wb") as writer:
            _serve(reader, writer)
        code = 0
    finally:
        os._exit(code)  # a forked child must never return into the gateway's code


@dataclass
class _Worker:
    pid: int
    requests: IO[bytes]
    answers: IO[bytes]

    def close(self) -> None:
        for stream in (self.requests, self.answers):
            with contextlib.suppress(OSError):
                stream.close()


def _fork_worker() -> _Worker:
    """Fork one worker (blocking, a few milliseconds); in the parent, its pid and pipes."""
    request_r, request_w = os.pipe()
    answer_r, answer_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _worker(request_r, answer_w)
    os.close(request_r)
    os.close(answer_w)
    return _Worker(pid, os.fdopen(request_w, "wb"), os.fdopen(answer_r, "rb"))


def _reap(pid: int, deadline: float) -> None:
    """Wait for ``pid`` to exit until ``deadline`` (monotonic), then kill it."""
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


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
        self._workers: list[_Worker] = []
        self.task: Task = verify_wire
        """What a worker runs on a chunk (tests swap in one that dies): a module-level function, which
        crosses by name."""

    def start(self) -> None:
        """Fork the workers (blocking, milliseconds). Call it before the gateway starts threads of its own
        where possible (a restart after a dead worker forks from the writer thread)."""
        gc.freeze()  # the workers' collectors leave the objects inherited from here alone
        self._workers = [_fork_worker() for _ in range(self.workers)]
        log.info("signature verification in %d worker processes", self.workers)

    def stop(self) -> None:
        """Close the workers' request pipes (each ends after its chunk under way) and reap them."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        deadline = time.monotonic() + STOP_WAIT_S
        for worker in workers:
            _reap(worker.pid, deadline)

    def pids(self) -> list[int]:
        """The workers' process ids (for memory accounting and the tests' kill drills)."""
        return [worker.pid for worker in self._workers]

    def verify(self, items: list[VerifyItem]) -> list[Result]:
        """Verify ``items`` in order; blocking. Starts the pool again after a worker died (the whole batch
        is verified again); raises :class:`VerificationUnavailable` when it keeps dying."""
        if len(items) < self.inline_below:
            return verify_items(items)
        wire = to_wire(items)
        size = max(MIN_CHUNK, -(-len(wire) // self.workers))
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        for attempt in range(self.max_restarts + 1):
            if not self._workers:
                raise VerificationUnavailable("the verification workers are stopped")
            try:
                return self._verify_chunks(chunks)
            except _WorkerGone as exc:
                if attempt == self.max_restarts:
                    raise VerificationUnavailable(
                        f"a signature verification worker died {attempt + 1} times in a row on a batch of "
                        f"{len(items)} readings ({exc}); nothing of it was acknowledged"
                    ) from exc
                log.error(  # noqa: TRY400 (the cause is a dead process: its traceback is not ours)
                    "a signature verification worker died (%s); starting the pool again and verifying the "
                    "batch of %d readings again (none of it was acknowledged)",
                    exc,
                    len(items),
                )
                self._restart()
        raise AssertionError("unreachable")  # pragma: no cover

    def _verify_chunks(self, chunks: list[list[WireItem]]) -> list[Result]:
        """Hand chunk i to worker i (all of them working at once), then read the answers in order."""
        busy = list(zip(self._workers, chunks, strict=False))  # chunks <= workers (verify's chunk size)
        for worker, chunk in busy:
            try:
                _write_frame(
                    worker.requests, pickle.dumps((self.task, chunk), protocol=pickle.HIGHEST_PROTOCOL)
                )
            except OSError as exc:  # a broken pipe: it died
                raise _WorkerGone(f"worker {worker.pid}: {exc}") from exc
        results: list[Result] = []
        for worker, chunk in busy:
            frame = _read_frame(worker.answers)
            if frame is None:
                raise _WorkerGone(f"worker {worker.pid} ended")
            answer: Any = pickle.loads(frame)  # noqa: S301 (from a worker this process forked)
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise _WorkerGone(f"worker {worker.pid} answered {answer!r:.80}, not {len(chunk)} results")
            results += answer
        return results

    def _restart(self) -> None:
        """Kill every worker of a broken pool (a survivor may be busy with its chunk) and start again."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        for worker in workers:
            _reap(worker.pid, 0.0)
        self.restarts += 1
        self.start()
