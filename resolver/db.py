"""One small SQL layer over SQLite (default) and PostgreSQL, so the node has one set of queries.

Queries are written once with ``?`` placeholders and the portable subset both engines share
(``INSERT ... ON CONFLICT``, ``RETURNING``); :class:`Database` rewrites placeholders for psycopg. Each
thread gets its own connection (FastAPI runs sync endpoints in a thread pool; sqlite3 connections must
not cross threads). Every unit of work is one :meth:`Database.transaction`.

SQLite runs in WAL mode with ``synchronous=FULL``: an accepted write or block is on disk before the
node answers. Writers take the database lock at ``BEGIN`` (``BEGIN IMMEDIATE``), so read-then-write
checks (a gateway's chain head, an identifier's existence) cannot race. PostgreSQL gets the same effect
from row locks (``SELECT ... FOR UPDATE``) and unique constraints.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg

from resolver import namespace
from resolver.errors import StorageError

Row = tuple[Any, ...]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    identifier TEXT PRIMARY KEY, record {BLOB} NOT NULL, updated_ms BIGINT NOT NULL, skeleton TEXT);
CREATE TABLE IF NOT EXISTS device_keys (key_hash {BLOB} PRIMARY KEY, identifier TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS device_keys_by_identifier ON device_keys (identifier);
CREATE TABLE IF NOT EXISTS nonces (nonce {BLOB} PRIMARY KEY, expires_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_ms);
CREATE TABLE IF NOT EXISTS pending (
    id {SERIAL}, leaf {BLOB} NOT NULL, ref {BLOB}, received_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx BIGINT PRIMARY KEY, leaf {BLOB} NOT NULL, kind SMALLINT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level SMALLINT NOT NULL, idx BIGINT NOT NULL, hash {BLOB} NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS history (
    identifier TEXT NOT NULL, idx BIGINT NOT NULL, record {BLOB}, PRIMARY KEY (identifier, idx));
CREATE INDEX IF NOT EXISTS history_by_idx ON history (idx);
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY, note {BLOB} NOT NULL, published SMALLINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    block_id {BLOB} PRIMARY KEY, gateway TEXT NOT NULL, height BIGINT NOT NULL, raw {BLOB} NOT NULL,
    body {BLOB}, idx BIGINT, received_ms BIGINT NOT NULL, UNIQUE (gateway, height));
CREATE TABLE IF NOT EXISTS fork_evidence (
    block_id {BLOB} PRIMARY KEY, gateway TEXT NOT NULL, height BIGINT NOT NULL, raw {BLOB} NOT NULL,
    conflicts_with {BLOB} NOT NULL, received_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS witness_sizes (name TEXT PRIMARY KEY, size BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS epcis_events (
    hash_id TEXT PRIMARY KEY, leaf {BLOB} NOT NULL, signer TEXT NOT NULL, authority TEXT NOT NULL,
    event_time_ms BIGINT NOT NULL, biz_step TEXT, idx BIGINT, received_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS epcis_events_by_idx ON epcis_events (idx);
CREATE TABLE IF NOT EXISTS epcis_mentions (
    identifier TEXT NOT NULL, role TEXT NOT NULL, hash_id TEXT NOT NULL, attribution TEXT NOT NULL,
    PRIMARY KEY (identifier, role, hash_id));
CREATE INDEX IF NOT EXISTS epcis_mentions_by_event ON epcis_mentions (hash_id);
CREATE TABLE IF NOT EXISTS epcis_captures (
    capture_id TEXT PRIMARY KEY, hash_ids TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS anchor_heads (origin TEXT PRIMARY KEY, size BIGINT NOT NULL, root {BLOB} NOT NULL);
CREATE TABLE IF NOT EXISTS anchors (
    origin TEXT NOT NULL, size BIGINT NOT NULL, root {BLOB} NOT NULL, note {BLOB} NOT NULL,
    leaf_hash {BLOB} NOT NULL UNIQUE, idx BIGINT, cosigned_s BIGINT NOT NULL, received_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, size));
CREATE TABLE IF NOT EXISTS anchor_evidence (
    origin TEXT NOT NULL, size BIGINT NOT NULL, cosigned_note {BLOB} NOT NULL, refused_note {BLOB} NOT NULL,
    received_ms BIGINT NOT NULL);
"""

# After the tables, and after a database made before ``records.skeleton`` existed has gained the column.
# Unique, so that two concurrent look-alike creates cannot both pass (resolver.namespace).
_NAMESPACE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS records_by_skeleton ON records (skeleton)"

_DIALECT = {
    "sqlite": {"BLOB": "BLOB", "SERIAL": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"BLOB": "BYTEA", "SERIAL": "BIGSERIAL PRIMARY KEY"},
}


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql.replace(" FOR UPDATE", ""), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql.replace(" FOR UPDATE", ""), params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(sql.replace(" FOR UPDATE", ""), params).fetchall())


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self._conn.execute(self._sql(sql), params).fetchone()
        return None if row is None else tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows = self._conn.execute(self._sql(sql), params).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


class Database:
    """A database URL (``sqlite:///path`` or ``postgresql://...``) with per-thread connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path: Path | None = Path(url[len("sqlite:///") :])
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = None
        else:
            raise StorageError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            if self.dialect == "sqlite":
                assert self.path is not None
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            else:
                conn = psycopg.connect(self.url, autocommit=True)
        except (sqlite3.Error, psycopg.Error) as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @property
    def safe_url(self) -> str:
        """The URL without a password, for logs and errors."""
        if "@" in self.url and self.dialect == "postgresql":
            scheme, _, rest = self.url.partition("://")
            return f"{scheme}://***@{rest.partition('@')[2]}"
        return self.url

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Tx]:
        """One transaction; committed on success, rolled back on any exception."""
        conn = self._connect()
        try:
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield _SqliteTx(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                with conn.transaction():
                    yield _PgTx(conn)
        except (sqlite3.Error, psycopg.Error) as exc:
            raise StorageError(f"database error: {exc}") from exc

    def create_schema(self) -> None:
        """Create what is missing, bring an older database's schema up to date, refresh derived data."""
        schema = _SCHEMA.format(**_DIALECT[self.dialect])
        with self.transaction() as tx:
            for stmt in filter(None, (s.strip() for s in schema.split(";"))):
                tx.execute(stmt)
            self._add_column(tx, "records", "skeleton", "TEXT")
            tx.execute(_NAMESPACE_INDEX)
            namespace.refresh(tx)

    def _add_column(self, tx: Tx, table: str, column: str, sql_type: str) -> None:
        if self.dialect == "postgresql":
            tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
            return
        # SQLite has no ADD COLUMN IF NOT EXISTS.
        if not any(row[1] == column for row in tx.all(f"PRAGMA table_info({table})")):
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error, psycopg.Error):  # best effort at shutdown
                    conn.close()
            self._all.clear()
        self._local = threading.local()
