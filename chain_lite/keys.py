"""Key generation and serialisation (no files here: runtime.keyfiles writes them).

* Devices and gateways: ECDSA P-256 (secure elements such as the ATECC608 only do P-256), stored as
  PKCS#8 / SubjectPublicKeyInfo PEM.
* Logs and witnesses: Ed25519, stored in the signed-note key formats: the verifier key
  ``<name>+<hexid>+<base64(type || public key)>`` and the signer key
  ``PRIVATE+KEY+<name>+<hexid>+<base64(type || 32-byte seed)>`` (as golang.org/x/mod/sumdb/note).
* The 国密 suite, every kind: SM2 (:mod:`chain_lite.sm2`). Device, gateway and admin keys are PKCS#8 /
  SubjectPublicKeyInfo PEM with ``id-ecPublicKey`` and curve 1.2.156.10197.1.301, as OpenSSL and GmSSL
  write them; note keys use edgeroot's SM2 signature types (D-062), the vkey carrying the 65-byte
  uncompressed point and the signer key the 32-byte scalar.
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
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    Ed25519Signer,
    SM2NoteSigner,
    check_key_name,
    ed25519_public_bytes,
    key_id,
    split_type,
    type_bytes,
)
from chain_lite.sm2 import SM2PrivateKey, SM2PublicKey

PrivateKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey | SM2PrivateKey
PublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey | SM2PublicKey
ALGORITHMS = ("p256", "sm2")
"""What ``--alg`` offers for device, gateway and admin keys: P-256 (the default) or SM2."""


def generate_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_ed25519() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate_sm2() -> SM2PrivateKey:
    return SM2PrivateKey.generate()


def generate(alg: str) -> ec.EllipticCurvePrivateKey | SM2PrivateKey:
    """A device, gateway or admin key of algorithm ``alg`` (one of :data:`ALGORITHMS`)."""
    if alg == "p256":
        return generate_p256()
    if alg == "sm2":
        return generate_sm2()
    raise KeyFormatError(f"unknown key algorithm {alg!r}; want one of {', '.join(ALGORITHMS)}")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    """``p256``, ``sm2`` or ``ed25519``: the name ``--alg`` and the CLI's output use for a key."""
    if isinstance(key, SM2PrivateKey | SM2PublicKey):
        return "sm2"
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return "ed25519"
    return "p256"


def private_pem(key: PrivateKey) -> bytes:
    if isinstance(key, SM2PrivateKey):
        return key.private_pem()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PublicKey) -> bytes:
    if isinstance(key, SM2PublicKey):
        return key.public_pem()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_der(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER: how registry records carry keys (base64 in HS_PUBKEY values)."""
    if isinstance(key, SM2PublicKey):
        return key.public_der()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_point(key: PublicKey) -> bytes:
    """The uncompressed point of a P-256 or SM2 key (how a serial hello frame carries it)."""
    if isinstance(key, SM2PublicKey):
        return key.point
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    raise KeyFormatError("an Ed25519 key has no elliptic-curve point")


def _check_supported(key: object, what: str) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError(f"{what} is on curve {key.curve.name}, want P-256")
    elif not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        raise KeyFormatError(f"{what} is {type(key).__name__}, want P-256, SM2 or Ed25519")


def _unsupported(exc: UnsupportedAlgorithm, form: str, sm2_error: KeyFormatError) -> KeyFormatError:
    return KeyFormatError(f"unsupported {form}: {exc}; as SM2: {sm2_error.reason}")


_SM2_TRADITIONAL_PEM = b"-----BEGIN SM2 PRIVATE KEY-----"
"""OpenSSL 3's label for an SM2 key in the traditional (SEC 1) form, e.g. after ``openssl ec``."""


def load_private_pem(data: bytes) -> PrivateKey:
    if data.lstrip().startswith(_SM2_TRADITIONAL_PEM):  # a label `cryptography` does not know
        return SM2PrivateKey.from_pem(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except UnsupportedAlgorithm as exc:
        # `cryptography` has no SM2: an EC key on a curve it does not know is tried as SM2 (D-060).
        try:
            return SM2PrivateKey.from_pem(data)
        except KeyFormatError as sm2_error:
            raise _unsupported(exc, "private key", sm2_error) from exc
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an unencrypted PEM private key: {exc}") from exc
    _check_supported(key, "private key")
    assert isinstance(key, ec.EllipticCurvePrivateKey | Ed25519PrivateKey)
    return key


def _load_public(
    load: Callable[[bytes], object], load_sm2: Callable[[bytes], SM2PublicKey], data: bytes, form: str
) -> PublicKey:
    try:
        key = load(data)
    except UnsupportedAlgorithm as exc:  # e.g. SM2, a curve `cryptography` does not know
        try:
            return load_sm2(data)
        except KeyFormatError as sm2_error:
            raise _unsupported(exc, form, sm2_error) from exc
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a {form}: {exc}") from exc
    _check_supported(key, "public key")
    assert isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey)
    return key


def load_public_pem(data: bytes) -> PublicKey:
    return _load_public(serialization.load_pem_public_key, SM2PublicKey.from_pem, data, "PEM public key")


def load_public_der(data: bytes) -> PublicKey:
    return _load_public(
        serialization.load_der_public_key, SM2PublicKey.from_der, data, "DER SubjectPublicKeyInfo"
    )


NoteSigningKey = Ed25519PrivateKey | SM2PrivateKey
_NOTE_TYPES = {
    SIGTYPE_ED25519: "log",
    SIGTYPE_COSIGNATURE_V1: "witness",
    SIGTYPE_SM2: "log",
    SIGTYPE_SM2_COSIGNATURE: "witness",
}
_SM2_NOTE_TYPES = (SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE)


@dataclass(frozen=True, slots=True)
class NoteKey:
    """A note key pair: ``sigtype`` 0x01 (Ed25519) or SIGTYPE_SM2 for a log, 0x04 (Ed25519) or
    SIGTYPE_SM2_COSIGNATURE for a witness's cosignatures. SM2 signer keys carry the 32-byte scalar where
    Ed25519 ones carry the 32-byte seed."""

    name: str
    sigtype: int
    private_key: NoteSigningKey

    def public_bytes(self) -> bytes:
        """The public key as the vkey carries it: 32 Ed25519 bytes or the 65-byte SM2 point."""
        if isinstance(self.private_key, SM2PrivateKey):
            return self.private_key.public_key().point
        return ed25519_public_bytes(self.private_key)

    def vkey(self) -> str:
        public = self.public_bytes()
        encoded = b64.encode(type_bytes(self.sigtype) + public)
        return f"{self.name}+{key_id(self.name, self.sigtype, public):08x}+{encoded}"

    def skey(self) -> str:
        if isinstance(self.private_key, SM2PrivateKey):
            secret = self.private_key.private_scalar().to_bytes(32, "big")
        else:
            secret = self.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        encoded = b64.encode(type_bytes(self.sigtype) + secret)
        return f"PRIVATE+KEY+{self.name}+{key_id(self.name, self.sigtype, self.public_bytes()):08x}+{encoded}"

    def log_signer(self) -> Ed25519Signer | SM2NoteSigner:
        if _NOTE_TYPES.get(self.sigtype) != "log":
            raise KeyFormatError(f"key {self.name} is a witness key, not a log key")
        if isinstance(self.private_key, SM2PrivateKey):
            return SM2NoteSigner(self.name, self.private_key)
        return Ed25519Signer(self.name, self.private_key)

    def cosigner(self) -> CosignatureSigner:
        if _NOTE_TYPES.get(self.sigtype) != "witness":
            raise KeyFormatError(f"key {self.name} is a log key, not a witness key")
        return CosignatureSigner(self.name, self.private_key)

    @classmethod
    def generate(cls, name: str, sigtype: int) -> NoteKey:
        check_key_name(name)
        if sigtype not in _NOTE_TYPES:
            raise KeyFormatError(f"unsupported note signature type {sigtype:#04x}")
        key: NoteSigningKey = generate_sm2() if sigtype in _SM2_NOTE_TYPES else generate_ed25519()
        return cls(name, sigtype, key)

    @classmethod
    def parse_skey(cls, text: str) -> NoteKey:
        parts = text.strip().split("+", 4)  # base64 key material may itself hold '+'
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFormatError("a signer key is PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        name, hexid, data = parts[2:]
        check_key_name(name)
        raw = b64.decode(data)
        if raw is None or len(raw) < 2:
            raise KeyFormatError("signer key material is not base64 of type and 32-byte secret")
        sigtype, secret = split_type(raw)
        if sigtype not in _NOTE_TYPES or len(secret) != 32:
            raise KeyFormatError("signer key material is not base64 of a known type and 32-byte secret")
        key: NoteSigningKey
        if sigtype in _SM2_NOTE_TYPES:
            key = SM2PrivateKey.from_scalar(int.from_bytes(secret, "big"))
        else:
            key = Ed25519PrivateKey.from_private_bytes(secret)
        note_key = cls(name, sigtype, key)
        if f"{key_id(name, sigtype, note_key.public_bytes()):08x}" != hexid:
            raise KeyFormatError(f"key ID {hexid!r} does not match the key and name {name!r}")
        return note_key
