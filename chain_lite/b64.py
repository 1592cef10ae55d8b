"""Standard base64 (RFC 4648 §4) as the C2SP text formats use it, decoded strictly.

Only the canonical encoding of a byte string is accepted: padding present, no whitespace, and unused
trailing bits zero. Lenient decoding would let two different texts carry the same bytes, so a single
flipped bit in a signed note or receipt could go unnoticed.
"""

from __future__ import annotations

import base64
import binascii


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes | None:
    """The bytes ``text`` canonically encodes, or ``None`` when it is not canonical base64."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if encode(data) == text else None
