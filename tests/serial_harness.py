"""Serial lines for tests: pseudo-terminal pairs, and a null-modem cable between two of them."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator


def pty() -> tuple[int, str]:
    """A raw pseudo-terminal: (master fd, slave path for the program under test to open)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    return master, name


def _relay(a: int, b: int, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([a, b], [], [], 0.1)
        for fd in ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: that side's port is not open (yet)
                time.sleep(0.05)
                continue
            os.write(b if fd == a else a, data)


@contextlib.contextmanager
def null_modem() -> Iterator[tuple[str, str]]:
    """Two serial ports wired to each other: whatever one side writes, the other reads."""
    a_master, a_path = pty()
    b_master, b_path = pty()
    stop = threading.Event()
    threading.Thread(target=_relay, args=(a_master, b_master, stop), daemon=True).start()
    try:
        yield a_path, b_path
    finally:
        stop.set()
