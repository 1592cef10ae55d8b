"""chain_lite.sm2 (D-060): the standard's example, an independent implementation both ways (gmalg, pure
Python from GB/T 32918), key files that OpenSSL and Tongsuo read and write, and garbage that never
crashes a parser."""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import subprocess
from pathlib import Path

import gmalg
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from tongsuopy.crypto import hashes as ts_hashes
from tongsuopy.crypto import serialization as ts_serialization
from tongsuopy.crypto.asymciphers import ec as ts_ec

from chain_lite import keys, registry
from chain_lite.errors import KeyFormatError
from chain_lite.sm2 import DEFAULT_ID, ORDER, SM2PrivateKey, SM2PublicKey

VECTOR = json.loads((Path(__file__).parent / "vectors" / "sm2" / "gbt32918_5_signature.json").read_text())
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def _h(name: str) -> bytes:
    return bytes.fromhex(VECTOR[name])


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _oracle(
    uid: bytes, *, private: SM2PrivateKey | None = None, public: SM2PublicKey | None = None
) -> gmalg.SM2:
    """gmalg holding the same key: the scalar and point cross as plain numbers, never as our encodings."""
    if private is not None:
        sk = private.private_scalar().to_bytes(32, "big")
        return gmalg.SM2(sk=sk, uid=uid, pk=private.public_key().point)
    assert public is not None
    return gmalg.SM2(uid=uid, pk=public.point)


def _oracle_sign(oracle: gmalg.SM2, message: bytes) -> bytes:
    r, s = oracle.sign(message)
    return r.rjust(32, b"\0") + s.rjust(32, b"\0")


def _oracle_verify(oracle: gmalg.SM2, message: bytes, signature: bytes) -> bool:
    return bool(oracle.verify(message, signature[:32], signature[32:]))


STANDARD_POINT = b"\x04" + _h("xA") + _h("yA")
STANDARD_SIGNATURE = _h("r") + _h("s")
STANDARD_MESSAGE = VECTOR["message_ascii"].encode()
STANDARD_ID = VECTOR["id_ascii"].encode()


# --- the standard's example (GB/T 32918.5) ---------------------------------------------------------------


def test_standard_example_key_is_the_standards() -> None:
    """The example's d_A gives the example's public key, through OpenSSL (PKCS#8 without a public key)."""
    assert STANDARD_ID == DEFAULT_ID
    key = SM2PrivateKey.from_scalar(int(VECTOR["dA"], 16))
    assert key.public_key().point == STANDARD_POINT
    assert key.private_scalar() == int(VECTOR["dA"], 16)


def test_standard_example_za_and_e_from_the_spec() -> None:
    """Z_A and e written straight from GB/T 32918.2 §5.5 and §6.1 (SM3 from `cryptography`) equal the
    standard's values: the naive reference the binding's results are judged by."""
    curve = VECTOR["curve"]
    entl = (len(STANDARD_ID) * 8).to_bytes(2, "big")
    params = b"".join(bytes.fromhex(curve[k]) for k in ("a", "b", "xG", "yG"))
    za = _sm3(entl + STANDARD_ID + params + STANDARD_POINT[1:])
    assert za == _h("ZA")
    assert _sm3(za + STANDARD_MESSAGE) == _h("e")
    assert (int(VECTOR["e"], 16) + int(VECTOR["x1"], 16)) % ORDER == int(VECTOR["r"], 16)


def test_standard_example_signature_verifies_and_the_oracle_reproduces_it() -> None:
    """The standard's (r, s) verifies with our binding; gmalg, given the example's k, makes exactly it."""
    public = SM2PublicKey.from_point(STANDARD_POINT)
    assert public.verify(STANDARD_SIGNATURE, STANDARD_MESSAGE)
    k = int(VECTOR["k"], 16)
    oracle = gmalg.SM2(sk=_h("dA"), uid=STANDARD_ID, pk=STANDARD_POINT, rnd_fn=lambda _bits: k)
    assert _oracle_sign(oracle, STANDARD_MESSAGE) == STANDARD_SIGNATURE


def test_standard_example_every_corruption_is_refused() -> None:
    """Every single-bit change to r || s, a changed message, another identifier or key: refused."""
    public = SM2PublicKey.from_point(STANDARD_POINT)
    for bit in range(len(STANDARD_SIGNATURE) * 8):
        flipped = bytearray(STANDARD_SIGNATURE)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        assert not public.verify(bytes(flipped), STANDARD_MESSAGE), bit
    assert not public.verify(STANDARD_SIGNATURE, b"message digesT")
    assert not public.verify(STANDARD_SIGNATURE, STANDARD_MESSAGE, b"ALICE123@YAHOO.COM")
    assert not SM2PrivateKey.generate().public_key().verify(STANDARD_SIGNATURE, STANDARD_MESSAGE)
    # Out-of-range r or s (GB/T 32918.2 §7.1 B1, B2) and wrong sizes never reach OpenSSL as valid.
    r, s = STANDARD_SIGNATURE[:32], STANDARD_SIGNATURE[32:]
    for bad in (bytes(32) + s, r + bytes(32), ORDER.to_bytes(32, "big") + s, STANDARD_SIGNATURE[:-1], b""):
        assert not public.verify(bad, STANDARD_MESSAGE)


# --- an independent implementation, both ways ------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(message=st.binary(max_size=300), uid=st.sampled_from([DEFAULT_ID, b"ALICE123@YAHOO.COM", b"x"]))
def test_the_oracle_verifies_what_we_sign(message: bytes, uid: bytes) -> None:
    """Our signatures verify with gmalg, with the default identifier and others; not over other bytes."""
    key = SM2PrivateKey.generate()
    signature = key.sign(message, uid)
    oracle = _oracle(uid, public=key.public_key())
    assert _oracle_verify(oracle, message, signature)
    assert not _oracle_verify(oracle, message + b"!", signature)


@settings(max_examples=15, deadline=None)
@given(message=st.binary(max_size=300), uid=st.sampled_from([DEFAULT_ID, b"ALICE123@YAHOO.COM", b"x"]))
def test_we_verify_what_the_oracle_signs(message: bytes, uid: bytes) -> None:
    """gmalg's signatures verify with ours, only under the identifier they were made with."""
    key = SM2PrivateKey.generate()
    signature = _oracle_sign(_oracle(uid, private=key), message)
    assert key.public_key().verify(signature, message, uid)
    other = DEFAULT_ID if uid != DEFAULT_ID else b"another id"
    assert not key.public_key().verify(signature, message, other)


def test_identifier_limits_are_checked() -> None:
    """ENTL_A counts bits in two bytes: an empty or over-long identifier is refused before OpenSSL."""
    key = SM2PrivateKey.generate()
    for uid in (b"", b"x" * 8192):
        with pytest.raises(KeyFormatError):
            key.sign(b"m", uid)
        with pytest.raises(KeyFormatError):
            key.public_key().verify(bytes(64), b"m", uid)


# --- key files -------------------------------------------------------------------------------------------


def test_pem_and_der_round_trip_through_keys() -> None:
    """keys.* write SM2 as PKCS#8 / SubjectPublicKeyInfo and read them back as SM2 keys; registry values
    carry the SPKI DER."""
    key = keys.generate_sm2()
    private_pem = keys.private_pem(key)
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    again = keys.load_private_pem(private_pem)
    assert isinstance(again, SM2PrivateKey) and again.public_key() == key.public_key()
    public = key.public_key()
    assert keys.load_public_pem(keys.public_pem(public)) == public
    der = keys.public_der(public)
    assert keys.load_public_der(der) == public and len(der) == 91
    value = registry.pubkey_value(300, public)
    assert registry.Record("88.123.99/PUMP-1", (value,)).signing_key() == public
    assert keys.algorithm_of(again) == keys.algorithm_of(public) == "sm2"
    assert pickle.loads(pickle.dumps(public)) == public  # a worker process can be handed a public key


@needs_openssl
def test_openssl_reads_our_keys_and_we_read_its(tmp_path: Path) -> None:
    """The openssl command reads our files as SM2 (curve OID 1.2.156.10197.1.301); we read its PKCS#8,
    its traditional "SM2 PRIVATE KEY" form and verify what `openssl pkeyutl` signs."""
    key = keys.generate_sm2()
    (tmp_path / "ours.key").write_bytes(keys.private_pem(key))
    (tmp_path / "ours.pub").write_bytes(keys.public_pem(key.public_key()))
    text = subprocess.run([OPENSSL, "pkey", "-in", tmp_path / "ours.key", "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "ASN1 OID: SM2" in text
    der = subprocess.run([OPENSSL, "pkey", "-pubin", "-in", tmp_path / "ours.pub", "-outform", "DER"],
                         capture_output=True, check=True).stdout  # fmt: skip
    assert der == keys.public_der(key.public_key())
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "SM2", "-out", tmp_path / "theirs.key"], check=True)
    subprocess.run([OPENSSL, "ec", "-in", tmp_path / "theirs.key", "-out", tmp_path / "trad.key"],
                   check=True, capture_output=True)  # fmt: skip
    theirs = keys.load_private_pem((tmp_path / "theirs.key").read_bytes())
    trad = keys.load_private_pem((tmp_path / "trad.key").read_bytes())
    assert isinstance(theirs, SM2PrivateKey) and isinstance(trad, SM2PrivateKey)
    assert theirs.public_key() == trad.public_key()
    (tmp_path / "msg").write_bytes(b"signed by the openssl command")
    subprocess.run([OPENSSL, "pkeyutl", "-sign", "-inkey", tmp_path / "theirs.key", "-rawin",
                    "-in", tmp_path / "msg", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678",
                    "-out", tmp_path / "sig"], check=True)  # fmt: skip
    r, s = decode_dss_signature((tmp_path / "sig").read_bytes())
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert theirs.public_key().verify(raw, b"signed by the openssl command")


@needs_openssl
def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    """An encrypted PKCS#8 SM2 key is a clear error, never OpenSSL's passphrase prompt on the terminal."""
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "SM2", "-aes-256-cbc", "-pass", "pass:secret",
                    "-out", tmp_path / "enc.key"], check=True)  # fmt: skip
    data = (tmp_path / "enc.key").read_bytes()
    with pytest.raises(KeyFormatError):
        keys.load_private_pem(data)
    with pytest.raises(KeyFormatError):
        SM2PrivateKey.from_pem(data)


def test_tongsuo_reads_our_keys_and_signatures_cross_both_ways() -> None:
    """Tongsuo (the 国密 OpenSSL fork, through tongsuopy) reads our PKCS#8 and SPKI files as the same
    SM2 key; its signatures verify with ours and ours with it (default identifier)."""
    key = keys.generate_sm2()
    theirs = ts_serialization.load_pem_private_key(keys.private_pem(key), password=None)
    their_public = ts_serialization.load_pem_public_key(keys.public_pem(key.public_key()))
    numbers = their_public.public_numbers()
    assert b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big") == key.public_key().point
    assert theirs.private_numbers().private_value == key.private_scalar()
    message = b"a reading, 20.5 Cel"
    r, s = decode_dss_signature(theirs.sign(message, ts_ec.ECDSA(ts_hashes.SM3())))
    assert key.public_key().verify(r.to_bytes(32, "big") + s.to_bytes(32, "big"), message)
    ours = key.sign(message)
    der = encode_dss_signature(int.from_bytes(ours[:32], "big"), int.from_bytes(ours[32:], "big"))
    their_public.verify(der, message, ts_ec.ECDSA(ts_hashes.SM3()))  # raises if it does not verify


def test_keys_of_other_curves_and_bad_points_are_refused() -> None:
    """A P-256 key is not an SM2 key; a point off the curve, a compressed point, a scalar out of range:
    each a KeyFormatError naming the problem."""
    p256_der = keys.public_der(keys.generate_p256().public_key())
    with pytest.raises(KeyFormatError, match="SM2 curve"):
        SM2PublicKey.from_der(p256_der)
    off_curve = bytearray(STANDARD_POINT)
    off_curve[-1] ^= 1
    for point in (bytes(off_curve), b"\x02" + STANDARD_POINT[1:33], STANDARD_POINT[:-1]):
        with pytest.raises(KeyFormatError):
            SM2PublicKey.from_point(point)
    # One key, one encoding (D-003): trailing bytes or a compressed point are refused, though OpenSSL
    # alone would take both.
    der = SM2PublicKey.from_point(STANDARD_POINT).public_der()
    compressed = (
        bytes.fromhex("3039301306072a8648ce3d020106082a811ccf5501822d032200")
        + bytes([2 + (STANDARD_POINT[-1] & 1)])
        + STANDARD_POINT[1:33]
    )
    for encoding in (der + b"\x00", compressed):
        with pytest.raises(KeyFormatError):
            SM2PublicKey.from_der(encoding)
        with pytest.raises(KeyFormatError):
            keys.load_public_der(encoding)
    for d in (0, ORDER - 1, ORDER, 1 << 256):
        with pytest.raises(KeyFormatError):
            SM2PrivateKey.from_scalar(d)


PARSERS = [
    SM2PublicKey.from_der,
    SM2PublicKey.from_pem,
    SM2PrivateKey.from_der,
    SM2PrivateKey.from_pem,
    keys.load_public_der,
    keys.load_public_pem,
    keys.load_private_pem,
]


@settings(max_examples=300)
@given(data=st.binary(max_size=200), parser=st.sampled_from(PARSERS))
def test_garbage_never_crashes_a_key_parser(data: bytes, parser: object) -> None:
    """Arbitrary bytes give a key or a KeyFormatError, nothing else."""
    with contextlib.suppress(KeyFormatError):
        parser(data)  # type: ignore[operator]


_SM2_DER = SM2PrivateKey.generate()
_MUTABLE = {
    "spki": (_SM2_DER.public_key().public_der(), SM2PublicKey.from_der),
    "pkcs8_pem": (_SM2_DER.private_pem(), SM2PrivateKey.from_pem),
    "spki_pem": (_SM2_DER.public_key().public_pem(), keys.load_public_pem),
}


@settings(max_examples=300)
@given(
    which=st.sampled_from(sorted(_MUTABLE)),
    position=st.integers(min_value=0, max_value=300),
    value=st.integers(min_value=0, max_value=255),
    cut=st.booleans(),
)
def test_mutated_sm2_key_files_never_crash(which: str, position: int, value: int, cut: bool) -> None:
    """A valid SM2 file with one byte changed, or cut short there, parses or is a KeyFormatError."""
    data, parser = _MUTABLE[which]
    position %= len(data)
    mutated = data[:position] if cut else data[:position] + bytes([value]) + data[position + 1 :]
    with contextlib.suppress(KeyFormatError):
        parser(mutated)  # type: ignore[operator]


@settings(max_examples=200)
@given(signature=st.binary(max_size=80), message=st.binary(max_size=40))
def test_arbitrary_signatures_are_false_not_errors(signature: bytes, message: bytes) -> None:
    """verify() answers False for any bytes that are not this key's signature."""
    assert SM2PublicKey.from_point(STANDARD_POINT).verify(signature, message) is False
