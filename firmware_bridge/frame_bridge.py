"""The bridge daemon: one process per serial port (``edgeroot-bridge@ttyUSB0.service``).

Frames from the device are handled in order: a READING is forwarded untouched to the gateway and
answered ACK (durable there), NACK (rejected for good, with the reason) or BUSY (try again later);
TIME_REQUEST is answered with TIME; HELLO (identifier and public key) is logged and appended to
``hello.jsonl`` in the state directory for the operator to register. Readings are forwarded one at a
time: sending a device's readings concurrently could let a later counter overtake an earlier one, and
the gateway would then reject the earlier one as a replay. For the same reason, once a device's reading
is answered BUSY, its later readings (a device sends ahead without waiting for each verdict) are answered
BUSY too, without being forwarded, until that reading comes back and gets its verdict: the device resends
its unacknowledged readings in counter order, so they reach the gateway in order. Forwarding them at
once would store a later counter first and turn the resend of the earlier one into a "replay" NACK, and
the device would drop a reading the gateway never had. The hold ends when the held reading gets ACK or
NACK, at a HELLO or a reopened port (the device restarted: what it still holds, it sends again), or after
:data:`HOLD_RELEASE_S` without the held reading coming back (a device that does not resend; logged).

The port vanishing (device unplugged, USB adapter gone) closes the link; the bridge keeps running,
retries the port with backoff (1 s doubling to 30 s) and resumes when it returns.

The lifecycle is :class:`runtime.service.Service`'s: READY=1 once the bridge runs (with or without the
port), STATUS= says which; WATCHDOG=1 from the event loop that serves the port. SIGHUP closes and
reopens the port (RELOADING=1, then READY=1), for an adapter re-plugged or reconfigured behind the
bridge's back. Stop, under one deadline (:data:`STOP_DEADLINE_S`): finish the reading in hand (its
verdict goes back to the device) and close the port, then stop forwarding. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import serial

from chain_lite import cbor
from chain_lite.envelope import decode_envelope
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from firmware_bridge.forward import Forwarder
from firmware_bridge.frames import Frame, FrameDecoder, FrameType, counter_body
from firmware_bridge.link import SerialLink, open_link
from runtime.clock import now_ms
from runtime.ratelimit import RateLimitedLog
from runtime.sdnotify import Notifier
from runtime.service import Service, Step

log = logging.getLogger(__name__)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
STOP_DEADLINE_S = 10.0
"""The whole shutdown's deadline: below ``TimeoutStopSec=15`` of edgeroot-bridge@.service; a reading in
hand waits at most the forwarder's own timeout (10 s) for its verdict."""
HOLD_RELEASE_S = 120.0
"""How long a device's later readings wait for a reading answered BUSY to come back (see the module's
docstring): far longer than the suggested 5 s resend interval (docs/formats.md §18)."""


@dataclass
class BridgeStats:
    verdicts: dict[str, int] = field(default_factory=lambda: {"ack": 0, "nack": 0, "busy": 0})
    hellos: int = 0
    bad_hellos: int = 0
    time_requests: int = 0
    port_opened: int = 0
    port_lost: int = 0
    held_back: int = 0
    """Readings answered BUSY unforwarded because an earlier one of their signer was answered BUSY."""
    holds_expired: int = 0


class Bridge:
    def __init__(
        self,
        port: str,
        forwarder: Forwarder,
        *,
        baudrate: int = 115200,
        state: Path | None = None,
        notifier: Notifier | None = None,
        hold_release_s: float = HOLD_RELEASE_S,
    ) -> None:
        self.port = port
        self.hold_release_s = hold_release_s
        self._held: dict[str, tuple[int, float]] = {}
        """Per signer: the lowest counter answered BUSY and not settled yet, and when it was last seen."""
        self.forwarder = forwarder
        self.baudrate = baudrate
        self.state = state
        self.notifier = notifier or Notifier()
        self.decoder = FrameDecoder()
        self.stats = BridgeStats()
        self.stop_event = asyncio.Event()
        self.reopen_event = asyncio.Event()
        self.where = "starting"
        self._warn = RateLimitedLog(log, 30.0)

    def status(self, where: str) -> str:
        frames, errors = self.decoder.stats.frames, sum(self.decoder.stats.errors.values())
        return f"{where}; frames={frames} frame_errors={errors} verdicts={self.stats.verdicts}"

    async def run(self) -> None:
        """The bridge, until SIGTERM or a failure (the exit code: :func:`runtime.service.run_service`)."""
        service = Service(
            "bridge", status=lambda: self.status(self.where), reload=self._reopen,
            stop_deadline_s=STOP_DEADLINE_S, notifier=self.notifier,
        )  # fmt: skip
        async with service:
            self.stop_event = service.stopping  # the serial loop ends at its next wait once the stop begins
            await self.forwarder.start()
            serial = service.spawn("serial", self._serial_loop())
            service.shutdown_order(
                Step("finish the reading in hand, close the port", lambda: asyncio.wait({serial})),
                Step("stop forwarding", self.forwarder.stop),
            )
            await service.serve()

    async def _reopen(self) -> str:
        self.reopen_event.set()
        return f"reopening serial port {self.port}"

    async def _serial_loop(self) -> None:
        """Open the port (retrying with backoff), serve it until it closes, a reopen or the stop."""
        backoff = RETRY_MIN_S
        while not self.stop_event.is_set():
            self.reopen_event.clear()
            try:
                link = await open_link(self.port, self.baudrate, self.decoder)
            except (OSError, serial.SerialException) as exc:
                self._warn.warning("port", "serial port %s not available (%s); retrying", self.port, exc)
                self.where = f"waiting for {self.port}"
                self.notifier.send(f"STATUS={self.status(self.where)}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            backoff = RETRY_MIN_S
            self.stats.port_opened += 1
            log.info("serial port %s open at %d baud", self.port, self.baudrate)
            self.where = f"serving {self.port}"
            self.notifier.send(f"STATUS={self.status(self.where)}")
            await self._serve(link)
            if not self.stop_event.is_set() and not self.reopen_event.is_set():
                self.stats.port_lost += 1
                log.warning("serial port %s closed or vanished; waiting for it to return", self.port)

    async def _serve(self, link: SerialLink) -> None:
        self._held.clear()  # a reopened port may have a restarted device behind it
        closed = asyncio.create_task(link.closed.wait())
        stopping = asyncio.create_task(self.stop_event.wait())
        reopen = asyncio.create_task(self.reopen_event.wait())
        try:
            while True:
                getter = asyncio.create_task(link.frames.get())
                done, _ = await asyncio.wait(
                    {getter, closed, stopping, reopen}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    return
                await self._handle(link, getter.result())
        finally:
            closed.cancel()
            stopping.cancel()
            reopen.cancel()
            if link.transport is not None:
                link.transport.close()

    async def _handle(self, link: SerialLink, frame: Frame) -> None:
        if frame.type is FrameType.READING:
            await self._reading(link, frame.body)
        elif frame.type is FrameType.TIME_REQUEST:
            self.stats.time_requests += 1
            link.send(FrameType.TIME, now_ms().to_bytes(8, "big"))
        elif frame.type is FrameType.HELLO:
            self._hello(link, frame.body)
        else:
            link.send(FrameType.ERROR, f"unexpected frame type {frame.type.name} from a device".encode())

    async def _reading(self, link: SerialLink, envelope: bytes) -> None:
        try:
            decoded = decode_envelope(envelope)
        except ChainError as exc:
            # Not an envelope at all: say so; the gateway would only quarantine it.
            link.send(FrameType.NACK, counter_body(0, f"malformed: {exc}"))
            self.stats.verdicts["nack"] += 1
            return
        signer, counter = decoded.signer, decoded.counter
        if self._holds_back(signer, counter):
            link.send(FrameType.BUSY, counter_body(counter))
            self.stats.verdicts["busy"] += 1
            self.stats.held_back += 1
            return
        verdict = await self.forwarder.send(envelope)
        self.stats.verdicts[verdict.kind] += 1
        self._settle_hold(signer, counter, verdict.kind)
        if verdict.kind == "ack":
            link.send(FrameType.ACK, counter_body(counter))
        elif verdict.kind == "nack":
            link.send(FrameType.NACK, counter_body(counter, verdict.reason))
            self._warn.warning(
                "nack", "gateway rejected reading %d from %s: %s", counter, self.port, verdict.reason
            )
        else:
            link.send(FrameType.BUSY, counter_body(counter))
            self._warn.warning("busy", "gateway not accepting readings now: %s", verdict.reason)

    def _holds_back(self, signer: str, counter: int) -> bool:
        """Whether ``counter`` waits (answered BUSY, not forwarded) behind an earlier reading of
        ``signer`` that was answered BUSY; a hold nobody came back for expires."""
        held = self._held.get(signer)
        if held is None or counter <= held[0]:
            return False
        if time.monotonic() - held[1] > self.hold_release_s:
            del self._held[signer]
            self.stats.holds_expired += 1
            log.warning(
                "%s did not resend reading %d within %.0f s of BUSY; forwarding its later readings",
                signer, held[0], self.hold_release_s,
            )  # fmt: skip
            return False
        return True

    def _settle_hold(self, signer: str, counter: int, kind: str) -> None:
        held = self._held.get(signer)
        if kind == "busy":
            if held is None or counter <= held[0]:
                self._held[signer] = (counter, time.monotonic())
        elif held is not None and counter == held[0]:
            del self._held[signer]

    def _hello(self, link: SerialLink, body: bytes) -> None:
        try:
            item = cbor.decode(body, "hello", max_size=1024)
            identifier, key = item
            if not isinstance(identifier, str) or not isinstance(key, bytes) or len(key) != 65:
                raise ValueError("want [identifier text, 65-byte SEC1 P-256 public key]")
            # The namespace policy before the identifier reaches a log line or a file: a newline or a
            # bidi control in it could forge a journal line or mislead the operator reading hello.jsonl.
            identifier = normalize(identifier)
        except (ChainError, ValueError, TypeError) as exc:
            self.stats.bad_hellos += 1
            self._warn.warning("hello", "bad HELLO on %s: %s", self.port, exc)
            link.send(FrameType.ERROR, f"bad HELLO: {exc}".encode())
            return
        self.stats.hellos += 1
        self._held.clear()  # the device restarted: it resends what it still holds, in order
        log.info("HELLO from %s on %s (public key %s)", identifier, self.port, key.hex())
        if self.state is not None:
            self.state.mkdir(parents=True, exist_ok=True)
            with (self.state / "hello.jsonl").open("a") as f:
                f.write(
                    json.dumps({"identifier": identifier, "public_key_sec1": key.hex(), "port": self.port})
                    + "\n"
                )
