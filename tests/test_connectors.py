"""Connectors against the ingest contract alone (edge.intake): a fake door, no writer, no store."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import aiocoap

from edge.connectors import PLUGINS
from edge.connectors.coap import CoapConfig
from edge.connectors.mqtt import MqttConfig
from edge.intake import STORE_FULL, WRONG_CONTENT_FORMAT, Outcome
from tests.root_harness import free_port

VERDICTS = {
    b"good": Outcome(accepted=True, durable=True),
    b"bad": Outcome(accepted=False, durable=True, reason="malformed", detail="not CBOR"),
    b"full": STORE_FULL,
}


@dataclass
class FakeDoor:
    """An :class:`edge.intake.IngestPort` that answers from :data:`VERDICTS` and records what it got."""

    submitted: list[tuple[bytes, str, str | None]] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0

    async def submit(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome:
        return (await self.submit_many([(raw, source)], reject=reject))[0]

    async def submit_many(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]:
        self.submitted += [(raw, source, reject) for raw, source in items]
        if len(self.submitted) >= self.expect:
            self.all_in.set()
        if reject is not None:
            return [Outcome(accepted=False, durable=True, reason=reject)] * len(items)
        return [VERDICTS[raw] for raw, _ in items]


class Connected:
    is_failure = False


@dataclass(frozen=True)
class Message:
    payload: bytes
    topic: str
    mid: int
    qos: int


class FakePaho:
    """Stands in for a paho client driven from the event loop (edge.connectors.mqtt, D-083): connecting
    opens a socket (one end of a socketpair, which the connector watches) and calls back on_connect, as
    paho does from the connecting thread; messages are delivered on the loop; subscriptions and
    acknowledgements are recorded."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # the factory runs in the connector's start
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None
        self.on_socket_open: Any = None
        self.on_socket_close: Any = None
        self.on_socket_register_write: Any = None
        self.on_socket_unregister_write: Any = None
        self.subscribed: list[tuple[str, int]] = []
        self.acked: list[int] = []
        self.connects = 0
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def connect_async(self, host: str, port: int, keepalive: int) -> None:
        pass

    def reconnect(self) -> int:
        self.connects += 1
        self._pair = socket.socketpair()
        self.on_socket_open(self, None, self._pair[0])
        self.on_connect(self, None, None, Connected(), None)
        return 0

    def deliver(self, messages: list[Message]) -> None:
        """From a thread, as the test's broker: each message handed to on_message on the loop, as
        ``loop_read`` does; returns once all were."""
        done = threading.Event()

        def on_loop() -> None:
            for m in messages:
                self.on_message(self, None, m)
            done.set()

        self.loop.call_soon_threadsafe(on_loop)
        assert done.wait(timeout=10), "the event loop never took the messages"

    def loop_read(self) -> int:
        return 0

    def loop_write(self) -> int:
        return 0

    def loop_misc(self) -> int:
        return 0

    def subscribe(self, topic: str, qos: int) -> None:
        self.subscribed.append((topic, qos))

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)

    def disconnect(self) -> None:
        if self._pair is not None:
            self.on_socket_close(self, None, self._pair[0])
            for end in self._pair:
                end.close()
            self._pair = None


def test_mqtt_acknowledges_durable_outcomes_only_through_the_contract() -> None:
    """MQTT: a stored or quarantined reading is PUBACKed, a refused one is not (the broker redelivers it)."""
    clients: list[FakePaho] = []

    def factory(config: MqttConfig) -> FakePaho:
        clients.append(FakePaho())
        return clients[-1]

    async def main() -> None:
        door = FakeDoor(expect=3)
        config = MqttConfig(host="broker.test", port=1883, topic="edgeroot/readings/#", client_id="t")
        connector = PLUGINS["mqtt"].create(config, door, factory)
        await connector.start()
        assert connector.state == "connected" and len(clients) == 1
        paho = clients[0]
        assert paho.subscribed == [("edgeroot/readings/#", 1)]
        messages = [
            Message(b"good", "edgeroot/readings/a", 1, 1),
            Message(b"bad", "edgeroot/readings/b", 2, 1),
        ]
        await asyncio.to_thread(paho.deliver, [*messages, Message(b"full", "edgeroot/readings/c", 3, 1)])
        await asyncio.wait_for(door.all_in.wait(), 10)
        await connector.stop()
        assert connector.state == "stopped"
        assert door.submitted == [
            (b"good", "mqtt:edgeroot/readings/a", None),
            (b"bad", "mqtt:edgeroot/readings/b", None),
            (b"full", "mqtt:edgeroot/readings/c", None),
        ]
        # Outcomes are acted on in the step that receives them, so the refusal is settled by now.
        assert paho.acked == [1, 2]

    asyncio.run(main())


def test_coap_answers_each_outcome_through_the_contract() -> None:
    """CoAP: 2.04 stored, 4.00 with the reason quarantined, 5.03 refused, 4.15 (quarantined) wrong format."""
    port = free_port()

    async def main() -> list[tuple[str, bytes]]:
        door = FakeDoor()
        connector = PLUGINS["coap"].create(CoapConfig(host="127.0.0.1", port=port), door)
        await connector.start()
        assert connector.state == "listening"
        client = await aiocoap.Context.create_client_context()
        answers = []
        try:
            for payload, fmt in ((b"good", 18), (b"bad", None), (b"full", 18), (b"good", 50)):
                msg = aiocoap.Message(
                    code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/readings", payload=payload
                )
                if fmt is not None:
                    msg.opt.content_format = fmt
                resp = await client.request(msg).response
                answers.append((str(resp.code), resp.payload))
        finally:
            await client.shutdown()
            await connector.stop()
        assert connector.state == "stopped"
        assert [(raw, reject) for raw, _, reject in door.submitted] == [
            (b"good", None), (b"bad", None), (b"full", None), (b"good", WRONG_CONTENT_FORMAT),
        ]  # fmt: skip
        assert all(source.startswith("coap:127.0.0.1") for _, source, _ in door.submitted)
        return answers

    answers = asyncio.run(main())
    assert answers[0][0].startswith("2.04")
    assert answers[1] == ("4.00 Bad Request", b"malformed: not CBOR")
    assert answers[2] == ("5.03 Service Unavailable", b"store-full: disk budget reached")
    assert answers[3][0].startswith("4.15")
