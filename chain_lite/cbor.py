"""Deterministic CBOR (RFC 8949 §4.2.1) for everything edgeroot hashes or signs.

Hashed structures are arrays whose first element is a domain-separation label such as
``"edgeroot/block/v1"``; they contain only integers, text, byte strings and arrays, so core
deterministic encoding reduces to cbor2's shortest-form, definite-length output. Decoding insists that
the input is already in that form: a re-encoding that differs means the bytes are malleable and are
refused.
"""

from __future__ import annotations

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


def encode_bstr(data: bytes) -> bytes:
    """``data`` as a definite-length byte string (major type 2), without copying it through cbor2."""
    return head(2, len(data)) + data


def decode(data: bytes, what: str, *, max_size: int, unique_keys: bool = False) -> Any:
    """Decode one CBOR item of at most ``max_size`` bytes; any decoder failure becomes FormatError.
    ``unique_keys``: a map with a repeated key is malformed (cbor2 would keep the last value)."""
    if len(data) > max_size:
        raise FormatError(what, f"{len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        return cbor2.loads(data, allow_duplicate_keys=not unique_keys)
    # cbor2's decoder raises assorted built-in errors on hostile input (bad lengths, unhashable map
    # keys, deep nesting); at this boundary all of them mean the same thing: not valid CBOR for us.
    except Exception as exc:
        raise FormatError(what, f"invalid CBOR: {exc}") from exc


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
