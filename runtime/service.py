"""The one lifecycle of edgeroot's daemons: gateway, bridge (frames and Modbus), root node, witness.

A daemon is an async context manager over ONE :class:`asyncio.TaskGroup` of named tasks (STYLE 5, 9)::

    async def main() -> None:
        async with Service("gateway", status=status_line, reload=reload) as service:
            service.shutdown_order(
                Step("stop intake", stop_connectors),
                Step("drain", ingest.drain),
                Step("close the open block", close_block),
                Step("stop local http", stop_http),
                Step("close the store", ingest.close),
            )
            ...                                     # start: open the store, start connectors, ...
            service.spawn("ingest", ingest.run())   # named tasks of the one TaskGroup
            await service.serve()                   # READY=1; returns when the service must stop

    sys.exit(run_service(main))

The daemon supplies only its start (the body), its status line, its reload and its shutdown steps.

Lifecycle
=========

1. **Start** (``async with``): handlers for SIGTERM/SIGINT (stop) and SIGHUP (reload) are installed,
   then the body starts things and spawns tasks. :meth:`Service.serve` sends ``READY=1`` with a
   ``STATUS=`` line. A task that dies during the start cuts the start short (the body is cancelled: it
   may be waiting for what that task would have provided); a SIGTERM during the start lets it finish,
   then stops.
2. **Running**: a control task of the same event loop sends ``WATCHDOG=1`` with a fresh ``STATUS=``
   every half watchdog period (``STATUS=`` alone every 5 s without a watchdog), so a stuck loop stops the
   pings and systemd restarts the service. On SIGHUP it sends ``RELOADING=1`` (with ``MONOTONIC_USEC=``),
   runs the reload callable and sends ``READY=1``; a reload that raises keeps the running configuration
   and logs an ERROR (a :class:`runtime.tomlconfig.ConfigError` without a traceback: it is a typo, not
   a bug).
3. **Stop**, on the first SIGTERM/SIGINT, on :meth:`Service.request_stop`, or because a task failed:
   ``STOPPING=1``; :attr:`Service.stopping` is set (loops that take a stop event end at their next
   wait); a reload under way finishes; then :func:`shutdown` runs the steps **in their declared order**
   (:meth:`Service.shutdown_order`) under **one deadline** (``stop_deadline_s``, chosen below the unit's
   ``TimeoutStopSec``). A step that raises
   is logged and the next one runs; when the deadline passes, the step under way is cancelled and the
   remaining ones are skipped (logged by name). Last, every task still running is cancelled
   (stragglers) and awaited. A **second** SIGTERM/SIGINT exits at once (``os._exit``), whatever the
   shutdown is doing.

A task **fails** when it raises (``SystemExit`` included: uvicorn calls ``sys.exit`` when it cannot
bind), when it is cancelled by anyone but this service, or, for a task spawned ``forever=True`` (the
default), when it returns before the stop. A failure is logged once at CRITICAL with its traceback,
then the service stops as above: loudly, in order, never a silent hang.

Exit codes (:func:`run_service`)
================================

* ``0``: a clean stop: every shutdown step finished within the deadline and no task failed;
* ``1``: a task failed, the start failed, or the shutdown was incomplete (a step failed or overran
  the deadline); systemd's ``Restart=on-failure`` restarts the service;
* ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT): a second signal forced the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from runtime.sdnotify import STATUS_EVERY_S, Notifier
from runtime.tomlconfig import ConfigError

log = logging.getLogger(__name__)

DEFAULT_STOP_DEADLINE_S = 20.0
"""The whole shutdown's deadline unless a daemon says otherwise; below the units' ``TimeoutStopSec=30``."""
STRAGGLER_GRACE_S = 1.0
"""How long cancelled stragglers get to unwind when the steps used the whole deadline."""
EXIT_OK = 0
EXIT_FAILED = 1

TextSource = Callable[[], str] | Callable[[], Awaitable[str]]
"""A status line or a reload: a plain or an async callable returning one line of text."""


class ServiceError(Exception):
    """Base of the lifecycle's errors; :func:`run_service` turns them into the exit code."""

    exit_code = EXIT_FAILED


class ServiceFailed(ServiceError):
    """A task (or the start) failed; the service stopped. Already logged at CRITICAL with the traceback."""

    def __init__(self, service: str, failed: Sequence[str]) -> None:
        super().__init__(f"{service} stopped because {', '.join(failed)} failed")
        self.service = service
        self.failed = tuple(failed)


class ShutdownIncomplete(ServiceError):
    """The stop was asked for, but a shutdown step failed or overran the deadline (already logged)."""

    def __init__(self, service: str, steps: Sequence[str]) -> None:
        super().__init__(f"{service} stopped, but these shutdown steps did not complete: {', '.join(steps)}")
        self.service = service
        self.steps = tuple(steps)


@dataclass(frozen=True, slots=True)
class Step:
    """One shutdown step: a name for the log, and what it does."""

    name: str
    action: Callable[[], Awaitable[object]]


async def _text(source: TextSource) -> str:
    result = source()
    if inspect.isawaitable(result):
        return str(await result)
    return str(result)


class Service:
    """One daemon's lifecycle; see the module docstring for the order of events and the exit codes.

    ``status`` gives the ``STATUS=`` line; ``reload`` applies a new configuration on SIGHUP and returns a
    summary for the log (raise to refuse it); ``stop_deadline_s`` bounds the whole shutdown.
    """

    def __init__(
        self,
        name: str,
        *,
        status: TextSource | None = None,
        reload: TextSource | None = None,
        stop_deadline_s: float = DEFAULT_STOP_DEADLINE_S,
        notifier: Notifier | None = None,
    ) -> None:
        self.name = name
        self.notifier = notifier or Notifier()
        self.stop_deadline_s = stop_deadline_s
        self._status = status
        self._reload = reload
        self.stopping = asyncio.Event()
        """Set when the shutdown begins: hand it to loops that take a stop event."""
        self._stop_asked = asyncio.Event()
        self._wake = asyncio.Event()  # the control task: a stop or a reload was asked
        self._reload_asked = False
        self._group: asyncio.TaskGroup | None = None
        self._body: asyncio.Task[Any] | None = None
        self._control: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._steps: tuple[Step, ...] = ()
        self._failed: list[str] = []
        self._serving = False
        self._start_cut_short = False
        self._exiting = False
        self._cancelling_stragglers = False
        self._signals = 0

    # --- what a daemon calls ----------------------------------------------------------------------------

    def spawn(
        self, name: str, coro: Coroutine[Any, Any, object], *, forever: bool = True
    ) -> asyncio.Task[None]:
        """Run ``coro`` as the task ``name`` of this service's TaskGroup.

        If it raises, is cancelled by anyone but this service, or (``forever``) returns before the stop,
        the service stops with a non-zero exit. The returned task never raises when awaited through
        :func:`asyncio.wait`; its failure is the service's, not the awaiter's.
        """
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name}: spawn({name!r}) outside `async with Service(...)`")
        task = self._group.create_task(self._guard(name, coro, forever), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def shutdown_order(self, *steps: Step) -> None:
        """Declare the shutdown steps, in the order they run (replaces an earlier declaration); the stop
        runs them with :func:`shutdown` under the service's one deadline."""
        self._steps = steps

    async def serve(self) -> None:
        """The start is done: send ``READY=1`` (with ``STATUS=``), then wait until the service must stop."""
        self._serving = True
        if not self._stop_asked.is_set():
            self._notify("READY=1", f"STATUS={await self._status_line()}")
            self._wake.set()  # the control task starts its pings
        await self._stop_asked.wait()

    def request_stop(self) -> None:
        """Stop the service as a first SIGTERM would (graceful, within the deadline)."""
        self._stop_asked.set()
        self._wake.set()

    # --- the context manager ------------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        loop = asyncio.get_running_loop()
        self._body = asyncio.current_task()
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self._control = self.spawn(f"{self.name}-control", self._control_loop())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._group is not None
        assert self._body is not None
        self._exiting = True
        if self._start_cut_short and self._body.cancelling():
            self._body.uncancel()  # our own cancellation of the start (a task died): not the caller's
        # A CancelledError from cutting the start short is no failure of its own (the task's is logged).
        if isinstance(exc, Exception | SystemExit):
            self._fail("the start" if not self._serving else "the service body", exc)
        self._stop_asked.set()
        incomplete = await self._shutdown()
        await self._group.__aexit__(None, None, None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self._failed:
            log.error("%s stopped after a failure of %s: exiting with %d", self.name,
                      ", ".join(self._failed), EXIT_FAILED)  # fmt: skip
            raise ServiceFailed(self.name, self._failed) from exc
        if incomplete:
            log.error("%s stopped, shutdown incomplete (%s): exiting with %d", self.name,
                      ", ".join(incomplete), EXIT_FAILED)  # fmt: skip
            raise ShutdownIncomplete(self.name, incomplete) from exc
        log.info("%s stopped", self.name)
        return False  # an outside cancellation or KeyboardInterrupt goes on after the shutdown

    # --- inside ---------------------------------------------------------------------------------------------

    async def _guard(self, name: str, coro: Coroutine[Any, Any, object], forever: bool) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            if not self._cancelling_stragglers:
                self._fail(name, None, "was cancelled while the service was running")
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 (any failure of a task is the service's; SystemExit: uvicorn's way to say it cannot start)
            self._fail(name, exc)
        else:
            if forever and not self._stop_asked.is_set():
                self._fail(name, None, "returned while the service was running")

    def _fail(self, name: str, exc: BaseException | None, what: str = "failed") -> None:
        """One CRITICAL line (with the traceback when there is one), then the stop."""
        self._failed.append(name)
        if exc is not None:
            log.critical("%s: %s %s; stopping the service", self.name, name, what, exc_info=exc)
        else:
            log.critical("%s: task %s %s; stopping the service", self.name, name, what)
        self.request_stop()
        if not self._serving and not self._exiting and self._body is not None:
            # The start may be waiting for what the dead task would have provided: cut it short.
            self._start_cut_short = True
            self._body.cancel()

    def _on_stop_signal(self, signo: int) -> None:
        self._signals += 1
        sig = signal.Signals(signo).name
        if self._signals == 1:
            log.info("%s: %s: stopping within %.0f s (a second signal exits at once)", self.name, sig,
                     self.stop_deadline_s)  # fmt: skip
            self.request_stop()
            return
        log.critical("%s: second stop signal (%s): exiting at once, shutdown not finished", self.name, sig)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # The one place a daemon leaves without unwinding: the operator asked twice, and what the first
        # shutdown waits for may be stuck where no cancellation reaches (a blocked thread, a dead disk).
        # 128 + the signal number, as a shell reports a death by that signal.
        os._exit(128 + signo)

    def _on_reload_signal(self) -> None:
        self._reload_asked = True
        self._wake.set()

    def _notify(self, *fields: str) -> None:
        try:
            self.notifier.send(*fields)
        except OSError as exc:  # systemd would restart us for missing pings; never stop for a send
            log.warning("%s: sd_notify %s failed: %s", self.name, fields[0], exc)

    async def _status_line(self) -> str:
        if self._status is None:
            return "running"
        try:
            return await _text(self._status)
        except Exception as exc:  # noqa: BLE001 (a status line must never take the service down)
            return f"status unavailable: {exc}"

    async def _control_loop(self) -> None:
        """Pings and reloads, from the service's own event loop: a stuck loop stops the pings."""
        every = self.notifier.watchdog_interval()
        period = every or STATUS_EVERY_S
        loop = asyncio.get_running_loop()
        while not self._serving and not self._stop_asked.is_set():
            await self._wake.wait()
            self._wake.clear()
        next_ping = loop.time() + period
        while not self._stop_asked.is_set():
            if self._reload_asked:
                self._reload_asked = False
                await self._run_reload()
            elif loop.time() >= next_ping:
                fields = ["WATCHDOG=1"] if every is not None else []
                self._notify(*fields, f"STATUS={await self._status_line()}")
                next_ping = loop.time() + period
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), next_ping - loop.time())
                self._wake.clear()

    async def _run_reload(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000  # systemd wants it beside RELOADING=1
        self._notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")
        if self._reload is None:
            log.info("%s: SIGHUP: nothing to reload", self.name)
        else:
            try:
                log.info("%s reloaded: %s", self.name, await _text(self._reload))
            except ConfigError as exc:
                log.error("%s: reload refused, keeping the running configuration: %s", self.name, exc)  # noqa: TRY400 (a typo needs no traceback)
            except Exception:
                log.exception("%s: reload failed, keeping the running configuration", self.name)
        self._notify("READY=1", f"STATUS={await self._status_line()}")

    async def _shutdown(self) -> list[str]:
        """STOPPING=1, the steps in order under one deadline, then the stragglers; the incomplete steps."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_deadline_s
        self._notify("STOPPING=1", "STATUS=stopping")
        log.info("%s stopping: %s", self.name, " → ".join(s.name for s in self._steps) or "no shutdown steps")
        self.stopping.set()
        self._wake.set()
        if self._control is not None:  # a reload under way finishes before anything is torn down
            await asyncio.wait({self._control}, timeout=max(0.0, deadline - loop.time()))
        incomplete = await shutdown(self._steps, deadline, service=self.name)
        self._cancelling_stragglers = True
        stragglers = [t for t in self._tasks if not t.done()]
        if stragglers:
            log.info("%s: cancelling %s", self.name, ", ".join(sorted(t.get_name() for t in stragglers)))
            for task in stragglers:
                task.cancel()
            _, stuck = await asyncio.wait(stragglers, timeout=max(deadline - loop.time(), STRAGGLER_GRACE_S))
            for task in stuck:  # the TaskGroup will wait for it: say who holds the exit
                log.error("%s: task %s ignores cancellation; waiting for it", self.name, task.get_name())
                incomplete.append(f"task {task.get_name()}")
        return incomplete


async def shutdown(steps: Sequence[Step], deadline: float, *, service: str = "service") -> list[str]:
    """Run ``steps`` in their order until ``deadline`` (event-loop time); the names of those that did not
    complete. A step that raises is logged with its traceback and the next one runs; at the deadline the
    step under way is cancelled and the rest are skipped (each named in the log)."""
    loop = asyncio.get_running_loop()
    whole = max(0.0, deadline - loop.time())
    incomplete: list[str] = []
    for i, step in enumerate(steps):
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                await step.action()
        except TimeoutError:
            if not timeout.expired():  # the step's own TimeoutError, not the deadline
                log.exception("%s: shutdown step %r failed; going on", service, step.name)
                incomplete.append(step.name)
                continue
            skipped = [s.name for s in steps[i + 1 :]]
            left = ", ".join(skipped) or "none"
            log.error("%s: shutdown step %r overran the %.1f s deadline and was cancelled; skipped: %s",  # noqa: TRY400 (the deadline is the cause)
                      service, step.name, whole, left)  # fmt: skip
            incomplete += [step.name, *skipped]
            break
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the shutdown itself is being cancelled from outside
            log.exception("%s: shutdown step %r was cancelled; going on", service, step.name)
            incomplete.append(step.name)
        except Exception:
            log.exception("%s: shutdown step %r failed; going on", service, step.name)
            incomplete.append(step.name)
    return incomplete


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a daemon's ``main`` (a coroutine function using ``async with Service(...)``) on a new event
    loop; the process exit code: 0 after a clean stop, 1 after a failure or an incomplete shutdown (the
    cause is already logged). Exceptions raised before the service started propagate to the caller."""
    try:
        asyncio.run(main())
    except ServiceError as exc:
        return exc.exit_code
    return EXIT_OK
