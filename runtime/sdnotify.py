"""systemd's notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STATUS=..., RELOADING=1, STOPPING=1.

A datagram to the socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). Without that variable (not under systemd, or ``Type=simple``) every call is a no-op.
Fifteen lines of standard library: no dependency needed. When to send what (READY, WATCHDOG, STATUS,
RELOADING, STOPPING) is :class:`runtime.service.Service`'s job.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when there is no notify socket."""
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(self.address)
            sock.sendall("\n".join(fields).encode())
        return True

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half the watchdog timeout in seconds (how often to ping), or None when no watchdog is set."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000


STATUS_EVERY_S = 5.0  # STATUS= refresh when no watchdog is configured (runtime.service sends it)
