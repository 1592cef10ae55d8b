"""C2SP tlog-cosignature v1: timestamped Ed25519 witness cosignatures (signature type 0x04), and the
same cosignature made with an SM2 key (edgeroot's type ``0xff || "edgeroot/sm2-cosignature/v1"``, D-062).

The signature bytes are ``timestamp (u64, big-endian) || signature (64 bytes)`` over the message
``"cosignature/v1\\ntime <timestamp>\\n" || <checkpoint note text>``; for SM2 the 64 bytes are ``r || s``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain_lite import sm2
from chain_lite.errors import FormatError, KeyFormatError
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    Ed25519KeyVerifier,
    Ed25519Verifier,
    Note,
    NoteSignature,
    SM2KeyVerifier,
    SM2NoteVerifier,
    Verifier,
    VerifierKey,
    ed25519_public_bytes,
)

MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message_bytes(text: bytes, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs over a checkpoint's note ``text``."""
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp a (well-formed) cosignature carries."""
    if len(signature) != 72:
        raise FormatError("cosignature", f"{len(signature)} bytes, want 8 + 64")
    return int.from_bytes(signature[:8], "big")


class CosignatureVerifier(Ed25519KeyVerifier):
    """Verifier for a witness's v1 cosignatures (signature type 0x04)."""

    __slots__ = ()
    sigtype = SIGTYPE_COSIGNATURE_V1

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        return timestamp <= MAX_TIMESTAMP and self._verify(
            signature[8:], cosigned_message_bytes(text, timestamp)
        )


class SM2CosignatureVerifier(SM2KeyVerifier):
    """Verifier for a witness's SM2 cosignatures: the v1 message and layout, SM2 instead of Ed25519."""

    __slots__ = ()
    sigtype = SIGTYPE_SM2_COSIGNATURE

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + sm2.SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        return timestamp <= MAX_TIMESTAMP and self._verify(
            signature[8:], cosigned_message_bytes(text, timestamp)
        )


WitnessVerifier = CosignatureVerifier | SM2CosignatureVerifier
"""A witness key of either suite, as a policy lists it."""


class CosignatureSigner:
    """A witness's signing key (Ed25519 or SM2); ``cosign`` makes one signature line for a checkpoint."""

    __slots__ = ("_key", "key_id", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey | sm2.SM2PrivateKey) -> None:
        self.verifier: WitnessVerifier
        if isinstance(private_key, sm2.SM2PrivateKey):
            self.verifier = SM2CosignatureVerifier(name, private_key.public_key().point)
        else:
            self.verifier = CosignatureVerifier(name, ed25519_public_bytes(private_key))
        self._key = private_key
        self.name = name
        self.key_id = self.verifier.key_id

    def cosign(self, note: Note, timestamp: int) -> NoteSignature:
        """Cosign the note's text as of ``timestamp`` (POSIX seconds, supplied by the caller)."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise FormatError("cosignature", f"timestamp {timestamp} out of range")
        sig = self._key.sign(cosigned_message_bytes(note.text.encode(), timestamp))
        return NoteSignature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)


LogVerifier = Ed25519Verifier | SM2NoteVerifier
"""A log key of either suite, as a policy lists it."""


def log_verifier(vkey: VerifierKey) -> LogVerifier:
    """The verifier of a log key: type 0x01 (Ed25519) or edgeroot's SM2 note type."""
    if vkey.sigtype == SIGTYPE_SM2:
        return SM2NoteVerifier.from_vkey(vkey)
    return Ed25519Verifier.from_vkey(vkey)


def witness_verifier(vkey: VerifierKey) -> WitnessVerifier:
    """The verifier of a witness key: type 0x04 (Ed25519) or edgeroot's SM2 cosignature type."""
    if vkey.sigtype == SIGTYPE_SM2_COSIGNATURE:
        return SM2CosignatureVerifier.from_vkey(vkey)
    return CosignatureVerifier.from_vkey(vkey)


def verifier_from_vkey(vkey: VerifierKey) -> Verifier:
    """A verifier for any signature type edgeroot supports (0x01 and SM2 log keys, 0x04 and SM2 witness
    keys)."""
    if vkey.sigtype == SIGTYPE_ED25519:
        return Ed25519Verifier.from_vkey(vkey)
    if vkey.sigtype == SIGTYPE_COSIGNATURE_V1:
        return CosignatureVerifier.from_vkey(vkey)
    if vkey.sigtype == SIGTYPE_SM2:
        return SM2NoteVerifier.from_vkey(vkey)
    if vkey.sigtype == SIGTYPE_SM2_COSIGNATURE:
        return SM2CosignatureVerifier.from_vkey(vkey)
    raise KeyFormatError(f"unsupported signature type {vkey.sigtype:#04x} for key {vkey.name}")
