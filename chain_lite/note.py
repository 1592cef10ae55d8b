"""C2SP signed-note: text signed by one or more keys, with Ed25519 (signature type 0x01) or SM2.

Format (c2sp.org/signed-note): the text (ending in a newline), a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. The *last* blank line separates text from
signatures. Verification rules: signatures from unknown keys (name and ID not both known) are ignored;
a known key's signature must verify or the whole note is rejected; at least one known key must have
signed. Verifier keys ("vkeys") are written ``<name>+<8 hex key ID>+<base64(type || public key)>``.

SM2 (D-062) has no type byte of its own in the spec, which reserves ``0xff`` for "signature types without
an identifier byte assigned by this specification ... followed by a longer identifier": edgeroot's SM2
types are ``0xff || "edgeroot/sm2/v1"`` (a log's signature) and ``0xff || "edgeroot/sm2-cosignature/v1"``
(a witness's), each followed by the 65-byte uncompressed SM2 point. In memory a signature type is an
``int``: the type byte itself for the spec's one-byte types, :data:`SIGTYPE_SM2` and
:data:`SIGTYPE_SM2_COSIGNATURE` (above 0xff) for these; :func:`type_bytes` gives the bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chain_lite import b64, sm2
from chain_lite.errors import BadSignature, FormatError, KeyFormatError, NoTrustedSignature

SIGTYPE_ED25519 = 0x01
SIGTYPE_COSIGNATURE_V1 = 0x04
SIGTYPE_SM2 = 0xFF01
"""An SM2 signature over the note text (type bytes ``0xff || "edgeroot/sm2/v1"``, D-062)."""
SIGTYPE_SM2_COSIGNATURE = 0xFF04
"""A timestamped SM2 witness cosignature (``0xff || "edgeroot/sm2-cosignature/v1"``, D-062)."""
_EXTENDED_TYPES = {
    SIGTYPE_SM2: b"\xffedgeroot/sm2/v1",
    SIGTYPE_SM2_COSIGNATURE: b"\xffedgeroot/sm2-cosignature/v1",
}
SM2_TYPES = frozenset(_EXTENDED_TYPES)

MAX_NOTE_SIZE = 64 * 1024
"""Checkpoints with dozens of cosignatures stay far below this; larger input is refused unread."""
MAX_SIGNATURES = 100
"""The spec asks verifiers to accept at least 16 signature lines and to cap them."""

_DASH = "\u2014 "
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
"""ASCII control characters other than newline, which signed notes must not contain."""


def type_bytes(sigtype: int) -> bytes:
    """The signature type as it is written in vkeys and hashed into key IDs."""
    extended = _EXTENDED_TYPES.get(sigtype)
    if extended is not None:
        return extended
    if not 0 <= sigtype <= 0xFF:
        raise KeyFormatError(f"unknown signature type {sigtype:#x}")
    return bytes([sigtype])


def key_id(name: str, sigtype: int, public_key: bytes) -> int:
    """Key ID = SHA-256(name || 0x0A || type || public key)[:4], big-endian (c2sp.org/signed-note)."""
    digest = hashlib.sha256(name.encode() + b"\n" + type_bytes(sigtype) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: str) -> None:
    """Key names are non-empty and hold no Unicode space and no ``+``."""
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise KeyFormatError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:  # a policy file's opaque octets that are not UTF-8
        raise KeyFormatError(f"key name {name!r} is not valid UTF-8") from exc


class Verifier(Protocol):
    """A trusted key: a note signature line matches it when both name and key ID match."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the 4-byte key ID) is valid over the note ``text``."""
        ...


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes:
        """The signature (without the key ID) over the note ``text``."""
        ...


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A parsed vkey: ``name+hexid+base64(sigtype || public key)``."""

    name: str
    key_id: int
    sigtype: int
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        # Names hold no '+', but base64 key material may: split at the first two only.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a verifier key is <name>+<hex key ID>+<base64 key>")
        name, hexid, data = parts
        check_key_name(name)
        if len(hexid) != 8 or any(c not in "0123456789abcdef" for c in hexid):
            raise KeyFormatError(f"key ID {hexid!r} is not 8 lowercase hex digits")
        raw = b64.decode(data)
        if raw is None or len(raw) < 2:
            raise KeyFormatError("key material is not canonical base64 of type byte and key")
        sigtype, public_key = split_type(raw)
        vkey = cls(name, int(hexid, 16), sigtype, public_key)
        ed25519 = vkey.sigtype in (SIGTYPE_ED25519, SIGTYPE_COSIGNATURE_V1)
        if ed25519 and len(public_key) != 32:
            raise KeyFormatError(f"Ed25519 key is {len(public_key)} bytes, want 32")
        if sigtype in SM2_TYPES and (len(public_key) != sm2.POINT_SIZE or public_key[0] != 0x04):
            raise KeyFormatError(f"SM2 key is not a 65-byte uncompressed point ({len(public_key)} bytes)")
        known = ed25519 or sigtype in SM2_TYPES
        if known and key_id(name, sigtype, public_key) != vkey.key_id:
            raise KeyFormatError(f"key ID {hexid} does not match the key and name {name!r}")
        return vkey

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{b64.encode(type_bytes(self.sigtype) + self.public_key)}"


def split_type(raw: bytes) -> tuple[int, bytes]:
    """Split ``type || key material`` into edgeroot's signature type code and the rest. A ``0xff`` type
    edgeroot does not know stays type 0xff with its identifier in the rest (an unknown key, kept)."""
    for sigtype, prefix in _EXTENDED_TYPES.items():
        if raw.startswith(prefix):
            return sigtype, raw[len(prefix) :]
    return raw[0], raw[1:]


class NamedKeyVerifier:
    """A public key under a note key name, for the signature type its subclass names: what every note
    verifier shares (the key ID, the vkey in both directions)."""

    __slots__ = ("key_id", "name", "public_key")
    sigtype: ClassVar[int]

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, self.sigtype, public_key)

    @classmethod
    def from_vkey(cls, vkey: VerifierKey) -> Self:
        if vkey.sigtype != cls.sigtype:
            raise KeyFormatError(
                f"key {vkey.name} has signature type {vkey.sigtype:#04x}, want {cls.sigtype:#04x}"
            )
        return cls(vkey.name, vkey.public_key)

    def vkey(self) -> VerifierKey:
        return VerifierKey(self.name, self.key_id, self.sigtype, self.public_key)


class Ed25519KeyVerifier(NamedKeyVerifier):
    """An Ed25519 public key under a note key name, for the signature type its subclass names."""

    __slots__ = ("_key",)

    def __init__(self, name: str, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise KeyFormatError(f"Ed25519 key is {len(public_key)} bytes, want 32")
        super().__init__(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    def _verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Ed25519Verifier(Ed25519KeyVerifier):
    """Verifier for signature type 0x01 (plain Ed25519 over the note text)."""

    __slots__ = ()
    sigtype = SIGTYPE_ED25519

    def verify(self, text: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and self._verify(signature, text)


class Ed25519Signer:
    """Signer for signature type 0x01; the private key never leaves this object."""

    __slots__ = ("_key", "key_id", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.verifier = Ed25519Verifier(name, ed25519_public_bytes(private_key))
        self.name = name
        self.key_id = self.verifier.key_id

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)


def ed25519_public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an Ed25519 private key."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class SM2KeyVerifier(NamedKeyVerifier):
    """An SM2 public key under a note key name, for the signature type its subclass names (D-062).
    ``public_key`` is the 65-byte uncompressed point, as in the vkey."""

    __slots__ = ("_key",)

    def __init__(self, name: str, public_key: bytes) -> None:
        self._key = sm2.SM2PublicKey.from_point(public_key)
        super().__init__(name, public_key)

    def _verify(self, signature: bytes, message: bytes) -> bool:
        return self._key.verify(signature, message)


class SM2NoteVerifier(SM2KeyVerifier):
    """Verifier for edgeroot's SM2 note signatures: SM2 (default identifier) over the note text."""

    __slots__ = ()
    sigtype = SIGTYPE_SM2

    def verify(self, text: bytes, signature: bytes) -> bool:
        return len(signature) == sm2.SIGNATURE_SIZE and self._verify(signature, text)


class SM2NoteSigner:
    """Signer for :data:`SIGTYPE_SM2`; the private key never leaves this object."""

    __slots__ = ("_key", "key_id", "name", "verifier")

    def __init__(self, name: str, private_key: sm2.SM2PrivateKey) -> None:
        self._key = private_key
        self.verifier = SM2NoteVerifier(name, private_key.public_key().point)
        self.name = name
        self.key_id = self.verifier.key_id

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64.encode(self.key_id.to_bytes(4, 'big') + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A signed note, parsed but not yet verified: never act on ``text`` before :func:`open_note`."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note with ``extra`` signature lines added; exact duplicates are dropped."""
        merged = list(self.signatures)
        for sig in extra:
            if sig not in merged:
                merged.append(sig)
        if len(merged) > MAX_SIGNATURES:
            raise FormatError("note", f"more than {MAX_SIGNATURES} signatures")
        return Note(self.text, tuple(merged))


def check_note_text(text: str) -> None:
    """Note text ends in a newline and holds no control character but newline."""
    if not text.endswith("\n"):
        raise FormatError("note", "text does not end with a newline")
    if _CONTROL.search(text):
        raise FormatError("note", "text contains a control character")


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and signature lines, enforcing every format rule."""
    if len(data) > MAX_NOTE_SIZE:
        raise FormatError("note", f"{len(data)} bytes exceeds the {MAX_NOTE_SIZE}-byte limit")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("note", "not valid UTF-8") from exc
    if _CONTROL.search(whole):
        raise FormatError("note", "contains a control character")
    split = whole.rfind("\n\n")
    if split < 0:
        raise FormatError("note", "no blank line before the signatures")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block.endswith("\n"):
        raise FormatError("note", "signature block does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError("note", f"more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise FormatError("note", "signature line does not start with an em dash and a space")
    name, space, encoded = line[len(_DASH) :].partition(" ")
    if not space:
        raise FormatError("note", "signature line has no signature")
    try:
        check_key_name(name)
    except KeyFormatError as exc:
        raise FormatError("note", exc.reason) from exc
    raw = b64.decode(encoded)
    if raw is None or len(raw) < 5:
        raise FormatError("note", f"signature of {name!r} is not canonical base64 of key ID and signature")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def sign_note(text: str, signers: Sequence[Signer]) -> Note:
    """Sign ``text`` with each signer, in order."""
    check_note_text(text)
    body = text.encode()
    return Note(text, tuple(NoteSignature(s.name, s.key_id, s.sign(body)) for s in signers))


def open_note(note: Note, verifiers: Iterable[Verifier]) -> list[Verifier]:
    """Verify ``note`` against trusted ``verifiers``; returns those whose signatures verified.

    Raises :class:`BadSignature` when a known key's signature fails (the spec's SHOULD: the whole note
    is rejected) and :class:`NoTrustedSignature` when no known key signed.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    body = note.text.encode()
    good: list[Verifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(body, sig.signature):
            raise BadSignature(f"{sig.name}+{sig.key_id:08x}")
        if verifier not in good:
            good.append(verifier)
    if not good:
        raise NoTrustedSignature(", ".join(sorted(n for n, _ in known)) or "any trusted key")
    return good
