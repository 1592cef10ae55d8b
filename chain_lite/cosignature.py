"""C2SP tlog-cosignature v1: timestamped Ed25519 witness cosignatures (signature type 0x04).

The signature bytes are ``timestamp (u64, big-endian) || Ed25519 signature (64 bytes)`` over the message
``"cosignature/v1\\ntime <timestamp>\\n" || <checkpoint note text>``.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chain_lite.errors import FormatError, KeyFormatError
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    Ed25519Verifier,
    Note,
    NoteSignature,
    Verifier,
    VerifierKey,
    check_key_name,
    key_id,
)

MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs over a checkpoint's note ``text``."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp a (well-formed) cosignature carries."""
    if len(signature) != 72:
        raise FormatError("cosignature", f"{len(signature)} bytes, want 8 + 64")
    return int.from_bytes(signature[:8], "big")


class CosignatureVerifier:
    """Verifier for a witness's v1 cosignatures."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        if len(public_key) != 32:
            raise KeyFormatError(f"Ed25519 key is {len(public_key)} bytes, want 32")
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, SIGTYPE_COSIGNATURE_V1, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def from_vkey(cls, vkey: VerifierKey) -> CosignatureVerifier:
        if vkey.sigtype != SIGTYPE_COSIGNATURE_V1:
            raise KeyFormatError(f"key {vkey.name} has signature type {vkey.sigtype:#04x}, want 0x04")
        return cls(vkey.name, vkey.public_key)

    def vkey(self) -> VerifierKey:
        return VerifierKey(self.name, self.key_id, SIGTYPE_COSIGNATURE_V1, self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + text
        try:
            self._key.verify(signature[8:], message)
        except InvalidSignature:
            return False
        return True


class CosignatureSigner:
    """A witness's signing key; ``cosign`` makes one signature line for a checkpoint note."""

    __slots__ = ("_key", "key_id", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = CosignatureVerifier(name, public)
        self._key = private_key
        self.name = name
        self.key_id = self.verifier.key_id

    def cosign(self, note: Note, timestamp: int) -> NoteSignature:
        """Cosign the note's text as of ``timestamp`` (POSIX seconds, supplied by the caller)."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise FormatError("cosignature", f"timestamp {timestamp} out of range")
        sig = self._key.sign(cosigned_message(note.text, timestamp))
        return NoteSignature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)


def verifier_from_vkey(vkey: VerifierKey) -> Verifier:
    """A verifier for any signature type edgeroot supports (0x01 log keys, 0x04 witness keys)."""
    if vkey.sigtype == SIGTYPE_ED25519:
        return Ed25519Verifier.from_vkey(vkey)
    if vkey.sigtype == SIGTYPE_COSIGNATURE_V1:
        return CosignatureVerifier.from_vkey(vkey)
    raise KeyFormatError(f"unsupported signature type {vkey.sigtype:#04x} for key {vkey.name}")
