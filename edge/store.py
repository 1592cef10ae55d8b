"""The gateway's SQLite file: readings, blocks, receipts, counters, device keys, quarantine, light client.

One writer thread owns the write connection (see :mod:`edge.ingest`); readers (status, local HTTP, the
syncer) open their own connections. WAL mode with ``synchronous=FULL``: a reading acknowledged to its
sender is on disk. Schema (:data:`SCHEMA`) and reads are plain SQL; the hot inserts are ``executemany``
inside one transaction per batch (DESIGN §9: one fsync'd commit per row would cap ingest near 8k/s).

Tables::

    readings    id, signer, subject, counter, received_ms, raw, block (height, NULL until chained)
    blocks      height, block_id, raw (signed header), first_reading, count, state, log_index, receipt
                state: 'chained' (signed locally) -> 'submitted' (root accepted) -> 'anchored' (receipt
                verified against the pinned checkpoint)
    counters    signer -> last counter accepted
    counter_resets  id, signer, to_counter (NULL: forgotten), previous, requested_ms, requested_by, reason,
                applied_ms (NULL until the writer applied it): operators' resets, kept as an audit trail
    gaps        signer, expected, got, received_ms       (a counter jumped: readings may be missing)
    quarantine  id, received_ms, source, reason, raw (first 8 KiB)
    devices     identifier -> key (SubjectPublicKeyInfo DER), origin ('local' | 'registry'), fetched_ms
    resolutions identifier -> the root's resolve answer with its proofs (JSON), fetched_ms
    meta        key -> value (light-client state, evidence, the all-time count of duplicates)
    held        id (arrival order), signer, source, received_ms, raw: readings acknowledged as held while
                their signer's key is looked up, judged (and deleted) once it ends (D-059)
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain_lite import merkle
from chain_lite.block import parse_block
from edge.status import BLOCK_STATES, AnchoredBlock, CounterReset, DeviceOverview, StoreFacts
from runtime.clock import now_ms

QUARANTINE_RAW_MAX = 8 * 1024


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


SCHEMA = """
CREATE TABLE IF NOT EXISTS "readings" (
   "id" INTEGER PRIMARY KEY,
   "signer" TEXT NOT NULL,
   "subject" TEXT NOT NULL,
   "counter" INTEGER NOT NULL,
   "received_ms" INTEGER NOT NULL,
   "raw" BLOB NOT NULL,
   "block" INTEGER
);
CREATE INDEX IF NOT EXISTS "idx_readings_block" ON "readings" ("block");
CREATE INDEX IF NOT EXISTS "idx_readings_subject_id" ON "readings" ("subject", "id");
-- Evidence export reads one device's readings by arrival time (GET /v1/readings, D-072).
CREATE INDEX IF NOT EXISTS "idx_readings_subject_received_ms" ON "readings" ("subject", "received_ms");
-- A counter at or below the last is looked up here: a resend of a stored reading or a replay (D-052).
CREATE INDEX IF NOT EXISTS "idx_readings_signer_counter" ON "readings" ("signer", "counter");
CREATE TABLE IF NOT EXISTS "blocks" (
   "height" INTEGER PRIMARY KEY,
   "block_id" BLOB NOT NULL,
   "raw" BLOB NOT NULL,
   "first_reading" INTEGER NOT NULL,
   "count" INTEGER NOT NULL,
   "time_ms" INTEGER NOT NULL,
   "state" TEXT NOT NULL,
   "log_index" INTEGER,
   "receipt" TEXT
);
CREATE INDEX IF NOT EXISTS "idx_blocks_state_height" ON "blocks" ("state", "height");
CREATE TABLE IF NOT EXISTS "counters" (
   "signer" TEXT PRIMARY KEY,
   "last" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS "gaps" (
   "signer" TEXT NOT NULL,
   "expected" INTEGER,
   "got" INTEGER,
   "received_ms" INTEGER
);
CREATE TABLE IF NOT EXISTS "quarantine" (
   "id" INTEGER PRIMARY KEY,
   "received_ms" INTEGER NOT NULL,
   "source" TEXT NOT NULL,
   "reason" TEXT NOT NULL,
   "raw" BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS "devices" (
   "identifier" TEXT PRIMARY KEY,
   "key" BLOB NOT NULL,
   "origin" TEXT NOT NULL,
   "fetched_ms" INTEGER
);
CREATE TABLE IF NOT EXISTS "resolutions" (
   "identifier" TEXT PRIMARY KEY,
   "answer" TEXT NOT NULL,
   "fetched_ms" INTEGER
);
CREATE TABLE IF NOT EXISTS "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
CREATE TABLE IF NOT EXISTS "counter_resets" (
   "id" INTEGER PRIMARY KEY,
   "signer" TEXT NOT NULL,
   "to_counter" INTEGER,
   "previous" INTEGER,
   "requested_ms" INTEGER NOT NULL,
   "requested_by" TEXT NOT NULL,
   "reason" TEXT NOT NULL,
   "applied_ms" INTEGER
);
CREATE TABLE IF NOT EXISTS "held" (
   "id" INTEGER PRIMARY KEY,
   "signer" TEXT NOT NULL,
   "source" TEXT NOT NULL,
   "received_ms" INTEGER NOT NULL,
   "raw" BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_held_signer_id" ON "held" ("signer", "id");
"""
"""The gateway's tables, as plain SQL (D-152): the same tables, columns, types and index names that
sqlite-utils made before (tests/test_gateway_store.py compares them), so a file made by either is the
other's; every statement is ``IF NOT EXISTS``, so it runs on every start."""


def create_schema(path: Path) -> None:
    """Create the tables if they do not exist (safe on every start)."""
    conn = connect(path)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


# --- Reads for tools and tests --------------------------------------------------------------------------
# The demo, the benchmarks and the end-to-end tests read the gateway's state through these functions, never
# through SQL of their own: the tables stay this module's business and can change without breaking them.
# Each takes an open connection (``reader(path)``), so a caller polling in a tight loop (the latency
# benchmark) does not pay for a new connection on every look.


@contextlib.contextmanager
def reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection for the read functions below, closed on exit. Plain: the journal mode is the file's
    (WAL, set by the writer), and a reader polling while the gateway ingests should not ask to set it."""
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class StoredReading:
    id: int
    signer: str
    subject: str
    counter: int
    received_ms: int
    raw: bytes
    block: int | None  # the height of the block holding it; None until chained


@dataclass(frozen=True, slots=True)
class StoredBlock:
    height: int
    block_id: bytes
    raw: bytes  # the signed header
    count: int
    state: str  # 'chained' | 'submitted' | 'anchored'
    log_index: int | None
    receipt: str | None  # C2SP tlog-proof text, once anchored


@dataclass(frozen=True, slots=True)
class ReadingInBlock:
    """A reading, the block that holds it and that block's readings in order (to prove it in the block)."""

    reading: StoredReading
    block: StoredBlock
    index: int
    block_readings: tuple[bytes, ...]


_READING = "SELECT id, signer, subject, counter, received_ms, raw, block FROM readings"
_BLOCK = "SELECT height, block_id, raw, count, state, log_index, receipt FROM blocks"


def _reading(row: Any) -> StoredReading:
    return StoredReading(int(row[0]), row[1], row[2], int(row[3]), int(row[4]), bytes(row[5]), row[6])


def _block(row: Any) -> StoredBlock:
    return StoredBlock(int(row[0]), bytes(row[1]), bytes(row[2]), int(row[3]), row[4], row[5], row[6])


def latest(conn: sqlite3.Connection) -> dict[str, StoredReading]:
    """The newest stored reading of each device (by subject)."""
    newest = f"{_READING} WHERE id IN (SELECT MAX(id) FROM readings GROUP BY subject)"  # noqa: S608 (constants)
    rows = conn.execute(newest).fetchall()
    return {r.subject: r for r in map(_reading, rows)}


def readings(
    conn: sqlite3.Connection,
    signer: str | None = None,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[StoredReading]:
    """Stored readings in arrival order: of one signer if given, received in ``[since_ms, until_ms)`` if
    given. Pruned readings are gone (their blocks still commit to them)."""
    where: list[str] = ["1"]
    args: list[str | int] = []
    if signer is not None:
        where.append("signer = ?")
        args.append(signer)
    if since_ms is not None:
        where.append("received_ms >= ?")
        args.append(since_ms)
    if until_ms is not None:
        where.append("received_ms < ?")
        args.append(until_ms)
    query = f"{_READING} WHERE {' AND '.join(where)} ORDER BY id"
    return [_reading(r) for r in conn.execute(query, args)]


def has_reading(conn: sqlite3.Connection, signer: str, counter: int) -> bool:
    """Whether the signer's reading with this counter is stored (durable)."""
    row = conn.execute("SELECT 1 FROM readings WHERE signer = ? AND counter = ?", (signer, counter))
    return row.fetchone() is not None


def block_state_of(conn: sqlite3.Connection, signer: str, counter: int) -> str | None:
    """The state of the block holding the signer's reading with this counter; None if not in a block."""
    row = conn.execute(
        "SELECT b.state FROM readings r JOIN blocks b ON b.height = r.block "
        "WHERE r.signer = ? AND r.counter = ?",
        (signer, counter),
    ).fetchone()
    return None if row is None else str(row[0])


def blocks(conn: sqlite3.Connection) -> list[StoredBlock]:
    """Every block of the local chain, by height."""
    return [_block(r) for r in conn.execute(f"{_BLOCK} ORDER BY height")]


def block_readings(conn: sqlite3.Connection, height: int) -> list[bytes]:
    """The envelopes a block commits to, in its order (empty once pruned)."""
    query = "SELECT raw FROM readings WHERE block = ? ORDER BY id"
    return [bytes(r[0]) for r in conn.execute(query, (height,))]


def anchored_reading(conn: sqlite3.Connection, signer: str) -> ReadingInBlock | None:
    """The signer's first reading whose block is anchored, with that block (and its receipt)."""
    row = conn.execute(
        "SELECT r.id, r.signer, r.subject, r.counter, r.received_ms, r.raw, r.block FROM readings r "
        "JOIN blocks b ON b.height = r.block WHERE r.signer = ? AND b.state = 'anchored' "
        "ORDER BY r.id LIMIT 1",
        (signer,),
    ).fetchone()
    if row is None:
        return None
    found = _reading(row)
    block = _block(conn.execute(f"{_BLOCK} WHERE height = ?", (found.block,)).fetchone())
    members = conn.execute("SELECT id, raw FROM readings WHERE block = ? ORDER BY id", (block.height,))
    ids, bodies = zip(*((int(i), bytes(raw)) for i, raw in members), strict=True)
    return ReadingInBlock(found, block, ids.index(found.id), bodies)


# --- evidence (D-072): one device's readings by arrival time, each with its block and its inclusion proof


@dataclass(frozen=True, slots=True)
class ProvenReading:
    """A stored reading with what proves it: its place in its block and the RFC 6962 inclusion proof of
    its exact bytes in that block's readings tree. ``index`` and ``proof`` are None until it is chained."""

    reading: StoredReading
    index: int | None
    proof: tuple[bytes, ...] | None


@dataclass(frozen=True, slots=True)
class EvidencePage:
    """One page of :func:`evidence`: the readings in arrival order, every block they are in (by height),
    and the id to continue after (None: the range is exhausted)."""

    readings: tuple[ProvenReading, ...]
    blocks: dict[int, StoredBlock]
    next_after: int | None


def evidence(
    conn: sqlite3.Connection, subject: str, *, from_ms: int, to_ms: int, after: int = 0, limit: int = 500
) -> EvidencePage:
    """The readings about ``subject`` received in ``[from_ms, to_ms)`` (the gateway's arrival time: from
    inclusive, to exclusive) with id above ``after``, at most ``limit``, in arrival (id) order; each with
    its block's signed header, state and receipt and its inclusion proof in that block.

    Precondition: ``limit >= 1``. Readings already pruned are gone (their blocks still commit to them);
    a block's proofs need all its readings, which retention prunes together (whole anchored blocks).
    """
    # One read transaction: a WAL snapshot, so a block chained or pruned meanwhile cannot split the page.
    with _snapshot(conn):
        return _evidence(conn, subject, from_ms, to_ms, after, limit)


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _evidence(  # noqa: PLR0917 (evidence()'s arguments, passed on)
    conn: sqlite3.Connection, subject: str, from_ms: int, to_ms: int, after: int, limit: int
) -> EvidencePage:
    rows = conn.execute(
        f"{_READING} WHERE subject = ? AND received_ms >= ? AND received_ms < ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (subject, from_ms, to_ms, after, limit + 1),
    ).fetchall()
    found = [_reading(r) for r in rows[:limit]]
    heights = sorted({r.block for r in found if r.block is not None})
    blocks = {h: _block(conn.execute(f"{_BLOCK} WHERE height = ?", (h,)).fetchone()) for h in heights}
    trees: dict[int, tuple[dict[int, int], merkle.MerkleTree]] = {}
    for h in heights:  # one tree per block, however many of its readings the page holds
        members = conn.execute("SELECT id, raw FROM readings WHERE block = ? ORDER BY id", (h,)).fetchall()
        # The block's own hash (its label says SHA-256 or SM3, D-064), as its readings root was built.
        tree = merkle.MerkleTree(suite=parse_block(blocks[h].raw).header.suite)
        tree.append_entries(bytes(raw) for _, raw in members)
        trees[h] = ({int(i): n for n, (i, _) in enumerate(members)}, tree)
    out = []
    for r in found:
        if r.block is None:
            out.append(ProvenReading(r, None, None))
            continue
        positions, tree = trees[r.block]
        index = positions[r.id]
        out.append(ProvenReading(r, index, tuple(tree.inclusion_proof(index))))
    return EvidencePage(tuple(out), blocks, found[-1].id if len(rows) > limit else None)


def cached_resolution(conn: sqlite3.Connection, identifier: str) -> tuple[str, int | None] | None:
    """The root's last resolve answer for ``identifier`` (JSON text, with its proofs) and when it was
    fetched; None if none is cached."""
    row = conn.execute(
        "SELECT answer, fetched_ms FROM resolutions WHERE identifier = ?", (identifier,)
    ).fetchone()
    return None if row is None else (str(row[0]), row[1])


def count_readings_by_signer(conn: sqlite3.Connection) -> dict[str, int]:
    """Readings stored, by signer."""
    rows = conn.execute("SELECT signer, COUNT(*) FROM readings GROUP BY signer")
    return {str(s): int(n) for s, n in rows}


def count_anchored_readings(conn: sqlite3.Connection) -> int:
    """Readings committed to by anchored blocks (pruned ones included)."""
    row = conn.execute("SELECT COALESCE(SUM(count), 0) FROM blocks WHERE state = 'anchored'").fetchone()
    return int(row[0])


def device_key_origin(conn: sqlite3.Connection, identifier: str) -> str | None:
    """Where the gateway has a device's key from ('local' or 'registry'); None if it has none."""
    row = conn.execute("SELECT origin FROM devices WHERE identifier = ?", (identifier,)).fetchone()
    return None if row is None else str(row[0])


def device_key(conn: sqlite3.Connection, identifier: str) -> bytes | None:
    """The device's key (SubjectPublicKeyInfo DER) the gateway holds, local or proven; None if none."""
    row = conn.execute("SELECT key FROM devices WHERE identifier = ?", (identifier,)).fetchone()
    return None if row is None else bytes(row[0])


def cached_resolutions(conn: sqlite3.Connection) -> set[str]:
    """Identifiers whose resolution (with proofs) the gateway has cached."""
    return {str(r[0]) for r in conn.execute("SELECT identifier FROM resolutions")}


def reject_reasons(conn: sqlite3.Connection) -> list[str]:
    """The reason of every quarantined input, in arrival order."""
    return [str(r[0]) for r in conn.execute("SELECT reason FROM quarantine ORDER BY id")]


def gaps(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """Every counter gap recorded, in arrival order: (the counter expected, the counter received)."""
    return [(int(e), int(g)) for e, g in conn.execute("SELECT expected, got FROM gaps ORDER BY rowid")]


# --- Meta, status ----------------------------------------------------------------------------------------


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def replace_local_devices(path: Path, keys: dict[str, bytes]) -> None:
    """Make the ``[devices]`` keys (identifier → SubjectPublicKeyInfo DER) the only locally provisioned
    ones, in one transaction: a device removed from the configuration stops being trusted by its old
    local key (its next reading is judged by the root's registry instead)."""
    conn = connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES (?, ?, 'local', NULL) "
                "ON CONFLICT (identifier) DO UPDATE SET key = excluded.key, origin = 'local'",
                list(keys.items()),
            )
            marks = ", ".join("?" * len(keys))
            stale = f"DELETE FROM devices WHERE origin = 'local' AND identifier NOT IN ({marks})"  # noqa: S608 (placeholders only)
            conn.execute(stale, list(keys))
    finally:
        conn.close()


def status(path: Path) -> dict[str, Any]:
    """Backlog and health figures as JSON (:meth:`edge.status.StoreFacts.as_json` of :func:`read_status`)."""
    return read_status(path).as_json()


# --- status facts: what the gateway's snapshot (edge.status), /healthz, /metrics, STATUS= lines and
# `edgeroot gateway status` report from the file. Each reads through the caller's connection.


def count_readings(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])


def last_reading_id(conn: sqlite3.Connection) -> int:
    """The id of the newest stored reading (0 when there is none), in O(log n) where
    :func:`count_readings` scans the table. Ids grow by one per reading stored, so while nothing is pruned
    the difference of two looks counts what arrived between them (the benchmarks poll it every 10 ms)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])


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
            duplicates=count_duplicates(conn),
            counter_resets=recent_counter_resets(conn),
            held=count_held(conn),
            held_oldest_age_s=oldest_held_age_s(conn),
        )
    finally:
        conn.close()


# --- reading without creating: `edgeroot gateway status` runs before the first `gateway run` too, and
# must not leave an empty gateway.db behind (sqlite3.connect creates the file it is given).


def read_status_if_present(path: Path) -> StoreFacts | None:
    """:func:`read_status`, or None when the gateway has never run: no store file, or an empty one
    (what an earlier `status` left); creates nothing."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return read_status(path)


# --- duplicates and counter resets: what edge.admission looks up and `edgeroot gateway device
# reset-counter` asks for (D-052, D-053). The writer alone applies resets, in a batch's transaction.

DUPLICATES = "duplicates"
"""The ``meta`` key of the all-time count of duplicates (resends of stored readings, acknowledged)."""
RECENT_RESETS = 20
"""How many counter resets the status shows; the table keeps all of them."""


def readings_with_counter(conn: sqlite3.Connection, signer: str, counter: int) -> list[bytes]:
    """The raw envelopes stored under ``signer`` and ``counter`` (several only after a counter reset)."""
    rows = conn.execute("SELECT raw FROM readings WHERE signer = ? AND counter = ?", (signer, counter))
    return [bytes(r[0]) for r in rows]


def add_duplicates(conn: sqlite3.Connection, count: int) -> None:
    """Add to the all-time count of duplicates (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
        (DUPLICATES, count),
    )


def count_duplicates(conn: sqlite3.Connection) -> int:
    return int(read_meta(conn, DUPLICATES) or 0)


def last_counter(conn: sqlite3.Connection, signer: str) -> int | None:
    """The last counter accepted from ``signer``, as of the writer's last commit."""
    row = conn.execute("SELECT last FROM counters WHERE signer = ?", (signer,)).fetchone()
    return None if row is None else int(row[0])


def request_counter_reset(
    path: Path, signer: str, to: int | None, *, by: str, reason: str, at_ms: int
) -> CounterReset:
    """Record an operator's request to set ``signer``'s last counter to ``to`` (``None``: forget it, so
    its next reading is judged as a first one). Safe whether the gateway runs or not: the writer, which
    holds the counters in memory, applies pending requests before it judges its next batch or when it
    opens the store. ``previous`` is the counter stored now; the writer records the one it replaced."""
    conn = connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")  # the counter read and the request are one instant
        previous = last_counter(conn, signer)
        cur = conn.execute(
            "INSERT INTO counter_resets (signer, to_counter, previous, requested_ms, requested_by, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (signer, to, previous, at_ms, by, reason),
        )
        conn.execute("COMMIT")
        assert cur.lastrowid is not None
        return CounterReset(cur.lastrowid, signer, to, previous, at_ms, by, reason, None)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def pending_counter_resets(conn: sqlite3.Connection) -> list[CounterReset]:
    """The resets not applied yet, oldest first (so the last request for a signer wins)."""
    rows = conn.execute(
        "SELECT id, signer, to_counter, previous, requested_ms, requested_by, reason, applied_ms "
        "FROM counter_resets WHERE applied_ms IS NULL ORDER BY id"
    ).fetchall()
    return [CounterReset(*row) for row in rows]


def mark_counter_reset_applied(
    conn: sqlite3.Connection, reset_id: int, previous: int | None, applied_ms: int
) -> None:
    """Inside the writer's transaction that changes the counter."""
    conn.execute(
        "UPDATE counter_resets SET applied_ms = ?, previous = ? WHERE id = ?",
        (applied_ms, previous, reset_id),
    )


def recent_counter_resets(conn: sqlite3.Connection, limit: int = RECENT_RESETS) -> tuple[CounterReset, ...]:
    """The newest counter resets first, pending or applied."""
    rows = conn.execute(
        "SELECT id, signer, to_counter, previous, requested_ms, requested_by, reason, applied_ms "
        "FROM counter_resets ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return tuple(CounterReset(*row) for row in rows)


# --- The gateway page's reads (edge/local_api.py: /v1/devices) ---------------------------------------

DEVICES_SHOWN = 1000
"""The device table's bound: a page and a JSON answer stay small on a gateway with a large fleet."""


def devices_overview(conn: sqlite3.Connection, limit: int = DEVICES_SHOWN) -> list[DeviceOverview]:
    """Every device the gateway knows, by identifier: those with a key here, those whose counter it
    tracks, those with stored readings (a bridge-attested device has readings but no key or counter of
    its own: the bridge signs). At most ``limit`` rows."""
    rows = conn.execute(
        "WITH ids AS (SELECT identifier AS id FROM devices UNION SELECT signer FROM counters "
        "  UNION SELECT DISTINCT subject FROM readings), "
        "newest AS (SELECT subject, MAX(id) AS rid FROM readings GROUP BY subject) "
        "SELECT ids.id, d.origin, d.fetched_ms, c.last, r.received_ms, r.counter, r.block, r.raw "
        "FROM ids LEFT JOIN devices d ON d.identifier = ids.id LEFT JOIN counters c ON c.signer = ids.id "
        "LEFT JOIN newest n ON n.subject = ids.id LEFT JOIN readings r ON r.id = n.rid "
        "ORDER BY ids.id LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        DeviceOverview(
            identifier=ident, key_source=origin, key_fetched_ms=fetched, last_counter=last,
            last_reading_ms=received, last_reading_counter=counter, last_reading_block=block,
            last_reading_raw=None if raw is None else bytes(raw),
        )
        for ident, origin, fetched, last, received, counter, block, raw in rows
    ]  # fmt: skip


def count_devices(conn: sqlite3.Connection) -> int:
    """How many devices :func:`devices_overview` would list without its bound."""
    row = conn.execute(
        "SELECT COUNT(*) FROM (SELECT identifier FROM devices UNION SELECT signer FROM counters "
        "UNION SELECT DISTINCT subject FROM readings)"
    ).fetchone()
    return int(row[0])


# --- held readings (D-059): acknowledged readings whose signer's key is being looked up. Written and
# deleted by the writer thread inside its batch transactions; the counts are status facts.


def insert_held(conn: sqlite3.Connection, rows: list[tuple[str, str, int, bytes]]) -> None:
    """Rows of (signer, source, received_ms, raw); their ids keep the arrival order."""
    conn.executemany("INSERT INTO held (signer, source, received_ms, raw) VALUES (?, ?, ?, ?)", rows)


def delete_held(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM held WHERE id = ?", [(i,) for i in ids])


def held_of(conn: sqlite3.Connection, signer: str) -> list[tuple[int, str, int, bytes]]:
    """The held readings of ``signer`` in arrival order: (id, source, received_ms, raw)."""
    rows = conn.execute(
        "SELECT id, source, received_ms, raw FROM held WHERE signer = ? ORDER BY id", (signer,)
    ).fetchall()
    return [(int(i), str(src), int(ms), bytes(raw)) for i, src, ms, raw in rows]


def held_by_signer(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Signer -> (held readings, their bytes): what the writer loads at start."""
    rows = conn.execute("SELECT signer, COUNT(*), SUM(LENGTH(raw)) FROM held GROUP BY signer").fetchall()
    return {str(s): (int(n), int(b)) for s, n, b in rows}


def count_held(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM held").fetchone()[0])


def oldest_held_age_s(conn: sqlite3.Connection) -> float | None:
    """How long the oldest held reading has waited for its signer's key (by its arrival time); None when
    nothing is held."""
    oldest = conn.execute("SELECT MIN(received_ms) FROM held").fetchone()[0]
    return None if oldest is None else max(0.0, (now_ms() - int(oldest)) / 1000)
