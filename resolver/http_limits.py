"""Limits on what one HTTP client can hold of the root (and witness): connections, header bytes, time.

The values only (no uvicorn import: ``root.toml`` is read by commands that serve nothing); the
protocol enforcing them is :class:`resolver.http_service.LimitedHttpProtocol`.

uvicorn's httptools protocol (the one ``http="auto"`` picks when httptools is installed, as
``uvicorn[standard]`` installs it) has none of these for a connection that has not finished a request:

* no timer until the first response: an idle or half-sent connection (slowloris) is never closed;
* no header-size limit: llhttp hands header bytes over as they come and httptools accumulates an
  unterminated header in memory without bound (``h11_max_incomplete_event_size`` only applies to h11);
* ``limit_concurrency`` is checked only once a request's headers are complete, so connections that never
  send one pile up until ``accept`` fails with EMFILE and nothing answers, ``/healthz`` included.

``LimitedHttpProtocol`` adds them to that protocol: a connection above the cap is answered 503 and
closed at once (before descriptors run out); a request head above ``max_header_bytes`` is answered 431;
a request (head and body) not received within ``request_timeout_s`` of its first byte, or of the
connection's opening, is answered 408 (or just closed, once the app has the request) and closed. Once a
request is complete, the app's time is its own and uvicorn's keep-alive timeout takes over after the
response.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

FD_RESERVE = 128
"""Descriptors kept out of the connection cap: the database (SQLite keeps the file, its WAL and shm
open per thread-pool connection), the listening sockets, the witness clients, journald, imports."""
MIN_CONNECTIONS = 16
MIN_BACKLOG = 8
MAX_BACKLOG = 2048
"""uvicorn's default listen backlog."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one daemon's HTTP server allows (``[http]`` of ``root.toml``; the witness uses the defaults)."""

    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    request_timeout_s: float = 10.0
    keep_alive_s: int = 5

    def descriptor_budget(self) -> tuple[int, int]:
        """The connection cap and the listen backlog, from ``max_connections`` and the process's
        descriptor limit (RLIMIT_NOFILE, soft) at start.

        Beyond :data:`FD_RESERVE`, half the descriptors may be held connections and a quarter is kept
        for connections accepted but not yet refused: asyncio accepts up to ``backlog`` connections per
        loop iteration and a refused one gives its descriptor back about three iterations later, so at
        most ``3 * backlog`` are in that state. The cap is thus met, and answered with 503, before
        ``accept`` fails with EMFILE.
        """
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections, MAX_BACKLOG
        spare = max(0, soft - FD_RESERVE)
        cap = max(MIN_CONNECTIONS, min(self.max_connections, spare // 2))
        backlog = max(MIN_BACKLOG, min(MAX_BACKLOG, (spare - cap) // 4))
        return cap, backlog


DEFAULT = HttpLimits()
"""The defaults, for declarations (``HttpLimits.max_connections`` is a slot descriptor, not the value)."""
