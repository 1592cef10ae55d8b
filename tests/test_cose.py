"""chain_lite.cose against pycose, an independent COSE implementation, in both directions, and against the
messages python-cwt signed for tests/vectors (byte for byte where the signature allows)."""

from __future__ import annotations

import json
import re
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
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
    ecdsa_der,
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


# --- the hot path's DER and strict decoding, against cryptography and cbor2 ---------------------------------

# A 256-bit half of every magnitude length, so leading zero bytes and high bits at each width come up.
_HALF = st.integers(0, 256).flatmap(lambda bits: st.integers(0, (1 << bits) - 1))


@given(_HALF, _HALF)
def test_ecdsa_der_equals_cryptographys_encoding(r: int, s: int) -> None:
    """The DER built from raw r || s is byte for byte what cryptography's encode_dss_signature writes."""
    assert ecdsa_der(r.to_bytes(32, "big") + s.to_bytes(32, "big")) == encode_dss_signature(r, s)


@pytest.mark.parametrize(
    "raw",
    [
        bytes(64),  # r = s = 0: INTEGER 0 is one zero byte
        b"\xff" * 64,  # both with the high bit: a zero byte in front of each
        bytes(31) + b"\x01" + bytes(31) + b"\x80",  # one-byte values, the second needing the zero byte
        b"\x00\x80" + bytes(30) + b"\x7f" + b"\xff" * 31,  # 31 bytes with the high bit; 32 without
    ],
    ids=["zeros", "high-bits", "one-byte", "mixed"],
)
def test_ecdsa_der_edge_shapes(raw: bytes) -> None:
    """The shapes where a DER integer gains or loses a byte encode as cryptography encodes them."""
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    assert ecdsa_der(raw) == encode_dss_signature(r, s)


def test_other_well_formed_framings_still_parse_and_verify() -> None:
    """A longer tag head, an indefinite-length array and non-shortest byte-string heads are valid CBOR
    (RFC 8949 §3): the general decoder reads them and the signature verifies as before."""
    key = keys.generate_ed25519()
    protected = encode_protected({1: ALG_EDDSA, 4: b"88.1/dev"})
    payload = b"reading"
    signature = key.sign(sig_structure(protected, payload))
    raw = b"".join(
        (
            b"\xd8\x12\x9f",
            b"\x59" + len(protected).to_bytes(2, "big") + protected,
            b"\xbf\xff",
            b"\x58" + bytes((len(payload),)) + payload,
            b"\x58\x40" + signature,
            b"\xff",
        )
    )
    msg = parse_sign1(raw, "test", max_size=4096)
    verify_sign1(msg, key.public_key())
    assert (msg.protected_bytes, msg.payload, msg.signature) == (protected, payload, signature)


@pytest.mark.parametrize("extra", [b"\x00", b"\xa0", b"\xd2\x84", b"\xff" * 9])
def test_bytes_after_a_signed_message_are_refused(extra: bytes) -> None:
    """A valid message with anything appended is not the message: cbor2 alone would ignore the tail."""
    key = keys.generate_ed25519()
    raw = CoseSigner(KID_TEXT, key).sign(b"payload", dict(EXTRA))
    verify_sign1(parse_sign1(raw, "test", max_size=4096), key.public_key())
    with pytest.raises(FormatError, match="after the CBOR item"):
        parse_sign1(raw + extra, "test", max_size=4096)


def test_bytes_after_the_protected_header_map_are_refused() -> None:
    """A validly signed header bstr holding a map and one more item is refused, not read as the map."""
    header = _map([(1, ALG_EDDSA), (4, b"88.1/dev")])
    assert parse_sign1(_signed_with_raw_header(header), "test", max_size=4096).kid == "88.1/dev"
    with pytest.raises(FormatError, match="after the CBOR item"):
        parse_sign1(_signed_with_raw_header(header + b"\x00"), "test", max_size=4096)


@pytest.mark.parametrize(
    ("framing", "why"),
    [
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(17, [p, u, b, s])), "tag 18"),  # COSE_Mac0's tag
        (lambda p, u, b, s: cbor2.dumps([p, u, b, s]), "tag 18"),  # untagged
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, b, s, b""])), "array of 4"),  # extra item
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, b])), "array of 4"),
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, None, s])), "attached"),  # detached
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, b, s[:63]])), "63 bytes"),
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, u, b, s + b"\x00"])), "65 bytes"),
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [p, {4: b"x"}, b, s])), "unprotected"),
        (lambda p, u, b, s: cbor2.dumps(cbor2.CBORTag(18, [b"", u, b, s])), "non-empty"),
    ],
    ids=[
        "mac0-tag",
        "untagged",
        "five-items",
        "three-items",
        "detached",
        "short-sig",
        "long-sig",
        "unprotected",
        "empty-protected",
    ],
)
def test_each_framing_defect_is_refused_by_name(framing: Any, why: str) -> None:
    """Wrong tag, wrong item count, a detached payload, a signature of the wrong size, unsigned headers:
    each is a FormatError naming its rule, whichever path read the framing."""
    key = keys.generate_ed25519()
    protected = encode_protected({1: ALG_EDDSA, 4: b"88.1/dev"})
    signature = key.sign(sig_structure(protected, b"x"))
    with pytest.raises(FormatError, match=why):
        parse_sign1(framing(protected, {}, b"x", signature), "test", max_size=4096)


def test_cbor_decode_refuses_a_sequence_and_a_trailing_byte() -> None:
    """chain_lite.cbor.decode takes one item: a CBOR sequence (RFC 8742) or a stray byte is malformed."""
    assert cbor.decode(b"\x82\x01\x02", "test", max_size=10) == [1, 2]
    for data in (b"\x82\x01\x02\x03", b"\x01\x02", b"\xa0\xa0"):
        with pytest.raises(FormatError, match="after the CBOR item"):
            cbor.decode(data, "test", max_size=10)


_CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.integers(-30, 30), inner, max_size=4),
    max_leaves=10,
)


@given(st.lists(st.tuples(_CBOR_VALUES, st.binary(max_size=3)), min_size=1, max_size=4))
def test_one_item_decoder_agrees_with_cbor2_and_refuses_any_tail(items: list[tuple[Any, bytes]]) -> None:
    """Items decoded one after another by one ItemDecoder come out as cbor2.loads reads each alone; the
    first input with bytes after its item is refused (and ends the decoder's use)."""
    decoder = cbor.ItemDecoder("test")
    for value, tail in items:
        encoded = cbor2.dumps(value)
        if tail:
            with pytest.raises(FormatError, match=f"{len(tail)} bytes after the CBOR item"):
                decoder.decode(encoded + tail)
            return
        assert repr(decoder.decode(encoded)) == repr(cbor2.loads(encoded))  # repr: NaN != NaN


def test_one_item_decoder_carries_nothing_from_one_item_to_the_next() -> None:
    """A shared value (tag 28) in a header is not there for a reference (tag 29) in the payload: each
    nested item decodes as it would alone, or not at all."""
    header = b"\xa1\x01\xd8\x1c" + cbor2.dumps("shared")
    payload = b"\x81\xa1\x02\xd8\x1d\x00"
    decoder = cbor.ItemDecoder("test", unique_keys=True)
    assert decoder.decode(header) == {1: "shared"}
    with pytest.raises(FormatError, match="invalid CBOR"):
        decoder.decode(payload)


def test_a_truncated_item_is_refused_not_completed_by_the_next() -> None:
    """A header cut short is an error of its own, never completed with the payload's first bytes."""
    decoder = cbor.ItemDecoder("test")
    assert decoder.decode(b"\x82\x01\x02") == [1, 2]
    with pytest.raises(FormatError, match="invalid CBOR"):
        decoder.decode(b"\x82\x01")


def test_parse_sign1_refuses_a_decoder_that_keeps_repeated_labels() -> None:
    """The duplicate-label rule (RFC 9052 §3) cannot be lost by handing parse_sign1 a lenient decoder."""
    raw = CoseSigner(KID_TEXT, keys.generate_ed25519()).sign(b"payload")
    with pytest.raises(ValueError, match="unique_keys"):
        parse_sign1(raw, "test", max_size=4096, decoder=cbor.ItemDecoder("test"))
