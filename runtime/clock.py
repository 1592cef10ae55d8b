"""Wall-clock time as the project writes it everywhere: integer milliseconds since the Unix epoch."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """Milliseconds since the epoch (reading receipt times, block times, signed-request timestamps)."""
    return time.time_ns() // 1_000_000


def parse_instant_ms(text: str) -> int:
    """An instant as the API and the CLI accept it: integer milliseconds since the epoch (``1764489600000``)
    or an RFC 3339 timestamp with its offset (``2026-11-30T08:00:00Z``, ``2026-11-30T16:00:00+08:00``).

    Raises :class:`ValueError` naming the text; a timestamp without an offset is refused (whose clock?).
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither milliseconds since the epoch nor RFC 3339") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add Z or +08:00)")
    return (when - _EPOCH) // timedelta(milliseconds=1)  # exact: no float on the way
