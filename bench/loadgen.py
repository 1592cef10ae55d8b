"""A small HTTP/1.1 keep-alive load generator, run as its own process by bench/root.py.

``python bench/loadgen.py URL_BASE PATHS_FILE SECONDS CONNECTIONS`` requests the paths (one per line)
round-robin over ``CONNECTIONS`` keep-alive connections for ``SECONDS`` and prints one JSON line:
requests, errors, requests/s and latency percentiles in milliseconds. Raw asyncio streams keep the
client cheap, so on a 2-core machine it leaves the server most of a core.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


async def _worker(  # noqa: PLR0917 (one worker's whole state, passed once)
    host: str, port: int, paths: list[str], offset: int, stop_at: float, lat: list[float]
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    i = offset
    try:
        while time.perf_counter() < stop_at:
            path = paths[i % len(paths)]
            i += 7919  # a prime stride spreads workers over the id space
            start = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
            if status not in (200, 404):
                errors += 1
    finally:
        writer.close()
    return errors


async def main(base: str, paths_file: str, seconds: float, connections: int) -> None:
    url = urlsplit(base)
    paths = [line.strip() for line in open(paths_file) if line.strip()]  # noqa: SIM115 (read once, small script)
    lat: list[float] = []
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    errors = await asyncio.gather(
        *(
            _worker(url.hostname or "127.0.0.1", url.port or 80, paths, k * 104729, stop_at, lat)
            for k in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [0.0] * 99
    print(
        json.dumps(
            {
                "requests": len(lat),
                "errors": sum(errors),
                "rps": len(lat) / elapsed,
                "p50_ms": q[49] * 1000,
                "p99_ms": q[98] * 1000,
                "max_ms": lat[-1] * 1000 if lat else 0.0,
            }
        )
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio works too, just slower
        pass
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
