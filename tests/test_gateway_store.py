"""The gateway's writer, ingest door and store: durable batches, quarantine, counters, blocks, retention,
status facts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from edge import store
from edge.ingest import Ingest
from edge.intake import Submission
from edge.status import AnchoredBlock, StoreFacts
from edge.writer import Writer
from runtime.clock import now_ms
from tests.gateway_harness import verified_chain

GATEWAY = "88.123.99/GW-1"
DEVICE = "88.123.99/PUMP-1"


@pytest.fixture
def plant(tmp_path: Path) -> tuple[Writer, CoseSigner, CoseSigner]:
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    gateway = CoseSigner(GATEWAY, generate_p256())
    device = CoseSigner(DEVICE, generate_p256())
    conn = store.connect(path)
    conn.execute(
        "INSERT INTO devices (identifier, key, origin) VALUES (?, ?, 'local')",
        (DEVICE, public_der(device.public_key)),
    )
    conn.close()
    writer = Writer(
        path, gateway, max_readings=10, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30
    )
    writer.open()
    return writer, gateway, device


def reading(device: CoseSigner, counter: int) -> bytes:
    return envelope.encode_envelope(device, [{envelope.N: "temp", envelope.V: 20.0 + counter}], counter)


def replayed(device: CoseSigner, counter: int) -> bytes:
    """A different reading under a counter already used: a replay (resending the same one is a duplicate)."""
    return envelope.encode_envelope(device, [{envelope.N: "temp", envelope.V: -1.0}], counter)


def sub(raw: bytes) -> Submission:
    return Submission(raw, "test", now_ms())


def test_batch_accepts_quarantines_and_tracks_counters(plant: tuple[Writer, CoseSigner, CoseSigner]) -> None:
    """One batch: good readings stored, each bad input quarantined with its reason, counters advance."""
    writer, _, device = plant
    stranger = CoseSigner("88.123.99/STRANGER", generate_p256())
    forged = CoseSigner(DEVICE, generate_p256())
    batch = [
        reading(device, 1),
        reading(device, 2),
        replayed(device, 2),
        b"\xff\x00garbage",
        b"x" * 9000,
        reading(stranger, 1),
        reading(forged, 3),
        reading(device, 5),  # gap: 3 and 4 missing
    ]
    outcomes = writer.process([sub(r) for r in batch])
    assert [o.reason for o in outcomes] == [
        None, None, "replay", "malformed", "oversize", "unknown-device", "bad-signature", None,
    ]  # fmt: skip
    assert all(o.durable for o in outcomes)
    db = store.connect(writer.path)
    assert db.execute("SELECT counter FROM readings ORDER BY id").fetchall() == [(1,), (2,), (5,)]
    assert db.execute("SELECT last FROM counters WHERE signer = ?", (DEVICE,)).fetchone() == (5,)
    assert db.execute("SELECT expected, got FROM gaps").fetchall() == [(3, 5)]
    assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (5,)
    assert len(db.execute("SELECT raw FROM quarantine WHERE reason = 'oversize'").fetchone()[0]) == 8192
    with store.reader(writer.path) as conn:  # the read functions tools and other tests use say the same
        reasons = ["replay", "malformed", "oversize", "unknown-device", "bad-signature"]
        assert store.reject_reasons(conn) == reasons
        assert store.gaps(conn) == [(3, 5)]


def test_replay_is_detected_across_restarts(plant: tuple[Writer, CoseSigner, CoseSigner]) -> None:
    """Counters survive a restart: a reading seen before is a replay afterwards too."""
    writer, gateway, device = plant
    writer.process([sub(reading(device, 1))])
    writer.close()
    again = Writer(
        writer.path, gateway, max_readings=10, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30
    )
    again.open()
    assert again.process([sub(replayed(device, 1))])[0].reason == "replay"


def test_failed_commit_stores_nothing_and_restores_counters(
    plant: tuple[Writer, CoseSigner, CoseSigner],
) -> None:
    """If the transaction fails, no reading is stored and counters are as before."""
    writer, _, device = plant
    writer.process([sub(reading(device, 1))])
    db = store.connect(writer.path)
    db.execute("DROP TABLE gaps")  # the next batch has a gap, so its transaction fails
    with pytest.raises(sqlite3.OperationalError):
        writer.process([sub(reading(device, 2)), sub(reading(device, 9))])
    assert writer.verifier.counters[DEVICE] == 1
    assert db.execute("SELECT COUNT(*) FROM readings").fetchone() == (1,)


def test_blocks_close_every_n_readings_and_form_a_verifiable_chain(
    plant: tuple[Writer, CoseSigner, CoseSigner],
) -> None:
    """Blocks close at max_readings, link to each other, and commit to exactly their readings."""
    writer, gateway, device = plant
    writer.process([sub(reading(device, c)) for c in range(1, 26)])
    heights = []
    while (h := writer.close_block_if_due()) is not None:
        heights.append(h)
    assert heights == [0, 1]  # 25 readings, 10 per block: the last 5 wait for time or more readings
    assert writer.close_block_if_due(force=True) == 2
    blocks = verified_chain(writer.path, GATEWAY, gateway.public_key)
    assert sum(b.header.reading_count for b in blocks) == 25
    assert blocks[-1].header.reading_count == 5


def test_ingest_batches_and_answers_each_submitter(plant: tuple[Writer, CoseSigner, CoseSigner]) -> None:
    """Concurrent submissions are batched; each gets its own outcome after the commit."""
    writer, _, device = plant
    writer.close()

    async def main() -> list[str | None]:
        ingest = Ingest(writer, max_batch=50, max_pending=20)
        await ingest.open()
        runner = asyncio.create_task(ingest.run())
        raws = [reading(device, c) for c in range(1, 201)] + [replayed(device, 3)]
        outcomes = await asyncio.gather(*(ingest.submit(r, "t") for r in raws))
        runner.cancel()
        await ingest.close()
        assert ingest.stats.accepted == 200 and ingest.stats.batches >= 4
        return [o.reason for o in outcomes]

    reasons = asyncio.run(main())
    assert reasons[:200] == [None] * 200 and reasons[200] == "replay"


def test_pruning_never_deletes_unanchored_readings(plant: tuple[Writer, CoseSigner, CoseSigner]) -> None:
    """Over budget with nothing anchored: nothing is deleted and input is refused; anchored ones go first."""
    writer, _, device = plant
    writer.process([sub(reading(device, c)) for c in range(1, 31)])
    while writer.close_block_if_due() is not None:
        pass
    writer.disk_budget_bytes = 1
    assert writer.prune() == 0
    assert writer.store_full
    db = store.connect(writer.path)
    db.execute("UPDATE blocks SET state = 'anchored' WHERE height = 0")
    assert writer.prune() == 10
    assert db.execute("SELECT COUNT(*) FROM readings WHERE block IS NULL OR block > 0").fetchone() == (20,)


def test_status_facts_count_what_the_store_holds(plant: tuple[Writer, CoseSigner, CoseSigner]) -> None:
    """The stored status facts: readings, the chain's backlog by state, the last anchor, rejects, gaps."""
    writer, _, device = plant
    assert store.read_status(writer.path) == StoreFacts(
        readings=0,
        unchained_readings=0,
        blocks={"chained": 0, "submitted": 0, "anchored": 0},
        last_anchored=None,
        rejects={},
        gaps=0,
        evidence=False,
    )
    in_order = [reading(device, c) for c in range(1, 24)]
    batch = [*in_order, reading(device, 30), b"junk", b"junk", replayed(device, 30)]  # gap, garbage, replay
    writer.process([sub(r) for r in batch])
    for _ in range(2):
        writer.close_block_if_due()
    db = store.connect(writer.path)
    db.execute("UPDATE blocks SET state = 'anchored', log_index = 7 WHERE height = 0")
    db.execute("UPDATE blocks SET state = 'submitted' WHERE height = 1")
    facts = store.read_status(writer.path)
    assert facts == StoreFacts(
        readings=24,
        unchained_readings=4,
        blocks={"chained": 0, "submitted": 1, "anchored": 1},
        last_anchored=AnchoredBlock(height=0, log_index=7),
        rejects={"malformed": 2, "replay": 1},
        gaps=1,
        evidence=False,
    )
    assert facts.unanchored_blocks == 1
    assert writer.close_block_if_due(force=True) == 2
    store.write_meta(db, "evidence", "{}")
    facts = store.read_status(writer.path)
    assert facts.unanchored_blocks == 2 and facts.unchained_readings == 0 and facts.evidence
    assert store.status(writer.path) == facts.as_json()
    assert facts.as_json() == {
        "readings": 24,
        "unchained_readings": 0,
        "blocks": {"chained": 1, "submitted": 1, "anchored": 1},
        "unanchored_blocks": 2,
        "last_anchored": {"height": 0, "log_index": 7},
        "rejects": {"malformed": 2, "replay": 1},
        "gaps": 1,
        "evidence": True,
        "duplicates": 0,
        "counter_resets": [],
        "held": 0,
        "held_oldest_age_s": None,
    }


def test_local_devices_removed_from_the_configuration_are_no_longer_trusted(tmp_path: Path) -> None:
    """`[devices]` is the whole local set: a device dropped from it loses its local key (registry
    keys are untouched), so a revoked device is not accepted for ever by its old key."""
    db = tmp_path / "gw.db"
    store.create_schema(db)
    a, b, fetched = (public_der(generate_p256().public_key()) for _ in range(3))
    conn = sqlite3.connect(db)
    registry_row = "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES ('88.1/R', ?, 'root', 1)"
    conn.execute(registry_row, (fetched,))
    conn.commit()
    store.replace_local_devices(db, {"88.1/A": a, "88.1/B": b})
    store.replace_local_devices(db, {"88.1/A": a})
    rows = sorted(conn.execute("SELECT identifier, origin FROM devices").fetchall())
    conn.close()
    assert rows == [("88.1/A", "local"), ("88.1/R", "root")]


# --- the read functions the demo, the benchmarks and the end-to-end tests use -------------------------------


def test_reads_answer_latest_ranges_counts_and_a_reading_in_its_anchored_block(
    plant: tuple[Writer, CoseSigner, CoseSigner],
) -> None:
    """latest, readings (by signer and time range), counts and a reading with its anchored block agree
    with what was written, and nothing is returned that was not stored."""
    writer, gateway, device = plant
    other = CoseSigner("88.123.99/VALVE-2", generate_p256())
    conn = store.connect(writer.path)
    conn.execute(
        "INSERT INTO devices (identifier, key, origin) VALUES (?, ?, 'registry')",
        (other.kid, public_der(other.public_key)),
    )
    with store.reader(writer.path) as db:
        assert store.latest(db) == {} and store.readings(db) == [] and store.blocks(db) == []
        assert store.last_reading_id(db) == 0
        assert store.anchored_reading(db, DEVICE) is None
        assert store.count_blocks_by_state(db) == {"chained": 0, "submitted": 0, "anchored": 0}
    mine = [reading(device, c) for c in range(1, 13)]
    theirs = reading(other, 1)
    writer.process([Submission(raw, "test", 1000 + c) for c, raw in enumerate(mine, start=1)])
    replay = envelope.encode_envelope(device, [{envelope.N: "temp", envelope.V: -1.0}], 3)  # other content
    writer.process([Submission(theirs, "test", 2000), sub(b"junk"), sub(replay)])
    assert writer.close_block_if_due() == 0  # the first 10 readings
    conn.execute("UPDATE blocks SET state = 'anchored', log_index = 7, receipt = 'r' WHERE height = 0")
    with store.reader(writer.path) as db:
        newest = store.latest(db)
        assert {k: v.counter for k, v in newest.items()} == {DEVICE: 12, other.kid: 1}
        assert newest[other.kid].raw == theirs and newest[other.kid].block is None
        assert [r.counter for r in store.readings(db, DEVICE)] == list(range(1, 13))
        assert [r.counter for r in store.readings(db, DEVICE, since_ms=1003, until_ms=1006)] == [3, 4, 5]
        assert [r.signer for r in store.readings(db, since_ms=1012)] == [DEVICE, other.kid]
        assert store.readings(db, "88.123.99/NOBODY") == []
        assert store.has_reading(db, DEVICE, 12) and not store.has_reading(db, DEVICE, 13)
        assert store.block_state_of(db, DEVICE, 4) == "anchored"
        assert store.block_state_of(db, DEVICE, 11) is None
        assert store.count_readings(db) == 13
        assert store.last_reading_id(db) == 13  # quarantined input takes no reading id
        assert store.count_readings_by_signer(db) == {DEVICE: 12, other.kid: 1}
        assert store.count_anchored_readings(db) == 10
        assert store.count_blocks_by_state(db) == {"chained": 0, "submitted": 0, "anchored": 1}
        assert store.count_rejects_by_reason(db) == {"malformed": 1, "replay": 1}
        assert store.device_key_origin(db, other.kid) == "registry"
        assert store.device_key_origin(db, DEVICE) == "local"
        assert store.device_key_origin(db, "88.123.99/NOBODY") is None
        assert store.device_key(db, other.kid) == public_der(other.public_key)
        assert store.device_key(db, DEVICE) == public_der(device.public_key)
        assert store.device_key(db, "88.123.99/NOBODY") is None
        assert store.cached_resolutions(db) == set()
        [block] = store.blocks(db)
        assert (block.height, block.count, block.log_index, block.receipt) == (0, 10, 7, "r")
        assert store.block_readings(db, 0) == mine[:10]
        assert store.block_readings(db, 1) == []
        found = store.anchored_reading(db, DEVICE)
        assert found is not None and found.block == block and found.index == 0
        assert found.reading.counter == 1 and found.block_readings[found.index] == found.reading.raw
        assert store.anchored_reading(db, other.kid) is None  # its reading is not in a block yet
    verified_chain(writer.path, GATEWAY, gateway.public_key)


# --- the schema: plain SQL, checked against the sqlite-utils declarations it replaced (D-152) -------------


def sqlite_utils_schema(path: Path) -> None:
    """The gateway's tables as edge.store declared them with sqlite-utils until D-152, unchanged: the
    reference the plain-SQL schema must equal."""
    import sqlite_utils

    db = sqlite_utils.Database(sqlite3.connect(path))
    db.table("readings").create(
        {"id": int, "signer": str, "subject": str, "counter": int, "received_ms": int, "raw": bytes,
         "block": int},
        pk="id", not_null={"signer", "subject", "counter", "received_ms", "raw"}, if_not_exists=True,
    )  # fmt: skip
    db.table("readings").create_index(["block"], if_not_exists=True)
    db.table("readings").create_index(["subject", "id"], if_not_exists=True)
    db.table("readings").create_index(["subject", "received_ms"], if_not_exists=True)
    db.table("readings").create_index(["signer", "counter"], if_not_exists=True)
    db.table("blocks").create(
        {"height": int, "block_id": bytes, "raw": bytes, "first_reading": int, "count": int,
         "time_ms": int, "state": str, "log_index": int, "receipt": str},
        pk="height", not_null={"block_id", "raw", "first_reading", "count", "time_ms", "state"},
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
        pk="id", not_null={"received_ms", "source", "reason", "raw"}, if_not_exists=True,
    )  # fmt: skip
    db.table("devices").create(
        {"identifier": str, "key": bytes, "origin": str, "fetched_ms": int},
        pk="identifier", not_null={"key", "origin"}, if_not_exists=True,
    )  # fmt: skip
    db.table("resolutions").create(
        {"identifier": str, "answer": str, "fetched_ms": int},
        pk="identifier", not_null={"answer"}, if_not_exists=True,
    )  # fmt: skip
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("counter_resets").create(
        {"id": int, "signer": str, "to_counter": int, "previous": int, "requested_ms": int,
         "requested_by": str, "reason": str, "applied_ms": int},
        pk="id", not_null={"signer", "requested_ms", "requested_by", "reason"}, if_not_exists=True,
    )  # fmt: skip
    db.table("held").create(
        {"id": int, "signer": str, "source": str, "received_ms": int, "raw": bytes},
        pk="id", not_null={"signer", "source", "received_ms", "raw"}, if_not_exists=True,
    )  # fmt: skip
    db.table("held").create_index(["signer", "id"], if_not_exists=True)
    db.conn.close()


def schema_facts(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, not null, default, primary key) and every index's name,
    uniqueness and columns, as SQLite itself reports them."""
    conn = sqlite3.connect(path)
    try:
        facts: dict[str, object] = {}
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        for table in tables:
            facts[table] = conn.execute(f"PRAGMA table_info({table})").fetchall()
            for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
                columns = [r[2] for r in conn.execute(f"PRAGMA index_info({index})")]
                facts[f"{table}/{index}"] = (unique, origin, partial, columns)
        return facts
    finally:
        conn.close()


def test_the_plain_sql_schema_equals_the_sqlite_utils_one_it_replaced(tmp_path: Path) -> None:
    """Same tables, columns, types, constraints and index names as sqlite-utils made; and running it on a
    file made by either (every start does) changes nothing."""
    store.create_schema(tmp_path / "plain.db")
    sqlite_utils_schema(tmp_path / "old.db")
    plain, old = schema_facts(tmp_path / "plain.db"), schema_facts(tmp_path / "old.db")
    assert len(old) == 20, "the reference lost a table or an index"  # 10 tables, 10 indexes
    assert plain == old
    store.create_schema(tmp_path / "old.db")
    store.create_schema(tmp_path / "plain.db")
    assert schema_facts(tmp_path / "old.db") == old and schema_facts(tmp_path / "plain.db") == old


def test_a_schema_missing_an_index_is_told_apart(tmp_path: Path) -> None:
    """The comparison above sees a missing index (it would not pass on any two schemas)."""
    store.create_schema(tmp_path / "plain.db")
    conn = sqlite3.connect(tmp_path / "plain.db")
    conn.execute('DROP INDEX "idx_readings_subject_received_ms"')
    conn.close()
    sqlite_utils_schema(tmp_path / "old.db")
    assert schema_facts(tmp_path / "plain.db") != schema_facts(tmp_path / "old.db")
