"""Forwarding readings from the serial line to the gateway's local ingest, and what came back.

* **CoAP** (default, ``coap://gateway:5683/readings``): the gateway answers 2.04 only once the reading
  is durable, 4.00 with the reason when it rejected it for good, 5.03 when refusing for now. This is an
  end-to-end acknowledgement, so ACK on the serial line means "durable at the gateway".
* **MQTT** (``mqtt://broker:1883/edgeroot/readings/bridge``): QoS 1; the PUBACK comes from the broker
  (which keeps the message for the gateway's persistent session), not from the gateway. Weaker: choose
  it only where the broker persists messages. The gateway can also acknowledge end to end on a
  per-device topic (docs/formats.md §19): :meth:`MqttForwarder.listen` subscribes to one, as
  ``edgeroot device simulate --ack-topic`` does; the bridge itself does not use it yet (use CoAP).

Each forwarder returns a :class:`Verdict`: ``ack``, ``nack`` (with the gateway's reason) or ``busy``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiocoap
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)
CONTENT_FORMAT_COSE_SIGN1 = 18
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str
    """``ack``, ``nack`` or ``busy``."""
    reason: str = ""


class Forwarder(Protocol):
    async def start(self) -> None: ...
    async def send(self, envelope: bytes) -> Verdict: ...
    async def stop(self) -> None: ...


class CoapForwarder:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._context: aiocoap.Context | None = None

    async def start(self) -> None:
        self._context = await aiocoap.Context.create_client_context()

    async def send(self, envelope: bytes) -> Verdict:
        assert self._context is not None
        request = aiocoap.Message(code=aiocoap.POST, uri=self.uri, payload=envelope)
        request.opt.content_format = CONTENT_FORMAT_COSE_SIGN1
        try:
            response = await asyncio.wait_for(self._context.request(request).response, TIMEOUT_S)
        except (TimeoutError, aiocoap.error.Error) as exc:
            return Verdict("busy", f"gateway unreachable: {exc}")
        code = response.code
        reason = response.payload.decode("utf-8", "replace")
        if code == aiocoap.CHANGED:
            return Verdict("ack")
        if code.is_successful():
            return Verdict("ack")
        if code.class_ == 4:
            return Verdict("nack", reason or str(code))
        return Verdict("busy", reason or str(code))

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None


class SubscribeFailed(Exception):
    """The broker did not confirm a subscription in time (not connected, or refused)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"subscribing to {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class MqttForwarder:
    def __init__(self, url: str, client_id: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.topic = parts.path.lstrip("/") or "edgeroot/readings/bridge"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(1, 5)
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inboxes: dict[str, asyncio.Queue[bytes]] = {}
        self._topics: list[str] = []  # the paho thread copies this list (atomic) to resubscribe
        self._subacks: dict[int, asyncio.Future[bool]] = {}

    async def start(self) -> None:
        """Connect in the background; wait up to :data:`TIMEOUT_S` for the broker (then answer BUSY)."""
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        await asyncio.to_thread(self._connected.wait, TIMEOUT_S)

    async def listen(self, topic: str) -> asyncio.Queue[bytes]:
        """Subscribe to ``topic`` (QoS 1) and return once the broker confirmed it (SUBACK): the payloads
        arriving there, in order. Raises :class:`SubscribeFailed` when not confirmed in time."""
        assert self._loop is not None, "start() first"
        inbox = self._inboxes.setdefault(topic, asyncio.Queue())
        self._topics.append(topic)
        result, mid = self.client.subscribe(topic, qos=1)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise SubscribeFailed(topic, paho.error_string(result))
        # Registered before the loop runs again, so the SUBACK's crossing below always finds it.
        suback = self._subacks[mid] = self._loop.create_future()
        try:
            granted = await asyncio.wait_for(suback, TIMEOUT_S)
        except TimeoutError as exc:
            raise SubscribeFailed(topic, "no SUBACK in time") from exc
        finally:
            self._subacks.pop(mid, None)
        if not granted:
            raise SubscribeFailed(topic, "refused by the broker")
        return inbox

    # --- paho thread: each callback crosses into the event loop with call_soon_threadsafe -----------

    def _on_connect(self, client: paho.Client, _ud: object, _flags: object, _rc: object, _p: object) -> None:
        for topic in self._topics.copy():  # a broker that lost our session (no persistence) forgot them
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_subscribe(self, _c: paho.Client, _ud: object, mid: int, codes: list[Any], _p: object) -> None:
        if self._loop is not None:
            granted = all(not code.is_failure for code in codes)
            self._loop.call_soon_threadsafe(self._subacked, mid, granted)

    def _on_message(self, _client: paho.Client, _ud: object, message: paho.MQTTMessage) -> None:
        inbox = self._inboxes.get(message.topic)
        if inbox is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(inbox.put_nowait, bytes(message.payload))

    # --- event loop ----------------------------------------------------------------------------------

    def _subacked(self, mid: int, granted: bool) -> None:
        suback = self._subacks.get(mid)
        if suback is not None and not suback.done():
            suback.set_result(granted)

    async def send(self, envelope: bytes) -> Verdict:
        info = self.client.publish(self.topic, envelope, qos=1)
        try:
            # paho's wait blocks: keep it off the event loop.
            await asyncio.to_thread(info.wait_for_publish, TIMEOUT_S)
        except RuntimeError as exc:  # not connected (yet, or any more): the device should retry
            return Verdict("busy", str(exc))
        if info.is_published():
            return Verdict("ack")
        return Verdict("busy", "broker did not acknowledge in time")

    async def stop(self) -> None:
        await asyncio.to_thread(self.client.disconnect)
        await asyncio.to_thread(self.client.loop_stop)


def forwarder_for(url: str, client_id: str) -> Forwarder:
    if url.startswith(("coap://", "coaps://")):
        return CoapForwarder(url)
    if url.startswith("mqtt://"):
        return MqttForwarder(url, client_id)
    raise ValueError(f"gateway URL {url!r} must be coap://HOST:PORT/readings or mqtt://HOST:PORT/TOPIC")
