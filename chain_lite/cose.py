"""COSE_Sign1 (RFC 9052 §4.2) as edgeroot uses it: ES256 (default) or EdDSA, ``kid`` in the protected
header, nothing in the unprotected header.

Messages are built with python-cwt. Verification is on the hot path (every reading at the gateway), so
it rebuilds the ``Sig_structure`` (RFC 9052 §4.4) and calls ``cryptography`` directly; the tests check
that python-cwt and this code accept exactly the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cwt import COSE, COSEKey

from chain_lite import cbor
from chain_lite.errors import BadSignature, FormatError, UnknownSigner
from chain_lite.keys import PrivateKey, PublicKey, private_pem

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_CONTENT_TYPE = 3
HDR_KID = 4
ALG_ES256 = -7
ALG_EDDSA = -8
_ALG_NAMES = {ALG_ES256: "ES256", ALG_EDDSA: "EdDSA"}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

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
    if not isinstance(value, list) or len(value) != 4:
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
    protected = cbor.decode(protected_bytes, what, max_size=len(protected_bytes))
    if not isinstance(protected, dict):
        raise FormatError(what, "protected header is not a map")
    alg = protected.get(HDR_ALG)
    if type(alg) is not int or alg not in _ALG_NAMES:
        raise FormatError(what, f"unsupported alg {alg!r}; want ES256 (-7) or EdDSA (-8)")
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
    """The bytes a COSE_Sign1 signature covers (RFC 9052 §4.4), with empty external AAD."""
    return cbor.encode(["Signature1", protected_bytes, b"", payload])


def verify_sign1(msg: Sign1, key: PublicKey) -> None:
    """Raise :class:`BadSignature` unless ``key`` signed ``msg`` with the message's algorithm."""
    tbs = sig_structure(msg.protected_bytes, msg.payload)
    try:
        if msg.alg == ALG_ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            r = int.from_bytes(msg.signature[:32], "big")
            s = int.from_bytes(msg.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), tbs, _ECDSA_SHA256)
        elif msg.alg == ALG_EDDSA and isinstance(key, Ed25519PublicKey):
            key.verify(msg.signature, tbs)
        else:
            raise BadSignature(msg.kid, f"key type does not match alg {_ALG_NAMES[msg.alg]}")
    except InvalidSignature as exc:
        raise BadSignature(msg.kid) from exc


def verify_with(msg: Sign1, lookup: KeyLookup) -> None:
    key = lookup(msg.kid)
    if key is None:
        raise UnknownSigner(msg.kid)
    verify_sign1(msg, key)


class CoseSigner:
    """Signs COSE_Sign1 messages as ``kid`` with a P-256 (ES256) or Ed25519 (EdDSA) key."""

    def __init__(self, kid: str, private_key: PrivateKey) -> None:
        self.kid = kid
        self.alg = ALG_EDDSA if isinstance(private_key, Ed25519PrivateKey) else ALG_ES256
        # The key carries no kid of its own, so python-cwt adds no unprotected header.
        self._key = COSEKey.from_pem(private_pem(private_key), alg=_ALG_NAMES[self.alg])
        self._cose = COSE.new()
        self.public_key: PublicKey = private_key.public_key()

    def sign(self, payload: bytes, extra_protected: dict[int, Any] | None = None) -> bytes:
        """A tagged COSE_Sign1 over ``payload``; ``extra_protected`` headers are signed too."""
        protected: dict[int, Any] = {HDR_ALG: self.alg, HDR_KID: self.kid.encode()}
        protected.update(extra_protected or {})
        # Deterministic header order (RFC 8949 §4.2.1 sorts encoded keys bytewise).
        ordered = dict(sorted(protected.items(), key=lambda kv: cbor.encode(kv[0])))
        out = self._cose.encode_and_sign(payload, self._key, protected=ordered, unprotected={})
        return bytes(out)
