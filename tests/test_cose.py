"""chain_lite.cose against pycose, an independent COSE implementation, in both directions, and against the
messages python-cwt signed for tests/vectors (byte for byte where the signature allows)."""

from __future__ import annotations

import json
import re
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm, ContentType
from pycose.messages import Sign1Message

from chain_lite import cbor, keys
from chain_lite.cose import (
    ALG_EDDSA,
    ALG_ES256,
    CoseSigner,
    encode_protected,
    parse_sign1,
    sig_structure,
    verify_sign1,
)
from chain_lite.errors import BadSignature, FormatError, KeyFormatError

from .conftest import OWN_VECTORS
from .cose_oracle import pycose_decode, pycose_key

KID_TEXT = "88.123.99/PUMP-0042"
# Labels from docs/formats.md: content type, counter, subject; unordered on purpose.
EXTRA: dict[int, Any] = {-70002: "88.123.99/meter-7", 3: 112, -70001: 41}


KEYS = {"ES256": keys.generate_p256, "EdDSA": keys.generate_ed25519}


@pytest.mark.parametrize("alg", KEYS)
def test_pycose_verifies_what_we_sign(alg: str) -> None:
    """Our ES256 and EdDSA messages verify with pycose, which reads back our headers and payload."""
    private = KEYS[alg]()
    raw = CoseSigner(KID_TEXT, private).sign(b"payload bytes", dict(EXTRA))
    msg = pycose_decode(raw)
    msg.key = pycose_key(private, public_only=True)
    assert msg.verify_signature()
    assert msg.payload == b"payload bytes"
    assert msg.phdr[KID] == KID_TEXT.encode()
    # pycose names the labels it knows by attribute (3 is ContentType); private labels stay integers.
    assert (msg.phdr[ContentType], msg.phdr[-70001], msg.phdr[-70002]) == (112, 41, "88.123.99/meter-7")
    assert msg.uhdr == {}


@pytest.mark.parametrize("alg", KEYS)
def test_we_verify_what_pycose_signs_and_nothing_altered(alg: str) -> None:
    """A pycose-signed message verifies with ours; another key or a changed payload does not."""
    private = KEYS[alg]()
    phdr = {Algorithm: Es256 if alg == "ES256" else EdDSA, KID: KID_TEXT.encode(), **EXTRA}
    theirs = Sign1Message(phdr=phdr, payload=b"their payload", key=pycose_key(private))
    raw = theirs.encode()
    msg = parse_sign1(raw, "test", max_size=1024)
    assert (msg.alg, msg.kid, msg.payload) == (
        ALG_ES256 if alg == "ES256" else ALG_EDDSA,
        KID_TEXT,
        b"their payload",
    )
    verify_sign1(msg, private.public_key())
    with pytest.raises(BadSignature):
        verify_sign1(msg, KEYS[alg]().public_key())
    altered = parse_sign1(raw.replace(b"their payload", b"their pAyload"), "test", max_size=1024)
    with pytest.raises(BadSignature):
        verify_sign1(altered, private.public_key())


def test_eddsa_messages_equal_pycose_byte_for_byte() -> None:
    """Ed25519 is deterministic: given the header in deterministic order, pycose emits our exact bytes."""
    private = keys.generate_ed25519()
    ours = CoseSigner(KID_TEXT, private).sign(b"\x81\xa2\x00dtemp\x02\xf9\x4d\x00", dict(EXTRA))
    header = cbor2.loads(parse_sign1(ours, "test", max_size=1024).protected_bytes)
    theirs = Sign1Message(phdr=header, payload=b"\x81\xa2\x00dtemp\x02\xf9\x4d\x00", key=pycose_key(private))
    assert theirs.encode() == ours


def test_protected_header_is_deterministic_cbor() -> None:
    """Header keys are sorted by their encoded bytes (RFC 8949 §4.2.1) whatever order they are given in."""
    encoded = encode_protected({-70001: 5, 4: b"k", 1: -7, 3: 112, -70002: "s"})
    assert list(cbor2.loads(encoded)) == [1, 3, 4, -70001, -70002]
    assert encoded == encode_protected({1: -7, 3: 112, 4: b"k", -70001: 5, -70002: "s"})
    assert cbor.decode_deterministic(encoded, "header", max_size=100) == cbor2.loads(encoded)


@given(st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536]), st.integers(0, 300))
def test_sig_structure_equals_the_encoded_array(protected_len: int, payload_len: int) -> None:
    """The hand-framed Sig_structure is the deterministic encoding of RFC 9052 §4.4's array."""
    protected, payload = b"p" * protected_len, b"\x00" * payload_len
    assert sig_structure(protected, payload) == cbor.encode(["Signature1", protected, b"", payload])
    assert sig_structure(payload, protected) == cbor.encode(["Signature1", payload, b"", protected])


@pytest.mark.parametrize("argument", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_cbor_heads_are_shortest_form(argument: int) -> None:
    """cbor.head writes what cbor2 writes for an unsigned integer (major type 0), at every width."""
    assert cbor.head(0, argument) == cbor2.dumps(argument)


@pytest.mark.parametrize("name", ["envelopes.json", "blocks.json"])
def test_signer_frames_the_vectors_byte_for_byte(name: str) -> None:
    """The vectors (signed by python-cwt) have our protected-header bytes and our framing around them."""
    cases = json.loads((OWN_VECTORS / name).read_text())["cases"]
    messages = [
        bytes.fromhex(m) for c in cases if c["want"] == "ok" for m in (c.get("blocks") or [c["envelope"]])
    ]
    assert messages
    for raw in messages:
        msg = parse_sign1(raw, "vector", max_size=64 * 1024)
        assert encode_protected(msg.protected) == msg.protected_bytes
        framed = cbor2.dumps(cbor2.CBORTag(18, [msg.protected_bytes, {}, msg.payload, msg.signature]))
        assert framed == raw


def test_signer_refuses_keys_cose_does_not_use() -> None:
    """Only P-256 and Ed25519 keys sign COSE messages."""
    with pytest.raises(KeyFormatError):
        CoseSigner(KID_TEXT, ec.generate_private_key(ec.SECP384R1()))


def _signed_with_raw_header(protected_bytes: bytes) -> bytes:
    """A COSE_Sign1 whose protected header is exactly ``protected_bytes``, validly signed (Ed25519)."""
    key = keys.generate_ed25519()
    payload = b"reading"
    signature = key.sign(sig_structure(protected_bytes, payload))
    return cbor2.dumps(cbor2.CBORTag(18, [protected_bytes, {}, payload, signature]))


def _map(items: list[tuple[int, Any]]) -> bytes:
    """A CBOR map written item by item, so a label can repeat (no encoder would write that)."""
    return cbor.head(5, len(items)) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items)


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([(1, ALG_EDDSA), (4, b"88.1/victim"), (4, b"88.1/dev")], "invalid CBOR"),  # two kids
        ([(1, ALG_EDDSA), (4, b"88.1/dev"), (-70001, 1), (-70001, 5)], "invalid CBOR"),  # two counters
        ([(1, ALG_EDDSA), (2, [99]), (4, b"88.1/dev")], "labels edgeroot does not know: [2]"),  # crit
        ([(1, ALG_EDDSA), (4, b"88.1/dev"), (33, b"x")], "labels edgeroot does not know: [33]"),
    ],
)
def test_a_signed_message_with_an_ambiguous_or_unknown_header_is_refused(
    items: list[tuple[int, Any]], why: str
) -> None:
    """RFC 9052 §3: repeated labels are malformed even under a valid signature; crit and labels we do not
    know are refused rather than ignored (two verifiers must never read one message differently)."""
    raw = _signed_with_raw_header(_map(items))
    with pytest.raises(FormatError, match=re.escape(why)):
        parse_sign1(raw, "test", max_size=4096)


def test_the_well_formed_header_of_the_same_shape_is_accepted() -> None:
    """The same construction with one kid parses and verifies: the refusals above are about the header."""
    key = keys.generate_ed25519()
    protected = _map([(1, ALG_EDDSA), (4, b"88.1/dev")])
    payload = b"reading"
    signature = key.sign(sig_structure(protected, payload))
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    msg = parse_sign1(raw, "test", max_size=4096)
    verify_sign1(msg, key.public_key())
    assert msg.kid == "88.1/dev"
