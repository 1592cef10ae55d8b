"""The serial line as an asyncio protocol: bytes in through the frame decoder, frames out as writes.

pyserial-asyncio-fast drives the port; this protocol only feeds the pure :class:`FrameDecoder` and
queues whole frames (framing errors are counted by the decoder, never raised into the loop).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import serial_asyncio_fast

from firmware_bridge.frames import Frame, FrameDecoder, FrameType, encode_frame
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
MAX_QUEUED_FRAMES = 1024
_framing = RateLimitedLog(log, 30.0)


class SerialLink(asyncio.Protocol):
    def __init__(self, decoder: FrameDecoder) -> None:
        self.decoder = decoder
        self.frames: asyncio.Queue[Frame] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        errors = sum(self.decoder.stats.errors.values())
        frames = self.decoder.feed(data)
        if sum(self.decoder.stats.errors.values()) > errors:
            bad = {k: v for k, v in self.decoder.stats.errors.items() if v}
            _framing.warning("framing", "skipped bad serial frames (totals so far): %s", bad)
        for frame in frames:
            try:
                self.frames.put_nowait(frame)
            except asyncio.QueueFull:
                # The device sends faster than the gateway acknowledges: it will get no ACK and resend.
                self.dropped += 1
                _framing.warning(
                    "full", "frame queue full: dropped a frame (the device resends it): %d", self.dropped
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed.set()

    def send(self, frame_type: FrameType, body: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(frame_type, body))


async def open_link(port: str, baudrate: int, decoder: FrameDecoder, **kwargs: Any) -> SerialLink:
    """Open ``port`` (a device path, or any pyserial URL) with a fresh protocol sharing ``decoder``."""
    loop = asyncio.get_running_loop()
    transport, protocol = await serial_asyncio_fast.create_serial_connection(
        loop, lambda: SerialLink(decoder), port, baudrate=baudrate, **kwargs
    )
    assert isinstance(protocol, SerialLink)
    # connection_made runs on a later loop turn; the caller may write at once.
    protocol.transport = transport
    return protocol
