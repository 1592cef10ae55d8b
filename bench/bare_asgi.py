"""The raw HTTP limit beside `root run`: a bare ASGI app answering every GET with one cached 2.1 KB body
(about the size of a resolution with proof), served by uvicorn with the same loop and HTTP parser as the
root, from `python bare_asgi.py PORT PROCESSES` processes on the port's sockets made as `root run
--workers N` makes them (resolver.http_service.worker_listeners: one SO_REUSEPORT socket each).
bench/root.py drives it with the same wrk load, so a root figure can be read as a share of it."""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn

from resolver.http_service import worker_listeners

BODY = b'{"padding": "' + b"x" * 2100 + b'"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    listeners = worker_listeners("127.0.0.1", port, processes)
    own = listeners[-1]  # the first process serves on the last socket
    for number in range(processes - 1):
        if os.fork() == 0:
            own = listeners[number]  # a child serves too, on its own socket
            break
    for listener in listeners:
        if listener is not own:
            listener.close()
    config = uvicorn.Config(app, loop="asyncio", http="httptools", access_log=False, log_level="warning",
                            lifespan="off")  # fmt: skip
    uvicorn.Server(config).run(sockets=[own])


if __name__ == "__main__":
    main()
