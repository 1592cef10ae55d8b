"""COSE_Sign1 (RFC 9052 §4.2) as edgeroot uses it: ES256 (default), EdDSA or SM2 (国密, D-061), ``kid``
in the protected header, nothing in the unprotected header.

SM2 has no IANA COSE algorithm. The expired draft-dang-webauthn-sm2-00 asked for -48, which IANA has since
assigned to ML-DSA-44, so edgeroot uses the private-use value :data:`ALG_SM2` (-70100): SM2 over the
``Sig_structure`` with SM3 and ``Z_A`` from the default identifier ``1234567812345678`` (GB/T 32918.2),
the signature as raw ``r || s`` (64 bytes) as for ES256.

Both directions use cbor2 and ``cryptography`` directly (D-057). Verification is on the hot path (every
reading at the gateway): the message is decoded once, its structure checked once, and the
``Sig_structure`` (RFC 9052 §4.4) is framed by hand around the *received* protected-header and payload
bytes instead of being re-encoded. The tests cross-check both directions with pycose, an independent
COSE implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from chain_lite import cbor
from chain_lite.errors import BadSignature, FormatError, KeyFormatError, UnknownSigner
from chain_lite.keys import PrivateKey, PublicKey
from chain_lite.sm2 import SM2PrivateKey, SM2PublicKey

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_CONTENT_TYPE = 3
HDR_KID = 4
HDR_COUNTER = -70001
"""The reading's counter (private-use label, docs/formats.md §8); the envelope module reads it."""
HDR_SUBJECT = -70002
"""The device a bridge-attested reading speaks for (private-use label, docs/formats.md §8)."""
KNOWN_LABELS = frozenset({HDR_ALG, HDR_CONTENT_TYPE, HDR_KID, HDR_COUNTER, HDR_SUBJECT})
"""Every protected-header label edgeroot signs or reads; any other (crit = 2 included) is refused."""
ALG_ES256 = -7
ALG_EDDSA = -8
ALG_SM2 = -70100
"""SM2 with SM3 (private use: RFC 9053 §16.4 leaves values below -65536 to private use; D-061)."""
_ALG_NAMES = {ALG_ES256: "ES256", ALG_EDDSA: "EdDSA", ALG_SM2: "SM2"}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# The fixed start of every Sig_structure: array of 4 (0x84), then the text "Signature1" (0x6a + 10 bytes).
_SIG1_CONTEXT = b"\x84\x6aSignature1"
_EMPTY_BSTR = b"\x40"  # external_aad: always empty in edgeroot
# Tag 18 (0xd2) around an array of 4 (0x84); the unprotected header is always the empty map (0xa0).
_SIGN1_START = b"\xd2\x84"
_EMPTY_MAP = b"\xa0"

KeyLookup = Callable[[str], PublicKey | None]
"""Maps a signer identifier (the ``kid``) to its public key, or ``None`` when unknown."""


@dataclass(frozen=True, slots=True)
class Sign1:
    """A structurally valid COSE_Sign1, signature not yet checked."""

    raw: bytes
    protected_bytes: bytes
    protected: dict[int, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> int:
        return int(self.protected[HDR_ALG])

    @property
    def kid(self) -> str:
        return str(self.protected[HDR_KID].decode())


def parse_sign1(data: bytes, what: str, *, max_size: int) -> Sign1:
    """Parse a tagged COSE_Sign1, checking every structural rule edgeroot relies on."""
    item = cbor.decode(data, what, max_size=max_size)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise FormatError(what, "not a tagged COSE_Sign1 (CBOR tag 18)")
    value = item.value
    # cbor2 >= 6 decodes the content of a tag as immutable values (a tuple here, a frozendict for the
    # unprotected map); the protected header and the payload are byte strings decoded on their own.
    if not isinstance(value, tuple | list) or len(value) != 4:
        raise FormatError(what, "COSE_Sign1 must be an array of 4 items")
    protected_bytes, unprotected, payload, signature = value
    if not isinstance(protected_bytes, bytes) or not protected_bytes:
        raise FormatError(what, "protected header must be a non-empty byte string")
    if unprotected != {}:
        # Unsigned headers would let anyone change an envelope's bytes without breaking its signature.
        raise FormatError(what, "unprotected header must be empty")
    if not isinstance(payload, bytes):
        raise FormatError(what, "payload must be an attached byte string")
    if not isinstance(signature, bytes):
        raise FormatError(what, "signature must be a byte string")
    # RFC 9052 §3: a header map with a repeated label is malformed. Two kids or two counters would let
    # two verifiers that pick different ones read the same signed bytes differently.
    protected = cbor.decode(protected_bytes, what, max_size=len(protected_bytes), unique_keys=True)
    if not isinstance(protected, dict):
        raise FormatError(what, "protected header is not a map")
    unknown = set(protected) - KNOWN_LABELS
    if unknown:
        # Includes crit (2): a signer asking us to understand a header we do not know is refused, and an
        # unknown label is refused rather than ignored (nothing edgeroot signs carries one).
        labels = sorted(unknown, key=str)
        raise FormatError(what, f"protected header has labels edgeroot does not know: {labels}")
    alg = protected.get(HDR_ALG)
    if type(alg) is not int or alg not in _ALG_NAMES:
        raise FormatError(what, f"unsupported alg {alg!r}; want ES256 (-7), EdDSA (-8) or SM2 ({ALG_SM2})")
    kid = protected.get(HDR_KID)
    if not isinstance(kid, bytes) or not kid:
        raise FormatError(what, "protected header lacks a kid")
    try:
        kid.decode()
    except UnicodeDecodeError as exc:
        raise FormatError(what, "kid is not UTF-8") from exc
    if len(signature) != 64:
        raise FormatError(what, f"signature is {len(signature)} bytes, want 64")
    return Sign1(data, protected_bytes, protected, payload, signature)


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    """The bytes a COSE_Sign1 signature covers (RFC 9052 §4.4), with empty external AAD:
    ``["Signature1", protected, h'', payload]``, the two byte strings exactly as received.

    Framed by hand (RFC 8949 §3): only the length heads are written, so the result equals the
    deterministic encoding of that array without passing either byte string through an encoder.
    """
    return _SIG1_CONTEXT + cbor.encode_bstr(protected_bytes) + _EMPTY_BSTR + cbor.encode_bstr(payload)


def verify_sign1(msg: Sign1, key: PublicKey) -> None:
    """Raise :class:`BadSignature` unless ``key`` signed ``msg`` with the message's algorithm."""
    tbs = sig_structure(msg.protected_bytes, msg.payload)
    try:
        if msg.alg == ALG_ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            # COSE carries ECDSA signatures as raw r || s (RFC 9053 §2.1); OpenSSL wants DER.
            sig = msg.signature
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, tbs, _ECDSA_SHA256)
        elif msg.alg == ALG_EDDSA and isinstance(key, Ed25519PublicKey):
            key.verify(msg.signature, tbs)
        elif msg.alg == ALG_SM2 and isinstance(key, SM2PublicKey):
            if not key.verify(msg.signature, tbs):
                raise BadSignature(msg.kid)
        else:
            raise BadSignature(msg.kid, f"key type does not match alg {_ALG_NAMES[msg.alg]}")
    except InvalidSignature as exc:
        raise BadSignature(msg.kid) from exc


def verify_with(msg: Sign1, lookup: KeyLookup) -> None:
    key = lookup(msg.kid)
    if key is None:
        raise UnknownSigner(msg.kid)
    verify_sign1(msg, key)


def encode_protected(header: Mapping[int, Any]) -> bytes:
    """A protected header map in deterministic CBOR: keys sorted by their encoded bytes (RFC 8949 §4.2.1)."""
    items = sorted((cbor.encode(label), cbor.encode(value)) for label, value in header.items())
    return cbor.head(5, len(items)) + b"".join(label + value for label, value in items)


class CoseSigner:
    """Signs COSE_Sign1 messages as ``kid`` with a P-256 (ES256), Ed25519 (EdDSA) or SM2 key."""

    def __init__(self, kid: str, private_key: PrivateKey) -> None:
        if isinstance(private_key, Ed25519PrivateKey):
            self.alg = ALG_EDDSA
        elif isinstance(private_key, SM2PrivateKey):
            self.alg = ALG_SM2
        elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        ):
            self.alg = ALG_ES256
        else:
            raise KeyFormatError(
                f"a COSE signing key is P-256, Ed25519 or SM2, not {type(private_key).__name__}"
            )
        self.kid = kid
        self._key = private_key
        self.public_key: PublicKey = private_key.public_key()

    def sign(self, payload: bytes, extra_protected: dict[int, Any] | None = None) -> bytes:
        """A tagged COSE_Sign1 over ``payload``; ``extra_protected`` headers are signed too."""
        protected: dict[int, Any] = {HDR_ALG: self.alg, HDR_KID: self.kid.encode()}
        protected.update(extra_protected or {})
        protected_bytes = encode_protected(protected)
        tbs = sig_structure(protected_bytes, payload)
        key = self._key
        if isinstance(key, Ed25519PrivateKey | SM2PrivateKey):
            signature = key.sign(tbs)
        else:
            r, s = decode_dss_signature(key.sign(tbs, _ECDSA_SHA256))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return b"".join(
            (
                _SIGN1_START,
                cbor.encode_bstr(protected_bytes),
                _EMPTY_MAP,
                cbor.encode_bstr(payload),
                cbor.encode_bstr(signature),
            )
        )
