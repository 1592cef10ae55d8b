"""The raw limits the benchmarks' figures are bounded by, measured in the same run as the figure (issue 13
item 8): the bare operation under a figure, on this machine at that moment, so a reader sees how close
to the machine each figure is. Machines differ by 30-50 % in crypto speed from day to day (DESIGN §9).

``python bench/limits.py serve PORT`` serves :func:`trivial_app` with uvicorn (the root's server).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from chain_lite.keys import generate_p256
from edgeroot.system import wait_until

# A cached answer the size of a resolution with proof (about 2.1 KB of JSON).
TRIVIAL_BODY = b'{"proof":"' + b"A" * 2100 + b'"}'


def raw_p256_verify() -> float:
    """Raw P-256 verifications per second on one core (``cryptography`` directly, 100-byte messages):
    the limit every signed reading pays once."""
    key = generate_p256()
    public = key.public_key()
    algo = ec.ECDSA(hashes.SHA256())
    cases = [(m, key.sign(m, algo)) for m in (os.urandom(100) for _ in range(500))]
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(4):
            for message, signature in cases:
                public.verify(signature, message, algo)
        rates.append(4 * len(cases) / (time.perf_counter() - start))
    return statistics.median(rates)


def raw_sha256(size: int = 65) -> float:
    """One-shot SHA-256 (hashlib) of ``size`` bytes per second, median of 3: a Merkle node is 65 bytes."""
    data = os.urandom(size)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(100_000):
            hashlib.sha256(data).digest()
        rates.append(100_000 / (time.perf_counter() - start))
    return statistics.median(rates)


def raw_sqlite_inserts(where: Path, rows: int = 20_000, batch: int = 1000, size: int = 200) -> float:
    """Rows of ``size`` random bytes per second into one SQLite table, ``batch`` per committed
    transaction (``executemany``), WAL with ``synchronous=FULL`` as the root's database: the durable
    append under a log integration, without any of its work."""
    path = where / "raw-sqlite.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE leaves (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        data = [(i, os.urandom(size)) for i in range(rows)]
        start = time.perf_counter()
        for i in range(0, rows, batch):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO leaves VALUES (?, ?)", data[i : i + batch])
            conn.execute("COMMIT")
        return rows / (time.perf_counter() - start)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def trivial_app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    """A bare ASGI endpoint: :data:`TRIVIAL_BODY` for any GET, no routing, no work."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(TRIVIAL_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": TRIVIAL_BODY})


def serve_trivial(port: int) -> subprocess.Popen[bytes]:
    """:func:`trivial_app` under uvicorn in its own process on ``port``, listening when this returns."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def exited() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"the trivial ASGI server exited with {proc.returncode}")

    def answers() -> bool:
        import httpx  # noqa: PLC0415

        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until("the trivial ASGI server answering", answers, timeout=30, check=exited)
    return proc


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    import uvicorn

    uvicorn.run(trivial_app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
