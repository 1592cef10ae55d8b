"""End-to-end acknowledgements over MQTT (docs/formats.md §19): the device's PUBACK comes from the broker,
so a device that must know a reading is durable at the gateway waits for the gateway's ack on its own
topic. Codec vectors, the connector against a fake door, and a drill with mosquitto and a real gateway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from edge import store
from edge.connectors import PLUGINS
from edge.connectors.mqtt import (
    MAX_ACK_COUNTERS,
    DeviceAck,
    DeviceAckError,
    MqttConfig,
    decode_device_ack,
    device_ack_topic,
    device_acks,
    encode_device_ack,
)
from edge.errors import ConfigError
from edge.intake import STORE_FULL, Outcome
from edgeroot.system import configure
from runtime.tomlconfig import Table
from tests.gateway_harness import DEVICE, EDGEROOT, running_plant
from tests.mqtt_harness import Broker
from tests.test_connectors import FakePaho, Message

ACK_TOPIC = "edgeroot/acks"
STORED = Outcome(accepted=True, durable=True)


def signed(signer: CoseSigner, counter: int) -> bytes:
    return envelope.encode_envelope(signer, [{envelope.N: "flow", envelope.V: 1.0}], counter)


# --- the payload and the topic ------------------------------------------------------------------------


def test_device_ack_round_trips_in_deterministic_cbor() -> None:
    """A DeviceAck decodes back to itself, and its bytes are the documented deterministic CBOR map."""
    ack = DeviceAck("88.123.99/PUMP-0042", (7, 8), ((5, "replay"),))
    raw = encode_device_ack(ack)
    assert decode_device_ack(raw) == ack
    assert cbor2.loads(raw) == {
        "v": 1,
        "device": "88.123.99/PUMP-0042",
        "stored": [7, 8],
        "rejected": [[5, "replay"]],
    }
    assert raw == cbor2.dumps(cbor2.loads(raw), canonical=True)
    # The example bytes of docs/formats.md §19.
    example = "a4 61 76 01 66 {} 73 {} 66 {} 82 15 16 68 {} 80".format(
        *(text.encode().hex(" ") for text in ("device", "88.123.99/PUMP-0042", "stored", "rejected"))
    )
    assert encode_device_ack(DeviceAck("88.123.99/PUMP-0042", (21, 22), ())).hex(" ") == example


BAD_ACKS = {
    "not CBOR": b"\xff\x00",
    "not a map": cbor2.dumps([1, "88.123.99/P", [], []]),
    "missing rejected": cbor2.dumps({"v": 1, "device": "d/x", "stored": []}),
    "extra key": cbor2.dumps({"v": 1, "device": "d/x", "stored": [], "rejected": [], "x": 0}),
    "version 2": cbor2.dumps({"v": 2, "device": "d/x", "stored": [], "rejected": []}),
    "version true": cbor2.dumps({"v": True, "device": "d/x", "stored": [], "rejected": []}),
    "device bytes": cbor2.dumps({"v": 1, "device": b"d/x", "stored": [], "rejected": []}),
    "stored not array": cbor2.dumps({"v": 1, "device": "d/x", "stored": 7, "rejected": []}),
    "negative counter": cbor2.dumps({"v": 1, "device": "d/x", "stored": [-1], "rejected": []}),
    "counter 2^63": cbor2.dumps({"v": 1, "device": "d/x", "stored": [1 << 63], "rejected": []}),
    "bool counter": cbor2.dumps({"v": 1, "device": "d/x", "stored": [True], "rejected": []}),
    "float counter": cbor2.dumps({"v": 1, "device": "d/x", "stored": [1.0], "rejected": []}),
    "rejected without reason": cbor2.dumps({"v": 1, "device": "d/x", "stored": [], "rejected": [[1]]}),
    "rejected reason bytes": cbor2.dumps({"v": 1, "device": "d/x", "stored": [], "rejected": [[1, b"r"]]}),
    "oversize": cbor2.dumps({"v": 1, "device": "d/x", "stored": list(range(40_000)), "rejected": []}),
}


@pytest.mark.parametrize("case", BAD_ACKS)
def test_device_ack_refuses_malformed_payloads(case: str) -> None:
    """Anything but the documented map raises DeviceAckError (never a bare TypeError or KeyError)."""
    with pytest.raises(DeviceAckError):
        decode_device_ack(BAD_ACKS[case])


def test_device_ack_topic_percent_encodes_wildcards() -> None:
    """A device's topic is ack_topic/<id>; '%', '+' and '#' in the id cannot act as wildcards."""
    assert device_ack_topic(ACK_TOPIC, "88.123.99/PUMP-0042") == "edgeroot/acks/88.123.99/PUMP-0042"
    assert device_ack_topic(ACK_TOPIC, "88.123.99/A+B#C%") == "edgeroot/acks/88.123.99/A%2BB%23C%25"


@pytest.mark.parametrize(
    ("ack_topic", "readings"),
    [("edgeroot/acks/+", "edgeroot/readings/#"), ("edgeroot/acks/", "edgeroot/readings/#"),
     ("edgeroot/readings/acks", "edgeroot/readings/#"), ("edgeroot/acks", "edgeroot/+/+"), ("", "x/#")],
)  # fmt: skip
def test_ack_topic_refused_with_wildcards_or_where_the_gateway_would_read_its_own_acks(
    ack_topic: str, readings: str
) -> None:
    """ack_topic must be a plain topic name that the readings filter cannot match below."""
    table = Table(
        {"type": "mqtt", "topic": readings, "ack_topic": ack_topic},
        Path("gateway.toml"),
        "connector[0].",
        ConfigError,
    )
    with pytest.raises(ConfigError, match="ack_topic"):
        PLUGINS["mqtt"].validate(table)


def test_ack_topic_accepted_beside_the_readings_filter() -> None:
    """The documented pair (readings under edgeroot/readings/#, acks under edgeroot/acks) is valid."""
    table = Table(
        {"type": "mqtt", "ack_topic": ACK_TOPIC}, Path("gateway.toml"), "connector[0].", ConfigError
    )
    config = PLUGINS["mqtt"].validate(table)
    assert isinstance(config, MqttConfig) and config.ack_topic == ACK_TOPIC


def test_device_acks_list_stored_and_signature_checked_rejections_only() -> None:
    """Stored and duplicate readings are acked, replays rejected; unverified rejections and refusals get
    nothing (a forged kid must not make a device drop a reading); one message per signer."""
    pump, valve = (
        CoseSigner("88.123.99/PUMP-1", generate_p256()),
        CoseSigner("88.123.99/VALVE-2", generate_p256()),
    )
    burst = [
        (signed(pump, 10), STORED),
        (signed(valve, 3), STORED),
        (signed(pump, 11), Outcome(accepted=False, durable=True, reason="duplicate")),
        (signed(pump, 4), Outcome(accepted=False, durable=True, reason="replay", detail="4 <= 11")),
        (signed(pump, 12), Outcome(accepted=False, durable=True, reason="bad-signature")),
        (signed(pump, 13), Outcome(accepted=False, durable=True, reason="unknown-device")),
        (b"\xa0", Outcome(accepted=False, durable=True, reason="malformed")),
        (signed(pump, 14), STORE_FULL),
        (
            signed(pump, 10),
            Outcome(accepted=False, durable=True, reason="replay"),
        ),  # resent in the same burst
    ]
    acks = device_acks([raw for raw, _ in burst], [outcome for _, outcome in burst])
    assert acks == [
        DeviceAck("88.123.99/PUMP-1", (10, 11), ((4, "replay"),)),
        DeviceAck("88.123.99/VALVE-2", (3,), ()),
    ]


def test_device_acks_split_a_large_burst_into_messages_a_device_can_decode() -> None:
    """A burst of max_inflight readings of one device is split at MAX_ACK_COUNTERS, each message under
    the decoder's size limit, every counter listed once."""
    pump = CoseSigner("88.123.99/PUMP-1", generate_p256())
    first = 1_760_000_000_000  # millisecond counters: 9 bytes each in CBOR
    raws = [signed(pump, first + i) for i in range(2 * MAX_ACK_COUNTERS + 1)]
    outcomes = [STORED] * MAX_ACK_COUNTERS + [Outcome(False, True, "replay")] * (MAX_ACK_COUNTERS + 1)
    acks = device_acks(raws, outcomes)
    assert len(acks) == 2
    decoded = [decode_device_ack(encode_device_ack(ack)) for ack in acks]
    assert [c for ack in decoded for c in ack.stored] == [first + i for i in range(MAX_ACK_COUNTERS)]
    rejected = [c for ack in decoded for c, _ in ack.rejected]
    assert rejected == [first + MAX_ACK_COUNTERS + i for i in range(MAX_ACK_COUNTERS + 1)]


# --- the connector: acks only once the burst is durable ------------------------------------------------


class PublishingPaho(FakePaho):
    """The fake paho client, also recording what the connector publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))


class HeldDoor:
    """An ingest door that answers only when the test lets it: the moment the burst becomes durable."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self.arrived = asyncio.Event()
        self.durable = asyncio.Event()

    async def submit(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome:
        raise AssertionError("the MQTT connector submits bursts")

    async def submit_many(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]:
        self.arrived.set()
        await self.durable.wait()
        return self.outcomes[: len(items)]


def test_mqtt_connector_publishes_end_to_end_acks_only_after_the_burst_is_durable() -> None:
    """No ack is published while the burst awaits storage; then one per device, QoS 1, not retained."""
    pump = CoseSigner(DEVICE, generate_p256())
    clients: list[PublishingPaho] = []

    def factory(config: MqttConfig) -> PublishingPaho:
        clients.append(PublishingPaho())
        return clients[-1]

    async def main() -> None:
        door = HeldDoor([STORED, STORED])
        config = MqttConfig(client_id="t", ack_topic=ACK_TOPIC)
        connector = PLUGINS["mqtt"].create(config, door, factory)
        await connector.start()
        client = clients[0]
        messages = [Message(signed(pump, c), "edgeroot/readings/pump", c, 1) for c in (21, 22)]
        delivery = asyncio.create_task(asyncio.to_thread(client.deliver, messages))
        await asyncio.wait_for(door.arrived.wait(), 10)
        assert client.published == [] and client.acked == [], "acknowledged before the burst was durable"
        door.durable.set()
        await asyncio.wait_for(delivery, 10)
        deadline = time.monotonic() + 10
        while len(client.acked) < 2:  # the consumer task acts on the outcomes on its next turn
            assert time.monotonic() < deadline, f"no PUBACKs after the burst was durable: {client.acked}"
            await asyncio.sleep(0.01)
        await connector.stop()
        assert client.acked == [21, 22]
        # The two messages may form one burst or two: one ack message per burst, in order.
        topic = device_ack_topic(ACK_TOPIC, DEVICE)
        assert {(t, qos, retain) for t, _, qos, retain in client.published} == {(topic, 1, False)}
        acks = [decode_device_ack(payload) for _, payload, _, _ in client.published]
        assert [c for ack in acks for c in ack.stored] == [21, 22]
        assert all(ack.device == DEVICE and ack.rejected == () for ack in acks)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("where", "ack_topic", "says"),
    [(["--coap", "coap://127.0.0.1:5683/readings"], ACK_TOPIC, "is for --mqtt"),
     (["--mqtt", "mqtt://127.0.0.1:1883/edgeroot/readings/p"], "edgeroot/+", "without wildcards")],
)  # fmt: skip
def test_simulate_refuses_an_ack_topic_it_cannot_listen_on(
    where: list[str], ack_topic: str, says: str
) -> None:
    """--ack-topic is for MQTT only and names a topic, not a filter: usage errors (exit 2) before any I/O."""
    out = subprocess.run(
        [*EDGEROOT, "device", "simulate", *where, "--id", DEVICE, "--key", "/none", "--ack-topic", ack_topic],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and says in out.stderr, out.stderr


# --- the drill: a real broker, a real gateway, a device that frees only on the end-to-end ack ----------


class Observer:
    """A clean-session subscriber that counts what passes on the readings and ack topics."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        self.readings = 0
        self.acks: list[DeviceAck] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="e2e-observer")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe([("edgeroot/readings/#", 1), (f"{ACK_TOPIC}/#", 1)])
        self.client.loop_start()
        assert self.subscribed.wait(10), "the observer's subscription was not confirmed"

    def _on_message(self, _client: Any, _ud: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            if message.topic.startswith(f"{ACK_TOPIC}/"):
                self.acks.append(decode_device_ack(bytes(message.payload)))
            else:
                self.readings += 1

    def seen(self) -> tuple[int, int]:
        with self.lock:
            return self.readings, len(self.acks)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def simulate(
    broker: tuple[str, int], key: Path, first: int, count: int, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EDGEROOT, "device", "simulate", "--mqtt", f"mqtt://{broker[0]}:{broker[1]}/edgeroot/readings/pump",
         "--id", DEVICE, "--key", str(key), "--counter", str(first), "--count", str(count), "--rate", "0",
         "--ack-topic", ACK_TOPIC, *extra, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    result: dict[str, Any] = json.loads(out)
    return result


def test_device_frees_readings_only_on_end_to_end_acks_while_the_gateway_is_stopped_then_started(
    tmp_path: Path,
) -> None:
    """Gateway stopped: the broker PUBACKs every reading but no end-to-end ack comes, so the device keeps
    and resends them; gateway started: every reading is stored exactly once and acked end to end."""
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        with running_plant(tmp_path, (broker.host, broker.port)) as plant:
            assert f'# ack_topic = "{ACK_TOPIC}"' in plant.gateway.config.read_text()
            configure(plant.gateway.config, {"connector": [{"ack_topic": ACK_TOPIC}]})
            key = plant.device_key
            address = (broker.host, broker.port)
            plant.start()
            # With the gateway up, acks come at once; its broker session now exists to queue for it.
            first = finished(simulate(address, key, 1, 3, "--wait", "30"), 60)
            assert (first["ack"], first["nack"], first["unacknowledged"]) == (3, 0, 0), first
            plant.stop()

            observer = Observer(*address)
            count = 40
            device = simulate(address, key, 100, count, "--resend-after", "1", "--wait", "120")
            try:
                deadline = time.monotonic() + 60
                # Every reading sent, and resent at least once: the device held them without an ack.
                while observer.seen()[0] < 2 * count:
                    assert device.poll() is None, device.communicate()
                    assert time.monotonic() < deadline, f"the device did not resend: {observer.seen()}"
                    time.sleep(0.05)
                assert observer.seen()[1] == 0, "an end-to-end ack came while the gateway was stopped"
                plant.start()
                result = finished(device, 150)
            finally:
                if device.poll() is None:
                    device.kill()
                observer.close()
            assert result["ack"] == count and result["nack"] == 0 and result["unacknowledged"] == 0, result
            assert result["broker_acks"] >= 2 * count and result["resent"] >= count, result
            with store.reader(plant.gateway.db) as conn:
                counters = sorted(r.counter for r in store.readings(conn, DEVICE))
            assert counters == [1, 2, 3, *range(100, 100 + count)], "a reading is missing or stored twice"
            acked = {c for ack in observer.acks for c in ack.stored}
            assert acked == set(range(100, 100 + count)) and {a.device for a in observer.acks} == {DEVICE}
    finally:
        broker.stop()
