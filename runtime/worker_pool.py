"""One daemon as N forked worker processes under a small supervisor (``edgeroot root run --workers N``).

The supervisor is an ordinary :class:`runtime.service.Service` (so systemd sees one main process with the
usual lifecycle); each worker is an ordinary daemon of its own, forked before the supervisor starts its
event loop, that inherits what the caller prepared (a listening socket, shared memory) and runs
``run_worker(number)`` (numbers from 1), which returns the worker's exit code. Sockets made for the
workers (``inherited``) are closed in the supervisor once every worker is forked.

* **Start, one worker at a time**: all are forked at once, but each waits for its turn (a pipe) and
  the next starts when the previous said ``READY=1``, so no two set up a fresh state directory or
  database at the same moment, and one map is built at a time.
* **Notify relay.** Each worker's ``$NOTIFY_SOCKET`` is a datagram socket of the supervisor's own (one
  per worker, in the abstract namespace, so the sender is known), so the workers' unchanged lifecycle
  speaks to the supervisor, and the supervisor speaks to systemd: ``READY=1`` once **every** worker said
  ``READY=1``; ``WATCHDOG=1`` from the supervisor's loop, but a worker whose own pings stop for a whole
  watchdog period (``$WATCHDOG_USEC``) is killed and stops the service; ``STATUS=`` joins the workers' lines.
* **Signals.** SIGHUP is forwarded to every worker, and the reload ends when each has said ``READY=1``
  again. SIGTERM/SIGINT: the supervisor's one shutdown step sends SIGTERM to every worker and waits for
  all of them (each runs its own ordered shutdown under its own deadline, shorter than the supervisor's);
  a worker still running at the supervisor's deadline is killed.
* **A worker that exits** while the service runs (crash, kill, a failed start) stops the whole service
  with one CRITICAL line naming it and a non-zero exit, so systemd's ``Restart=`` restarts everything;
  restarting one worker alone is not attempted (decisions D-115). Each worker asks the kernel for SIGKILL
  if the supervisor dies, so no worker outlives it.
* **A worker that cannot start** (``run_worker`` raised :class:`CannotStart` before serving: a bad
  configuration) tells the supervisor why and exits :data:`EXIT_CANNOT_START`; the supervisor starts no
  other worker, stops the pool in order and raises :class:`CannotStart` with the same message from
  :func:`run_workers`, so the caller reports it as it reports its own configuration errors (D-124).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runtime.logsetup import configure_logging
from runtime.sdnotify import Notifier
from runtime.service import EXIT_FAILED, EXIT_OK, Service, Step, run_service

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # prctl(2)
READY_TIMEOUT_S = 20.0
"""How long a reload waits for every worker to say ``READY=1`` again."""
EXIT_CANNOT_START = 78
"""A worker's exit code after :class:`CannotStart` (``EX_CONFIG`` of sysexits.h)."""
CANNOT_START = "X_CANNOT_START"
"""The notify field (sd_notify(3): other names start with ``X_``) carrying why a worker cannot start."""
SAID_WHY_S = 5.0
"""How long the supervisor waits, after such a worker exited, for the datagram it sent before exiting."""


class CannotStart(Exception):
    """Raised by ``run_worker`` before it serves, for what no restart can cure (a configuration the
    worker's setup refuses: a database that cannot be opened). The message is one line for the operator;
    :func:`run_workers` raises it again in the supervisor."""


class WorkerExited(Exception):
    """A worker process ended while the service was running."""

    def __init__(self, number: int, pid: int, code: int) -> None:
        super().__init__(f"worker {number} (pid {pid}) exited with {_describe(code)}")
        self.number = number
        self.pid = pid
        self.code = code


class WorkerUnresponsive(Exception):
    """A worker stopped its watchdog pings for a whole watchdog period."""

    def __init__(self, number: int, pid: int, silent_s: float) -> None:
        super().__init__(f"worker {number} (pid {pid}) sent no WATCHDOG=1 for {silent_s:.1f} s")
        self.number = number
        self.pid = pid


def _describe(code: int) -> str:
    """A waitpid status code as a shell would say it: ``code N`` or ``signal NAME``."""
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


@dataclass
class _Worker:
    number: int
    notify: socket.socket
    go: tuple[int, int]
    """A pipe: the worker starts when the supervisor writes a byte, and exits if it closes it empty."""
    released: bool = False
    pid: int = 0
    code: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by its first ``READY=1``: it started."""
    ready_again: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by every ``READY=1``; a reload clears it before its SIGHUP and awaits it."""
    status: str = "starting"
    last_ping: float = 0.0
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    refusal: str | None = None
    """Why it cannot start (:class:`CannotStart`), as it said before it exited."""
    said_why: asyncio.Event = field(default_factory=asyncio.Event)


def _child(worker: _Worker, workers: list[_Worker], run_worker: Callable[[int], int], parent: int) -> None:
    """In the forked worker: die with the supervisor, talk to its relay socket, run, never return."""
    code = EXIT_FAILED
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died before the request took effect
            os._exit(EXIT_FAILED)
        address = worker.notify.getsockname()
        for other in workers:
            other.notify.close()  # the supervisor's ends; the worker only sends
            os.close(other.go[1])
            if other is not worker:
                os.close(other.go[0])
        turn = os.read(worker.go[0], 1)  # its turn to start
        os.close(worker.go[0])
        if not turn:  # the pipe closed first: the service stops before this worker started
            os._exit(EXIT_OK)
        os.environ["NOTIFY_SOCKET"] = "@" + address[1:].decode()
        if "WATCHDOG_USEC" in os.environ:
            os.environ["WATCHDOG_PID"] = str(os.getpid())
        code = run_worker(worker.number)
    except CannotStart as exc:
        # Not a bug to show a traceback for: the supervisor says it, once, as the caller words it.
        code = EXIT_CANNOT_START
        with contextlib.suppress(OSError):
            Notifier().send(f"{CANNOT_START}={' '.join(str(exc).split())}")
    except BaseException:  # a forked child must never return into the supervisor's code
        logging.getLogger(__name__).exception("worker %d failed to run", worker.number)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def run_workers(
    name: str,
    count: int,
    run_worker: Callable[[int], int],
    *,
    stop_deadline_s: float,
    inherited: Sequence[socket.socket] = (),
) -> int:
    """Fork ``count`` workers running ``run_worker(number)`` and supervise them as the daemon ``name``
    until SIGTERM/SIGINT or until one of them exits; the supervisor's exit code (0 after a clean stop
    of every worker, 1 otherwise). ``inherited``: sockets made for the workers, which the supervisor
    closes once every worker is forked (a worker's listening socket must close when its worker exits).
    Call it from a process without threads (it forks)."""
    if count < 2:  # one process needs no supervisor
        raise ValueError(f"a pool needs at least 2 workers, not {count}")
    configure_logging()
    token = secrets.token_hex(6)
    workers = []
    for number in range(1, count + 1):
        relay = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        relay.bind(f"\0edgeroot-{name}-{os.getpid()}-{token}-{number}")
        relay.setblocking(False)
        workers.append(_Worker(number, relay, os.pipe()))
    parent = os.getpid()
    for worker in workers:
        sys.stdout.flush()  # nothing buffered is written twice
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(worker, workers, run_worker, parent)
        worker.pid = pid
        log.info("%s: worker %d started (pid %d)", name, worker.number, pid)
    for worker in workers:
        os.close(worker.go[0])  # the workers' ends (kept open until the last fork: each child closes them)
    for sock in inherited:
        sock.close()  # the workers hold their copies
    code = run_service(lambda: _supervise(name, workers, stop_deadline_s))
    refusal = next((w.refusal for w in workers if w.refusal is not None), None)
    if refusal is not None:
        raise CannotStart(refusal)
    return code


async def _supervise(name: str, workers: list[_Worker], stop_deadline_s: float) -> None:
    def status() -> str:
        return " | ".join(f"worker {w.number}: {w.status}" for w in workers)

    async def reload() -> str:
        for w in workers:
            w.ready_again.clear()
            _signal(w, signal.SIGHUP)
        late = [str(w.number) for w in await _ready_again(workers, READY_TIMEOUT_S)]
        if late:
            return f"SIGHUP forwarded to {len(workers)} workers; not reloaded yet: worker {', '.join(late)}"
        return f"SIGHUP forwarded to {len(workers)} workers, each reloaded"

    # Each worker's own stop deadline is shorter; the supervisor's kills whoever overruns it.
    async with Service(name, status=status, reload=reload, stop_deadline_s=stop_deadline_s) as service:
        stopping = service.stopping

        async def stop_workers() -> None:
            try:
                for w in workers:
                    if w.released:
                        _signal(w, signal.SIGTERM)
                    else:
                        _release(w, start=False)  # it exits at once (0), never having started
                await asyncio.gather(*(w.exited.wait() for w in workers))
            finally:
                for w in workers:
                    if w.code is None:
                        log.error("%s: worker %d (pid %d) still running at the deadline: killed",
                                  name, w.number, w.pid)  # fmt: skip
                        _signal(w, signal.SIGKILL)
            failed = [
                f"worker {w.number} ({_describe(w.code or 0)})"
                for w in workers
                if w.code and w.refusal is None
            ]
            if failed:
                raise RuntimeError(f"workers that did not stop cleanly: {', '.join(failed)}")

        service.shutdown_order(Step("stop the workers (each drains and stops)", stop_workers))
        for w in workers:
            service.spawn(f"worker-{w.number}", _watch(w, service))
            service.spawn(f"worker-{w.number}-notify", _relay(w, stopping))
        watchdog = service.notifier.watchdog_interval()
        if watchdog is not None:
            service.spawn("worker-watchdog", _watch_pings(workers, 2 * watchdog, stopping))
        for w in workers:
            # One at a time: each starts on a state the previous one already set up (schema, keys), and
            # the peak of building the maps is one worker's. A worker that dies cuts the start short; one
            # that cannot start stops it (the next would meet the same configuration).
            _release(w, start=True)
            if not await _started(w):
                break
        else:
            log.info("%s: all %d workers ready", name, len(workers))
        await service.serve()  # at once when a worker could not start: the stop is asked, no READY=1


async def _ready_again(workers: list[_Worker], timeout_s: float) -> list[_Worker]:
    """Wait until every worker said ``READY=1`` since its :attr:`_Worker.ready_again` was cleared, or for
    ``timeout_s``: awaited on the relays' events, no polling. The workers that did not."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(w.ready_again.wait() for w in workers))
    return [w for w in workers if not w.ready_again.is_set()]


def _release(worker: _Worker, *, start: bool) -> None:
    """Tell a worker waiting for its turn to start (a byte) or to exit (the pipe closed empty)."""
    worker.released = True
    if start:
        os.write(worker.go[1], b"1")
    os.close(worker.go[1])


def _signal(worker: _Worker, signo: int) -> None:
    if worker.code is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signo)


async def _started(worker: _Worker) -> bool:
    """Wait until the worker said ``READY=1`` (True) or exited first (False)."""
    waits = [asyncio.ensure_future(worker.ready.wait()), asyncio.ensure_future(worker.exited.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return worker.ready.is_set()


async def _watch(worker: _Worker, service: Service) -> None:
    """Wait for the worker to exit (a pidfd on the loop); an exit before the stop is a failure, but for
    a worker that could not start (:class:`CannotStart`): then the stop is asked, no failure."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(worker.pid)
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status = os.waitpid(worker.pid, 0)
    worker.code = os.waitstatus_to_exitcode(status)
    if worker.code == EXIT_CANNOT_START and not worker.ready.is_set():
        # It sent why before it exited: the relay reads it (an event, bounded in case it could not send).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.said_why.wait(), SAID_WHY_S)
        if worker.refusal is None:
            worker.refusal = f"worker {worker.number} could not start (exit {worker.code}); see its log"
        log.error("worker %d (pid %d) cannot start: stopping, no worker restarted", worker.number, worker.pid)
        service.request_stop()  # before the start sees it exited: no READY=1 for a pool that never ran
        worker.exited.set()
        return
    worker.exited.set()
    if not service.stopping.is_set():
        raise WorkerExited(worker.number, worker.pid, worker.code)
    log.info("worker %d (pid %d) exited with %s", worker.number, worker.pid, _describe(worker.code))


async def _relay(worker: _Worker, stopping: asyncio.Event) -> None:
    """Read the worker's sd_notify datagrams: readiness, pings, status lines."""
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        data = await loop.sock_recv(worker.notify, 4096)  # cancelled as a straggler at the stop
        for line in data.decode(errors="replace").split("\n"):
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                worker.last_ping = time.monotonic()
                worker.ready.set()
                worker.ready_again.set()
            elif key == "WATCHDOG" and value == "1":
                worker.last_ping = time.monotonic()
            elif key == "STATUS":
                worker.status = value
            elif key == CANNOT_START:
                worker.refusal = value
                worker.said_why.set()


async def _watch_pings(workers: list[_Worker], timeout_s: float, stopping: asyncio.Event) -> None:
    """Stop the service when a ready worker has sent no ping for ``timeout_s`` (the watchdog period)."""
    while not stopping.is_set():
        now = time.monotonic()
        for w in workers:
            if w.ready.is_set() and w.code is None and now - w.last_ping > timeout_s:
                # Hung: it could not run its own ordered stop either; the others still do.
                _signal(w, signal.SIGKILL)
                raise WorkerUnresponsive(w.number, w.pid, now - w.last_ping)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout_s / 4)
