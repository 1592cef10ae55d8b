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
from typing import Any, NamedTuple, cast

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

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
_DER_LENGTH = [bytes((n,)) for n in range(128)]
"""Short-form DER lengths (X.690 §8.1.3.4): one byte for 0 to 127."""
# The fixed start of every Sig_structure: array of 4 (0x84), then the text "Signature1" (0x6a + 10 bytes).
_SIG1_CONTEXT = b"\x84\x6aSignature1"
_EMPTY_BSTR = b"\x40"  # external_aad: always empty in edgeroot
# Tag 18 (0xd2) around an array of 4 (0x84); the unprotected header is always the empty map (0xa0).
_SIGN1_START = b"\xd2\x84"
_EMPTY_MAP = b"\xa0"

KeyLookup = Callable[[str], PublicKey | None]
"""Maps a signer identifier (the ``kid``) to its public key, or ``None`` when unknown."""


class Sign1(NamedTuple):
    """A structurally valid COSE_Sign1, signature not yet checked.

    A named tuple rather than a frozen dataclass: just as immutable, and built in a third of the time
    (one tuple instead of a guarded ``object.__setattr__`` per field), which counts on the gateway's hot
    path, one message per reading (issue 13, D-145)."""

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


def parse_sign1(data: bytes, what: str, *, max_size: int, decoder: cbor.ItemDecoder | None = None) -> Sign1:
    """Parse a tagged COSE_Sign1 of at most ``max_size`` bytes, checking every structural rule edgeroot
    relies on. ``decoder`` (made with ``unique_keys``) lets the caller decode the payload with the same
    decoder afterwards; by default the message gets its own."""
    if len(data) > max_size:
        raise FormatError(what, f"{len(data)} bytes exceeds the {max_size}-byte limit")
    if decoder is None:
        decoder = cbor.ItemDecoder(what, unique_keys=True)
    elif not decoder.unique_keys:
        raise ValueError("a COSE header is decoded with unique_keys (RFC 9052 §3)")
    item = decoder.decode(data)
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
    protected = decoder.decode(protected_bytes)
    if not isinstance(protected, dict):
        raise FormatError(what, "protected header is not a map")
    unknown = protected.keys() - KNOWN_LABELS
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
    alg = msg.protected[HDR_ALG]  # an int of _ALG_NAMES: parse_sign1 checked
    try:
        # The key's class, not isinstance, picks the branch (_KEY_ALGS); the casts say what it found.
        if alg == _KEY_ALGS.get(type(key)) or alg == _key_alg(key):
            if alg == ALG_ES256:
                cast(ec.EllipticCurvePublicKey, key).verify(ecdsa_der(msg.signature), tbs, _ECDSA_SHA256)
            elif alg == ALG_EDDSA:
                cast(Ed25519PublicKey, key).verify(msg.signature, tbs)
            elif not cast(SM2PublicKey, key).verify(msg.signature, tbs):  # SM2 answers with a bool
                raise BadSignature(msg.kid)
        else:
            raise BadSignature(msg.kid, f"key type does not match alg {_ALG_NAMES[alg]}")
    except InvalidSignature as exc:
        raise BadSignature(msg.kid) from exc


_KEY_ALGS: dict[type, int | None] = {}
"""The algorithm each key class verifies, found once per class: ``isinstance`` against cryptography's
abstract key classes costs more than building the Sig_structure."""


def _key_alg(key: object) -> int | None:
    """The COSE algorithm ``key`` verifies (None for any other key), remembered for its class."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg: int | None = ALG_ES256
    elif isinstance(key, Ed25519PublicKey):
        alg = ALG_EDDSA
    elif isinstance(key, SM2PublicKey):
        alg = ALG_SM2
    else:
        alg = None
    _KEY_ALGS[type(key)] = alg
    return alg


def ecdsa_der(signature: bytes) -> bytes:
    """The DER ``Ecdsa-Sig-Value`` OpenSSL verifies (RFC 3279 §2.2.3), from the raw ``r || s`` COSE carries
    (RFC 9053 §2.1; 64 bytes for P-256).

    Precondition: ``len(signature) == 64`` (:func:`parse_sign1` checks it). Each half becomes an INTEGER in
    its shortest two's-complement form (X.690 §8.3.2): leading zero bytes dropped, one zero put back
    before a high bit so the value stays positive. Both integers fit in 33 bytes, so every length is a
    single byte (X.690 §8.1.3.4). The result equals ``encode_dss_signature`` of the two halves as
    integers (tests/test_cose.py checks every shape), without building the integers."""
    r0, s0 = signature[0], signature[32]
    if r0 and s0:  # no leading zero byte to drop (255/256 of halves): the frame depends on two bits
        return _DER_FRAMES[r0 >> 7][s0 >> 7] + signature[:32] + _DER_SECOND[s0 >> 7] + signature[32:]
    r = _der_integer(signature[:32])
    s = _der_integer(signature[32:])
    return b"\x30" + _DER_LENGTH[len(r) + len(s)] + r + s


def _der_integer(magnitude: bytes) -> bytes:
    """A DER INTEGER (tag 0x02) of the unsigned big-endian ``magnitude`` (at most 32 bytes here)."""
    value = magnitude.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + _DER_LENGTH[len(value)] + value


# The DER around two 32-byte halves whose first bytes are not zero, by their high bits: the SEQUENCE head
# and the first INTEGER's head (with a zero byte when r's high bit is set), then the second INTEGER's.
_DER_SECOND = (b"\x02\x20", b"\x02\x21\x00")
_DER_FRAMES = tuple(
    tuple(
        b"\x30" + _DER_LENGTH[68 + r_high + s_high] + (b"\x02\x21\x00" if r_high else b"\x02\x20")
        for s_high in (0, 1)
    )
    for r_high in (0, 1)
)


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
