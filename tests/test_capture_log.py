"""Signed EPCIS captures (leaf 0x05), signer authority and the completeness index chain (D-069, D-070)."""

from __future__ import annotations

import contextlib
import hashlib
import re

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import cbor
from chain_lite.cose import HDR_CONTENT_TYPE, CoseSigner
from chain_lite.epcis_capture import (
    ASSERTED,
    CAPTURE_CONTENT_TYPE,
    CAPTURE_KEY_TYPE,
    INDEX_LABEL,
    LEAF_EPCIS_EVENT,
    OWNER,
    Capture,
    IncompleteIndex,
    IndexEntry,
    NotACaptureKey,
    attribution,
    capture_key,
    chain_start,
    check_index,
    index_key_name,
    index_of,
    parse_capture,
    sign_capture,
    signer_authority,
)
from chain_lite.errors import FormatError
from chain_lite.keys import PrivateKey, generate_p256, public_der
from chain_lite.log_leaf import parse_leaf
from chain_lite.registry import Record, Value, pubkey_value
from tests.cose_oracle import pycose_decode, pycose_key

HASH_ID = "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0"
EVENT = b'{"type":"ObjectEvent","eventTime":"2026-11-30T08:00:00Z"}'


def _signed(kid: str = "300:0.na/88.123.99") -> tuple[bytes, PrivateKey]:
    key = generate_p256()
    return sign_capture(Capture("root.test", HASH_ID, EVENT), CoseSigner(kid, key)).raw, key


def test_capture_round_trips_through_a_log_leaf() -> None:
    """A signed capture is a 0x05 leaf whose parse gives back origin, hash ID and the exact event bytes."""
    raw, _ = _signed()
    leaf = bytes([LEAF_EPCIS_EVENT]) + raw
    parsed = parse_leaf(leaf)
    assert parsed.raw == raw  # type: ignore[union-attr]
    capture = parse_capture(raw).capture
    assert (capture.origin, capture.hash_id, capture.event_json) == ("root.test", HASH_ID, EVENT)


def test_capture_signature_verifies_with_an_independent_cose() -> None:
    """pycose (the oracle) accepts the signed capture under the signer's public key."""
    raw, key = _signed()
    msg = pycose_decode(raw)
    msg.key = pycose_key(key, public_only=True)
    assert msg.verify_signature()
    assert cbor2.loads(msg.payload)[3] == EVENT


def test_capture_payload_must_be_deterministic_and_labelled() -> None:
    """Non-deterministic CBOR, a wrong label or missing fields are refused, each with its reason."""
    ok = Capture("root.test", HASH_ID, EVENT).encode()
    assert Capture.decode(ok).event_json == EVENT
    loose = cbor2.dumps(["edgeroot/epcis-capture/v1", "root.test", HASH_ID, EVENT], canonical=False)
    indefinite = b"\x9f" + loose[1:] + b"\xff"
    with pytest.raises(FormatError, match="deterministic"):
        Capture.decode(indefinite)
    for bad, reason in (
        (["edgeroot/epcis-capture/v2", "root.test", HASH_ID, EVENT], "labelled"),
        (["edgeroot/epcis-capture/v1", "", HASH_ID, EVENT], "origin"),
        (["edgeroot/epcis-capture/v1", "root.test", "sha256:ab", EVENT], "hash ID"),
        (["edgeroot/epcis-capture/v1", "root.test", HASH_ID, ""], "JSON bytes"),
        (["edgeroot/epcis-capture/v1", "root.test", HASH_ID], "labelled"),
    ):
        with pytest.raises(FormatError, match=reason):
            Capture.decode(cbor.encode(bad))


def test_capture_with_another_content_type_is_refused() -> None:
    """A registry write or a block is never read as an EPCIS capture."""
    signer = CoseSigner("300:0.na/88.123.99", generate_p256())
    raw = signer.sign(Capture("root.test", HASH_ID, EVENT).encode(), {HDR_CONTENT_TYPE: "application/json"})
    with pytest.raises(FormatError, match=re.escape(CAPTURE_CONTENT_TYPE)):
        parse_capture(raw)


def test_truncated_or_flipped_captures_never_crash() -> None:
    """Every truncation is a FormatError; a flipped byte is a FormatError or a parse (the signature
    check, not the parser, catches the rest)."""
    raw, _ = _signed()
    for cut in range(len(raw)):
        with pytest.raises(FormatError):
            parse_capture(raw[:cut])
    for i in range(len(raw)):
        flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        with contextlib.suppress(FormatError):
            parse_capture(flipped)


def test_signer_authority_of_admins_and_capture_keys() -> None:
    """An admin speaks for its prefix; a capture key for its own prefix; anything else is refused."""
    admin = signer_authority("300:0.na/88.123.99")
    assert (admin.kind, admin.prefix, admin.identifier, admin.index) == (
        "admin",
        "88.123.99",
        "0.na/88.123.99",
        300,
    )
    key = signer_authority("88.123.99/LINE-3")
    assert (key.kind, key.prefix, key.identifier, key.index) == (
        "capture-key",
        "88.123.99",
        "88.123.99/line-3",
        None,
    )
    for bad in ("0.na/88.123.99", "no-slash", "x:0.na/88", "88.123.99/\u200bLINE"):
        with pytest.raises(FormatError):
            signer_authority(bad)


def test_capture_key_needs_the_capture_value_and_admins_their_index() -> None:
    """The one rule node and verifier share: which key a proven record gives a signer."""
    station = generate_p256()
    pub = station.public_key()
    record = Record(
        "88.123.99/line-3",
        (Value(1, CAPTURE_KEY_TYPE, "string", "line 3"), pubkey_value(300, pub)),
    )
    got = capture_key(signer_authority("88.123.99/LINE-3"), "88.123.99/LINE-3", record)
    assert public_der(got) == public_der(pub)
    device = Record("88.123.99/line-3", (Value(1, "DEVICE", "string", "x"), pubkey_value(300, pub)))
    with pytest.raises(NotACaptureKey, match=CAPTURE_KEY_TYPE):
        capture_key(signer_authority("88.123.99/LINE-3"), "88.123.99/LINE-3", device)
    with pytest.raises(NotACaptureKey, match="not registered"):
        capture_key(signer_authority("88.123.99/LINE-3"), "88.123.99/LINE-3", None)
    prefix = Record("0.na/88.123.99", (pubkey_value(300, pub),))
    admin = signer_authority("301:0.na/88.123.99")
    with pytest.raises(NotACaptureKey, match="no such key"):
        capture_key(admin, "301:0.na/88.123.99", prefix)
    with pytest.raises(NotACaptureKey, match="record shown"):
        capture_key(signer_authority("88.123.99/LINE-4"), "88.123.99/LINE-4", record)


def test_attribution_owner_only_under_the_signers_prefix() -> None:
    """Own prefix and prefixes below it are the owner's word; others and foreign ids are asserted."""
    authority = signer_authority("300:0.na/88.123.99")
    assert attribution("88.123.99", authority) == OWNER
    assert attribution("88.123.99.7", authority) == OWNER
    assert attribution("88.123.9", authority) == ASSERTED
    assert attribution("88.123.990", authority) == ASSERTED
    assert attribution("88.124", authority) == ASSERTED
    assert attribution(None, authority) == ASSERTED


# --- the index chain --------------------------------------------------------------------------------------


def _naive_head(identifier: str, indices: list[int]) -> bytes:
    """From formats.md "EPCIS events on the log": head_0 = H(0x20 || id), head_k = H(0x21 || head || i)."""
    head = hashlib.sha256(b"\x20" + identifier.encode()).digest()
    for i in indices:
        head = hashlib.sha256(b"\x21" + head + i.to_bytes(8, "big")).digest()
    return head


@given(st.lists(st.integers(0, 2**40), unique=True, max_size=40).map(sorted))
def test_index_chain_matches_the_naive_reference(indices: list[int]) -> None:
    """The incremental chain equals the spec's formula for any increasing list."""
    entry = index_of("urn:x", indices)
    assert entry.head == _naive_head("urn:x", indices)
    assert entry.count == len(indices)
    assert IndexEntry.decode(entry.encode()) == entry if indices else True


def test_index_entry_bytes_are_the_documented_cbor() -> None:
    """The entry is deterministic CBOR [label, id, count, head] and the map key is SHA-256 of the name."""
    entry = index_of("88.123.99/batch-7", [3, 9])
    assert cbor2.loads(entry.encode()) == [INDEX_LABEL, "88.123.99/batch-7", 2, entry.head]
    assert index_key_name("88.123.99/batch-7") == "epcis-index:88.123.99/batch-7"
    assert chain_start("a") != chain_start("b")


def test_check_index_refuses_every_altered_list() -> None:
    """A hidden, added, reordered or moved event, a wrong count or another id's entry is refused."""
    indices = [2, 5, 11, 40]
    entry = index_of("urn:x", indices).encode()
    assert check_index("urn:x", entry, indices) is not None
    for bad in ([2, 5, 40], [2, 5, 11, 40, 41], [2, 11, 5, 40], [2, 5, 12, 40], [], [1, 2, 5, 11, 40]):
        with pytest.raises((IncompleteIndex,)):
            check_index("urn:x", entry, bad)
    with pytest.raises(IncompleteIndex, match="is for"):
        check_index("urn:y", entry, indices)
    with pytest.raises(IncompleteIndex, match="no entry"):
        check_index("urn:x", None, [2])
    assert check_index("urn:x", None, []) is None
