"""A device's readings reach the gateway in counter order through the serial bridge, also when one of
them was answered BUSY: a device sends ahead without waiting for each verdict, and a later counter
stored first would turn the resend of the earlier one into a "replay" NACK, which tells the device to
drop a reading the gateway never had (seen in `make demo` on a loaded machine: 8 readings of 60 lost).
The gateway here is a small model of its counter rule (docs/formats.md §8): strictly increasing per
signer, a resend of a stored reading is a duplicate (ACK again), any other old counter a replay."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from chain_lite import cbor
from chain_lite.cose import CoseSigner
from chain_lite.envelope import decode_envelope
from edgeroot.device import reading
from edgeroot.device_simulation import _settle
from firmware_bridge.forward import Verdict
from firmware_bridge.frame_bridge import Bridge
from firmware_bridge.frames import FrameType, parse_counter_body

DEVICE = "88.123.99/MCU-7"


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[FrameType, bytes]] = []

    def send(self, kind: FrameType, body: bytes) -> None:
        self.sent.append((kind, body))


class GatewayModel:
    """The gateway's counter rule; ``busy_once`` counters are answered BUSY on their first arrival
    (a CoAP exchange that timed out on a loaded machine), as if they never reached it."""

    def __init__(self, busy_once: set[int]) -> None:
        self.busy_once = set(busy_once)
        self.stored: dict[int, bytes] = {}
        self.forwarded: list[int] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, envelope: bytes) -> Verdict:
        counter = decode_envelope(envelope).counter
        self.forwarded.append(counter)
        if counter in self.busy_once:
            self.busy_once.discard(counter)
            return Verdict("busy", "gateway unreachable: timed out")
        if self.stored and counter <= max(self.stored):
            if self.stored.get(counter) == envelope:
                return Verdict("ack")
            return Verdict("nack", f"replay: counter {counter} <= last accepted {max(self.stored)}")
        self.stored[counter] = envelope
        return Verdict("ack")


def _device_run(bridge: Bridge, gateway: GatewayModel, counters: list[int]) -> dict[str, int]:
    """A device as `device simulate --serial` is one: all readings sent ahead, then every unsettled one
    resent in counter order until each has ACK or NACK; the device's verdict counts."""
    signer = CoseSigner(DEVICE, ec.generate_private_key(ec.SECP256R1()))
    pending = {c: reading(signer, c) for c in counters}
    verdicts = {"ack": 0, "nack": 0, "busy": 0}
    link = RecordingLink()

    async def run() -> None:
        for raw in list(pending.values()):
            await bridge._reading(link, raw)  # type: ignore[arg-type]
        for _ in range(len(counters) + 1):
            for kind, body in link.sent:
                frame = type("F", (), {"type": kind, "body": body})()
                _settle(frame, pending, verdicts, parse_counter_body, FrameType)
            link.sent.clear()
            if not pending:
                return
            for _, raw in sorted(pending.items()):
                await bridge._reading(link, raw)  # type: ignore[arg-type]

    asyncio.run(run())
    assert not pending, f"readings never settled: {sorted(pending)}"
    return verdicts


@pytest.mark.parametrize("busy", [{2}, {2, 3}, {1, 4}, {5}], ids=str)
def test_a_reading_answered_busy_is_not_overtaken_and_nothing_is_refused_as_a_replay(busy: set[int]) -> None:
    """Readings 1..5 sent ahead, some answered BUSY once: every reading is stored, none NACKed, and
    the gateway receives each new counter in order."""
    gateway = GatewayModel(busy)
    bridge = Bridge("/dev/ttyTEST", gateway)
    verdicts = _device_run(bridge, gateway, [1, 2, 3, 4, 5])
    assert verdicts["nack"] == 0, verdicts
    assert verdicts["ack"] == 5
    assert sorted(gateway.stored) == [1, 2, 3, 4, 5]
    first_arrivals = [c for i, c in enumerate(gateway.forwarded) if c not in gateway.forwarded[:i]]
    assert first_arrivals == sorted(first_arrivals), gateway.forwarded
    assert bridge.stats.held_back > 0 or max(busy) == 5


def test_a_hold_nobody_comes_back_for_expires_and_a_hello_ends_it() -> None:
    """A device that drops a reading after BUSY (no resend) holds its later ones back only until the
    hold expires; a HELLO (the device restarted) ends the hold at once."""
    signer = CoseSigner(DEVICE, ec.generate_private_key(ec.SECP256R1()))
    gateway = GatewayModel({1})
    bridge = Bridge("/dev/ttyTEST", gateway, hold_release_s=0.2)
    link = RecordingLink()

    async def send(counter: int) -> FrameType:
        link.sent.clear()
        await bridge._reading(link, reading(signer, counter))  # type: ignore[arg-type]
        return link.sent[-1][0]

    assert asyncio.run(send(1)) is FrameType.BUSY
    assert asyncio.run(send(2)) is FrameType.BUSY  # held back behind 1
    assert gateway.forwarded == [1]
    counter, since = bridge._held[DEVICE]
    bridge._held[DEVICE] = (counter, since - 0.3)  # reading 1 last seen longer ago than hold_release_s
    assert asyncio.run(send(2)) is FrameType.ACK
    assert bridge.stats.holds_expired == 1

    gateway.busy_once.add(3)
    bridge.hold_release_s = 60.0
    assert asyncio.run(send(3)) is FrameType.BUSY
    assert asyncio.run(send(4)) is FrameType.BUSY
    bridge._hello(link, cbor.encode([DEVICE, b"\x04" + bytes(64)]))  # type: ignore[arg-type]
    assert asyncio.run(send(4)) is FrameType.ACK
    assert gateway.forwarded == [1, 2, 3, 4]
