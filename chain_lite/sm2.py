"""SM2 signatures (GB/T 32918.2-2016) through the system's OpenSSL 3 ``libcrypto`` (D-060).

No maintained Python library reaches the issue's floor of 1,500 SM2 verifications a second (measured in
D-060), and ``cryptography`` does not offer SM2, so this module is a small ``ctypes`` binding to the EVP
interface of the operating system's OpenSSL 3, which gets the distribution's security updates. It is the
only place edgeroot calls C directly; everything else sees :class:`SM2PrivateKey` and
:class:`SM2PublicKey`.

The signature is GB/T 32918.2 §6 on the recommended curve of GB/T 32918.5 with SM3 as the hash:
``e = SM3(Z_A || M)`` where ``Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)`` binds
the signer's distinguishing identifier ``ID_A`` (by default ``1234567812345678``, GM/T 0009-2012) and
public key. Signatures travel as the raw 64 bytes ``r || s`` (as in COSE for ECDSA); OpenSSL takes the
DER ``SEQUENCE { r, s }`` of GM/T 0009-2012, converted at this boundary.

Keys are PKCS#8 and SubjectPublicKeyInfo with ``id-ecPublicKey`` and the curve OID 1.2.156.10197.1.301,
exactly as OpenSSL (and GmSSL, Tongsuo, BouncyCastle) write them. ``libcrypto.so.3`` is loaded on first
use, so a machine without it can still run every other suite; it then gets :class:`SuiteUnavailable`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import weakref
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from chain_lite.errors import KeyFormatError, SuiteUnavailable

DEFAULT_ID = b"1234567812345678"
"""The default distinguishing identifier (GM/T 0009-2012 §10, GB/T 35276-2017 §7)."""
CURVE_OID = "1.2.156.10197.1.301"
ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
"""The order n of the recommended curve's base point (GB/T 32918.5-2017 §5)."""
SIGNATURE_SIZE = 64
POINT_SIZE = 65
MAX_ID_SIZE = 8191
"""ENTL_A is two bytes counting *bits*: an identifier is at most 8,191 bytes."""

# SubjectPublicKeyInfo DER for an uncompressed SM2 point is this fixed header and the 65-byte point:
# SEQUENCE(89) { SEQUENCE(19) { OID id-ecPublicKey, OID sm2 }, BIT STRING(66) { 0 unused bits, point } }
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
# PKCS#8 DER for a bare scalar: SEQUENCE(65) { INTEGER 0, the same algorithm identifier, OCTET STRING(39)
# { ECPrivateKey SEQUENCE(37) { INTEGER 1, OCTET STRING(32) d } } }; OpenSSL derives the public point
# when the optional publicKey field is absent (RFC 5915 §3).
_PKCS8_SCALAR_PREFIX = bytes.fromhex("3041020100301306072a8648ce3d020106082a811ccf5501822d042730250201010420")

_BIO_CTRL_INFO = 3  # BIO_get_mem_data() is the macro BIO_ctrl(b, BIO_CTRL_INFO, 0, &pointer)
_c_void_p_p = ctypes.POINTER(ctypes.c_void_p)
_c_char_p_p = ctypes.POINTER(ctypes.c_char_p)


@functools.cache
def _libcrypto() -> ctypes.CDLL:
    """The system's OpenSSL 3 libcrypto with the prototypes this module calls, loaded once."""
    try:
        lib = ctypes.CDLL("libcrypto.so.3")
    except OSError as exc:
        raise SuiteUnavailable("SM2", f"OpenSSL 3's libcrypto.so.3 cannot be loaded: {exc}") from exc
    vp, cp, ci, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    prototypes: dict[str, tuple[Any, list[Any]]] = {
        "OpenSSL_version_num": (ctypes.c_ulong, []),
        "ERR_clear_error": (None, []),
        "BIO_new_mem_buf": (vp, [cp, ci]),
        "BIO_new": (vp, [vp]),
        "BIO_s_mem": (vp, []),
        "BIO_ctrl": (ctypes.c_long, [vp, ci, ctypes.c_long, vp]),
        "BIO_free": (ci, [vp]),
        "PEM_read_bio_PUBKEY": (vp, [vp, vp, vp, cp]),
        "PEM_read_bio_PrivateKey": (vp, [vp, vp, vp, cp]),
        "PEM_write_bio_PUBKEY": (ci, [vp, vp]),
        "PEM_write_bio_PrivateKey": (ci, [vp, vp, vp, vp, ci, vp, vp]),
        "d2i_PUBKEY": (vp, [vp, _c_char_p_p, ctypes.c_long]),
        "d2i_AutoPrivateKey": (vp, [vp, _c_char_p_p, ctypes.c_long]),
        "EVP_PKEY_free": (None, [vp]),
        "EVP_PKEY_is_a": (ci, [vp, cp]),
        "EVP_PKEY_get_octet_string_param": (ci, [vp, cp, cp, sz, ctypes.POINTER(sz)]),
        "EVP_PKEY_get_bn_param": (ci, [vp, cp, _c_void_p_p]),
        "BN_bn2binpad": (ci, [vp, cp, ci]),
        "BN_clear_free": (None, [vp]),
        "EVP_PKEY_CTX_new_from_name": (vp, [vp, cp, cp]),
        "EVP_PKEY_CTX_new": (vp, [vp, vp]),
        "EVP_PKEY_CTX_free": (None, [vp]),
        "EVP_PKEY_keygen_init": (ci, [vp]),
        "EVP_PKEY_generate": (ci, [vp, _c_void_p_p]),
        "EVP_PKEY_CTX_set1_id": (ci, [vp, cp, ci]),
        "EVP_MD_CTX_new": (vp, []),
        "EVP_MD_CTX_free": (None, [vp]),
        "EVP_MD_CTX_set_pkey_ctx": (None, [vp, vp]),
        "EVP_sm3": (vp, []),
        "EVP_DigestSignInit": (ci, [vp, vp, vp, vp, vp]),
        "EVP_DigestSign": (ci, [vp, cp, ctypes.POINTER(sz), cp, sz]),
        "EVP_DigestVerifyInit": (ci, [vp, vp, vp, vp, vp]),
        "EVP_DigestVerify": (ci, [vp, cp, sz, cp, sz]),
    }
    try:
        for name, (restype, argtypes) in prototypes.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
    except AttributeError as exc:
        raise SuiteUnavailable("SM2", f"libcrypto.so.3 lacks {exc}") from exc
    if lib.OpenSSL_version_num() < 0x30000000:
        raise SuiteUnavailable("SM2", "libcrypto.so.3 is older than OpenSSL 3.0")
    if not lib.EVP_sm3():
        raise SuiteUnavailable("SM2", "this OpenSSL is built without SM3")
    return lib


class _Pkey:
    """Owns one ``EVP_PKEY*``; freed when the Python object goes away."""

    __slots__ = ("__weakref__", "ptr")

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr
        weakref.finalize(self, _libcrypto().EVP_PKEY_free, ptr)


def _adopt_sm2(ptr: int | None, what: str) -> _Pkey:
    """Take ownership of a parsed key, refusing anything but an SM2 key."""
    lib = _libcrypto()
    if not ptr:
        lib.ERR_clear_error()
        raise KeyFormatError(f"not an SM2 {what}")
    pkey = _Pkey(ptr)
    if lib.EVP_PKEY_is_a(ptr, b"SM2") != 1:
        raise KeyFormatError(f"{what} is not on the SM2 curve ({CURVE_OID})")
    return pkey


def _check_id(uid: bytes) -> None:
    if not 0 < len(uid) <= MAX_ID_SIZE:
        raise KeyFormatError(f"SM2 distinguishing identifier is {len(uid)} bytes, want 1 to {MAX_ID_SIZE}")


def _read_bio(lib: ctypes.CDLL, bio: int) -> bytes:
    data = ctypes.c_void_p()
    size = lib.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(data))
    return ctypes.string_at(data, size) if size > 0 and data.value else b""


def _write_pem(write: Any, *args: Any) -> bytes:
    lib = _libcrypto()
    bio = lib.BIO_new(lib.BIO_s_mem())
    if not bio:
        raise MemoryError("BIO_new")
    try:
        if write(bio, *args) != 1:
            lib.ERR_clear_error()
            raise KeyFormatError("OpenSSL could not encode the SM2 key")
        return _read_bio(lib, bio)
    finally:
        lib.BIO_free(bio)


def _read_pem(read: Any, data: bytes, what: str) -> _Pkey:
    lib = _libcrypto()
    if not data or len(data) > 1 << 16:
        raise KeyFormatError(f"not an SM2 {what}: {len(data)} bytes")
    bio = lib.BIO_new_mem_buf(data, len(data))
    if not bio:
        raise MemoryError("BIO_new_mem_buf")
    try:
        # The empty passphrase ("" as the callback argument) makes an encrypted key fail instead of
        # OpenSSL's default callback prompting on the terminal.
        return _adopt_sm2(read(bio, None, None, b""), what)
    finally:
        lib.BIO_free(bio)


def _read_der(read: Any, data: bytes, what: str) -> _Pkey:
    if not data or len(data) > 1 << 16:
        raise KeyFormatError(f"not an SM2 {what}: {len(data)} bytes")
    cursor = ctypes.c_char_p(data)
    ptr = read(None, ctypes.byref(cursor), len(data))
    return _adopt_sm2(ptr, what)


class SM2PublicKey:
    """An SM2 public key (a point on the recommended curve, checked by OpenSSL when parsed)."""

    __slots__ = ("_pkey", "point")

    def __init__(self, pkey: _Pkey) -> None:
        self._pkey = pkey
        lib = _libcrypto()
        buf = ctypes.create_string_buffer(POINT_SIZE)
        size = ctypes.c_size_t()
        if lib.EVP_PKEY_get_octet_string_param(pkey.ptr, b"pub", buf, POINT_SIZE, ctypes.byref(size)) != 1:
            lib.ERR_clear_error()
            raise KeyFormatError("SM2 public key has no uncompressed point")
        self.point = buf.raw[: size.value]
        """The uncompressed point ``0x04 || x || y`` (65 bytes)."""

    @classmethod
    def from_der(cls, data: bytes) -> SM2PublicKey:
        """Parse a DER SubjectPublicKeyInfo holding an SM2 key. Only the one encoding :meth:`public_der`
        writes is accepted (uncompressed point, nothing after it): registry values are hashed and
        compared as bytes, so two encodings of one key must not both pass (D-003)."""
        key = cls(_read_der(_libcrypto().d2i_PUBKEY, data, "DER SubjectPublicKeyInfo"))
        if key.public_der() != data:
            raise KeyFormatError("SM2 SubjectPublicKeyInfo not in DER form (uncompressed, nothing after)")
        return key

    @classmethod
    def from_pem(cls, data: bytes) -> SM2PublicKey:
        return cls(_read_pem(_libcrypto().PEM_read_bio_PUBKEY, data, "PEM public key"))

    @classmethod
    def from_point(cls, point: bytes) -> SM2PublicKey:
        """The key for an uncompressed point ``0x04 || x || y``; a point off the curve is refused."""
        if len(point) != POINT_SIZE or point[0] != 0x04:
            raise KeyFormatError(f"an SM2 point is 0x04 and 64 bytes, got {len(point)} bytes")
        return cls.from_der(_SPKI_PREFIX + point)

    def public_der(self) -> bytes:
        """SubjectPublicKeyInfo DER (``id-ecPublicKey``, curve SM2, uncompressed point)."""
        return _SPKI_PREFIX + self.point

    def public_pem(self) -> bytes:
        return _write_pem(_libcrypto().PEM_write_bio_PUBKEY, self._pkey.ptr)

    def verify(self, signature: bytes, data: bytes, uid: bytes = DEFAULT_ID) -> bool:
        """Whether ``signature`` (raw ``r || s``) is this key's SM2 signature over ``data`` with ``uid``."""
        _check_id(uid)
        if len(signature) != SIGNATURE_SIZE:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < ORDER and 0 < s < ORDER):  # GB/T 32918.2 §7.1 B1, B2
            return False
        der = encode_dss_signature(r, s)
        lib = _libcrypto()
        with _signature_context(lib, self._pkey.ptr, uid, lib.EVP_DigestVerifyInit) as md_ctx:
            ok = lib.EVP_DigestVerify(md_ctx, der, len(der), data, len(data))
        if ok != 1:
            lib.ERR_clear_error()
        return bool(ok == 1)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as its point (for worker processes); the OpenSSL handle is rebuilt on the other side."""
        return SM2PublicKey.from_point, (self.point,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SM2PublicKey) and other.point == self.point

    def __hash__(self) -> int:
        return hash(self.point)

    def __repr__(self) -> str:
        return f"SM2PublicKey({self.point[1:9].hex()}…)"


@contextlib.contextmanager
def _signature_context(lib: ctypes.CDLL, pkey: int, uid: bytes, init: Any) -> Iterator[int]:
    """An ``EVP_MD_CTX`` initialised by ``init`` (``EVP_DigestSignInit`` or ``EVP_DigestVerifyInit``) for
    SM2 with SM3, its key context carrying the distinguishing identifier, which must be set before the
    init (EVP_PKEY-SM2(7)); both contexts are freed on leaving."""
    pkey_ctx = lib.EVP_PKEY_CTX_new(pkey, None)
    md_ctx = lib.EVP_MD_CTX_new()
    try:
        if not pkey_ctx or not md_ctx or lib.EVP_PKEY_CTX_set1_id(pkey_ctx, uid, len(uid)) != 1:
            lib.ERR_clear_error()
            raise SuiteUnavailable("SM2", "cannot set up an SM2 signature context")
        lib.EVP_MD_CTX_set_pkey_ctx(md_ctx, pkey_ctx)
        if init(md_ctx, None, lib.EVP_sm3(), None, pkey) != 1:
            lib.ERR_clear_error()
            raise SuiteUnavailable("SM2", "the SM2 signature context does not initialise")
        yield md_ctx
    finally:
        lib.EVP_MD_CTX_free(md_ctx)
        lib.EVP_PKEY_CTX_free(pkey_ctx)


class SM2PrivateKey:
    """An SM2 private key; the scalar stays inside OpenSSL unless :meth:`private_scalar` asks for it."""

    __slots__ = ("_pkey", "_public")

    def __init__(self, pkey: _Pkey) -> None:
        self._pkey = pkey
        self._public = SM2PublicKey(pkey)

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        """A new key from OpenSSL's random generator (the scheme's own business, as for P-256: D-046)."""
        lib = _libcrypto()
        ctx = lib.EVP_PKEY_CTX_new_from_name(None, b"SM2", None)
        if not ctx:
            lib.ERR_clear_error()
            raise SuiteUnavailable("SM2", "this OpenSSL has no SM2 key manager")
        try:
            out = ctypes.c_void_p()
            if lib.EVP_PKEY_keygen_init(ctx) != 1 or lib.EVP_PKEY_generate(ctx, ctypes.byref(out)) != 1:
                lib.ERR_clear_error()
                raise SuiteUnavailable("SM2", "SM2 key generation failed")
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
        return cls(_adopt_sm2(out.value, "private key"))

    @classmethod
    def from_pem(cls, data: bytes) -> SM2PrivateKey:
        """Parse an unencrypted PEM private key (PKCS#8, or OpenSSL's traditional EC form) on SM2."""
        return cls(_read_pem(_libcrypto().PEM_read_bio_PrivateKey, data, "PEM private key"))

    @classmethod
    def from_der(cls, data: bytes) -> SM2PrivateKey:
        return cls(_read_der(_libcrypto().d2i_AutoPrivateKey, data, "DER private key"))

    @classmethod
    def from_scalar(cls, d: int) -> SM2PrivateKey:
        """The key with secret ``d``, which GB/T 32918.1 §6.1 requires in [1, n - 2]."""
        if not 1 <= d <= ORDER - 2:
            raise KeyFormatError("SM2 private scalar is outside [1, n - 2]")
        return cls.from_der(_PKCS8_SCALAR_PREFIX + d.to_bytes(32, "big"))

    def public_key(self) -> SM2PublicKey:
        return self._public

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
        return _write_pem(_libcrypto().PEM_write_bio_PrivateKey, self._pkey.ptr, None, None, 0, None, None)

    def private_scalar(self) -> int:
        """The secret d_A: for cross-checks against an independent implementation, not for storage."""
        lib = _libcrypto()
        bn = ctypes.c_void_p()
        if lib.EVP_PKEY_get_bn_param(self._pkey.ptr, b"priv", ctypes.byref(bn)) != 1:
            lib.ERR_clear_error()
            raise KeyFormatError("SM2 private key has no scalar")
        try:
            buf = ctypes.create_string_buffer(32)
            if lib.BN_bn2binpad(bn, buf, 32) != 32:
                raise KeyFormatError("SM2 private scalar does not fit 32 bytes")
            return int.from_bytes(buf.raw, "big")
        finally:
            lib.BN_clear_free(bn)

    def sign(self, data: bytes, uid: bytes = DEFAULT_ID) -> bytes:
        """The SM2 signature over ``data`` with distinguishing identifier ``uid``, as raw ``r || s``."""
        _check_id(uid)
        lib = _libcrypto()
        buf = ctypes.create_string_buffer(80)  # DER of two 256-bit integers is at most 72 bytes
        size = ctypes.c_size_t(len(buf))
        with _signature_context(lib, self._pkey.ptr, uid, lib.EVP_DigestSignInit) as md_ctx:
            if lib.EVP_DigestSign(md_ctx, buf, ctypes.byref(size), data, len(data)) != 1:
                lib.ERR_clear_error()
                raise SuiteUnavailable("SM2", "EVP_DigestSign failed")
        r, s = decode_dss_signature(buf.raw[: size.value])
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"SM2PrivateKey(public={self._public!r})"
