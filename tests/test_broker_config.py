"""The broker configuration operators install (systemd/mosquitto-edgeroot.conf) is the one the demo and
the tests run, and with it a broker loses nothing for a gateway that is down (issue 12, item 2)."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge.connectors.mqtt import SHIPPED_INFLIGHT, MqttConfig, paho_client, probe_broker
from edgeroot.mqtt_broker import Mosquitto, shipped_config
from tests.mqtt_harness import Publisher, require_mosquitto

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_COPY = REPO / "systemd" / "mosquitto-edgeroot.conf"


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
        publisher.publish("edgeroot/readings/pump", b"marker")  # queued behind everything held
        assert marker.wait(30), f"the session never caught up: {len(received)} received"
        publisher.close()
        session.disconnect()
        session.loop_stop()
        if lost:
            assert len(received) < len(sent), "mosquitto's defaults kept everything: this test shows nothing"
        else:
            assert received == sent
    finally:
        broker.stop()
