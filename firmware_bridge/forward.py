"""Forwarding readings from the serial line to the gateway's local ingest, and what came back.

* **CoAP** (default, ``coap://gateway:5683/readings``): the gateway answers 2.04 only once the reading
  is durable, 4.00 with the reason when it rejected it for good, 5.03 when refusing for now. This is an
  end-to-end acknowledgement, so ACK on the serial line means "durable at the gateway".
* **MQTT** (``mqtt://broker:1883/edgeroot/readings/bridge``): QoS 1; the PUBACK comes from the broker
  (which keeps the message for the gateway's persistent session), not from the gateway. Weaker: choose
  it only where the broker persists messages.

Each forwarder returns a :class:`Verdict`: ``ack``, ``nack`` (with the gateway's reason) or ``busy``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Protocol
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


class MqttForwarder:
    def __init__(self, url: str, client_id: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.topic = parts.path.lstrip("/") or "edgeroot/readings/bridge"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(1, 5)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_args: self._connected.set()

    async def start(self) -> None:
        """Connect in the background; wait up to :data:`TIMEOUT_S` for the broker (then answer BUSY)."""
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        await asyncio.to_thread(self._connected.wait, TIMEOUT_S)

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
