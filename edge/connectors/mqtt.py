"""MQTT connector: subscribe with QoS 1 and acknowledge each message only once it is durable.

Built on paho-mqtt 2.x directly, because it offers manual acknowledgement (``manual_ack=True``,
``client.ack(mid, qos)``) and aiomqtt does not. With a persistent session (fixed client id,
``clean_session=False``) the broker redelivers every message not yet acknowledged when the gateway
dies (DESIGN §9 verified this against mosquitto under SIGKILL).

Threads: paho runs its network loop in its own thread (``loop_start``). ``on_message`` (paho thread)
takes a slot of ``max_inflight`` and hands the message to the event loop; when all slots are taken it
blocks, so paho stops reading from the socket and the broker holds the rest: back-pressure instead of
an unbounded buffer. The slot is released, and the PUBACK sent, when the reading's outcome is known.
A refused reading (``store-full``, shutdown) is not acknowledged; the broker redelivers it later.

The broker bounds unacknowledged messages per client too (mosquitto ``max_inflight_messages``,
default 20); raise it (e.g. 1000) for throughput, see docs/operations in the README.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.connectors import Plugin
from edge.intake import IngestPort, SubmitMany
from runtime.tomlconfig import Secret, Table, read_settings, setting

log = logging.getLogger(__name__)
NAME = "mqtt"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    type: str = setting("type", NAME, choices=(NAME,), help="MQTT 3.1.1 subscriber, QoS 1")
    host: str = setting("host", "127.0.0.1", help="the broker")
    port: int = setting("port", 1883, range=(1, 65535), help="the broker's port")
    topic: str = setting("topic", "edgeroot/readings/#", help="topic filter the devices publish under")
    client_id: str = setting(
        "client_id", "edgeroot-gateway",
        help="fixed: the broker keeps the session (and unacked messages) for it",
    )  # fmt: skip
    username: str | None = setting("username", example="gateway", help="broker login, if it asks for one")
    password: Secret | None = setting(
        "password", example="...", secret=True, help="broker password; never logged"
    )
    tls: bool = setting("tls", False, help="connect with TLS")
    ca_file: str | None = setting(
        "ca_file", example="/etc/edgeroot/broker-ca.pem", help="CA bundle for the broker's certificate"
    )
    max_inflight: int = setting(
        "max_inflight", 1000, range=(1, 65535), help="messages in flight between broker and durable storage"
    )


def validate(t: Table) -> MqttConfig:
    values = read_settings(MqttConfig, t)
    if not values["topic"] or "\x00" in values["topic"]:
        raise t.fail("topic", "must be a non-empty MQTT topic filter")
    return MqttConfig(**values)


def paho_client(config: MqttConfig) -> paho.Client:
    """The default transport factory."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False, manual_ack=True
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(ca_certs=config.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    return client


class MqttConnector:
    def __init__(
        self,
        config: MqttConfig,
        submit_many: SubmitMany,
        factory: Callable[[MqttConfig], paho.Client] | None = None,
    ) -> None:
        self.config = config
        self.submit_many = submit_many
        self.factory = factory or paho_client
        self.state = "stopped"
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = threading.BoundedSemaphore(config.max_inflight)
        self._connected: asyncio.Event | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._received: list[tuple[bytes, str, int, int]] = []
        self._wake_pending = False
        self._consumer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._stopping = False
        client = self.factory(self.config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self.state = "connecting"
        client.connect_async(self.config.host, self.config.port, keepalive=15)
        client.loop_start()
        try:
            await asyncio.wait_for(self._connected.wait(), 10)
        except TimeoutError:
            log.warning(
                "MQTT broker %s:%d not reachable yet; retrying in the background",
                self.config.host,
                self.config.port,
            )

    async def stop(self) -> None:
        """Stop intake: disconnect; messages not yet acknowledged stay with the broker."""
        self._stopping = True
        client, self._client = self._client, None
        if client is not None:
            # paho's disconnect and loop_stop block: keep them off the event loop.
            await asyncio.to_thread(client.disconnect)
            await asyncio.to_thread(client.loop_stop)
        self.state = "stopped"

    # --- paho thread ---------------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            return
        client.subscribe(self.config.topic, qos=1)
        log.info(
            "MQTT connected to %s:%d, subscribed to %s", self.config.host, self.config.port, self.config.topic
        )
        self.state = "connected"
        if self._loop is not None and self._connected is not None:
            self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(self, _client: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not self._stopping:
            log.warning("MQTT connection lost (%s); reconnecting", reason)
            self.state = "reconnecting"

    def _on_message(self, client: paho.Client, _ud: Any, message: paho.MQTTMessage) -> None:
        assert self._loop is not None
        # Blocks the paho thread when max_inflight readings await storage: back-pressure to the broker.
        self._slots.acquire()
        item = (bytes(message.payload), f"mqtt:{message.topic}", message.mid, message.qos)
        with self._lock:
            self._received.append(item)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            # One crossing into the event loop per burst of messages, not one per message.
            self._loop.call_soon_threadsafe(self._take_received, client)

    # --- event loop ----------------------------------------------------------------------------------

    def _take_received(self, client: paho.Client) -> None:
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.create_task(self._consume(client), name="mqtt-consumer")

    async def _consume(self, client: paho.Client) -> None:
        """Store bursts strictly one after another, in arrival order (a device's counters must arrive
        in order even when a burst waits for a registry lookup); bursts grow while one is stored."""
        while True:
            with self._lock:
                items, self._received = self._received, []
                if not items:
                    self._wake_pending = False
                    return
            await self._store(client, items)

    async def _store(self, client: paho.Client, items: list[tuple[bytes, str, int, int]]) -> None:
        try:
            outcomes = await self.submit_many([(raw, source) for raw, source, _, _ in items])
            for (_, _, mid, qos), outcome in zip(items, outcomes, strict=True):
                if outcome.durable and qos > 0:
                    client.ack(mid, qos)  # paho queues the PUBACK for its network thread
        except Exception:  # storage failed: no ack, the broker redelivers
            log.exception(
                "%d readings from MQTT could not be stored; leaving them unacknowledged", len(items)
            )
        finally:
            for _ in items:
                self._slots.release()


def create(
    config: MqttConfig, ingest: IngestPort, factory: Callable[[MqttConfig], paho.Client] | None = None
) -> MqttConnector:
    return MqttConnector(config, ingest.submit_many, factory)


PLUGIN: Plugin = Plugin(NAME, MqttConfig, validate, create)
