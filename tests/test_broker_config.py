"""The broker configuration operators install (systemd/mosquitto-edgeroot.conf) is the one the demo and
the tests run, and with it a broker loses nothing for a gateway that is down (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge import store
from edge.connectors import PLUGINS
from edge.connectors.mqtt import (
    SHIPPED_INFLIGHT,
    MqttConfig,
    paho_client,
    probe_broker,
    warn_if_broker_unsafe,
)
from edgeroot.mqtt_broker import Mosquitto, shipped_config
from tests.gateway_harness import Plant
from tests.mqtt_harness import Publisher, require_mosquitto
from tests.test_connectors import Connected, FakeDoor, FakePaho

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_COPY = REPO / "systemd" / "mosquitto-edgeroot.conf"


@dataclass(frozen=True)
class SessionFlags:
    """paho's CONNACK flags, as its on_connect callback gets them."""

    session_present: bool


def test_the_shipped_broker_config_is_one_file_in_the_package_and_in_systemd() -> None:
    """The package data an installed edgeroot reads is byte for byte the file operators copy."""
    assert shipped_config() == SYSTEMD_COPY.read_text(encoding="utf-8")
    # An installed edgeroot has it too: it is package data (a source checkout reads it in place).
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "mosquitto-edgeroot.conf" in package_data["edgeroot"]
    settings = dict(
        line.split(None, 1) for line in shipped_config().splitlines() if line and not line.startswith("#")
    )
    assert settings["max_inflight_messages"] == str(SHIPPED_INFLIGHT)
    assert int(settings["max_queued_messages"]) >= 100_000 and settings["persistence"] == "true"


def test_operations_doc_installs_the_shipped_file_and_sets_nothing_of_its_own() -> None:
    """docs/operations.md copies the file verbatim instead of listing settings an operator might miss."""
    doc = (REPO / "docs" / "operations.md").read_text()
    assert "cp systemd/mosquitto-edgeroot.conf /etc/mosquitto/conf.d/" in doc
    assert "conf.d/edgeroot.conf` put" not in doc, "settings listed for hand-copying again"


def test_the_test_broker_runs_the_shipped_file_verbatim(tmp_path: Path) -> None:
    """Mosquitto's config is the shipped text plus a listener and a persistence directory, nothing else."""
    require_mosquitto()
    broker = Mosquitto(tmp_path)
    written = broker.conf.read_text()
    assert written.startswith(shipped_config())
    extra = [line for line in written[len(shipped_config()) :].splitlines() if line]
    assert [line.split()[0] for line in extra] == ["listener", "allow_anonymous", "persistence_location"]


@pytest.mark.parametrize(("config", "lost"), [("shipped", False), ("mosquitto defaults", True)])
def test_a_gateway_that_is_down_loses_nothing_with_the_shipped_config(
    tmp_path: Path, config: str, lost: bool
) -> None:
    """1,500 readings acknowledged by the broker while the gateway's session is away all arrive when it
    comes back with the shipped file; mosquitto's defaults (max_queued_messages 1000) drop some."""
    require_mosquitto()
    broker = Mosquitto(tmp_path, settings=None if config == "shipped" else "", persistence=False)
    broker.start()
    try:
        gateway = MqttConfig(host=broker.host, port=broker.port, client_id="down-gateway")
        assert probe_broker(gateway) == (SHIPPED_INFLIGHT if config == "shipped" else 20)
        received: list[bytes] = []
        marker = threading.Event()

        def on_message(client: paho.Client, _ud: object, message: paho.MQTTMessage) -> None:
            if message.payload == b"marker":
                marker.set()
            else:
                received.append(bytes(message.payload))
            client.ack(message.mid, message.qos)

        session = paho_client(gateway)  # the gateway's own transport: persistent session, manual acks
        session.on_message = on_message
        session.connect(broker.host, broker.port)
        session.subscribe("edgeroot/readings/#", qos=1)
        session.loop_start()
        publisher = Publisher(broker.host, broker.port)
        publisher.publish("edgeroot/readings/probe", b"marker")  # the session is subscribed
        assert marker.wait(10)
        marker.clear()
        session.disconnect()
        session.loop_stop()
        sent = [f"reading {i}".encode() for i in range(1500)]
        for payload in sent:  # each PUBACKed by the broker: the device frees it
            publisher.publish("edgeroot/readings/pump", payload)
        session = paho_client(gateway)  # the gateway starts again: a new client, the same session
        session.on_message = on_message
        session.connect(broker.host, broker.port)
        session.loop_start()
        # A marker queued behind everything held says the session caught up. With mosquitto's defaults
        # the queue is full at this point and a marker published into it is dropped like the readings
        # were: resent each second until one arrives (markers are not counted as readings).
        deadline = time.monotonic() + 60
        while True:
            publisher.publish("edgeroot/readings/pump", b"marker")
            if marker.wait(1):
                break
            assert time.monotonic() < deadline, f"the session never caught up: {len(received)} received"
        publisher.close()
        session.disconnect()
        session.loop_stop()
        if lost:
            assert len(received) < len(sent), "mosquitto's defaults kept everything: this test shows nothing"
        else:
            assert received == sent
    finally:
        broker.stop()


def test_a_stopped_gateway_gets_every_reading_the_broker_acknowledged_meanwhile(plant: Plant) -> None:
    """The real gateway, stopped while 1,500 readings are published to the broker of the test session
    (the shipped file): started again, it stores and anchors every one of them, in order, once."""
    require_mosquitto()
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        pub.publish("edgeroot/readings/pump", plant.reading())  # the gateway's session exists
        plant.wait_anchored(1)
        assert plant.stop() == 0
        for _ in range(1500):
            pub.publish("edgeroot/readings/pump", plant.reading())  # each PUBACKed by the broker
    finally:
        pub.close()
    plant.start()
    plant.wait_anchored(1501, timeout=90)
    with store.reader(plant.state / "gateway.db") as conn:
        counters = [r.counter for r in store.readings(conn)]
        assert store.count_rejects_by_reason(conn) == {}
    assert counters == list(range(1, 1502))
    assert plant.stop() == 0


def test_the_gateway_warns_when_the_broker_forgets_its_session_on_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reconnect without the session present (a broker restarted without persistence) is a WARNING;
    the first connection of a new session and a reconnect that kept it are not."""
    clients: list[FakePaho] = []

    def factory(config: MqttConfig) -> FakePaho:
        clients.append(FakePaho())
        return clients[-1]

    async def main() -> None:
        connector = PLUGINS["mqtt"].create(MqttConfig(client_id="t"), FakeDoor(), factory)
        await connector.start()
        paho = clients[0]
        for present in (True, False):  # paho calls back on its network thread
            await asyncio.to_thread(paho.on_connect, paho, None, SessionFlags(present), Connected(), None)
        await connector.stop()

    with caplog.at_level(logging.WARNING, logger="edge.connectors.mqtt"):
        asyncio.run(main())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "lost the gateway's session" in warned[0], warned


@pytest.mark.parametrize(
    ("receive_maximum", "max_inflight", "says"),
    [
        (SHIPPED_INFLIGHT, 1000, []),
        (20, 1000, ["does not run the shipped configuration"]),
        (SHIPPED_INFLIGHT, 100, ["raise max_inflight"]),
        (65535, 1000, ["does not run the shipped configuration", "raise max_inflight"]),
    ],
)
def test_the_start_time_broker_check_warns_only_on_what_it_saw(
    caplog: pytest.LogCaptureFixture, receive_maximum: int, max_inflight: int, says: list[str]
) -> None:
    """Another in-flight window than the shipped file's, or one beyond the connector's, is a WARNING."""
    with caplog.at_level(logging.INFO, logger="edge.connectors.mqtt"):
        warn_if_broker_unsafe(MqttConfig(max_inflight=max_inflight), receive_maximum)
        warn_if_broker_unsafe(MqttConfig(max_inflight=max_inflight), None)  # cannot see: INFO only
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == len(says) and all(s in w for s, w in zip(says, warned, strict=True)), warned
    assert any("cannot be seen" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
