"""The serial frame codec between microcontroller firmware and the bridge (docs/formats.md §18).

On the wire every frame is COBS-encoded and followed by one 0x00 delimiter::

    frame  = version (1 byte, 0x01) | type (1 byte) | body (0..8,200 bytes) | CRC-32 (4 bytes, big-endian)

The CRC is CRC-32/ISO-HDLC (zlib's ``crc32``: reflected polynomial 0xEDB88320, init and final XOR
0xFFFFFFFF; ``crc32("123456789") = 0xCBF43926``) over version, type and body.

:class:`FrameDecoder` is the byte-wise state machine: bytes in, frames and counted errors out. It
never raises on input: garbage, truncated frames, bad CRCs, oversize frames, unknown versions and
types are counted and skipped, and decoding resynchronises at the next 0x00. Pure: no I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from cobs import cobs

VERSION = 0x01
MAX_BODY = 8200
"""A reading envelope is at most 8,192 bytes (docs/formats.md §8); NACK reasons are short."""
MAX_FRAME = 2 + MAX_BODY + 4
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1
"""COBS adds at most one byte per 254 (plus one); anything longer before a delimiter is oversize."""
DELIMITER = b"\x00"


class FrameType(IntEnum):
    READING = 0x01
    """device → bridge: a device-signed COSE_Sign1 envelope, forwarded untouched."""
    HELLO = 0x02
    """device → bridge: identifier and public key, for provisioning (CBOR ``[text, bytes]``)."""
    TIME_REQUEST = 0x03
    """device → bridge: empty body; the bridge answers TIME."""
    TIME = 0x04
    """bridge → device: milliseconds since the Unix epoch, uint64 big-endian."""
    ACK = 0x05
    """bridge → device: the reading with this counter (uint64 big-endian) is durable at the gateway."""
    NACK = 0x06
    """bridge → device: counter (uint64 BE) then a UTF-8 reason: rejected for good; drop it."""
    BUSY = 0x07
    """bridge → device: counter (uint64 BE): not accepted now (gateway away or full); keep, retry later."""
    ERROR = 0x7F
    """either way: a UTF-8 description of a frame-level problem."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    body: bytes


ERROR_KINDS = ("garbage", "truncated", "bad_crc", "oversize", "bad_version", "unknown_type")


@dataclass
class DecoderStats:
    frames: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))


def encode_frame(frame_type: FrameType | int, body: bytes = b"") -> bytes:
    """One frame ready for the wire: COBS(version | type | body | CRC-32) followed by 0x00."""
    if len(body) > MAX_BODY:
        raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    raw = bytes((VERSION, int(frame_type))) + body
    return bytes(cobs.encode(raw + struct.pack(">I", zlib.crc32(raw)))) + DELIMITER


def counter_body(counter: int, reason: str = "") -> bytes:
    return struct.pack(">Q", counter) + reason.encode()[: MAX_BODY - 8]


def parse_counter_body(body: bytes) -> tuple[int, str]:
    if len(body) < 8:
        raise ValueError("body shorter than its 8-byte counter")
    return struct.unpack(">Q", body[:8])[0], body[8:].decode("utf-8", "replace")


class FrameDecoder:
    """Feed bytes as they arrive; get whole frames. Errors are counted in :attr:`stats`, never raised."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._take(data[start:])
                return frames
            self._take(data[start:end])
            if self._discarding:
                self._discarding = False  # resynchronised on this delimiter
            elif self._buf:
                frame = self._decode(bytes(self._buf))
                if frame is not None:
                    frames.append(frame)
            self._buf.clear()
            start = end + 1

    def _take(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED:
            self.stats.errors["oversize"] += 1
            self._buf.clear()
            self._discarding = True
            return
        self._buf += chunk

    def _decode(self, encoded: bytes) -> Frame | None:
        try:
            raw = cobs.decode(encoded)
        except cobs.DecodeError:
            self.stats.errors["garbage"] += 1
            return None
        if len(raw) < 6:
            self.stats.errors["truncated"] += 1
            return None
        payload, crc = raw[:-4], raw[-4:]
        if zlib.crc32(payload) != struct.unpack(">I", crc)[0]:
            self.stats.errors["bad_crc"] += 1
            return None
        if payload[0] != VERSION:
            self.stats.errors["bad_version"] += 1
            return None
        try:
            frame_type = FrameType(payload[1])
        except ValueError:
            self.stats.errors["unknown_type"] += 1
            return None
        self.stats.frames += 1
        return Frame(frame_type, payload[2:])
