"""`make bench` (bridge): serial frames decoded per second, and readings per second end to end.

A stream of reading frames (a one-record SenML envelope each, as a sensor sends) is fed to the decoder in
4 KiB chunks, as a serial port delivers them. Target (issue 5): >= 50,000 frames/s. End to end, a
simulated device sends readings over a pseudo-terminal pair paced to 115,200 and 1,000,000 baud,
through the bridge and CoAP into a real gateway (root and broker running too), and counts ACK frames.

Raw limits in the same run: framing done by C primitives alone (``bytes.split`` on the 0x00 delimiter
and ``zlib.crc32`` of each frame) under the decoder, and the paced line itself (the same frames through
the same paced pseudo-terminal pair to a bare reader) under each end-to-end figure.
"""

from __future__ import annotations

import json
import os
import platform
import select
import statistics
import subprocess
import tempfile
import threading
import time
import tty
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from results import record  # bench/ is on sys.path when run as a script

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from edgeroot.device import reading
from edgeroot.system import EDGEROOT, System
from firmware_bridge.frames import FrameDecoder, FrameType, encode_frame

if TYPE_CHECKING:
    from gateway import Plant

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def main() -> None:
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    print(f"bridge benchmarks on {machine}")
    signer = CoseSigner("88.123.99/MCU-1", generate_p256())
    records = [{envelope.N: "temp", envelope.U: "Cel", envelope.V: 21.5}]
    frames = [
        encode_frame(FrameType.READING, envelope.encode_envelope(signer, records, c)) for c in range(1, 2001)
    ]
    stream = b"".join(frames) * 25  # 50,000 frames
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    rates = []
    for _ in range(RUNS):
        decoder = FrameDecoder()
        start = time.perf_counter()
        n = 0
        for chunk in chunks:
            n += len(decoder.feed(chunk))
        rates.append(n / (time.perf_counter() - start))
        assert n == 50_000
        assert sum(decoder.stats.errors.values()) == 0
    rate, raw = statistics.median(rates), raw_framing(stream)
    print(
        f"  serial frames decoded (COBS + CRC-32, {len(frames[0])}-byte frames, 4 KiB reads): "
        f"median {rate:,.0f} frames/s = {rate / raw:.2f}x raw C framing ({raw:,.0f} frames/s)   "
        f"target >= 50,000   {'OK' if rate >= 50_000 else 'MISS'}"
    )
    record(
        "bridge",
        "raw C framing (bytes.split on 0x00 + zlib.crc32 per frame), same run",
        f"{raw:,.0f} frames/s",
    )
    record(
        "bridge",
        "serial frame decode (COBS + CRC-32)",
        f"median {rate:,.0f} frames/s = {rate / raw:.2f}x raw C framing",
        ">= 50,000 frames/s",
        rate >= 50_000,
    )


def raw_framing(stream: bytes) -> float:
    """Frames per second split off ``stream`` at their 0x00 delimiters and checksummed with zlib's CRC-32,
    median of RUNS: the framing work done by C primitives only (no COBS decoding, no checks)."""
    rates = []
    for _ in range(RUNS):
        start = time.perf_counter()
        n = 0
        for frame in stream.split(b"\x00"):
            if frame:
                zlib.crc32(frame)
                n += 1
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    return master, name


def paced_relay(a: int, b: int, baud: int, stop: threading.Event) -> None:
    """A null-modem cable at ``baud`` (8N1: 10 bits a byte): a pseudo-terminal has no baud rate of its own."""
    seconds_per_byte = 10 / baud
    while not stop.is_set():
        ready, _, _ = select.select([a, b], [], [], 0.1)
        for fd in ready:
            try:
                data = os.read(fd, 256)
            except OSError:
                time.sleep(0.05)
                continue
            os.write(b if fd == a else a, data)
            time.sleep(len(data) * seconds_per_byte)


def raw_line_rate(baud: int, frames: list[bytes]) -> float:
    """Frames per second through the same paced pseudo-terminal pair as :func:`serial_end_to_end`,
    written at one end and read by a bare reader at the other: the line's own limit."""
    a_master, a_path = _pty()
    b_master, b_path = _pty()
    # Both ends open before the relay starts: a master whose terminal end nobody holds reads as ready,
    # and the relay would block reading it once the end opens.
    writer, reader = os.open(a_path, os.O_WRONLY | os.O_NOCTTY), os.open(b_path, os.O_RDONLY | os.O_NOCTTY)
    stop = threading.Event()
    relay = threading.Thread(target=paced_relay, args=(a_master, b_master, baud, stop), daemon=True)
    relay.start()
    data = b"".join(frames)

    def write_all() -> None:
        view = memoryview(data)
        while view:  # a terminal may take part of a write
            view = view[os.write(writer, view) :]

    try:
        start = time.perf_counter()
        threading.Thread(target=write_all, daemon=True).start()
        got = 0
        while got < len(data):
            if not select.select([reader], [], [], 60)[0]:
                raise RuntimeError(f"the paced line at {baud:,} baud carried {got} of {len(data)} bytes")
            got += len(os.read(reader, 65536))
        return len(frames) / (time.perf_counter() - start)
    finally:
        stop.set()
        relay.join()  # before the descriptors close: their numbers are reused at once
        for fd in (writer, reader, a_master, b_master):
            os.close(fd)


def serial_end_to_end(plant: Plant, device: int, baud: int, count: int) -> dict[str, float]:
    """Readings/s from a simulated device through a paced serial line, the bridge and the gateway."""
    bridge_master, bridge_path = _pty()
    device_master, device_path = _pty()
    stop = threading.Event()
    threading.Thread(target=paced_relay, args=(bridge_master, device_master, baud, stop), daemon=True).start()
    ident, _ = plant.devices[device]
    key_file = plant.gateway.device_keys[ident]
    bridge = plant.system.start_bridge(bridge_path, name=f"bridge-{baud}", baud=baud)
    try:
        out = subprocess.run(
            [*EDGEROOT, "device", "simulate", "--serial", device_path, "--id", ident, "--key", str(key_file),
             "--rate", "0", "--count", str(count), "--counter", "1", "--baud", str(baud), "--json"],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        if out.returncode != 0:
            said = f"{out.stdout} {out.stderr}".strip()
            raise RuntimeError(f"device simulate at {baud:,} baud exited {out.returncode}: {said}")
        result = json.loads(out.stdout)
    finally:
        stop.set()
        bridge.stop(timeout=30)
    return {"rate": result["ack"] / result["seconds"], "ack": result["ack"], "sent": result["sent"]}


def end_to_end() -> None:
    from gateway import setup  # noqa: PLC0415 (bench/ is on sys.path when run as a script)

    count = int(os.environ.get("BENCH_SERIAL_READINGS", "1000"))
    with tempfile.TemporaryDirectory() as d, System(Path(d)) as system:
        plant = setup(system)
        for device, baud in ((0, 115_200), (1, 1_000_000)):
            # The line's own limit carries the very frames the simulated device sends (its signer too).
            ident, _ = plant.devices[device]
            signer = plant.gateway.device_signer(ident)
            frames = [encode_frame(FrameType.READING, reading(signer, c)) for c in range(1, 301)]
            r = serial_end_to_end(plant, device, baud, count)
            line = raw_line_rate(baud, frames)
            print(
                f"  serial end to end at {baud:,} baud "
                "(paced pty, bridge, CoAP, gateway durable, ACK frame): "
                f"{r['rate']:,.0f} readings/s ({r['ack']:.0f} of {r['sent']:.0f} acknowledged) = "
                f"{r['rate'] / line:.2f}x the paced line alone ({line:,.0f} frames/s)"
            )
            record("bridge", f"raw paced line at {baud:,} baud (reading frames to a bare reader), same run",
                   f"{line:,.0f} frames/s")  # fmt: skip
            record(
                "bridge",
                f"serial end to end at {baud:,} baud (paced pty, bridge, CoAP, durable, ACK frame)",
                f"{r['rate']:,.0f} readings/s ({r['ack']:.0f} of {r['sent']:.0f} acknowledged) = "
                f"{r['rate'] / line:.2f}x the paced line",
            )


if __name__ == "__main__":
    main()
    end_to_end()
