"""The root node and the witness under systemd: uvicorn speaking sd_notify.

``READY=1`` once the sockets listen (after the app's startup), ``WATCHDOG=1`` with a fresh ``STATUS=``
line from uvicorn's own main loop (so a stuck event loop stops the pings and systemd restarts the
service), ``RELOADING=1`` ... ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when shutdown begins.
Without ``$NOTIFY_SOCKET`` every message is a no-op and SIGHUP still reloads.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from runtime.sdnotify import STATUS_EVERY_S, Notifier, reloading

log = logging.getLogger(__name__)


@dataclass
class Hooks:
    """What the service tells systemd: a one-line status, and what a reload does (returns a summary)."""

    status: Callable[[], str]
    reload: Callable[[], str] | None = None


class NotifyingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hooks: Hooks, notifier: Notifier | None = None) -> None:
        super().__init__(config)
        self.hooks = hooks
        self.notifier = notifier or Notifier()
        self.ping_every = self.notifier.watchdog_interval()
        self._last_ping = 0.0
        self._reload_wanted = False

    def _status(self) -> str:
        try:
            return self.hooks.status()
        except Exception as exc:  # noqa: BLE001 (a status line must never take the service down)
            return f"status unavailable: {exc}"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._want_reload)
        self.notifier.send("READY=1", f"STATUS={self._status()}")
        self._last_ping = time.monotonic()

    def _want_reload(self) -> None:
        self._reload_wanted = True

    async def _reload(self) -> None:
        self._reload_wanted = False
        reloading(self.notifier)
        if self.hooks.reload is None:
            log.info("SIGHUP: nothing to reload")
        else:
            try:
                log.info("reloaded: %s", await asyncio.to_thread(self.hooks.reload))
            except Exception as exc:  # noqa: BLE001 (a bad reload keeps the running configuration)
                log.error("reload failed, keeping the running configuration: %s", exc)  # noqa: TRY400
        self.notifier.send("READY=1", f"STATUS={self._status()}")

    async def on_tick(self, counter: int) -> bool:
        if self._reload_wanted:
            await self._reload()
        now = time.monotonic()
        every = self.ping_every or STATUS_EVERY_S
        if self.started and now - self._last_ping >= every:
            self._last_ping = now
            if self.ping_every is not None:
                self.notifier.send("WATCHDOG=1", f"STATUS={self._status()}")
            else:
                self.notifier.send(f"STATUS={self._status()}")
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        await super().shutdown(sockets)
        # uvicorn re-raises a captured SIGTERM after an orderly shutdown, so the process would die of the
        # signal; the shutdown was complete, so exit 0 like the gateway and the bridge.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def serve(app: FastAPI, listen: str, hooks: Hooks) -> None:
    """Run ``app`` on ``HOST:PORT`` until SIGINT/SIGTERM; one log line per event on stdout (journald)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(
        app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_level="info", access_log=False
    )
    NotifyingServer(config, hooks).run()
