"""MQTT connector: subscribe with QoS 1 and acknowledge each message only once it is durable.

Built on paho-mqtt 2.x directly, because it offers manual acknowledgement (``manual_ack=True``,
``client.ack(mid, qos)``) and aiomqtt does not. With a persistent session (fixed client id,
``clean_session=False``) the broker redelivers every message not yet acknowledged when the gateway
dies (DESIGN §9 verified this against mosquitto under SIGKILL).

No network thread: paho is driven from the event loop (D-083). Its socket is on the loop's selector;
``on_message`` runs on the loop and appends the message to the burst being gathered; at
``max_inflight`` messages awaiting storage the socket is no longer read, so the broker holds the rest:
back-pressure instead of an unbounded buffer. Reading resumes, and the PUBACKs are sent, when the
readings' outcomes are known. A message may carry a batch of envelopes (docs/formats.md §19, D-082):
each is submitted on its own, and the message is acknowledged once all of them are durable.

While the gateway refuses input for its disk budget (``store-full``), the refused burst is *held*: not
acknowledged, not dropped, and submitted again (capped backoff, :data:`HOLD_RETRY_MAX_S`) before any
later message is handed on. The broker's in-flight window (``max_inflight_messages``) fills with
unacknowledged messages, so it stops sending and queues the rest in order; when the budget frees up,
the held burst is stored first and the rest follows in order. Dropping a refused message instead would
leave it with the broker until the next reconnect, after newer counters were stored: a ``replay``, lost.
PUBACKs are sent in arrival order. A reading held durably while its signer's key is looked up
(:data:`edge.intake.HELD`) is acknowledged like a stored one: it is on the gateway's disk and judged
later, so it never stalls the PUBACKs behind it. Only when too many readings are held already is one
refused (:data:`edge.intake.KEY_LOOKUP`): it is held here like a store-full refusal. A refusal at
shutdown is not held: the broker redelivers it at the next start (a redelivery of a stored reading is a
``duplicate``, acknowledged).

The broker bounds unacknowledged messages per client (mosquitto ``max_inflight_messages``, default 20;
systemd/mosquitto-edgeroot.conf sets 1000). Keep ``max_inflight`` here at least as large: otherwise
the connector stops reading, misses the broker's keepalive answers, and the connection is dropped while
the store is full. :func:`probe_broker` reads what a client can see of the broker's settings at start.

What a PUBACK means: the *device's* PUBACK comes from the broker when it has taken the message; the
gateway's PUBACK above goes to the broker, after the reading is durable. So a device that stops at its
PUBACK trusts the broker's persistence and queue limits. With ``ack_topic`` set, the gateway also tells
each device end to end: after a burst is durable it publishes one :class:`DeviceAck` per signer to
``<ack_topic>/<signer>`` (:func:`device_ack_topic`), listing the counters now stored and the ones
durably rejected after their signature was checked (docs/formats.md §19). A held reading is in neither
list: it is not judged yet, and its end-to-end answer is not sent when it is judged later; a device that
resends it is answered then (``stored``: a duplicate, or its rejection; D-059).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from chain_lite import cbor
from chain_lite.envelope import MAX_COUNTER, decode_envelope
from chain_lite.errors import ChainError
from edge.connectors import Plugin
from edge.errors import GatewayError
from edge.intake import (
    KEY_LOOKUP,
    MALFORMED_BATCH,
    STORE_FULL,
    BatchError,
    IngestPort,
    Outcome,
    SubmitMany,
    is_batch,
    split_batch,
)
from runtime.ratelimit import RateLimitedLog
from runtime.tomlconfig import Secret, Table, read_settings, setting

log = logging.getLogger(__name__)
NAME = "mqtt"
HOLD_RETRY_MIN_S = 0.1
HOLD_RETRY_MAX_S = 1.0
"""While the store is full, a held burst is offered again after 0.1 s, doubling to 1 s: intake resumes
within a second of the budget freeing up, and a refusal costs the gateway no writer work."""
HOLD_REASONS = (STORE_FULL.reason, KEY_LOOKUP)
"""Refusals held and offered again before any later message: the disk budget, and too many readings
already held for key lookups (both clear up by themselves, and a message dropped instead would stay at
the broker until the next reconnect)."""
SHIPPED_INFLIGHT = 1000
"""``max_inflight_messages`` in systemd/mosquitto-edgeroot.conf."""


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
    ack_topic: str | None = setting(
        "ack_topic", example="edgeroot/acks",
        help="after durable storage, ack each device end to end on ACK_TOPIC/<device id>; unset: off",
    )  # fmt: skip


# --- end-to-end acknowledgements (docs/formats.md §19) ---------------------------------------------

DEVICE_ACK_VERSION = 1
MAX_DEVICE_ACK_BYTES = 64 * 1024
MAX_ACK_COUNTERS = 1000
"""Per list per message: 1,000 counters of 9 bytes and 1,000 rejections with short reasons stay well
under :data:`MAX_DEVICE_ACK_BYTES`, so a burst of up to ``max_inflight`` readings is split."""
STORED_REASONS = ("duplicate",)
"""Outcomes that are not ``accepted`` but whose reading is in the store: an identical resend."""
SIGNED_REJECTIONS = ("replay", "counter-jump")
"""Rejections decided after the signature was checked (edge.admission's order). Any other rejection
(malformed, oversize, unknown-device, bad-signature, wrong-content-format) gets no end-to-end ack:
its kid is unproven, and a rejection sent to the device it names would let anyone on the broker make
that device drop a reading it still holds."""
_TOPIC_ESCAPES = {ord("%"): "%25", ord("+"): "%2B", ord("#"): "%23"}


class DeviceAckError(GatewayError):
    """A payload on an ack topic is not a :class:`DeviceAck` (docs/formats.md §19)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"device ack: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceAck:
    """What the gateway tells one device after a burst is durable: free ``stored`` and ``rejected``."""

    device: str
    stored: tuple[int, ...]
    """Counters now durable in the gateway's store (or already there: an identical resend)."""
    rejected: tuple[tuple[int, str], ...]
    """Counters durably quarantined after their signature was checked, with the reason: never resend."""


def device_ack_topic(ack_topic: str, device: str) -> str:
    """``<ack_topic>/<device>``; ``%``, ``+`` and ``#`` in the identifier are percent-encoded, since MQTT
    forbids wildcards in a topic name (MQTT 3.1.1 §4.7.1) and a device subscribes to exactly this name."""
    return f"{ack_topic}/{device.translate(_TOPIC_ESCAPES)}"


def encode_device_ack(ack: DeviceAck) -> bytes:
    """Deterministic CBOR: ``{"v": 1, "device": tstr, "stored": [uint], "rejected": [[uint, tstr]]}``."""
    return cbor.encode(
        {
            "v": DEVICE_ACK_VERSION,
            "device": ack.device,
            "stored": list(ack.stored),
            "rejected": [[counter, reason] for counter, reason in ack.rejected],
        }
    )


def _counter(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise DeviceAckError(f"counter {value!r} is not an unsigned 63-bit integer")
    return value


def decode_device_ack(data: bytes) -> DeviceAck:
    """The inverse of :func:`encode_device_ack`; anything else raises :class:`DeviceAckError`."""
    try:
        value = cbor.decode(data, "device ack", max_size=MAX_DEVICE_ACK_BYTES)
    except ChainError as exc:
        raise DeviceAckError(str(exc)) from exc
    if not isinstance(value, dict) or set(value) != {"v", "device", "stored", "rejected"}:
        raise DeviceAckError("not a map of exactly v, device, stored, rejected")
    if value["v"] != DEVICE_ACK_VERSION or type(value["v"]) is not int:
        raise DeviceAckError(f"unsupported version {value['v']!r}")
    device, stored, rejected = value["device"], value["stored"], value["rejected"]
    if not isinstance(device, str) or not isinstance(stored, list) or not isinstance(rejected, list):
        raise DeviceAckError("device is not text, or stored or rejected is not an array")
    verdicts: list[tuple[int, str]] = []
    for entry in rejected:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], str):
            raise DeviceAckError("a rejected entry is not [counter, reason]")
        verdicts.append((_counter(entry[0]), entry[1]))
    return DeviceAck(device, tuple(_counter(c) for c in stored), tuple(verdicts))


def device_acks(readings: list[bytes], outcomes: list[Outcome]) -> list[DeviceAck]:
    """One :class:`DeviceAck` per signer (more past :data:`MAX_ACK_COUNTERS`) for a burst whose outcomes
    are known, in first-seen order.

    Precondition: every durable outcome is final (the caller acks only after ``submit_many`` returned).
    Refused readings (not durable) are left out: the device must keep and resend them. So are rejections
    decided before the signature was checked (:data:`SIGNED_REJECTIONS`).
    """
    by_device: dict[str, tuple[list[int], list[tuple[int, str]]]] = {}
    for raw, outcome in zip(readings, outcomes, strict=True):
        stored = outcome.accepted or outcome.reason in STORED_REASONS
        if not outcome.durable or not (stored or outcome.reason in SIGNED_REJECTIONS):
            continue
        try:
            env = decode_envelope(raw)  # decoded (and verified) by the gateway already: cannot fail here
        except ChainError:
            continue
        entry = by_device.setdefault(env.signer, ([], []))
        if stored:
            entry[0].append(env.counter)
        else:
            entry[1].append((env.counter, outcome.reason or ""))
    acks = []
    for device, (kept, refusals) in by_device.items():
        once = set(kept)  # a resend that met its original in the same burst is answered once: stored
        refused = [(c, why) for c, why in refusals if c not in once]
        for i in range(0, max(len(kept), len(refused)), MAX_ACK_COUNTERS):
            chunk = slice(i, i + MAX_ACK_COUNTERS)
            acks.append(DeviceAck(device, tuple(kept[chunk]), tuple(refused[chunk])))
    return acks


def validate(t: Table) -> MqttConfig:
    values = read_settings(MqttConfig, t)
    if not values["topic"] or "\x00" in values["topic"]:
        raise t.fail("topic", "must be a non-empty MQTT topic filter")
    ack_topic = values["ack_topic"]
    if ack_topic is not None:
        if not ack_topic or set(ack_topic) & {"+", "#", "\x00"} or ack_topic.endswith("/"):
            raise t.fail("ack_topic", "must be a topic name without wildcards or a trailing '/'")
        if _may_match_below(values["topic"], ack_topic):
            # The gateway would receive its own acks as readings (and quarantine them as malformed).
            raise t.fail("ack_topic", f"lies under the readings filter {values['topic']!r}")
    return MqttConfig(**values)


def _may_match_below(topic_filter: str, name: str) -> bool:
    """Whether ``topic_filter`` matches some topic ``name/...`` (MQTT 3.1.1 §4.7 wildcards)."""
    levels = topic_filter.split("/")
    for i, level in enumerate(name.split("/")):
        if i >= len(levels):
            return False
        if levels[i] == "#":
            return True
        if levels[i] not in ("+", level):
            return False
    return len(levels) > len(name.split("/"))


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


def probe_broker(config: MqttConfig, timeout: float = 5.0) -> int | None:
    """The broker's Receive Maximum (mosquitto: its ``max_inflight_messages``), read from the CONNACK of
    a short MQTT 5 connection with a clean session of its own; None when it cannot be seen (the broker
    does not speak MQTT 5, as amqtt, or is unreachable). Blocking: call it off the event loop.

    That is all a client can see of the settings that matter. ``max_queued_messages`` and
    ``persistence`` are visible nowhere (mosquitto's ``$SYS/broker/...`` topics publish counts, not
    limits), so a Receive Maximum other than the shipped file's is the one sign that the broker does not
    run systemd/mosquitto-edgeroot.conf (docs/operations.md, "The MQTT broker")."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{config.client_id}-probe", protocol=paho.MQTTv5
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(ca_certs=config.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    seen: list[int | None] = []
    answered = threading.Event()

    def on_connect(_c: paho.Client, _ud: Any, _flags: Any, reason: Any, props: Any) -> None:
        # MQTT 5 §3.2.2.3.3: an absent Receive Maximum means 65,535.
        seen.append(None if reason.is_failure else getattr(props, "ReceiveMaximum", 65535))
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_: answered.set()  # a 3.1.1-only broker may just close the connection
    try:
        client.connect(config.host, config.port, keepalive=15)
    except OSError:
        return None
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return seen[0] if seen else None


def warn_if_broker_unsafe(config: MqttConfig, receive_maximum: int | None) -> None:
    """The start-time WARNING of docs/operations.md, from what :func:`probe_broker` saw."""
    if receive_maximum is None:
        log.info("MQTT broker %s:%d: its settings cannot be seen (no MQTT 5); make sure it runs with "
                 "systemd/mosquitto-edgeroot.conf", config.host, config.port)  # fmt: skip
    elif receive_maximum != SHIPPED_INFLIGHT:
        log.warning(
            "MQTT broker %s:%d allows %d messages in flight, not the %d of systemd/mosquitto-edgeroot.conf: "
            "it does not run the shipped configuration, so its max_queued_messages (invisible to clients) "
            "may be mosquitto's default of 1000, which drops readings while the gateway is away",
            config.host, config.port, receive_maximum, SHIPPED_INFLIGHT,
        )  # fmt: skip
    if receive_maximum is not None and receive_maximum > config.max_inflight:
        log.warning(
            "MQTT broker %s:%d may send %d unacknowledged messages, more than max_inflight = %d: while the "
            "store is full the connection stalls and is dropped; raise max_inflight",
            config.host, config.port, receive_maximum, config.max_inflight,
        )  # fmt: skip


RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 5.0
"""Reconnect delays after a lost connection or a failed attempt, doubling (paho's own defaults there)."""
MISC_EVERY_S = 1.0
"""How often paho's ``loop_misc`` runs: keepalive pings, and noticing a silent broker."""
READS_PER_WAKE = 256
"""Packets read per readable event at most, so a flood of messages leaves room for the other tasks."""
MAX_BURST_BYTES = 256 * 1024
"""A burst handed to the gateway at once holds messages up to this many payload bytes (at least one):
about 1,000 single readings, or 60 messages of 20, so batch messages do not make one transaction (and
its memory) 20 times larger."""


class MqttConnector:
    """paho driven from the event loop (D-083): the socket is watched with ``add_reader`` and
    ``add_writer`` and paho's ``loop_read``/``loop_write``/``loop_misc`` run on the loop, as in paho's own
    asyncio example; no network thread, no crossing per message. Back-pressure: at ``max_inflight``
    messages awaiting storage the socket is no longer read (the broker's window fills and it queues the
    rest), and reading resumes when one is settled. Connecting (a blocking TCP connect inside paho) runs
    in a worker thread; paho's socket callbacks are then carried to the loop."""

    def __init__(
        self,
        config: MqttConfig,
        submit_many: SubmitMany,
        factory: Callable[[MqttConfig], paho.Client] | None = None,
    ) -> None:
        self.config = config
        self.submit_many = submit_many
        # An injected transport (tests) gets no probe connection: the probe is the real broker's.
        self._probe = factory is None
        self.factory = factory or paho_client
        self.state = "stopped"
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight = 0
        self._connected: asyncio.Event | None = None
        self._stopping = False
        self._received: list[tuple[bytes, str, int, int]] = []
        self._consumer: asyncio.Task[None] | None = None
        self._stop_wanted: asyncio.Event | None = None
        self._ever_connected = False
        self._sock: Any = None
        """The socket being watched (on the loop's selector), or None."""
        self._fd = -1
        """Its descriptor, as registered: paho may have closed the socket (fileno -1) when it is unwatched."""
        self._reading = False
        self._lost: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[Any] | None = None
        """paho's connect running in a thread, if any: a stop waits for it (its socket must be closed)."""
        self._got_message = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._stop_wanted = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        if self._probe:
            warn_if_broker_unsafe(self.config, await asyncio.to_thread(probe_broker, self.config))
        client = self.factory(self.config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client
        self.state = "connecting"
        client.connect_async(self.config.host, self.config.port, keepalive=15)
        self._supervisor = asyncio.create_task(self._keep_connected(client), name="mqtt-connection")
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
        if self._stop_wanted is not None:
            self._stop_wanted.set()  # a held burst stops waiting: left unacknowledged, redelivered later
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if self._connecting is not None:  # a connect under way: let it end, so its socket is closed below
            await asyncio.wait([self._connecting], timeout=10)
            if self._connecting.done() and not self._connecting.cancelled():
                self._connecting.exception()  # retrieved: a failed connect at stop is no news
            await asyncio.sleep(0)  # its socket callbacks
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()  # queues DISCONNECT; paho closes the socket once it is written
            assert self._lost is not None
            if self._sock is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), 2)
            self._unwatch(self._sock)
        self.state = "stopped"

    # --- the connection, on the event loop ---------------------------------------------------------------

    async def _keep_connected(self, client: paho.Client) -> None:
        """Connect, run paho's housekeeping every second, and reconnect after a loss (1 s, doubling to 5)."""
        assert self._lost is not None
        delay = RECONNECT_MIN_S
        while True:
            try:
                delay = await self._keep_connected_once(client, delay)
            except Exception:  # never leave the gateway without intake for a bug here: log, go on
                log.exception("MQTT connection upkeep failed; retrying")
                await asyncio.sleep(delay)

    async def _keep_connected_once(self, client: paho.Client, delay: float) -> float:
        """One round of :meth:`_keep_connected`; the next reconnect delay."""
        assert self._lost is not None
        if self._sock is None:
            self._lost.clear()
            try:
                # Blocking inside paho (TCP connect, CONNECT queued): in a thread. Its socket
                # callbacks come back to this loop (_on_socket_open).
                assert self._loop is not None
                self._connecting = self._loop.run_in_executor(None, client.reconnect)
                # Shielded: a stop cancelling this task waits for the connect itself (stop()).
                await asyncio.shield(self._connecting)
            except (OSError, ValueError) as exc:
                if self.state != "reconnecting" or delay == RECONNECT_MIN_S:
                    where = f"{self.config.host}:{self.config.port}"
                    log.warning("MQTT broker %s: %s; retrying", where, exc)
                self.state = "reconnecting"
                await asyncio.sleep(delay)
                return min(delay * 2, RECONNECT_MAX_S)
            await asyncio.sleep(0)  # let the socket callbacks scheduled by the thread run
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), MISC_EVERY_S)
        if self._sock is not None and client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            return RECONNECT_MIN_S if self.state == "connected" else delay
        self._unwatch(self._sock)
        await asyncio.sleep(delay)
        return min(delay * 2, RECONNECT_MAX_S)

    def _on_socket_open(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._watch, sock)

    def _on_socket_close(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._unwatch, sock)

    def _on_socket_register_write(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._want_write, sock, True)

    def _on_socket_unregister_write(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._want_write, sock, False)

    def _watch(self, sock: Any) -> None:
        if self._sock is not None and self._sock is not sock:
            self._unwatch(self._sock)
        self._sock = sock
        self._fd = sock.fileno()
        self._reading = False
        self._read_if_room()

    def _unwatch(self, sock: Any) -> None:
        if sock is None or sock is not self._sock:
            return
        assert self._loop is not None
        assert self._lost is not None
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock = None
        self._reading = False
        self._lost.set()

    def _want_write(self, sock: Any, want: bool) -> None:
        if sock is not self._sock or self._client is None:
            return
        assert self._loop is not None
        if want:
            self._loop.add_writer(self._fd, self._client.loop_write)
        else:
            self._loop.remove_writer(self._fd)

    def _read_if_room(self) -> None:
        """Watch the socket for reading while fewer than ``max_inflight`` messages await storage."""
        assert self._loop is not None
        want = self._sock is not None and self._inflight < self.config.max_inflight
        if want and not self._reading:
            self._loop.add_reader(self._fd, self._readable)
        elif not want and self._reading and self._sock is not None:
            self._loop.remove_reader(self._fd)
        self._reading = want

    def _readable(self) -> None:
        """Read what the socket holds: one packet per ``loop_read``, on while each call delivered a
        message (a call without one read another packet, or found the socket empty)."""
        client = self._client
        if client is None:
            return
        for _ in range(READS_PER_WAKE):
            self._got_message = False
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or not (self._got_message and self._reading):
                break

    # --- paho callbacks (on the loop; on_connect also from the connecting thread) -------------------------

    def _on_connect(self, client: paho.Client, _ud: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            return
        if self._ever_connected and not getattr(flags, "session_present", True):
            # The broker forgot this client's persistent session: whatever it had queued for the gateway
            # (and the unacknowledged messages) is gone. A broker restarted without persistence does this.
            log.warning(
                "MQTT broker %s:%d lost the gateway's session on reconnect: readings queued for it while "
                "it was away are lost; run the broker with persistence (systemd/mosquitto-edgeroot.conf)",
                self.config.host,
                self.config.port,
            )
        self._ever_connected = True
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
        self._got_message = True
        self._received.append((bytes(message.payload), f"mqtt:{message.topic}", message.mid, message.qos))
        self._inflight += 1
        if self._inflight >= self.config.max_inflight:
            # Back-pressure: read no more until one is settled; the broker's in-flight window fills.
            self._read_if_room()
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.create_task(self._consume(client), name="mqtt-consumer")

    async def _consume(self, client: paho.Client) -> None:
        """Store bursts strictly one after another, in arrival order (a device's counters must arrive
        in order even when a burst waits for a registry lookup); bursts grow while one is stored."""
        while self._received:
            size, cut = 0, 0
            while cut < len(self._received) and (cut == 0 or size < MAX_BURST_BYTES):
                size += len(self._received[cut][0])
                cut += 1
            items, self._received = self._received[:cut], self._received[cut:]
            await self._store(client, items)

    def _settled(self, count: int) -> None:
        self._inflight -= count
        if self._sock is not None and not self._reading:
            self._read_if_room()

    async def _store(self, client: paho.Client, items: list[tuple[bytes, str, int, int]]) -> None:
        burst = _Burst.of(items)
        try:
            outcomes = await self._submit_holding(client, burst)
        except Exception:  # storage failed: no ack, the broker redelivers
            log.exception(
                "%d readings from MQTT could not be stored; leaving them unacknowledged", len(burst.pairs)
            )
        else:
            if self.config.ack_topic is not None:
                # Only now: the outcomes are durable, so an end-to-end ack never precedes storage.
                for ack in device_acks([raw for raw, _ in burst.pairs], outcomes):
                    # QoS 1 so the broker queues it for a device's persistent session; not retained (a
                    # device that lost its session resends, and the resend is answered again).
                    # paho queues the PUBLISH; the loop writes it when the socket is writable.
                    client.publish(
                        device_ack_topic(self.config.ack_topic, ack.device), encode_device_ack(ack), qos=1
                    )
        finally:
            self._settled(len(items))

    async def _submit_holding(self, client: paho.Client, burst: _Burst) -> list[Outcome]:
        """Submit a burst; while the store is full, hold the refused part and submit it again, so nothing
        after it is taken first (the module docstring says why). PUBACKs go out in arrival order: the
        durable part before the first held message at once, the rest once it is durable too. A batch
        message is acknowledged once every envelope in it is durable."""
        outcomes = await burst.submit(self.submit_many, range(len(burst.pairs)))
        acked = self._ack_in_order(client, burst, outcomes, 0)
        delay, held_since = HOLD_RETRY_MIN_S, 0.0
        while not self._stopping:
            held = [i for i, o in enumerate(outcomes) if o.reason in HOLD_REASONS]
            if not held:
                break
            if not held_since:
                held_since = time.monotonic()
                log.info("%s: holding %d MQTT reading(s) unacknowledged; the broker queues the rest in "
                         "order", outcomes[held[0]].detail, len(held))  # fmt: skip
            assert self._stop_wanted is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_wanted.wait(), delay)
            if self._stopping:
                break
            for i, outcome in zip(held, await burst.submit(self.submit_many, held), strict=True):
                outcomes[i] = outcome
            acked = self._ack_in_order(client, burst, outcomes, acked)
            delay = min(delay * 2, HOLD_RETRY_MAX_S)
        if held_since and acked == len(burst.messages):
            log.info("MQTT intake resumed after %.1f s held", time.monotonic() - held_since)
        return outcomes

    @staticmethod
    def _ack_in_order(client: paho.Client, burst: _Burst, outcomes: list[Outcome], start: int) -> int:
        """PUBACK the messages from ``start`` whose envelopes are all durable, up to the first one that is
        not; the message where it stopped."""
        at = start
        while at < len(burst.messages):
            mid, qos, first, end = burst.messages[at]
            if not all(o.durable for o in outcomes[first:end]):
                break
            if qos > 0:
                client.ack(mid, qos)  # queued; written when the socket is writable
            at += 1
        return at


@dataclass(frozen=True, slots=True)
class _Burst:
    """Messages taken from the broker together, cut into envelopes (a batch message carries several:
    docs/formats.md §19, D-082)."""

    pairs: list[tuple[bytes, str]]
    """Every envelope of the burst, in order, with its source."""
    rejects: list[str | None]
    """Per envelope: the connector's own verdict (a malformed batch, quarantined whole), or None."""
    messages: list[tuple[int, int, int, int]]
    """Per message: mid, qos, and the range of its envelopes in :attr:`pairs`."""

    @classmethod
    def of(cls, items: list[tuple[bytes, str, int, int]]) -> _Burst:
        pairs: list[tuple[bytes, str]] = []
        rejects: list[str | None] = []
        messages = []
        for raw, source, mid, qos in items:
            first = len(pairs)
            if is_batch(raw):
                try:
                    envelopes = split_batch(raw)
                except BatchError as exc:
                    _bad_batches.warning(MALFORMED_BATCH, "quarantined a message from %s: %s", source, exc)
                    pairs.append((raw, source))
                    rejects.append(MALFORMED_BATCH)
                else:
                    pairs += [(envelope, source) for envelope in envelopes]
                    rejects += [None] * len(envelopes)
            else:
                pairs.append((raw, source))
                rejects.append(None)
            messages.append((mid, qos, first, len(pairs)))
        return cls(pairs, rejects, messages)

    async def submit(self, submit_many: SubmitMany, which: Iterable[int]) -> list[Outcome]:
        """Submit the envelopes at ``which`` (ascending), in order; consecutive ones with the same verdict
        of the connector's in one call. Their outcomes, in the same order."""
        outcomes: list[Outcome] = []
        run: list[int] = []
        for i in [*which, -1]:
            if run and (i < 0 or self.rejects[i] != self.rejects[run[0]]):
                outcomes += await submit_many([self.pairs[j] for j in run], reject=self.rejects[run[0]])
                run = []
            run.append(i)
        return outcomes


_bad_batches = RateLimitedLog(log)


def create(
    config: MqttConfig, ingest: IngestPort, factory: Callable[[MqttConfig], paho.Client] | None = None
) -> MqttConnector:
    return MqttConnector(config, ingest.submit_many, factory)


PLUGIN: Plugin = Plugin(NAME, MqttConfig, validate, create)
