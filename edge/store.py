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
    """Backlog and health figures for ``gateway status``, /healthz and STATUS= lines."""
    db = sqlite_utils.Database(connect(path))
    try:
        q = db.conn.execute

        def one(sql: str, *args: Any) -> Any:
            return q(sql, args).fetchone()[0]

        by_state = dict(q("SELECT state, COUNT(*) FROM blocks GROUP BY state").fetchall())
        rejects = dict(q("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason").fetchall())
        last_anchor = q(
            "SELECT height, log_index FROM blocks WHERE state = 'anchored' ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return {
            "readings": one("SELECT COUNT(*) FROM readings"),
            "unchained_readings": one("SELECT COUNT(*) FROM readings WHERE block IS NULL"),
            "blocks": {s: by_state.get(s, 0) for s in ("chained", "submitted", "anchored")},
            "unanchored_blocks": by_state.get("chained", 0) + by_state.get("submitted", 0),
            "last_anchored": None
            if last_anchor is None
            else {"height": last_anchor[0], "log_index": last_anchor[1]},
            "rejects": rejects,
            "gaps": one("SELECT COUNT(*) FROM gaps"),
            "evidence": read_meta(db.conn, "evidence") is not None,
        }
    finally:
        db.conn.close()
