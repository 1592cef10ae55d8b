"""Reading envelopes: COSE_Sign1 over SenML-CBOR, cross-checked with pycose and python-ecdsa."""

from __future__ import annotations

import hashlib

import cbor2
import ecdsa
import pytest

from chain_lite import cbor, keys
from chain_lite.cose import ALG_EDDSA, ALG_ES256, CoseSigner, sig_structure
from chain_lite.envelope import (
    BN,
    BT,
    BU,
    BV,
    VB,
    VS,
    N,
    T,
    U,
    V,
    decode_envelope,
    encode_envelope,
    open_envelope,
    resolve,
)
from chain_lite.errors import BadSignature, FormatError, UnknownSigner

from .cose_oracle import pycose_decode, pycose_key

DEVICE = "88.123.99/PUMP-0042"
RECORDS = [{BN: "urn:dev:pump42:", N: "temp", U: "Cel", V: 21.5, T: 1_700_000_000}]


@pytest.fixture(scope="module")
def p256() -> keys.PrivateKey:
    return keys.generate_p256()


def test_envelope_round_trip_es256(p256: keys.PrivateKey) -> None:
    """Encode, decode and verify; the counter and kid are in the signed header."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 7)
    env = open_envelope(raw, {DEVICE: p256.public_key()}.get)
    assert (env.signer, env.subject, env.counter, env.bridge_attested) == (DEVICE, DEVICE, 7, False)
    assert env.sign1.alg == ALG_ES256
    assert env.records[0][V] == 21.5


def test_envelope_round_trip_eddsa() -> None:
    """EdDSA devices work the same way."""
    key = keys.generate_ed25519()
    raw = encode_envelope(CoseSigner(DEVICE, key), RECORDS, 1)
    env = open_envelope(raw, {DEVICE: key.public_key()}.get)
    assert env.sign1.alg == ALG_EDDSA


def test_pycose_accepts_what_we_accept(p256: keys.PrivateKey) -> None:
    """pycose, an independent COSE implementation, verifies our envelopes and returns the payload."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 3)
    msg = pycose_decode(raw)
    msg.key = pycose_key(p256, public_only=True)
    assert msg.verify_signature()
    assert msg.payload == decode_envelope(raw).sign1.payload


def test_ecdsa_package_verifies_our_signatures(p256: keys.PrivateKey) -> None:
    """Cross-check with python-ecdsa: our ES256 signature is a valid raw r||s over the Sig_structure."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 4)
    msg = decode_envelope(raw).sign1
    vk = ecdsa.VerifyingKey.from_pem(keys.public_pem(p256.public_key()).decode())
    assert vk.verify(msg.signature, sig_structure(msg.protected_bytes, msg.payload), hashfunc=hashlib.sha256)


def test_we_verify_signatures_made_by_the_ecdsa_package() -> None:
    """An envelope signed by python-ecdsa (built by hand from RFC 9052 §4.4) verifies, and only once."""
    sk = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p)
    protected = cbor2.dumps({1: -7, 3: 112, 4: DEVICE.encode(), -70001: 9})
    payload = cbor2.dumps(RECORDS)
    sig = sk.sign(sig_structure(protected, payload), hashfunc=hashlib.sha256)
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))
    public = keys.load_public_pem(sk.get_verifying_key().to_pem())
    assert open_envelope(raw, {DEVICE: public}.get).counter == 9
    bad = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, cbor2.dumps([{N: "x", V: 1}]), sig]))
    with pytest.raises(BadSignature):
        open_envelope(bad, {DEVICE: public}.get)


def test_wrong_key_unknown_signer_and_tampering_are_rejected(p256: keys.PrivateKey) -> None:
    """Another device's key, an unknown kid, and any flipped payload bit all fail."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 5)
    with pytest.raises(BadSignature):
        open_envelope(raw, {DEVICE: keys.generate_p256().public_key()}.get)
    with pytest.raises(UnknownSigner):
        open_envelope(raw, {}.get)
    with pytest.raises(BadSignature):
        open_envelope(raw, {DEVICE: keys.generate_ed25519().public_key()}.get)
    lookup = {DEVICE: p256.public_key()}.get
    for i in range(len(raw)):
        variant = bytearray(raw)
        variant[i] ^= 0x10
        with pytest.raises((FormatError, BadSignature, UnknownSigner)):
            open_envelope(bytes(variant), lookup)


def test_bridge_attested_reading_names_its_subject() -> None:
    """A bridge signs for a Modbus device: signer and subject differ and the flag says so."""
    bridge = keys.generate_p256()
    raw = encode_envelope(CoseSigner("88.123.99/bridge-1", bridge), RECORDS, 1, subject="88.123.99/meter-7")
    env = open_envelope(raw, {"88.123.99/bridge-1": bridge.public_key()}.get)
    assert env.bridge_attested and env.subject == "88.123.99/meter-7"


def _envelope(protected: dict[int, object], payload: object, unprotected: object = None) -> bytes:
    return cbor2.dumps(
        cbor2.CBORTag(18, [cbor2.dumps(protected), unprotected or {}, cbor2.dumps(payload), b"\x00" * 64])
    )


GOOD_HEADER: dict[int, object] = {1: -7, 3: 112, 4: DEVICE.encode(), -70001: 1}


@pytest.mark.parametrize(
    ("header", "payload", "unprotected", "why"),
    [
        ({**GOOD_HEADER, 1: -35}, RECORDS, None, "alg"),
        ({**GOOD_HEADER, 1: -7.0}, RECORDS, None, "alg"),
        ({**GOOD_HEADER, 3: 50}, RECORDS, None, "content type"),
        ({k: v for k, v in GOOD_HEADER.items() if k != -70001}, RECORDS, None, "counter"),
        ({**GOOD_HEADER, -70001: -1}, RECORDS, None, "counter"),
        ({**GOOD_HEADER, -70001: True}, RECORDS, None, "counter"),
        ({**GOOD_HEADER, 4: b"88.123.99/"}, RECORDS, None, "suffix"),
        ({**GOOD_HEADER, 4: b"88.123.99/PUMP\x00"}, RECORDS, None, "control"),
        ({**GOOD_HEADER, 4: "88.123.99/PUMP".encode("utf-16")}, RECORDS, None, "UTF-8"),
        ({**GOOD_HEADER, 4: b"88.ABC/PUMP"}, RECORDS, None, "canonical"),
        (GOOD_HEADER, [], None, "SenML pack"),
        (GOOD_HEADER, [{N: "x"}], None, "no value"),
        (GOOD_HEADER, [{N: "x", V: 1, VS: "a"}], None, "more than one value"),
        (GOOD_HEADER, [{N: 5, V: 1}], None, "wrong type"),
        (GOOD_HEADER, [{N: "x", V: True}], None, "wrong type"),
        (GOOD_HEADER, [{N: "x", VB: 1}], None, "wrong type"),
        (GOOD_HEADER, [{N: "x", V: 1, T: b"t"}], None, "wrong type"),
        (GOOD_HEADER, [{99: 1, V: 1}], None, "unknown SenML label"),
        (GOOD_HEADER, [{V: float("nan")}], None, "finite"),
        (GOOD_HEADER, RECORDS, {4: b"x"}, "unprotected"),
    ],
)
def test_malformed_envelopes_say_why(
    header: dict[int, object], payload: object, unprotected: object, why: str
) -> None:
    """Each structural defect is a FormatError naming the rule."""
    with pytest.raises(FormatError, match=why):
        decode_envelope(_envelope(header, payload, unprotected))


def test_truncated_and_oversized_envelopes_are_rejected(p256: keys.PrivateKey) -> None:
    """Every truncation fails cleanly; input over the size limit is refused unread."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 5)
    for cut in range(len(raw)):
        with pytest.raises(FormatError):
            decode_envelope(raw[:cut])
    with pytest.raises(FormatError, match="limit"):
        decode_envelope(b"\x00" * 9000)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _resigned(raw: bytes, r: int, s: int) -> bytes:
    """``raw`` with its signature replaced by ``r || s``, 32 bytes each."""
    return raw[:-64] + r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_the_high_s_twin_verifies_and_out_of_range_halves_are_bad_signatures(p256: keys.PrivateKey) -> None:
    """ECDSA's (r, n - s) is a second valid signature of the same reading (D-052: readings are told apart
    by signer and counter, not bytes); r or s of 0 or at least the group order n is a BadSignature."""
    raw = encode_envelope(CoseSigner(DEVICE, p256), RECORDS, 6)
    lookup = {DEVICE: p256.public_key()}.get
    r, s = int.from_bytes(raw[-64:-32], "big"), int.from_bytes(raw[-32:], "big")
    twin = open_envelope(_resigned(raw, r, P256_ORDER - s), lookup)
    assert twin.counter == 6 and twin.sign1.payload == decode_envelope(raw).sign1.payload
    top = (1 << 256) - 1
    for bad_r, bad_s in ((0, s), (r, 0), (P256_ORDER, s), (r, P256_ORDER), (top, s), (r, top), (r, s ^ 1)):
        with pytest.raises(BadSignature):
            open_envelope(_resigned(raw, bad_r, bad_s), lookup)


def test_a_validly_signed_payload_with_bytes_after_the_pack_is_refused(p256: keys.PrivateKey) -> None:
    """The payload is one SenML pack: a second item, or a stray byte, after it is malformed even though
    the device signed it (cbor2 alone would read the pack and ignore the rest)."""
    signer = CoseSigner(DEVICE, p256)
    header = {3: 112, -70001: 8}
    pack = cbor2.dumps(RECORDS)
    assert open_envelope(signer.sign(pack, dict(header)), {DEVICE: p256.public_key()}.get).counter == 8
    for tail in (b"\x00", pack):
        with pytest.raises(FormatError, match="after the CBOR item"):
            decode_envelope(signer.sign(pack + tail, dict(header)))


def test_a_senml_record_with_a_repeated_label_is_refused(p256: keys.PrivateKey) -> None:
    """{v: 1, v: 2}: cbor2 keeps the last value, another SenML reader may keep the first; neither is taken."""
    signer = CoseSigner(DEVICE, p256)
    header = {3: 112, -70001: 9}
    once = b"\x81" + cbor.head(5, 2) + cbor2.dumps(N) + cbor2.dumps("t") + cbor2.dumps(V) + cbor2.dumps(1)
    assert decode_envelope(signer.sign(once, dict(header))).records == ({N: "t", V: 1},)
    twice = b"\x81" + cbor.head(5, 3) + once[2:] + cbor2.dumps(V) + cbor2.dumps(2)
    with pytest.raises(FormatError, match="invalid CBOR"):
        decode_envelope(signer.sign(twice, dict(header)))


def test_senml_resolution_applies_base_fields() -> None:
    """RFC 8428 §4.6: base name, time, unit and value apply to following records."""
    pack = [{BN: "urn:x:", BT: 100, BU: "A", BV: 10, N: "i", V: 1}, {N: "j", T: 5, V: 2}]
    assert resolve(pack) == [
        {"name": "urn:x:i", "time": 100, "unit": "A", "value": 11},
        {"name": "urn:x:j", "time": 105, "unit": "A", "value": 12},
    ]


def test_a_remembered_record_shape_still_checks_each_float_and_each_label_type(p256: keys.PrivateKey) -> None:
    """Record shapes are judged once: a later record of a known shape still has its floats checked, and
    a float or bool label equal to a known int label (2.0 == 2, True == 1) is not taken for it."""
    signer = CoseSigner(DEVICE, p256)
    assert decode_envelope(encode_envelope(signer, [{N: "x", V: 1.5}, {N: "y", U: "A", V: 2.5}], 1))
    for pack, why in (
        ([{N: "x", V: float("inf")}], "finite"),
        ([{N: "x", 2.0: 1.5}], "unknown SenML label"),
        ([{N: "y", True: "A", V: 2.5}], "unknown SenML label"),
    ):
        with pytest.raises(FormatError, match=why):
            decode_envelope(signer.sign(cbor2.dumps(pack), {3: 112, -70001: 2}))
