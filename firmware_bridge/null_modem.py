"""Serial lines without hardware: pseudo-terminal pairs, and a null-modem cable between two of them.

``edgeroot demo`` wires a simulated device to the bridge with :func:`null_modem`; the tests use it too.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator


def pty() -> tuple[int, str]:
    """A raw pseudo-terminal: (non-blocking master fd, slave path for the program under test to open)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    # Non-blocking: the program opening the slave flushes its input (pyserial does), so data that made
    # select() report "readable" can be gone by the time we read; a blocking read would then hang.
    os.set_blocking(master, False)
    return master, name


def read_some(fd: int) -> bytes:
    """What the master has now; b"" when nothing (flushed, or the slave side is not open: EIO)."""
    try:
        return os.read(fd, 4096)
    except (BlockingIOError, OSError):
        return b""


def write_all(fd: int, data: bytes, timeout: float = 10.0) -> None:
    """Write everything, waiting while the other side is slow to read."""
    deadline = time.monotonic() + timeout
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("the serial peer stopped reading") from None
            select.select([], [fd], [], 0.1)


def _relay(a: int, b: int, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([a, b], [], [], 0.1)
        for fd in ready:
            data = read_some(fd)
            if not data:
                time.sleep(0.05)
                continue
            with contextlib.suppress(TimeoutError, OSError):
                write_all(b if fd == a else a, data, timeout=2.0)


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
