"""A resent reading is a duplicate, not a replay: acknowledged, counted, never quarantined, stored once.

"Identical" means the same signed content (COSE protected header and payload) under the same signer and
counter, whatever the signature bytes (docs/decisions.md D-052). Unit tests drive the writer on a real
SQLite file; end-to-end tests resend over CoAP, MQTT and the serial line to a real gateway process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiocoap
import httpx
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from edge import store
from edge.ingest import Ingest
from edge.intake import Submission
from edge.writer import Writer
from edgeroot.system import Daemon, wait_until
from firmware_bridge.frames import FrameType, encode_frame, parse_counter_body
from runtime.clock import now_ms
from tests.gateway_harness import Plant, cli
from tests.mqtt_harness import Publisher
from tests.test_bridge_e2e import Pty, bridge

__all__ = ["bridge"]  # the serial test's fixture, shared with tests/test_bridge_e2e.py

GATEWAY = "88.123.99/GW-1"
PUMP = "88.123.99/PUMP-1"


def reading(device: CoseSigner, counter: int, value: float | None = None) -> bytes:
    """A reading; the same arguments give the same signed content (the ECDSA signature differs each time)."""
    v = 20.0 + counter if value is None else value
    return envelope.encode_envelope(device, [{envelope.N: "temp", envelope.V: v}], counter)


def sub(raw: bytes) -> Submission:
    return Submission(raw, "test", now_ms())


@pytest.fixture
def desk(tmp_path: Path) -> tuple[Writer, CoseSigner, Callable[[], Writer]]:
    """A writer on a real SQLite file with one provisioned device, and a way to restart the writer."""
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    gateway = CoseSigner(GATEWAY, generate_p256())
    device = CoseSigner(PUMP, generate_p256())
    store.replace_local_devices(path, {PUMP: public_der(device.public_key)})  # as from [devices]

    def new_writer() -> Writer:
        w = Writer(
            path, gateway, max_readings=5, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30
        )
        w.open()
        return w

    return new_writer(), device, new_writer


def stored(path: Path) -> list[tuple[int, bytes]]:
    with store.reader(path) as conn:
        return [(r.counter, r.raw) for r in store.readings(conn)]


def quarantined(path: Path) -> list[str]:
    with store.reader(path) as conn:
        return store.reject_reasons(conn)


def test_identical_resend_in_one_batch_is_acknowledged_once_stored(
    desk: tuple[Writer, CoseSigner, Callable[[], Writer]],
) -> None:
    """The same bytes twice in one batch: both acknowledged, the second as a duplicate; stored once."""
    writer, device, _ = desk
    first, second = reading(device, 1), reading(device, 2)
    outcomes = writer.process([sub(first), sub(first), sub(second), sub(second)])
    assert [(o.accepted, o.durable, o.reason) for o in outcomes] == [
        (True, True, None), (True, True, "duplicate"), (True, True, None), (True, True, "duplicate"),
    ]  # fmt: skip
    assert stored(writer.path) == [(1, first), (2, second)]
    assert quarantined(writer.path) == []
    assert store.read_status(writer.path).duplicates == 2


def test_resend_of_a_stored_reading_is_a_duplicate_after_a_restart_even_re_signed(
    desk: tuple[Writer, CoseSigner, Callable[[], Writer]],
) -> None:
    """After a restart the stored reading is looked up by (signer, counter): the same bytes and a new
    signature over the same content are duplicates; the counter does not move and no gap is recorded."""
    writer, device, restart = desk
    first = reading(device, 1)
    writer.process([sub(first), sub(reading(device, 2)), sub(reading(device, 3))])
    writer.close()
    writer = restart()
    re_signed = reading(device, 1)
    assert re_signed != first  # ECDSA: a fresh signature over the same content
    outcomes = writer.process([sub(first), sub(re_signed), sub(reading(device, 4))])
    assert [(o.accepted, o.reason) for o in outcomes] == [
        (True, "duplicate"),
        (True, "duplicate"),
        (True, None),
    ]
    assert [c for c, _ in stored(writer.path)] == [1, 2, 3, 4]
    assert stored(writer.path)[0][1] == first  # the original bytes are kept, not the resend's
    assert quarantined(writer.path) == []
    assert writer.verifier.counters[PUMP] == 4
    with store.reader(writer.path) as conn:
        assert store.count_gaps(conn) == 0
    assert store.read_status(writer.path).duplicates == 2


def test_a_different_reading_with_an_old_counter_stays_a_replay(
    desk: tuple[Writer, CoseSigner, Callable[[], Writer]],
) -> None:
    """Same signer and counter, different content (value, or a subject header): replay, quarantined."""
    writer, device, restart = desk
    writer.process([sub(reading(device, 1)), sub(reading(device, 2))])
    in_batch = writer.process([sub(reading(device, 3)), sub(reading(device, 3, value=-1.0))])
    assert [o.reason for o in in_batch] == [None, "replay"]
    writer.close()
    writer = restart()
    bridged = envelope.encode_envelope(
        device, [{envelope.N: "temp", envelope.V: 22.0}], 2, subject="88.123.99/OTHER"
    )
    outcomes = writer.process([sub(reading(device, 1, value=99.0)), sub(bridged)])
    assert [(o.accepted, o.durable, o.reason) for o in outcomes] == [(False, True, "replay")] * 2
    assert "differs from the stored reading" in outcomes[0].detail
    assert [c for c, _ in stored(writer.path)] == [1, 2, 3]
    assert quarantined(writer.path) == ["replay"] * 3
    assert store.read_status(writer.path).duplicates == 0


def test_resend_whose_original_was_pruned_is_refused_as_replay(
    desk: tuple[Writer, CoseSigner, Callable[[], Writer]],
) -> None:
    """Nothing to compare with once the original is pruned: refused as a replay (pruning only deletes
    anchored readings, so the device loses nothing by dropping it), with a detail saying why."""
    writer, device, _ = desk
    first = reading(device, 1)
    writer.process([sub(first), *(sub(reading(device, c)) for c in range(2, 11))])
    while writer.close_block_if_due() is not None:
        pass
    conn = store.connect(writer.path)
    conn.execute("UPDATE blocks SET state = 'anchored'")
    writer.disk_budget_bytes = 1  # prune every anchored reading
    assert writer.prune() == 10
    outcome = writer.process([sub(first)])[0]
    assert (outcome.accepted, outcome.durable, outcome.reason) == (False, True, "replay")
    assert "no stored reading to compare" in outcome.detail
    assert quarantined(writer.path) == ["replay"]


def test_readings_are_looked_up_by_signer_and_counter_through_an_index(tmp_path: Path) -> None:
    """The duplicate lookup is an index search, not a scan of the readings table."""
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    conn = store.connect(path)
    plan = " ".join(
        str(row[-1])
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT raw FROM readings WHERE signer = ? AND counter = ?", (PUMP, 1)
        )
    )
    assert "USING INDEX" in plan and "(signer=? AND counter=?)" in plan, plan


def test_ingest_counts_duplicates_apart_from_accepted_and_rejected(
    desk: tuple[Writer, CoseSigner, Callable[[], Writer]],
) -> None:
    """The door's counters: a duplicate is neither a new reading nor a reject."""
    writer, device, _ = desk
    writer.close()

    async def main() -> Ingest:
        ingest = Ingest(writer)
        await ingest.open()
        runner = asyncio.create_task(ingest.run())
        first = reading(device, 1)
        outcomes = await ingest.submit_many(
            [(first, "t"), (first, "t"), (reading(device, 1, value=5.0), "t")]
        )
        assert [o.reason for o in outcomes] == [None, "duplicate", "replay"]
        runner.cancel()
        await ingest.close()
        return ingest

    stats = asyncio.run(main()).stats
    assert (stats.accepted, stats.duplicates, stats.rejected) == (1, 1, {"replay": 1})


# --- end to end: a real gateway process, resends over CoAP, MQTT and the serial line ---------------------


def plant_reading(plant: Plant, counter: int, value: float | None = None) -> bytes:
    """Plant.reading()'s content for ``counter`` (or another value): re-signing it gives a resend."""
    v = float(counter) if value is None else value
    return envelope.encode_envelope(plant.device, [{envelope.N: "flow", envelope.V: v}], counter)


def health(plant: Plant) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{plant.http}/healthz", timeout=5).json()
    return body


def test_coap_resend_is_acknowledged_2_04_and_counted_as_duplicate(plant: Plant) -> None:
    """CoAP: a resend (same bytes, or re-signed) gets 2.04, also after a gateway restart; a different
    reading with an old counter still gets 4.00 replay. Counted in /healthz, /metrics and `gateway status`."""
    plant.start()
    first = plant.reading()

    async def post(payloads: list[bytes]) -> list[tuple[str, bytes]]:
        ctx = await aiocoap.Context.create_client_context()
        out = []
        for payload in payloads:
            msg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{plant.coap_port}/readings")
            msg.opt.content_format = 18
            msg.payload = payload
            resp = await ctx.request(msg).response
            out.append((str(resp.code), resp.payload))
        await ctx.shutdown()
        return out

    answers = asyncio.run(post([first, first, plant_reading(plant, 1), plant_reading(plant, 1, value=-1.0)]))
    assert [code[:4] for code, _ in answers] == ["2.04", "2.04", "2.04", "4.00"], answers
    assert answers[3][1].startswith(b"replay")
    ingest = health(plant)["ingest"]
    assert isinstance(ingest, dict) and ingest["duplicates"] == 2 and ingest["accepted"] == 1
    assert "edgeroot_gateway_readings_duplicate_total 2.0" in httpx.get(f"{plant.http}/metrics").text

    assert plant.stop() == 0
    plant.start()
    assert [code[:4] for code, _ in asyncio.run(post([first]))] == ["2.04"]
    ingest = health(plant)["ingest"]
    assert isinstance(ingest, dict) and ingest["duplicates"] == 1 and ingest["accepted"] == 0
    status = cli("gateway", "status", "--state", plant.state)
    assert status["duplicates"] == 3 and status["rejects"] == {"replay": 1} and status["readings"] == 1
    with store.reader(plant.gateway.db) as conn:
        assert [(r.counter, r.raw) for r in store.readings(conn)] == [(1, first)]


def test_mqtt_redelivery_is_acknowledged_and_never_quarantined(plant: Plant) -> None:
    """MQTT: readings delivered again (the same bytes, or re-signed by the device) are duplicates: stored
    once, counted, not quarantined; a new reading after them is stored as usual."""
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        first, second = plant.reading(), plant.reading()
        for raw in (first, second):
            pub.publish("edgeroot/readings/pump", raw)
        wait_until("two readings stored", lambda: plant.gateway.status()["readings"] == 2, interval=0.1)
        for raw in (first, plant_reading(plant, 2), plant.reading()):
            pub.publish("edgeroot/readings/pump", raw)
        wait_until("the third reading stored", lambda: plant.gateway.status()["readings"] == 3, interval=0.1)
    finally:
        pub.close()
    ingest = health(plant)["ingest"]
    assert isinstance(ingest, dict) and ingest == {"accepted": 3, "duplicates": 2, "rejected": {}}
    with store.reader(plant.gateway.db) as conn:
        assert [r.counter for r in store.readings(conn)] == [1, 2, 3]
        assert store.count_rejects_by_reason(conn) == {}


def test_serial_resend_after_a_lost_ack_is_acked_again(
    bridge: tuple[Plant, Pty, Path, Daemon],
) -> None:
    """docs/formats.md §18: a device resends a reading whose ACK it missed; it gets ACK again, not NACK."""
    plant, pty, _, _ = bridge
    first = plant.reading()
    pty.write(encode_frame(FrameType.READING, first))
    pty.write(encode_frame(FrameType.READING, first))
    frames = pty.read_frames(want=2)
    assert [(f.type, parse_counter_body(f.body)) for f in frames] == [(FrameType.ACK, (1, ""))] * 2
    with store.reader(plant.gateway.db) as conn:
        assert [r.counter for r in store.readings(conn)] == [1]
        assert store.count_rejects_by_reason(conn) == {}
