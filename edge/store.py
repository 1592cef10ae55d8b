"""The gateway's SQLite file: readings, blocks, receipts, counters, device keys, quarantine, light client.

One writer thread owns the write connection (see :mod:`edge.ingest`); readers (status, local HTTP, the
syncer) open their own connections. WAL mode with ``synchronous=FULL``: a reading acknowledged to its
sender is on disk. Schema and reads use sqlite-utils; the hot inserts are ``executemany`` inside one
transaction per batch (DESIGN §9: one fsync'd commit per row would cap ingest near 8k/s).

Tables::

    readings    id, signer, subject, counter, received_ms, raw, block (height, NULL until chained)
    blocks      height, block_id, raw (signed header), first_reading, count, state, log_index, receipt
                state: 'chained' (signed locally) -> 'submitted' (root accepted) -> 'anchored' (receipt
                verified against the pinned checkpoint)
    counters    signer -> last counter accepted
    gaps        signer, expected, got, received_ms       (a counter jumped: readings may be missing)
    quarantine  id, received_ms, source, reason, raw (first 8 KiB)
    devices     identifier -> key (SubjectPublicKeyInfo DER), origin ('local' | 'registry'), fetched_ms
    resolutions identifier -> the root's resolve answer with its proofs (JSON), fetched_ms
    meta        key -> value (light-client state, evidence)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.status import BLOCK_STATES, AnchoredBlock, StoreFacts

QUARANTINE_RAW_MAX = 8 * 1024


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def create_schema(path: Path) -> None:
    """Create the tables if they do not exist (safe on every start)."""
    db = sqlite_utils.Database(connect(path))
    db.table("readings").create(
        {
            "id": int,
            "signer": str,
            "subject": str,
            "counter": int,
            "received_ms": int,
            "raw": bytes,
            "block": int,
        },
        pk="id",
        not_null={"signer", "subject", "counter", "received_ms", "raw"},
        if_not_exists=True,
    )
    db.table("readings").create_index(["block"], if_not_exists=True)
    db.table("readings").create_index(["subject", "id"], if_not_exists=True)
    db.table("blocks").create(
        {
            "height": int, "block_id": bytes, "raw": bytes, "first_reading": int, "count": int,
            "time_ms": int, "state": str, "log_index": int, "receipt": str,
        },
        pk="height",
        not_null={"block_id", "raw", "first_reading", "count", "time_ms", "state"},
        if_not_exists=True,
    )  # fmt: skip
    db.table("blocks").create_index(["state", "height"], if_not_exists=True)
    db.table("counters").create(
        {"signer": str, "last": int}, pk="signer", not_null={"last"}, if_not_exists=True
    )
    db.table("gaps").create(
        {"signer": str, "expected": int, "got": int, "received_ms": int},
        not_null={"signer"},
        if_not_exists=True,
    )
    db.table("quarantine").create(
        {"id": int, "received_ms": int, "source": str, "reason": str, "raw": bytes},
        pk="id",
        not_null={"received_ms", "source", "reason", "raw"},
        if_not_exists=True,
    )
    db.table("devices").create(
        {"identifier": str, "key": bytes, "origin": str, "fetched_ms": int},
        pk="identifier",
        not_null={"key", "origin"},
        if_not_exists=True,
    )
    db.table("resolutions").create(
        {"identifier": str, "answer": str, "fetched_ms": int},
        pk="identifier",
        not_null={"answer"},
        if_not_exists=True,
    )
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.conn.close()


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def status(path: Path) -> dict[str, Any]:
    """Backlog and health figures as JSON (:meth:`edge.status.StoreFacts.as_json` of :func:`read_status`)."""
    return read_status(path).as_json()


# --- status facts: what the gateway's snapshot (edge.status), /healthz, /metrics, STATUS= lines and
# `edgeroot gateway status` report from the file. Each reads through the caller's connection.


def count_readings(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])


def count_unchained_readings(conn: sqlite3.Connection) -> int:
    """Readings not yet in a block."""
    return int(conn.execute("SELECT COUNT(*) FROM readings WHERE block IS NULL").fetchone()[0])


def count_blocks_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Every state of :data:`edge.status.BLOCK_STATES`, zero when no block is in it."""
    found = dict(conn.execute("SELECT state, COUNT(*) FROM blocks GROUP BY state").fetchall())
    return {state: int(found.get(state, 0)) for state in BLOCK_STATES}


def last_anchored_block(conn: sqlite3.Connection) -> AnchoredBlock | None:
    row = conn.execute(
        "SELECT height, log_index FROM blocks WHERE state = 'anchored' ORDER BY height DESC LIMIT 1"
    ).fetchone()
    return None if row is None else AnchoredBlock(int(row[0]), int(row[1]))


def count_rejects_by_reason(conn: sqlite3.Connection) -> dict[str, int]:
    """Quarantined inputs by reason, all time."""
    return dict(conn.execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason").fetchall())


def count_gaps(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM gaps").fetchone()[0])


def has_evidence(conn: sqlite3.Connection) -> bool:
    """True once the light client stored two inconsistent signed checkpoints."""
    return read_meta(conn, "evidence") is not None


def read_status(path: Path) -> StoreFacts:
    """The stored status facts, through a connection of their own (any thread; gateway running or not)."""
    conn = connect(path)
    try:
        return StoreFacts(
            readings=count_readings(conn),
            unchained_readings=count_unchained_readings(conn),
            blocks=count_blocks_by_state(conn),
            last_anchored=last_anchored_block(conn),
            rejects=count_rejects_by_reason(conn),
            gaps=count_gaps(conn),
            evidence=has_evidence(conn),
        )
    finally:
        conn.close()
