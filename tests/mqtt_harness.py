"""The session's MQTT broker (mosquitto, or the embedded amqtt broker when none is installed), and a
QoS 1 publisher that waits for the broker's PUBACK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeroot.mqtt_broker import BrokerUnavailable, LocalBroker, Mosquitto, local_broker, mosquitto_binary

MOSQUITTO = mosquitto_binary()
NEEDS_MOSQUITTO = (
    "needs mosquitto: kill -9 drills, restarts and load do not run on the embedded amqtt broker (DESIGN §9)"
)


def require_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip(NEEDS_MOSQUITTO)


def Broker(workdir: Path) -> Mosquitto:  # noqa: N802 (a class in the tests' eyes)
    """A mosquitto of the test's own (restarts, drills); skips without mosquitto."""
    require_mosquitto()
    return Mosquitto(workdir)


@contextlib.contextmanager
def running_broker(workdir: Path) -> Iterator[tuple[str, int]]:
    """mosquitto when installed, else the embedded amqtt broker (light use only)."""
    try:
        broker: LocalBroker = local_broker(workdir)
    except BrokerUnavailable as exc:
        pytest.skip(str(exc))
    broker.start()
    try:
        yield broker.host, broker.port
    finally:
        broker.stop()


class Publisher:
    """Publishes with QoS 1 and returns once the broker acknowledged (PUBACK) each message."""

    def __init__(self, host: str, port: int, client_id: str = "") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
