"""The raw HTTP limit beside `root run`: a bare ASGI app answering every GET with one cached 2.1 KB body
(about the size of a resolution with proof), served by uvicorn with the same loop and HTTP parser as the
root. bench/root.py drives it with the same wrk load, so a root figure can be read as a share of it."""

from __future__ import annotations

from typing import Any

BODY = b'{"padding": "' + b"x" * 2100 + b'"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
