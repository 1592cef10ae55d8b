"""A real sd_notify socket for daemons started by a test: what systemd would hear, in order."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from edgeroot.system import START_DEADLINE_S


class NotifySocket:
    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def env(self, watchdog_s: float = 1.0) -> dict[str, str]:
        """The environment systemd gives a Type=notify service with ``WatchdogSec=``."""
        return {**os.environ, "NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(watchdog_s * 1_000_000))}

    def collect(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def wait_for(self, field: str, timeout: float = START_DEADLINE_S) -> str:
        """Collect until a message holds ``field`` (e.g. ``READY=1``); that message."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for message in self.messages:
                if field in message.split("\n"):
                    return message
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
        raise AssertionError(f"no {field} within {timeout} s; heard {self.messages}")

    @property
    def text(self) -> str:
        return "\n".join(self.messages)

    def close(self) -> None:
        self.sock.close()
