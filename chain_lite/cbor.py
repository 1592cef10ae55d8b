"""Deterministic CBOR (RFC 8949 §4.2.1) for everything edgeroot hashes or signs.

Hashed structures are arrays whose first element is a domain-separation label such as
``"edgeroot/block/v1"``; they contain only integers, text, byte strings and arrays, so core
deterministic encoding reduces to cbor2's shortest-form, definite-length output. Decoding insists that
the input is already in that form: a re-encoding that differs means the bytes are malleable and are
refused.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from chain_lite.errors import FormatError


def encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def head(major: int, argument: int) -> bytes:
    """The initial byte(s) of a data item (RFC 8949 §3): major type and argument, in shortest form
    (§4.2.1), so framing received bytes by hand gives exactly what :func:`encode` would."""
    if argument < 24:
        return bytes(((major << 5) | argument,))
    if argument < 0x100:
        return bytes(((major << 5) | 24, argument))
    if argument < 0x10000:
        return bytes(((major << 5) | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x100000000:
        return bytes(((major << 5) | 26,)) + argument.to_bytes(4, "big")
    return bytes(((major << 5) | 27,)) + argument.to_bytes(8, "big")


_SHORT_BSTR_HEADS = tuple(head(2, n) for n in range(256))
"""The heads of byte strings shorter than 256 bytes: every COSE header and most payloads (hot path)."""


def encode_bstr(data: bytes) -> bytes:
    """``data`` as a definite-length byte string (major type 2), without copying it through cbor2."""
    n = len(data)
    return (_SHORT_BSTR_HEADS[n] if n < 256 else head(2, n)) + data


def decode(data: bytes, what: str, *, max_size: int, unique_keys: bool = False) -> Any:
    """Decode the one CBOR item that is all of ``data``, at most ``max_size`` bytes; any decoder failure,
    and any byte after the item, becomes FormatError. ``unique_keys``: a map with a repeated key is
    malformed (cbor2 would keep the last value)."""
    if len(data) > max_size:
        raise FormatError(what, f"{len(data)} bytes exceeds the {max_size}-byte limit")
    return ItemDecoder(what, unique_keys=unique_keys).decode(data)


class ItemDecoder:
    """Decodes byte strings that must each hold exactly one CBOR item: a message, then the ``bstr .cbor``
    items nested in it (RFC 8610 §3.8.4), such as a COSE message's protected header and payload.

    ``cbor2.loads`` decodes the first item and ignores whatever follows it (cbor2 issue 283), so a
    message with bytes appended would pass as the message without them, and a CBOR sequence (RFC 8742)
    as its first item. Here one cbor2 decoder reads a stream each input is appended to, and its position
    after an item says where the item ended. One decoder serves every item of a message because making
    a decoder costs about as much as decoding a small item; shared values and string references do not
    carry from one item to the next (cbor2 starts each ``decode`` afresh).
    """

    __slots__ = ("_decoder", "_end", "_stream", "_what", "unique_keys")

    def __init__(self, what: str, *, unique_keys: bool = False) -> None:
        self._what = what
        self.unique_keys = unique_keys
        """A map with a repeated key is malformed (cbor2 would keep the last value)."""
        self._stream = io.BytesIO()
        self._decoder = cbor2.CBORDecoder(self._stream, allow_duplicate_keys=not unique_keys)
        self._end = 0

    def decode(self, data: bytes) -> Any:
        """The one item that is all of ``data``, or FormatError. Precondition: every earlier call of this
        decoder returned (a FormatError ends its use)."""
        stream = self._stream
        start = self._end  # the end of the stream: each earlier item took all of its input
        self._end = end = start + stream.write(data)
        stream.seek(start)
        try:
            value = self._decoder.decode()
        # cbor2's decoder raises assorted built-in errors on hostile input (bad lengths, unhashable map
        # keys, deep nesting); at this boundary all of them mean the same thing: not valid CBOR for us.
        except Exception as exc:
            raise FormatError(self._what, f"invalid CBOR: {exc}") from exc
        after = end - stream.tell()
        if after:
            raise FormatError(self._what, f"{after} bytes after the CBOR item (one item, not a sequence)")
        return value


def decode_deterministic(data: bytes, what: str, *, max_size: int) -> Any:
    """Like :func:`decode`, and the bytes must be the value's deterministic encoding."""
    value = decode(data, what, max_size=max_size)
    try:
        again = encode(value)
    except Exception as exc:  # values cbor2 decodes but cannot re-encode
        raise FormatError(what, f"not re-encodable CBOR: {exc}") from exc
    if again != data:
        raise FormatError(what, "not in deterministic CBOR encoding (RFC 8949 §4.2.1)")
    return value
