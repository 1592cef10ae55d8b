"""The root node and the witness as daemons: uvicorn as one task of :class:`runtime.service.Service`.

The Service owns the lifecycle (signals, sd_notify, the shutdown deadline, the exit code); this module
supplies what is particular to an HTTP app:

* start: uvicorn's ``Server.serve()`` runs as the task ``http`` (uvicorn's own signal handling is
  switched off: the Service is the one owner of SIGTERM/SIGINT/SIGHUP and of the second-signal rule);
  the app's background work (the root's sequencer) starts from its lifespan as Service tasks through
  :attr:`Hooks.spawn`. ``READY=1`` only once the sockets listen.
* status and reload: the app's :class:`Hooks` (``app.state.hooks``); the reload runs in a thread (it
  reads files).
* stop, one step under the deadline: ``server.should_exit``; uvicorn stops accepting, finishes the
  requests under way (at most half the deadline), runs the app's shutdown (sequencer, database), and
  the ``http`` task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI

from runtime.service import Service, Step, TextSource, run_service

log = logging.getLogger(__name__)
STOP_DEADLINE_S = 20.0
"""The whole shutdown's deadline: below ``TimeoutStopSec=30`` of the root and witness units."""

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def plain_task(name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A background task outside any Service (an app served by a test's server thread)."""
    return asyncio.create_task(coro, name=name)


@dataclass
class Hooks:
    """What an app tells the service: a one-line status, what a reload does (returns a summary), and how
    the app starts its background tasks (set to the Service's ``spawn`` when served by :func:`serve`, so
    a background task that dies stops the daemon loudly)."""

    status: Callable[[], str]
    reload: Callable[[], str] | None = None
    spawn: Spawn = field(default=plain_task)


class _Server(uvicorn.Server):
    """uvicorn, without its signal handlers, telling when its sockets listen."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The Service handles the signals; uvicorn would replace its handlers and re-raise the signal
        # after an orderly shutdown (the process would then die of it instead of exiting 0).
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


async def _run(app: FastAPI, name: str, listen: str, hooks: Hooks) -> None:
    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(
        app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_level="info", access_log=False,
        timeout_graceful_shutdown=int(STOP_DEADLINE_S / 2),
    )  # fmt: skip
    server = _Server(config)
    reload_hook = hooks.reload
    reload: TextSource | None = None
    if reload_hook is not None:

        async def reload_in_thread() -> str:
            return await asyncio.to_thread(reload_hook)

        reload = reload_in_thread
    async with Service(name, status=hooks.status, reload=reload, stop_deadline_s=STOP_DEADLINE_S) as service:
        hooks.spawn = service.spawn
        http = service.spawn("http", server.serve())

        async def stop_http() -> None:
            server.should_exit = True
            await asyncio.wait({http})

        service.shutdown_order(Step("stop http (finish requests, the app's shutdown)", stop_http))
        await server.listening.wait()  # a bind failure ends the http task, which cuts this wait short
        await service.serve()


def serve(app: FastAPI, name: str, listen: str, hooks: Hooks) -> int:
    """Run ``app`` on ``HOST:PORT`` as the daemon ``name`` until SIGTERM/SIGINT; one log line per event on
    stdout (journald); the process exit code (:func:`runtime.service.run_service`)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    return run_service(lambda: _run(app, name, listen, hooks))
