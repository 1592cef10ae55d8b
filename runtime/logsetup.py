"""The one logging setup of edgeroot's daemons: one line per event on stdout, for journald.

Under systemd, stdout is a stream to journald, which reads a ``<N>`` syslog priority prefix at the
start of each line (sd-daemon(3); ``SyslogLevelPrefix=`` defaults to yes, systemd.exec(5)), so
``journalctl -p warning`` shows only warnings and worse. Anywhere else (a terminal, a file, a test's
pipe) the lines stay plain: a prefix there is noise.

journald is detected as systemd.exec(5) says: ``$JOURNAL_STREAM`` holds ``DEVICE:INODE`` of the stream
it connected, and it counts only when stdout is that very stream. The variable is inherited, so a child
whose stdout was redirected to a file still has it, and must not write prefixes into that file.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

FORMAT = "%(levelname)s %(name)s: %(message)s"

SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""Python's levels as syslog priorities (RFC 5424 §6.2.1): crit, err, warning, info, debug."""


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python level; a custom level between two takes the less severe one's."""
    for level in sorted(SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITY[level]
    return SYSLOG_PRIORITY[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """Puts the record's ``<N>`` before every line of it: journald splits a traceback into one entry per
    line, and each would otherwise be logged at the unit's default priority (info)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream ``$JOURNAL_STREAM`` names (``DEVICE:INODE``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no descriptor (a test's StringIO) or a closed one: not the journal
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def worker_format(worker: int | None) -> str:
    """:data:`FORMAT`, naming the worker process when a daemon runs as several (``[worker N]``)."""
    return FORMAT if worker is None else FORMAT.replace(" %(name)s", f" [worker {worker}] %(name)s", 1)


def line_handler(stream: TextIO, fmt: str = FORMAT) -> logging.Handler:
    """One line per event on ``stream`` in ``fmt``, with syslog priority prefixes when it is journald's."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter(fmt) if stream_is_journal(stream) else logging.Formatter(fmt))
    return handler


def configure_logging(level: int = logging.INFO, *, worker: int | None = None) -> None:
    """Send the root logger's records to stdout through :func:`line_handler` (each line naming
    ``worker`` when given: :func:`worker_format`); replaces any setup made before (``force``: a library
    may have configured logging at import)."""
    logging.basicConfig(level=level, handlers=[line_handler(sys.stdout, worker_format(worker))], force=True)
