"""Wall-clock time as the project writes it everywhere: integer milliseconds since the Unix epoch."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch (reading receipt times, block times, signed-request timestamps)."""
    return time.time_ns() // 1_000_000
