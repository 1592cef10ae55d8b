"""`make bench` (bridge): frames decoded per second by the serial framing layer.

A stream of reading frames (a one-record SenML envelope each, as a sensor sends) is fed to the decoder in
4 KiB chunks, as a serial port delivers them. Target (issue 5): >= 50,000 frames/s.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from firmware_bridge.frames import FrameDecoder, FrameType, encode_frame

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
    rate = statistics.median(rates)
    print(
        f"  serial frames decoded (COBS + CRC-32, {len(frames[0])}-byte frames, 4 KiB reads): "
        f"median {rate:,.0f} frames/s   target >= 50,000   {'OK' if rate >= 50_000 else 'MISS'}"
    )


if __name__ == "__main__":
    main()
