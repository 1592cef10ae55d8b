"""Industrial identifiers ``PREFIX/SUFFIX`` (DESIGN §2), parsed and normalised in one place.

Prefix: dot-separated ASCII segments (``88.123.99``), case-insensitive, stored lowercase.
Suffix: UTF-8, compared exactly after NFC normalisation. No control characters, no empty parts, and
at most 255 bytes in all.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from chain_lite.errors import IdentifierError

MAX_IDENTIFIER_BYTES = 255
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def normalize_prefix(prefix: str) -> str:
    """The canonical (lowercase) form of a prefix such as ``88.123.99``."""
    if not prefix:
        raise IdentifierError(prefix, "empty prefix")
    if not prefix.isascii():
        raise IdentifierError(prefix, "prefix must be ASCII")
    lowered = prefix.lower()
    for segment in lowered.split("."):
        if not segment:
            raise IdentifierError(prefix, "empty prefix segment")
        if not set(segment) <= _PREFIX_CHARS:
            raise IdentifierError(prefix, "prefix segments hold letters, digits, '-' and '_' only")
    if len(lowered) > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(prefix, f"longer than {MAX_IDENTIFIER_BYTES} bytes")
    return lowered


@dataclass(frozen=True, slots=True)
class Identifier:
    prefix: str
    suffix: str

    @classmethod
    def parse(cls, text: str) -> Identifier:
        prefix, slash, suffix = text.partition("/")
        if not slash:
            raise IdentifierError(text, "missing '/' between prefix and suffix")
        if not suffix:
            raise IdentifierError(text, "empty suffix")
        norm_prefix = normalize_prefix(prefix)
        norm_suffix = unicodedata.normalize("NFC", suffix)
        if _has_control(norm_suffix):
            raise IdentifierError(text, "suffix contains a control character")
        ident = cls(norm_prefix, norm_suffix)
        if len(str(ident).encode()) > MAX_IDENTIFIER_BYTES:
            raise IdentifierError(text, f"longer than {MAX_IDENTIFIER_BYTES} bytes")
        return ident

    def __str__(self) -> str:
        return f"{self.prefix}/{self.suffix}"


def normalize(text: str) -> str:
    """The canonical string form of an identifier."""
    return str(Identifier.parse(text))
