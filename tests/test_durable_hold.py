"""Durable holds (D-059): a reading whose signer's key is being looked up is written to the gateway's
``held`` table in its batch's transaction and acknowledged; it is judged in arrival order when the lookup
ends, stays held (and is retried) while lookups fail, and survives a restart. Over MQTT nothing held is
left unacknowledged at the broker, so new devices never use up its in-flight window.

The writer's tests run on a real SQLite file (as tests/test_gateway_store.py); the rest run the real
gateway process against a real root and broker (tests/gateway_harness.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der, public_pem
from edge import store
from edge import writer as writer_module
from edge.intake import HELD, KEY_LOOKUP, Submission
from edge.status import BLOCK_STATES, HELD_TOO_LONG_S, PROBLEM_HELD_TOO_LONG, GatewayStatus, StoreFacts
from edge.writer import Writer
from edgeroot.system import configure
from runtime.clock import now_ms
from tests.gateway_harness import DEVICE, Plant
from tests.mqtt_harness import Publisher, require_mosquitto
from tests.test_health_truth import quarantined, stored_counters, unprovision_device, wait_for

GATEWAY = "88.123.99/GW-1"
STRANGER = "88.123.99/NEW-1"
KNOWN = "88.123.99/KNOWN-1"
TOPIC = "edgeroot/readings/pump"


# --- the writer, on a real SQLite file ---------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    return path


def open_writer(path: Path, *, may_hold: bool = True) -> Writer:
    w = Writer(
        path, CoseSigner(GATEWAY, generate_p256()), max_readings=10, max_seconds=3600,
        disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    w.may_hold = lambda _signer: may_hold
    w.open()
    return w


def reading(device: CoseSigner, counter: int) -> bytes:
    return envelope.encode_envelope(device, [{envelope.N: "t", envelope.V: float(counter)}], counter)


def sub(raw: bytes) -> Submission:
    return Submission(raw, "test", now_ms())


def register(path: Path, device: CoseSigner) -> None:
    """What a successful registry lookup leaves behind: the key in ``devices``."""
    conn = store.connect(path)
    conn.execute(
        "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES (?, ?, 'registry', ?)",
        (device.kid, public_der(device.public_key), now_ms()),
    )
    conn.close()


def counters_in(path: Path) -> list[int]:
    with store.reader(path) as conn:
        return [r.counter for r in store.readings(conn)]


def held_count(path: Path) -> int:
    with store.reader(path) as conn:
        return store.count_held(conn)


def test_a_held_reading_is_durable_and_stored_in_arrival_order_once_its_key_is_found(db: Path) -> None:
    """Readings of a signer without a key are held durably (in the table, acknowledgeable, not accepted),
    a later one behind the earlier ones; once the key is there, release stores them in order and empties
    the table, in one transaction with the readings."""
    device = CoseSigner(STRANGER, generate_p256())
    w = open_writer(db)
    outcomes = w.process([sub(reading(device, n)) for n in (1, 2)])
    assert [(o.reason, o.durable, o.accepted, o.signer) for o in outcomes] == [
        (HELD, True, False, STRANGER)
    ] * 2
    register(db, device)
    # The key is in the file now, but the signer's earlier readings wait: a new one may not overtake them.
    [third] = w.process([sub(reading(device, 3))])
    assert third.reason == HELD and third.durable
    with store.reader(db) as conn:  # three held rows, all the stranger's, all from the "test" source
        assert store.count_held(conn) == 3
        assert [source for _, source, _, _ in store.held_of(conn, STRANGER)] == ["test"] * 3
        assert store.count_readings(conn) == 0
    released = w.release(STRANGER)
    assert [o.accepted for _, o in released] == [True, True, True]
    assert counters_in(db) == [1, 2, 3]
    assert held_count(db) == 0
    assert (w.held, w.held_count, w.held_bytes) == ({}, 0, 0)
    [fourth] = w.process([sub(reading(device, 4))])
    assert fourth.accepted
    w.close()


def test_a_proven_absence_quarantines_the_held_readings_and_a_failed_lookup_keeps_them(db: Path) -> None:
    device = CoseSigner(STRANGER, generate_p256())
    w = open_writer(db)
    w.process([sub(reading(device, n)) for n in (1, 2)])
    # The lookup failed (nothing proven, no key): judging again holds them again, nothing is dropped.
    again = w.release(STRANGER)
    assert [o.reason for _, o in again] == [HELD, HELD]
    assert held_count(db) == 2 and w.held == {STRANGER: 2}
    w.may_hold = lambda _signer: False  # absence proven
    final = w.release(STRANGER)
    assert [(o.reason, o.durable) for _, o in final] == [("unknown-device", True)] * 2
    with store.reader(db) as conn:
        assert store.reject_reasons(conn) == ["unknown-device"] * 2
    assert held_count(db) == 0 and w.held == {}
    w.close()


def test_held_readings_survive_a_restart_and_keep_their_place(db: Path) -> None:
    """A writer opened on a file with held rows knows them: a new reading of that signer is held behind
    them even though its key has arrived, and the release judges all of them in arrival order."""
    device = CoseSigner(STRANGER, generate_p256())
    first = open_writer(db)
    first.process([sub(reading(device, 1)), sub(reading(device, 2))])
    first.close()  # as after a crash: nothing but the file is left
    register(db, device)
    w = open_writer(db)
    assert (w.held, w.held_count) == ({STRANGER: 2}, 2)
    [third] = w.process([sub(reading(device, 3))])
    assert third.reason == HELD
    assert [o.accepted for _, o in w.release(STRANGER)] == [True, True, True]
    assert counters_in(db) == [1, 2, 3]
    w.close()


def test_beyond_the_bound_a_reading_is_refused_unacknowledged(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_HELD", 2)
    device = CoseSigner(STRANGER, generate_p256())
    w = open_writer(db)
    outcomes = w.process([sub(reading(device, n)) for n in (1, 2, 3)])
    assert [(o.reason, o.durable) for o in outcomes] == [(HELD, True), (HELD, True), (KEY_LOOKUP, False)]
    assert held_count(db) == 2
    w.close()


def test_readings_held_too_long_are_a_health_problem(db: Path) -> None:
    conn = store.connect(db)
    old = now_ms() - int((HELD_TOO_LONG_S + 60) * 1000)
    store.insert_held(conn, [(STRANGER, "test", old, b"x"), (STRANGER, "test", now_ms(), b"y")])
    conn.close()
    facts = store.read_status(db)
    assert facts.held == 2 and facts.held_oldest_age_s is not None
    assert facts.held_oldest_age_s > HELD_TOO_LONG_S
    status = GatewayStatus(GATEWAY, 0, {}, 0, False, "synced", {}, facts)
    assert any(p.startswith(PROBLEM_HELD_TOO_LONG) for p in status.problems), status.problems
    recent = StoreFacts(
        0, 0, dict.fromkeys(BLOCK_STATES, 0), None, {}, 0, False, held=1, held_oldest_age_s=5.0
    )
    assert GatewayStatus(GATEWAY, 0, {}, 0, False, "synced", {}, recent).problems == []


# --- the real gateway over MQTT ---------------------------------------------------------------------------


def ingest_figures(plant: Plant) -> dict[str, object]:
    figures: dict[str, object] = httpx.get(f"{plant.http}/healthz").json()["ingest"]
    return figures


def held_rows(plant: Plant) -> int:
    return int(store.status(plant.state / "gateway.db")["held"])


def counters_of(plant: Plant, signer: str) -> list[int]:
    with store.reader(plant.state / "gateway.db") as conn:
        return [r.counter for r in store.readings(conn, signer)]


def assert_broker_holds_nothing(plant: Plant, pub: Publisher, sentinel: bytes, signer: str) -> None:
    """Restart the gateway: the broker redelivers every message it was never PUBACKed (the session is
    persistent), before the sentinel published after the restart; each would be a duplicate."""
    assert plant.stop() == 0
    plant.start()
    before = len(counters_of(plant, signer))
    pub.publish(TOPIC, sentinel)
    wait_for("the sentinel stored", lambda: len(counters_of(plant, signer)) == before + 1)
    assert ingest_figures(plant)["duplicates"] == 0, "the broker redelivered messages never acknowledged"


def provision_known(plant: Plant) -> CoseSigner:
    """Replace the plant's device in [devices] by another, local one: the plant's device is left to the
    registry, the known one needs no lookup."""
    unprovision_device(plant)
    known = CoseSigner(KNOWN, generate_p256())
    (plant.state / "known.pub").write_bytes(public_pem(known.public_key))
    configure(plant.gateway.config, {"devices": {KNOWN: "known.pub"}})
    assert KNOWN in plant.gateway.config.read_text()
    return known


@contextlib.contextmanager
def restart_root(plant: Plant, port: int) -> Iterator[None]:
    """The plant's root process started again on its port ``port`` (as tests/test_gateway_e2e.py's outage)."""
    assert port == plant.root.port
    plant.system.start("root")
    yield


def test_a_new_devices_readings_over_mqtt_are_stored_once_and_all_acknowledged(plant: Plant) -> None:
    """A registered device not in [devices] publishes 50 readings while the root is reachable: all are
    stored exactly once, in order, and the broker is left with no unacknowledged message (before D-059
    the held ones were never PUBACKed and came back as duplicates at the next connection)."""
    require_mosquitto()
    unprovision_device(plant)
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for _ in range(50):
            pub.publish(TOPIC, plant.reading())
        wait_for("50 readings stored", lambda: stored_counters(plant) == list(range(1, 51)), timeout=60)
        assert quarantined(plant) == [] and held_rows(plant) == 0
        assert_broker_holds_nothing(plant, pub, plant.reading(), DEVICE)
        assert stored_counters(plant) == list(range(1, 52))
    finally:
        pub.close()


def test_with_the_root_away_new_devices_are_held_durably_and_known_ones_keep_flowing(plant: Plant) -> None:
    """Root away: a new device's readings are held in the table (acknowledged), a known device's readings
    published after them are stored meanwhile; when the root returns the held ones are judged and stored
    in order, and the broker holds nothing unacknowledged."""
    require_mosquitto()
    known = provision_known(plant)
    plant.start()
    port = plant.root.port
    plant.system.stop("root")
    pub = Publisher(*plant.broker)
    try:
        for _ in range(5):
            pub.publish(TOPIC, plant.reading())
        for n in range(1, 6):
            pub.publish(TOPIC, reading(known, n))
        wait_for("the known device's readings stored", lambda: counters_of(plant, KNOWN) == [1, 2, 3, 4, 5])
        wait_for("the new device's readings held", lambda: held_rows(plant) == 5)
        text = httpx.get(f"{plant.http}/metrics").text
        assert "edgeroot_gateway_held_waiting 5.0" in text, text
        assert counters_of(plant, DEVICE) == []
        with restart_root(plant, port):
            # A failed lookup is retried after the registry's retry_s (30 s).
            wait_for("the held readings judged", lambda: counters_of(plant, DEVICE) == [1, 2, 3, 4, 5], 90)
            assert held_rows(plant) == 0 and quarantined(plant) == []
            assert_broker_holds_nothing(plant, pub, reading(known, 6), KNOWN)
    finally:
        pub.close()


def test_held_readings_survive_a_sigkill_and_are_stored_after_the_restart(plant: Plant) -> None:
    """Root away, a new device's readings held; the gateway is killed; with the root back, the restarted
    gateway judges the held rows: each reading stored once, in order, none quarantined."""
    require_mosquitto()
    unprovision_device(plant)
    plant.start()
    port = plant.root.port
    plant.system.stop("root")
    pub = Publisher(*plant.broker)
    try:
        for _ in range(5):
            pub.publish(TOPIC, plant.reading())
        wait_for("the readings held", lambda: held_rows(plant) == 5)
        plant.stop(signal.SIGKILL)
        with restart_root(plant, port):
            plant.start()
            wait_for("the held readings stored", lambda: stored_counters(plant) == [1, 2, 3, 4, 5], 60)
            assert held_rows(plant) == 0 and quarantined(plant) == []
            plant.stop()
    finally:
        pub.close()
