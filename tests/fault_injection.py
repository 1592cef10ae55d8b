"""Test-only fault injection: run an ``edgeroot`` command whose named Service task dies on SIGUSR1.

    python -m tests.fault_injection TASK edgeroot-arguments...
    python -m tests.fault_injection ingest gateway run --state DIR

Why this way: no product code carries a test hook. The real daemon runs in its own process on the real
:class:`runtime.service.Service`; only ``Service.spawn`` is wrapped, here, so that the task named TASK
raises :class:`InjectedFault` when the test sends SIGUSR1 (the daemon's real coroutine under it is
cancelled first, as a crash would leave it). What dies is the daemon's own task at a moment the test
chooses: reproducible, and exactly "an inner task crashed" as the Service sees it. The SIGUSR1 handler
is installed when the task is spawned, before READY=1, so a test that waits for READY=1 never hits
SIGUSR1's default action (which would end the process in a way the tests tell apart: no exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from edgeroot.cli import main
from runtime.service import Service


class InjectedFault(Exception):
    """Raised inside the chosen task when the test sends SIGUSR1."""


async def _dies_on(hit: asyncio.Event, name: str, coro: Coroutine[Any, Any, object]) -> object:
    real = asyncio.ensure_future(coro)
    signalled = asyncio.ensure_future(hit.wait())
    try:
        await asyncio.wait({real, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if real.done():
            return real.result()
        real.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await real
        raise InjectedFault(f"task {name} killed by the test (SIGUSR1)")
    finally:
        signalled.cancel()
        real.cancel()


def arm(task: str) -> None:
    spawn = Service.spawn

    def spawn_with_fault(
        self: Service, name: str, coro: Coroutine[Any, Any, object], *, forever: bool = True
    ) -> asyncio.Task[None]:
        if name == task:
            hit = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, hit.set)
            coro = _dies_on(hit, name, coro)
        return spawn(self, name, coro, forever=forever)

    Service.spawn = spawn_with_fault  # type: ignore[method-assign]


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
