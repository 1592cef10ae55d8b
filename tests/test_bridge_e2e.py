"""The bridge as a real process on a pseudo-terminal, forwarding to a real gateway over CoAP."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain_lite import envelope
from chain_lite.cose import ALG_ES256, ALG_SM2, parse_sign1
from chain_lite.keys import algorithm_of
from edge import store
from edgeroot.system import Daemon, wait_until
from firmware_bridge.frames import Frame, FrameDecoder, FrameType, encode_frame, parse_counter_body
from tests.gateway_harness import DEVICE, EDGEROOT, EVERY_SUITE, Plant
from tests.serial_harness import pty, read_some, write_all


class Pty:
    """A pseudo-terminal pair; the bridge opens ``path`` (a symlink, like /dev/serial/by-id/...)."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave_name = pty()
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.slave_name)
        self.decoder = FrameDecoder()

    def write(self, data: bytes) -> None:
        write_all(self.master, data)

    def read_frames(self, want: int, timeout: float = 10.0) -> list[Frame]:
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while len(frames) < want and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                data = read_some(self.master)
                if data:
                    frames += self.decoder.feed(data)
                else:  # flushed, or nobody has the other side open (yet)
                    time.sleep(0.1)
        return frames

    def unplug(self) -> None:
        os.close(self.master)


ALGS = {"p256": ALG_ES256, "sm2": ALG_SM2}


@pytest.fixture
def bridge(plant: Plant, tmp_path: Path) -> Iterator[tuple[Plant, Pty, Path, Daemon]]:
    plant.start()
    port = tmp_path / "ttyDEVICE"
    pty = Pty(port)
    proc = plant.system.start_bridge(port, state=tmp_path / "bridge")  # returns once the port is open
    try:
        yield plant, pty, port, proc
    finally:
        proc.stop(timeout=20)


def _acks(frames: list[Frame]) -> list[int]:
    return [parse_counter_body(f.body)[0] for f in frames if f.type is FrameType.ACK]


@EVERY_SUITE
def test_serial_readings_through_corruption_end_up_anchored(
    bridge: tuple[Plant, Pty, Path, Daemon],
) -> None:
    """Good frames among garbage, bad CRCs, truncated and oversize frames are ACKed once durable and
    anchored; TIME is answered; the bad frames are counted and logged, nothing else."""
    plant, pty, _, proc = bridge
    good = [plant.reading() for _ in range(3)]
    crc_broken = bytearray(encode_frame(FrameType.READING, good[0]))
    crc_broken[5] ^= 0x01
    stream = (
        b"\x00\x13\x37garbage\x00"
        + encode_frame(FrameType.READING, good[0])
        + bytes(crc_broken)
        + encode_frame(FrameType.TIME_REQUEST)
        + encode_frame(FrameType.READING, good[1])[:9] + b"\x00"  # truncated mid-frame
        + b"\x01" * 9000 + b"\x00"  # oversize
        + encode_frame(FrameType.READING, good[1])
        + encode_frame(FrameType.READING, good[2])
    )  # fmt: skip
    for i in range(0, len(stream), 37):  # as a UART delivers: in small pieces
        pty.write(stream[i : i + 37])
    frames = pty.read_frames(want=4)
    assert _acks(frames) == [1, 2, 3]
    times = [f for f in frames if f.type is FrameType.TIME]
    assert len(times) == 1 and abs(int.from_bytes(times[0].body, "big") - time.time() * 1000) < 60_000
    plant.wait_anchored(3)
    with store.reader(plant.gateway.db) as conn:
        assert [r.counter for r in store.readings(conn) if r.subject == DEVICE] == [1, 2, 3]
    assert "skipped bad serial frames" in proc.log_text()


@EVERY_SUITE
def test_replayed_and_malformed_readings_get_nack_with_the_reason(
    bridge: tuple[Plant, Pty, Path, Daemon],
) -> None:
    """A different reading under a used counter gets NACK "replay" (resending the same one gets ACK:
    tests/test_duplicates.py); a body that is no envelope gets NACK too."""
    plant, pty, _, _ = bridge
    first = plant.reading()
    replay = envelope.encode_envelope(plant.device, [{envelope.N: "flow", envelope.V: -1.0}], 1)
    pty.write(encode_frame(FrameType.READING, first) + encode_frame(FrameType.READING, replay))
    pty.write(encode_frame(FrameType.READING, b"not an envelope"))
    frames = pty.read_frames(want=3)
    kinds = [(f.type, parse_counter_body(f.body)) for f in frames]
    assert kinds[0] == (FrameType.ACK, (1, ""))
    assert kinds[1][0] is FrameType.NACK and kinds[1][1][0] == 1 and kinds[1][1][1].startswith("replay")
    assert kinds[2][0] is FrameType.NACK and kinds[2][1][1].startswith("malformed")


def test_unplug_mid_frame_and_replug(bridge: tuple[Plant, Pty, Path, Daemon]) -> None:
    """The device vanishes mid-frame; the bridge keeps running and resumes on the replugged port."""
    plant, pty, port, proc = bridge
    pty.write(encode_frame(FrameType.READING, plant.reading()))
    assert _acks(pty.read_frames(want=1)) == [1]
    pty.write(encode_frame(FrameType.READING, plant.reading())[:20])  # half a frame, then gone
    pty.unplug()
    port.unlink()
    # The bridge has noticed (it says so) and is still running: the condition, not a fixed time.
    wait_until("the bridge to report its port gone", lambda: "vanished" in proc.log_text(), check=proc.check)
    assert proc.running, "the bridge exited when its port vanished"
    replugged = Pty(port)
    reading = plant.reading()
    frames: list[Frame] = []
    deadline = time.monotonic() + 45  # the bridge's retry backoff is at most 30 s
    while not frames and time.monotonic() < deadline:
        # Like firmware: resend until acknowledged (the port flushes input when the bridge opens it).
        replugged.write(b"\x00" + encode_frame(FrameType.READING, reading))
        frames = replugged.read_frames(want=1, timeout=1.0)
    assert _acks(frames) == [3]
    assert "vanished" in proc.log_text()


@pytest.mark.parametrize("plant", ["p256", "sm2"], indirect=True)
def test_device_simulate_over_serial_and_hello_is_recorded(plant: Plant, tmp_path: Path) -> None:
    """`edgeroot device simulate --serial --alg` speaks the documented frames through a real bridge (the
    SM2 envelopes pass the serial protocol unchanged); its HELLO is recorded for the operator."""
    alg = algorithm_of(plant.device.public_key)
    plant.start()
    bridge_port, device_port = plant.system.null_modem()
    state = tmp_path / "bridge"
    proc = plant.system.start_bridge(bridge_port, state=state)
    try:
        sim = subprocess.run(
            [*EDGEROOT, "device", "simulate", "--serial", device_port, "--id", DEVICE,
             "--key", str(plant.device_key), "--alg", alg, "--rate", "50", "--count", "20",
             "--counter", "1", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        result = json.loads(sim.stdout)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert result["ack"] == 20 and result["unacknowledged"] == 0 and result["alg"] == alg
        plant.wait_anchored(20)
        with store.reader(plant.gateway.db) as conn:
            stored = [r for r in store.readings(conn) if r.subject == DEVICE]
        assert {parse_sign1(r.raw, "stored", max_size=4096).alg for r in stored} == {ALGS[alg]}
        hello = [json.loads(line) for line in (state / "hello.jsonl").read_text().splitlines()]
        assert hello[0]["identifier"] == DEVICE and len(bytes.fromhex(hello[0]["public_key_sec1"])) == 65
    finally:
        proc.stop(timeout=20)
