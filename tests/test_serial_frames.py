"""The serial frame codec: round trips, every corruption counted and skipped, resynchronisation."""

from __future__ import annotations

import struct
import zlib

import pytest
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.frames import (
    MAX_BODY,
    MAX_ENCODED,
    Frame,
    FrameDecoder,
    FrameType,
    counter_body,
    encode_frame,
    parse_counter_body,
)


def naive_cobs_encode(data: bytes) -> bytes:
    """COBS straight from Cheshire & Baker (1999), for cross-checking the library."""
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block.clear()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def test_crc_is_crc32_iso_hdlc() -> None:
    """The documented check value: crc32("123456789") = 0xCBF43926."""
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_encoding_matches_the_documented_layout() -> None:
    """COBS(version | type | body | big-endian CRC-32) then one 0x00."""
    body = b"\x00\x01\x02hello\x00"
    raw = bytes([1, FrameType.READING]) + body
    expected = naive_cobs_encode(raw + struct.pack(">I", zlib.crc32(raw))) + b"\x00"
    assert encode_frame(FrameType.READING, body) == expected
    assert b"\x00" not in expected[:-1]


@given(
    st.lists(st.tuples(st.sampled_from(list(FrameType)), st.binary(max_size=600)), max_size=20),
    st.integers(1, 50),
)
def test_frames_survive_any_chunking(frames: list[tuple[FrameType, bytes]], chunk: int) -> None:
    """Frames come out whole and in order however the stream is cut."""
    stream = b"".join(encode_frame(t, b) for t, b in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i : i + chunk])
    assert out == [Frame(t, b) for t, b in frames]
    assert sum(decoder.stats.errors.values()) == 0


def _decode_all(stream: bytes) -> tuple[list[Frame], dict[str, int]]:
    d = FrameDecoder()
    frames = d.feed(stream)
    return frames, d.stats.errors


GOOD = encode_frame(FrameType.READING, b"reading-1")


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"\x05\x01\x02\x00", "garbage"),  # COBS length byte points past the end
        (cobs.encode(b"\x01\x01\x02") + b"\x00", "truncated"),  # valid COBS, too short for a CRC
        (
            bytes(
                [b ^ 0x10 if i == 4 else b for i, b in enumerate(encode_frame(FrameType.READING, b"abcdef"))]
            ),
            "bad_crc",
        ),
        (b"\x01" * (MAX_ENCODED + 10) + b"\x00", "oversize"),
    ],
)
def test_each_corruption_is_counted_and_the_next_frame_still_decodes(bad: bytes, kind: str) -> None:
    """Garbage, truncated, bad CRC and oversize frames are counted and skipped; the stream resyncs."""
    frames, errors = _decode_all(GOOD + bad + GOOD)
    assert frames == [Frame(FrameType.READING, b"reading-1")] * 2
    assert errors[kind] == 1 and sum(errors.values()) == 1


def _raw_frame(version: int, ftype: int, body: bytes) -> bytes:
    raw = bytes([version, ftype]) + body
    return cobs.encode(raw + struct.pack(">I", zlib.crc32(raw))) + b"\x00"


def test_unknown_versions_and_types_are_counted() -> None:
    """A valid CRC does not make an unknown version or type acceptable."""
    frames, errors = _decode_all(_raw_frame(2, 1, b"x") + _raw_frame(1, 0x42, b"x") + GOOD)
    assert len(frames) == 1
    assert errors["bad_version"] == 1 and errors["unknown_type"] == 1


def test_unplug_mid_frame_then_resume() -> None:
    """Half a frame, then a fresh start after a replug: the half is counted, the rest decodes."""
    d = FrameDecoder()
    assert d.feed(GOOD[: len(GOOD) // 2]) == []
    frames = d.feed(b"\x00" + GOOD + GOOD)  # the device restarts with a delimiter
    assert len(frames) == 2 and sum(d.stats.errors.values()) == 1


@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    """Any byte stream is decoded without an exception."""
    d = FrameDecoder()
    d.feed(data)
    d.feed(GOOD)


def test_oversize_body_is_refused_when_encoding() -> None:
    """The encoder refuses bodies over the documented maximum."""
    encode_frame(FrameType.READING, b"x" * MAX_BODY)
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(FrameType.READING, b"x" * (MAX_BODY + 1))


def test_counter_bodies_round_trip() -> None:
    """ACK/NACK/BUSY bodies: a big-endian uint64 counter and an optional reason."""
    assert parse_counter_body(counter_body(2**40 + 7, "replay")) == (2**40 + 7, "replay")
    with pytest.raises(ValueError, match="counter"):
        parse_counter_body(b"\x00\x01")
