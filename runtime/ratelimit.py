"""Log a misbehaving peer's input once per reason per interval, with a count of what was held back.

Logging policy (STYLE 10): bad input is WARNING, but one line per bad message would let any device
flood the journal. Counters (Prometheus) count every event; the log says what and how often.
"""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, reason: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, reason, message, *args)

    def error(self, reason: str, message: str, *args: object) -> None:
        """For our own failure met by every request while it lasts (a database down): ERROR, rate-limited."""
        self.log(logging.ERROR, reason, message, *args)

    def log(self, level: int, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(reason, -self.every_s) < self.every_s:
                self._held[reason] = self._held.get(reason, 0) + 1
                return
            held = self._held.pop(reason, 0)
            self._last[reason] = now
        suffix = f" [+{held} more since last logged]" if held else ""
        self.logger.log(level, message + "%s", *args, suffix)
