"""Several readings per message (docs/formats.md §19, D-082): the batch format, and MQTT and CoAP
connectors acknowledging a batch only when every envelope in it is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiocoap
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from edge import store
from edge.connectors import PLUGINS
from edge.connectors.coap import CoapConfig
from edge.connectors.mqtt import MAX_BURST_BYTES, MqttConfig
from edge.ingest import Ingest
from edge.intake import (
    MALFORMED_BATCH,
    MAX_BATCH_ENVELOPES,
    BatchError,
    Outcome,
    encode_batch,
    is_batch,
    split_batch,
)
from edge.writer import Writer
from tests.root_harness import free_port
from tests.test_connectors import FakeDoor, FakePaho, Message

DEVICE = "88.123.99/PUMP-7"


@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=40))
def test_a_batch_is_the_deterministic_cbor_array_of_its_envelopes(envelopes: list[bytes]) -> None:
    """encode_batch is cbor2's deterministic encoding of the list (an independent encoder), and
    split_batch gives the envelopes back, in order."""
    raw = encode_batch(envelopes)
    assert raw == cbor2.dumps(envelopes, canonical=True)
    assert is_batch(raw) and split_batch(raw) == envelopes


def test_a_single_envelope_is_not_a_batch() -> None:
    device = CoseSigner(DEVICE, generate_p256())
    single = envelope.encode_envelope(device, [{envelope.N: "t", envelope.V: 1.0}], 1)
    assert single[0] == 0xD2 and not is_batch(single) and not is_batch(b"")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x80", "0 envelopes"),
        (b"\x81\x01", "item 0 is not a byte string"),
        (b"\x82\x41a", "invalid CBOR"),  # truncated
        (b"\x9f\x41a\xff", "deterministic"),  # indefinite length
        (b"\x81\x58\x01a", "deterministic"),  # a head longer than it needs to be
        (b"\x81\x41a\x00", "after the CBOR item"),  # trailing bytes
        (cbor2.dumps([b"x"] * (MAX_BATCH_ENVELOPES + 1)), "1 to 256"),
        (cbor2.dumps([bytes(envelope.MAX_ENVELOPE_SIZE + 1)]), "limit"),
        (cbor2.dumps([b"x" * 8000] * 70), "limit"),
    ],
)
def test_malformed_batches_are_refused_with_the_reason(payload: bytes, why: str) -> None:
    assert is_batch(payload)
    with pytest.raises(BatchError, match=why):
        split_batch(payload)


def test_mqtt_acknowledges_a_batch_once_every_envelope_in_it_is_durable() -> None:
    clients: list[FakePaho] = []

    def factory(config: MqttConfig) -> FakePaho:
        clients.append(FakePaho())
        return clients[-1]

    async def main() -> None:
        door = FakeDoor(expect=7)
        connector = PLUGINS["mqtt"].create(MqttConfig(client_id="t"), door, factory)
        await connector.start()
        messages = [
            Message(b"good", "r/a", 1, 1),
            Message(encode_batch([b"good", b"bad", b"good"]), "r/b", 2, 1),  # one rejected: durable
            Message(b"\x82\x41a", "r/c", 3, 1),  # a malformed batch: quarantined whole, acknowledged
            Message(encode_batch([b"good", b"full"]), "r/d", 4, 1),  # one refused: not acknowledged
            Message(b"good", "r/e", 5, 1),  # behind the refused one: held back in order
        ]
        await asyncio.to_thread(clients[0].deliver, messages)
        await asyncio.wait_for(door.all_in.wait(), 10)
        await connector.stop()
        assert door.submitted[:8] == [
            (b"good", "mqtt:r/a", None),
            (b"good", "mqtt:r/b", None), (b"bad", "mqtt:r/b", None), (b"good", "mqtt:r/b", None),
            (b"\x82\x41a", "mqtt:r/c", MALFORMED_BATCH),
            (b"good", "mqtt:r/d", None), (b"full", "mqtt:r/d", None),
            (b"good", "mqtt:r/e", None),
        ]  # fmt: skip
        # Retries offered the refused envelope alone, never the durable one beside it.
        assert all(raw == b"full" for raw, _, _ in door.submitted[8:])
        assert clients[0].acked == [1, 2, 3]

    asyncio.run(main())


def _plant(tmp_path: Path) -> tuple[Writer, CoseSigner]:
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    device = CoseSigner(DEVICE, generate_p256())
    conn = store.connect(path)
    conn.execute(
        "INSERT INTO devices (identifier, key, origin) VALUES (?, ?, 'local')",
        (DEVICE, public_der(device.public_key)),
    )
    conn.close()
    writer = Writer(
        path, CoseSigner("88.123.99/GW-1", generate_p256()), max_readings=100, max_seconds=3600,
        disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    return writer, device


def _reading(device: CoseSigner, counter: int) -> bytes:
    return envelope.encode_envelope(device, [{envelope.N: "flow", envelope.V: float(counter)}], counter)


def test_a_batch_with_one_bad_envelope_through_mqtt_and_the_real_door(tmp_path: Path) -> None:
    """Each envelope of a batch is verified and stored on its own; the bad one is quarantined, the
    message is acknowledged after the commit that holds all of them."""
    writer, device = _plant(tmp_path)
    good = [_reading(device, c) for c in range(1, 21)]
    forged = good[7][:-1] + bytes([good[7][-1] ^ 1])
    batch = encode_batch([*good[:7], forged, *good[8:]])
    clients: list[FakePaho] = []

    def factory(config: MqttConfig) -> FakePaho:
        clients.append(FakePaho())
        return clients[-1]

    async def main() -> None:
        ingest = Ingest(writer)
        await ingest.open()
        runner = asyncio.create_task(ingest.run())
        connector = PLUGINS["mqtt"].create(MqttConfig(client_id="t"), ingest, factory)
        await connector.start()
        await asyncio.to_thread(clients[0].deliver, [Message(batch, "edgeroot/readings/p", 9, 1)])
        for _ in range(200):
            if clients[0].acked:
                break
            await asyncio.sleep(0.05)
        await connector.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        assert clients[0].acked == [9]
        assert ingest.stats.accepted == 19 and ingest.stats.rejected == {"bad-signature": 1}

    asyncio.run(main())
    conn = store.connect(tmp_path / "gateway.db")
    stored = [bytes(r[0]) for r in conn.execute("SELECT raw FROM readings ORDER BY id")]
    quarantined = conn.execute("SELECT reason, raw FROM quarantine").fetchall()
    conn.close()
    assert stored == good[:7] + good[8:]
    assert quarantined == [("bad-signature", forged)]
    writer.close()


def test_coap_answers_a_batch_per_envelope_after_durability(tmp_path: Path) -> None:
    writer, device = _plant(tmp_path)
    port = free_port()
    good = [_reading(device, c) for c in range(1, 6)]
    forged = good[2][:-1] + bytes([good[2][-1] ^ 1])

    async def main() -> list[tuple[str, bytes]]:
        ingest = Ingest(writer)
        await ingest.open()
        runner = asyncio.create_task(ingest.run())
        connector = PLUGINS["coap"].create(CoapConfig(host="127.0.0.1", port=port), ingest)
        await connector.start()
        client = await aiocoap.Context.create_client_context()
        answers = []
        try:
            for payload, fmt in (
                (encode_batch([good[0], good[1], forged, good[3]]), None),
                (encode_batch([good[3], good[4]]), 60),  # a resend of 4 beside a new 5
                (b"\x82\x41a", 60),
            ):
                uri = f"coap://127.0.0.1:{port}/readings"
                msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
                if fmt is not None:
                    msg.opt.content_format = fmt
                resp = await client.request(msg).response
                answers.append((str(resp.code), resp.payload))
        finally:
            await client.shutdown()
            await connector.stop()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert ingest.stats.rejected == {"bad-signature": 1, MALFORMED_BATCH: 1}
        return answers

    answers = asyncio.run(main())
    assert answers[0] == ("2.04 Changed", cbor2.dumps([None, None, "bad-signature", None]))
    assert answers[1] == ("2.04 Changed", cbor2.dumps([None, None]))  # the resend is a duplicate: stored
    assert answers[2][0] == "4.00 Bad Request" and b"batch of envelopes" in answers[2][1]
    writer.close()


def test_mqtt_bursts_are_bounded_in_bytes_and_acknowledged_in_order() -> None:
    """Messages waiting together are handed over in bursts of at most MAX_BURST_BYTES of payloads (at
    least one message), in arrival order; every one acknowledged, in order."""
    clients: list[FakePaho] = []
    calls: list[list[bytes]] = []

    class Door:
        async def submit_many(
            self, items: list[tuple[bytes, str]], *, reject: str | None = None
        ) -> list[Outcome]:
            calls.append([raw for raw, _ in items])
            await asyncio.sleep(0.01)  # storing takes a while: the next messages wait together
            return [Outcome(accepted=True, durable=True)] * len(items)

    def factory(config: MqttConfig) -> FakePaho:
        clients.append(FakePaho())
        return clients[-1]

    big = MAX_BURST_BYTES // 3 + 1
    payloads = [bytes([i]) * big for i in range(7)] + [bytes([9]) * (MAX_BURST_BYTES * 2)]

    async def main() -> None:
        connector = PLUGINS["mqtt"].create(MqttConfig(client_id="t"), Door(), factory)
        await connector.start()
        await asyncio.to_thread(
            clients[0].deliver, [Message(p, "r/x", i + 1, 1) for i, p in enumerate(payloads)]
        )
        for _ in range(400):
            if len(clients[0].acked) == len(payloads):
                break
            await asyncio.sleep(0.01)
        await connector.stop()

    asyncio.run(main())
    assert clients[0].acked == list(range(1, len(payloads) + 1))
    assert [raw for call in calls for raw in call] == payloads
    assert all(len(call) == 1 or sum(map(len, call[:-1])) < MAX_BURST_BYTES for call in calls)
    assert max(len(call) for call in calls) <= 3 and len(calls) >= 3
