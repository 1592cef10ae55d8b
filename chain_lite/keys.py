"""Key generation and serialisation (no files here: runtime.keyfiles writes them).

* Devices and gateways: ECDSA P-256 (secure elements such as the ATECC608 only do P-256), stored as
  PKCS#8 / SubjectPublicKeyInfo PEM.
* Logs and witnesses: Ed25519, stored in the signed-note key formats: the verifier key
  ``<name>+<hexid>+<base64(type || public key)>`` and the signer key
  ``PRIVATE+KEY+<name>+<hexid>+<base64(type || 32-byte seed)>`` (as golang.org/x/mod/sumdb/note).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chain_lite import b64
from chain_lite.cosignature import CosignatureSigner
from chain_lite.errors import KeyFormatError
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    Ed25519Signer,
    check_key_name,
    ed25519_public_bytes,
    key_id,
)

PrivateKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey


def generate_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_ed25519() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_der(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER: how registry records carry keys (base64 in HS_PUBKEY values)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_supported(key: object, what: str) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError(f"{what} is on curve {key.curve.name}, want P-256")
    elif not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        raise KeyFormatError(f"{what} is {type(key).__name__}, want P-256 or Ed25519")


def load_private_pem(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except UnsupportedAlgorithm as exc:  # e.g. an EC curve OpenSSL does not know: still our error tree
        raise KeyFormatError(f"unsupported private key: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an unencrypted PEM private key: {exc}") from exc
    _check_supported(key, "private key")
    assert isinstance(key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey)
    return key


def _load_public(load: Callable[[bytes], object], data: bytes, form: str) -> PublicKey:
    try:
        key = load(data)
    except UnsupportedAlgorithm as exc:  # e.g. an EC curve OpenSSL does not know: still our error tree
        raise KeyFormatError(f"unsupported {form}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a {form}: {exc}") from exc
    _check_supported(key, "public key")
    assert isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey)
    return key


def load_public_pem(data: bytes) -> PublicKey:
    return _load_public(serialization.load_pem_public_key, data, "PEM public key")


def load_public_der(data: bytes) -> PublicKey:
    return _load_public(serialization.load_der_public_key, data, "DER SubjectPublicKeyInfo")


@dataclass(frozen=True, slots=True)
class NoteKey:
    """An Ed25519 note key pair: ``sigtype`` 0x01 for a log, 0x04 for a witness's cosignatures."""

    name: str
    sigtype: int
    private_key: Ed25519PrivateKey

    def vkey(self) -> str:
        public = ed25519_public_bytes(self.private_key)
        encoded = b64.encode(bytes([self.sigtype]) + public)
        return f"{self.name}+{key_id(self.name, self.sigtype, public):08x}+{encoded}"

    def skey(self) -> str:
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = ed25519_public_bytes(self.private_key)
        encoded = b64.encode(bytes([self.sigtype]) + seed)
        return f"PRIVATE+KEY+{self.name}+{key_id(self.name, self.sigtype, public):08x}+{encoded}"

    def log_signer(self) -> Ed25519Signer:
        if self.sigtype != SIGTYPE_ED25519:
            raise KeyFormatError(f"key {self.name} is a witness key, not a log key")
        return Ed25519Signer(self.name, self.private_key)

    def cosigner(self) -> CosignatureSigner:
        if self.sigtype != SIGTYPE_COSIGNATURE_V1:
            raise KeyFormatError(f"key {self.name} is a log key, not a witness key")
        return CosignatureSigner(self.name, self.private_key)

    @classmethod
    def generate(cls, name: str, sigtype: int) -> NoteKey:
        check_key_name(name)
        if sigtype not in (SIGTYPE_ED25519, SIGTYPE_COSIGNATURE_V1):
            raise KeyFormatError(f"unsupported note signature type {sigtype:#04x}")
        return cls(name, sigtype, generate_ed25519())

    @classmethod
    def parse_skey(cls, text: str) -> NoteKey:
        parts = text.strip().split("+", 4)  # base64 key material may itself hold '+'
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFormatError("a signer key is PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        name, hexid, data = parts[2:]
        check_key_name(name)
        raw = b64.decode(data)
        if raw is None or len(raw) != 33 or raw[0] not in (SIGTYPE_ED25519, SIGTYPE_COSIGNATURE_V1):
            raise KeyFormatError("signer key material is not base64 of type byte and 32-byte seed")
        key = cls(name, raw[0], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if f"{key_id(name, raw[0], ed25519_public_bytes(key.private_key)):08x}" != hexid:
            raise KeyFormatError(f"key ID {hexid!r} does not match the key and name {name!r}")
        return key
