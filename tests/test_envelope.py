"""Reading envelopes: COSE_Sign1 over SenML-CBOR, cross-checked with pycose and python-ecdsa."""

from __future__ import annotations

import hashlib

import cbor2
import ecdsa
import pytest

from chain_lite import keys
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


def test_senml_resolution_applies_base_fields() -> None:
    """RFC 8428 §4.6: base name, time, unit and value apply to following records."""
    pack = [{BN: "urn:x:", BT: 100, BU: "A", BV: 10, N: "i", V: 1}, {N: "j", T: 5, V: 2}]
    assert resolve(pack) == [
        {"name": "urn:x:i", "time": 100, "unit": "A", "value": 11},
        {"name": "urn:x:j", "time": 105, "unit": "A", "value": 12},
    ]
