"""Registry records, signed write requests, authority rules and typed log leaves."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import cbor
from chain_lite.block import GENESIS_PREV, build_header, sign_block
from chain_lite.cose import CoseSigner
from chain_lite.errors import BadSignature, ChainError, FormatError, IdentifierError, UnknownSigner
from chain_lite.identifier import normalize
from chain_lite.keys import generate_ed25519, generate_p256
from chain_lite.log_leaf import (
    LEAF_KEY_TRANSITION,
    MapHead,
    block_leaf,
    parse_leaf,
    registry_leaf,
)
from chain_lite.registry import (
    Record,
    SignedWrite,
    Value,
    WriteRequest,
    admin_kid,
    build_write,
    canonical_identifier,
    may_write,
    open_write,
    parse_admin_kid,
    parse_write,
    pubkey_value,
    sign_write,
)

ADMIN = generate_p256()
SIGNER = CoseSigner(admin_kid("88.123"), ADMIN)


def _write(
    op: str = "create", ident: str = "88.123/PUMP-1", values: list[Value] | None = None
) -> SignedWrite:
    vals = values if values is not None else [Value(1, "URL", "string", "https://plant.example/pump1")]
    req = build_write(
        "root.example",
        op,
        ident,
        None if op == "delete" else vals,
        timestamp_ms=1_700_000_000_000,
        nonce=os.urandom(16),
    )
    return sign_write(req, SIGNER)


def test_signed_write_round_trips_and_verifies() -> None:
    """A signed write parses back to the same request and verifies with the admin key."""
    signed = _write()
    again = open_write(signed.raw, lambda kid: ADMIN.public_key() if kid == SIGNER.kid else None)
    assert again.request == signed.request
    assert again.admin == (300, "88.123")
    record = again.request.record()
    assert record is not None
    assert record.values[0].timestamp_ms == 1_700_000_000_000
    assert Record.decode(record.encode()) == record


def test_write_signed_by_another_key_is_rejected() -> None:
    """The signature must verify with the key registered under the kid."""
    signed = _write()
    with pytest.raises(BadSignature):
        open_write(signed.raw, lambda _kid: generate_p256().public_key())
    with pytest.raises(UnknownSigner):
        open_write(signed.raw, lambda _kid: None)


def test_ed25519_admin_keys_work_too() -> None:
    """Admin keys may be Ed25519 as well as P-256."""
    key = generate_ed25519()
    signed = sign_write(
        build_write("o", "delete", "88.123/X", None, timestamp_ms=1, nonce=os.urandom(16)),
        CoseSigner(admin_kid("88.123"), key),
    )
    open_write(signed.raw, lambda _kid: key.public_key())


def test_prefix_record_identifiers_are_lowercased() -> None:
    """0.NA/88.ABC is 0.na/88.abc; a suffix keeps its spelling when normalised, folds ASCII case as a key."""
    assert canonical_identifier("0.NA/88.ABC") == "0.na/88.abc"
    assert normalize("88.ABC/Pump") == "88.abc/Pump"
    assert canonical_identifier("88.ABC/Pump") == "88.abc/pump"
    with pytest.raises(IdentifierError):
        canonical_identifier("0.na/88..1")


@pytest.mark.parametrize(
    ("admin", "op", "identifier", "allowed"),
    [
        ("88.123", "create", "88.123/PUMP", True),
        ("88.123", "create", "88.123.99/PUMP", True),
        ("88.123", "create", "88.1234/PUMP", False),
        ("88.123", "create", "88.12/PUMP", False),
        ("88.123", "create", "88/PUMP", False),
        ("88.123", "create", "0.na/88.123.99", True),
        ("88.123", "delete", "0.na/88.123.99", True),
        ("88.123", "update", "0.na/88.123", True),
        ("88.123", "delete", "0.na/88.123", False),
        ("88.123", "create", "0.na/88.123", False),
        ("88.123", "create", "0.na/88", False),
        ("88.123", "create", "0.na/88.124", False),
        ("88.123.99", "update", "88.123/PUMP", False),
    ],
)
def test_admin_authority_is_its_prefix_and_below(admin: str, op: str, identifier: str, allowed: bool) -> None:
    """A prefix admin writes its own subtree and the prefix records below it, nothing outside."""
    assert may_write(admin, op, canonical_identifier(identifier)) is allowed


@pytest.mark.parametrize("kid", ["88.123", "x:0.na/88", "0300:0.na/88", "300:88/x", "300:0.na/", ":0.na/88"])
def test_malformed_admin_key_names_are_refused(kid: str) -> None:
    """Admin key names must be INDEX:0.na/PREFIX."""
    with pytest.raises(FormatError):
        parse_admin_kid(kid)


@pytest.mark.parametrize(
    "value",
    [
        {"index": 0, "type": "URL", "format": "string", "value": "x"},
        {"index": 1, "type": "", "format": "string", "value": "x"},
        {"index": 1, "type": "URL\n", "format": "string", "value": "x"},
        {"index": 1, "type": "URL", "format": "json", "value": "x"},
        {"index": 1, "type": "URL", "format": "base64", "value": "not base64!"},
        {"index": 1, "type": "URL", "format": "hex", "value": "ABCD"},
        {"index": 1, "type": "URL", "format": "hex", "value": "abc"},
        {"index": 1, "type": "URL", "format": "string", "value": "x" * 5000},
        {"index": 1, "type": "URL", "format": "string", "value": "x", "ttl": -1},
    ],
)
def test_malformed_values_are_refused(value: dict[str, object]) -> None:
    """Every malformed value is a FormatError naming the rule."""
    with pytest.raises(FormatError):
        Value(**value)  # type: ignore[arg-type]


def test_duplicate_indexes_and_empty_records_are_refused() -> None:
    """A record needs values, each index once."""
    with pytest.raises(FormatError):
        build_write("o", "create", "88.1/x", [], timestamp_ms=1, nonce=os.urandom(16))
    dup = [Value(1, "URL", "string", "a"), Value(1, "EMAIL", "string", "b")]
    with pytest.raises(FormatError):
        build_write("o", "create", "88.1/x", dup, timestamp_ms=1, nonce=os.urandom(16))


def test_delete_must_not_carry_values_and_writes_must() -> None:
    """The op and the presence of values agree."""
    with pytest.raises(FormatError):
        WriteRequest("o", "delete", "88.1/x", (Value(1, "URL", "string", "a"),), 1, bytes(16))
    with pytest.raises(FormatError):
        WriteRequest("o", "update", "88.1/x", None, 1, bytes(16))


def test_non_canonical_identifier_in_request_is_refused() -> None:
    """A request must name its identifier canonically, so one change has one byte string."""
    body = cbor.encode(
        [
            "edgeroot/registry-write/v1",
            "o",
            "create",
            "88.ABC/x",
            [[1, "URL", "string", "a", 1]],
            1,
            bytes(16),
        ]
    )
    with pytest.raises(FormatError, match="canonical"):
        WriteRequest.decode(body)


def test_a_record_decoded_under_its_identifier_must_carry_exactly_it() -> None:
    """Decoded under the identifier it was looked up by, a record carrying it decodes as without it; one
    carrying another (even the same one in another case, or a non-canonical spelling) is refused."""
    record = Record("88.123/pump-1", (Value(1, "URL", "string", "https://plant.example/1", 60, 1),))
    assert Record.decode(record.encode(), identifier="88.123/pump-1") == Record.decode(record.encode())
    for other in ("88.123/pump-2", "88.123/PUMP-1", "88.1/pump-1"):
        with pytest.raises(FormatError, match="found under"):
            Record.decode(record.encode(), identifier=other)
    upper = cbor.encode(["edgeroot/record/v1", "88.123/PUMP-1", [[1, "URL", "string", "a", 60, 1]]])
    with pytest.raises(FormatError, match="canonical"):
        Record.decode(upper)
    with pytest.raises(FormatError, match="found under"):
        Record.decode(upper, identifier="88.123/pump-1")


def test_values_are_sorted_by_index_and_hash_is_order_independent() -> None:
    """Values given in any order make the same record and value hash."""
    a, b = Value(2, "EMAIL", "string", "a@b"), pubkey_value(1, ADMIN.public_key())
    r1 = build_write("o", "create", "88.1/x", [a, b], timestamp_ms=5, nonce=bytes(16)).record()
    r2 = build_write("o", "create", "88.1/x", [b, a], timestamp_ms=5, nonce=bytes(16)).record()
    assert r1 is not None and r2 is not None
    assert r1.value_hash == r2.value_hash
    assert r1.public_key(1) is not None


def test_log_leaves_round_trip_by_type() -> None:
    """Block, registry and map-head leaves parse back to what made them."""
    signed = _write()
    assert parse_leaf(registry_leaf(signed.raw)) == signed
    gw = CoseSigner("88.123.99/GW-1", generate_p256())
    block = sign_block(build_header("88.123.99/GW-1", 0, GENESIS_PREV, [], 1000), gw)
    assert parse_leaf(block_leaf(block.raw)).raw == block.raw  # type: ignore[union-attr]
    head = MapHead(3, bytes(range(32)), 17)
    assert parse_leaf(head.leaf()) == head


def test_unknown_and_reserved_leaf_types_are_refused() -> None:
    """Type 0x04 is reserved; other unknown types, empty leaves and wrong bodies are refused."""
    for bad in (
        b"",
        bytes([LEAF_KEY_TRANSITION]) + b"x",
        b"\x09abc",
        b"\x03" + cbor.encode(["x", 1, b"", 1]),
    ):
        with pytest.raises(FormatError):
            parse_leaf(bad)


def test_write_with_wrong_content_type_is_refused() -> None:
    """A COSE message that is not a registry write (e.g. a block) does not parse as one."""
    gw = CoseSigner("88.123.99/GW-1", generate_p256())
    block = sign_block(build_header("88.123.99/GW-1", 0, GENESIS_PREV, [], 1000), gw)
    with pytest.raises(FormatError):
        parse_write(block.raw)


@given(st.binary(max_size=600))
def test_leaf_parser_raises_only_chain_errors(data: bytes) -> None:
    """Random bytes of any leaf type never crash the parser."""
    for kind in (1, 2, 3):
        with contextlib.suppress(ChainError):
            parse_leaf(bytes([kind]) + data)


@given(st.integers(0, 2000), st.integers(0, 7))
def test_mutated_writes_never_crash_and_never_verify(position: int, bit: int) -> None:
    """A single flipped bit anywhere in a signed write is refused (parse or signature)."""
    raw = bytearray(_write().raw)
    raw[position % len(raw)] ^= 1 << bit
    with pytest.raises(ChainError):
        open_write(bytes(raw), lambda _kid: ADMIN.public_key())
