"""A local MQTT broker for ``edgeroot demo`` and the tests: mosquitto when one is installed, else amqtt.

:class:`Mosquitto` runs the ``mosquitto`` binary as a child process on a loopback port with the
configuration operators install, :data:`SHIPPED_CONFIG` (systemd/mosquitto-edgeroot.conf, shipped as
package data), plus only a listener and a persistence directory of its own.

:class:`EmbeddedBroker` runs amqtt (pure Python) on its own event loop in a background thread of this
process. Light use only: DESIGN §9 measured it at 5–9k msgs/s with QoS 1 stalling silently after
~70k messages, so benchmarks and fault drills use mosquitto. It is optional: ``pip install 'edgeroot[demo]'``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.resources
import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgeroot.system import HarnessError, free_port, wait_until

SHIPPED_CONFIG = "mosquitto-edgeroot.conf"
"""The broker configuration for a gateway box, in this package (``importlib.resources``) so an installed
edgeroot finds it; systemd/mosquitto-edgeroot.conf is the same file (tests/test_broker_config.py)."""


def shipped_config() -> str:
    """The text of :data:`SHIPPED_CONFIG`, verbatim."""
    return importlib.resources.files("edgeroot").joinpath(SHIPPED_CONFIG).read_text(encoding="utf-8")


class BrokerUnavailable(HarnessError):
    """Neither mosquitto nor amqtt is available here, or the broker did not start."""


class LocalBroker(Protocol):
    host: str
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():  # Debian installs it outside a user's PATH
        found = "/usr/sbin/mosquitto"
    return found


def wait_listening(
    host: str, port: int, alive: Callable[[], bool] | None = None, timeout: float = 10.0
) -> None:
    def exited() -> None:
        if alive is not None and not alive():
            raise BrokerUnavailable("the broker exited at start")

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        return False

    wait_until(f"the broker listening on {host}:{port}", listening, timeout=timeout, check=exited)


class Mosquitto:
    """mosquitto as a child process; ``persistence`` keeps sessions and queued messages across restarts."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistence: bool = True, settings: str | None = None
    ) -> None:
        """``settings``: the broker's configuration instead of :func:`shipped_config` (drills that show
        what mosquitto's defaults or another in-flight window do); without ``persistence`` the
        ``persistence`` lines of the settings are left out."""
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerUnavailable("no mosquitto binary on PATH")
        self.binary, self.host, self.port = binary, "127.0.0.1", port or free_port()
        self.conf = workdir / "mosquitto.conf"
        text = shipped_config() if settings is None else settings
        if not persistence:
            text = "".join(line for line in text.splitlines(True) if not line.startswith("persistence "))
        # The per-run part: a loopback listener (mosquitto 2 refuses anonymous clients on a listener
        # unless told) and a persistence directory of this run's own.
        self.conf.write_text(
            f"{text}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            + (f"persistence_location {workdir}/\n" if persistence else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 (the installed mosquitto, our own config file)
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        proc = self.proc
        wait_listening(self.host, self.port, alive=lambda: proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class EmbeddedBroker:
    """amqtt inside this process, anonymous, on loopback."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 (optional dependency)
        except ImportError as exc:
            raise BrokerUnavailable(
                "no mosquitto on PATH and the embedded broker (amqtt) is not installed: "
                "pip install 'edgeroot[demo]', or install mosquitto"
            ) from exc
        self.host, self.port = host, port or free_port()
        self._config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker_class = Broker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self, timeout: float = 10.0) -> None:
        logging.getLogger("amqtt").setLevel(logging.WARNING)  # it logs every connection at INFO
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-mqtt", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        wait_listening(self.host, self.port)

    async def _start(self) -> None:
        self._broker = self._broker_class(self._config)
        await self._broker.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(timeout)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._loop = self._thread = None


def local_broker(workdir: Path, *, embedded: bool = False, persistence: bool = True) -> LocalBroker:
    """mosquitto when installed (unless ``embedded``), else the embedded amqtt broker; not yet started.
    ``persistence`` (mosquitto only) keeps sessions and queued messages across broker restarts."""
    if not embedded and mosquitto_binary() is not None:
        return Mosquitto(workdir, persistence=persistence)
    return EmbeddedBroker()
