"""Industrial identifiers ``PREFIX/SUFFIX`` (DESIGN §2), checked and folded in one place.

The namespace policy (docs/formats.md §10):

* Prefix: dot-separated segments of ASCII letters, digits, ``-`` and ``_``; case-insensitive, stored
  lowercase.
* Suffix: UTF-8 text after NFC normalisation; ASCII case-insensitive (RFC 3651 §2.2 lets a namespace
  choose this; industrial codes are written both ways). Refused: control (Cc), format (Cf, which holds
  every bidi control and the zero-width characters), surrogate (Cs: text that was not valid UTF-8),
  private-use (Co) and unassigned (Cn) code points, line and paragraph separators, the backslash,
  leading or trailing whitespace, empty ``/``-separated parts and ``.``/``..`` parts (an HTTP client
  that normalises paths would turn ``P/x/../A`` into ``P/A``).
* At most 255 bytes of UTF-8 in all.

Two forms come out of a valid identifier. :func:`normalize` keeps the suffix's spelling (prefix
lowercased, suffix NFC): what a device puts in its ``kid`` and what answers echo. :func:`fold` also
lowercases the suffix's ASCII letters: the namespace key, under which the registry stores a record and
the verifiable map hashes it. Look-alikes beyond case (Cyrillic letters, full-width digits, ligatures)
are not folded here: the registry refuses a new identifier whose confusable skeleton equals an existing
one's (resolver.namespace), because the skeleton needs Unicode's confusables data, which is not part of
a pure verifier.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from chain_lite.errors import IdentifierError

MAX_IDENTIFIER_BYTES = 255
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Why each general category is refused: the message names the class so the caller knows what to remove.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character (zero-width or bidi control)",
    "Cs": "a lone surrogate (the text was not valid UTF-8)",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


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


def _check_characters(text: str, suffix: str) -> None:
    """Refuse a suffix (of identifier ``text``) holding a character of a refused category or a backslash.
    Checked before NFC and before any encoding, so a surrogate is reported, never a UnicodeError."""
    for ch in suffix:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise IdentifierError(text, f"suffix contains {_REFUSED_CATEGORIES[category]} U+{ord(ch):04X}")
        if ch == "\\":
            raise IdentifierError(text, "suffix contains a backslash (HTTP clients read it as '/')")


def _check_suffix(text: str, suffix: str) -> str:
    """The NFC form of ``suffix`` (of identifier ``text``), or :class:`IdentifierError` naming the rule."""
    if not suffix:
        raise IdentifierError(text, "empty suffix")
    if suffix.isascii() and suffix.isprintable() and "\\" not in suffix:
        # Most identifiers (every resolution checks one, twice): printable ASCII holds no refused
        # character (of ASCII, only the controls are), and NFC leaves it unchanged.
        nfc = suffix
    else:
        _check_characters(text, suffix)
        nfc = unicodedata.normalize("NFC", suffix)
    if nfc[0].isspace() or nfc[-1].isspace():
        raise IdentifierError(text, "suffix begins or ends with whitespace")
    for part in nfc.split("/"):
        if not part:
            raise IdentifierError(text, "suffix has an empty '/'-separated part")
        if part in (".", ".."):
            raise IdentifierError(text, f"suffix has a {part!r} part (a path client would remove it)")
    return nfc


@dataclass(frozen=True, slots=True)
class Identifier:
    """A valid identifier in its normalised spelling (prefix lowercase, suffix NFC)."""

    prefix: str
    suffix: str

    @classmethod
    def parse(cls, text: str) -> Identifier:
        """Check ``text`` against the namespace policy; every failure is an :class:`IdentifierError`."""
        if not isinstance(text, str):
            raise IdentifierError(repr(text), "an identifier is text")
        prefix, slash, suffix = text.partition("/")
        if not slash:
            raise IdentifierError(text, "missing '/' between prefix and suffix")
        norm_suffix = _check_suffix(text, suffix)
        ident = cls(normalize_prefix(prefix), norm_suffix)
        if len(str(ident).encode()) > MAX_IDENTIFIER_BYTES:
            raise IdentifierError(text, f"longer than {MAX_IDENTIFIER_BYTES} bytes")
        return ident

    def folded(self) -> Identifier:
        """The namespace key: the suffix's ASCII letters lowercased (non-ASCII letters are kept)."""
        return Identifier(self.prefix, ascii_lower(self.suffix))

    def __str__(self) -> str:
        return f"{self.prefix}/{self.suffix}"


def ascii_lower(text: str) -> str:
    """``text`` with A-Z lowercased and every other character kept (``str.lower`` would fold Greek,
    Cyrillic, ... too, which this namespace does not)."""
    return text.translate(_ASCII_LOWER)


def normalize(text: str) -> str:
    """The normalised spelling of an identifier (prefix lowercase, suffix NFC), as wire formats carry it."""
    return str(Identifier.parse(text))


def fold(text: str) -> str:
    """The namespace key of an identifier: :func:`normalize` with the suffix's ASCII letters lowercased."""
    return str(Identifier.parse(text).folded())
