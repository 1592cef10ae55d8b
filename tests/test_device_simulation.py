"""`edgeroot device simulate --serial` on a slow line: the device waits while verdicts keep coming.

At 115,200 baud a thousand readings take about 13 s on the wire, and their ACK frames trickle back at the
line's pace. The simulated device used to give up a fixed 3 x RESEND_AFTER_S after its last write (which
only queues the frames) and to resend readings still in transit after RESEND_AFTER_S: `make bench` saw
995 of 1,000 acknowledged and the run failed. A device waits as long as verdicts arrive.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time

import pytest

from chain_lite.cose import CoseSigner
from chain_lite.envelope import decode_envelope
from chain_lite.keys import generate_p256
from edgeroot import device_simulation
from firmware_bridge.frames import FrameDecoder, FrameType, counter_body, encode_frame
from tests.serial_harness import pty, read_some, write_all

IDENT = "88.123.99/SLOW-LINE-1"
READINGS = 200
ANSWER_EVERY_S = 0.025  # one ACK per 25 ms: 5 s for all of them, longer than 3 x the resend pause below
RESEND_AFTER_S = 1.0


def slow_acker(master: int, stop: threading.Event, seen: list[int]) -> None:
    """The far end of a slow line: takes each reading frame and answers its ACK at a fixed pace."""
    decoder = FrameDecoder()
    queue: list[int] = []
    next_answer = time.monotonic()
    while not stop.is_set():
        if select.select([master], [], [], 0.005)[0]:
            for frame in decoder.feed(read_some(master)):
                if frame.type is FrameType.READING:
                    counter = decode_envelope(frame.body).counter
                    seen.append(counter)
                    queue.append(counter)
        if queue and time.monotonic() >= next_answer:
            write_all(master, encode_frame(FrameType.ACK, counter_body(queue.pop(0))))
            next_answer = time.monotonic() + ANSWER_EVERY_S


def test_a_device_on_a_slow_line_waits_for_every_verdict_still_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device_simulation, "RESEND_AFTER_S", RESEND_AFTER_S)
    master, path = pty()
    stop = threading.Event()
    seen: list[int] = []
    far_end = threading.Thread(target=slow_acker, args=(master, stop, seen), daemon=True)
    far_end.start()
    key = generate_p256()
    try:
        result = asyncio.run(
            device_simulation.simulate_serial(
                path, 115_200, CoseSigner(IDENT, key), key, list(range(1, READINGS + 1)), 0.0
            )
        )
    finally:
        stop.set()
        far_end.join()
        os.close(master)
    assert result["unacknowledged"] == 0, result
    assert result["ack"] == READINGS, result
    assert sorted(set(seen)) == list(range(1, READINGS + 1))
