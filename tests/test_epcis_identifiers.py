"""Identifiers in EPCIS events (chain_lite.epcis_identifiers): edgeroot identifier URIs and foreign ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chain_lite.epcis import event_hash_id
from chain_lite.epcis_identifiers import (
    OBJECT_ROLES,
    ROLES,
    check_base,
    classify,
    event_identifiers,
    identifier_uri,
    parse_identifier_uri,
)
from chain_lite.errors import IdentifierError
from chain_lite.identifier import Identifier
from rootclient.epcis_document import read_capture_document

BASE = "https://id.edgeroot.example"
BASES = (BASE, "https://id.other-node.example")
VECTORS = Path(__file__).parent / "vectors" / "epcis"


@pytest.mark.parametrize(
    ("identifier", "uri"),
    [
        ("88.123.99/BATCH-20261130-07", "https://id.edgeroot.example/88.123.99/BATCH-20261130-07"),
        ("88.ABC.99/Pallet 9", "https://id.edgeroot.example/88.abc.99/Pallet%209"),
        ("88.123.99/批次-7", "https://id.edgeroot.example/88.123.99/%E6%89%B9%E6%AC%A1-7"),
        ("88.123.99/LINE-2/OVEN-3", "https://id.edgeroot.example/88.123.99/LINE-2/OVEN-3"),
        ("88.123.99/a?b#c%d", "https://id.edgeroot.example/88.123.99/a%3Fb%23c%25d"),
        ("88.123.99/x:y@z;v=1", "https://id.edgeroot.example/88.123.99/x:y@z;v=1"),
    ],
)
def test_identifier_uri_is_the_identifier_as_a_path(identifier: str, uri: str) -> None:
    """{base}/{prefix}/{suffix}: prefix lowercase, each part an RFC 3986 segment, UTF-8 upper-case hex."""
    assert identifier_uri(identifier, BASE) == uri
    assert parse_identifier_uri(uri, BASES) == Identifier.parse(identifier)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("https://id.edgeroot.example/88.123.99/Pallet 9", "must be percent-encoded"),
        ("https://id.edgeroot.example/88.123.99/%e6%89%b9", "one spelling"),
        ("https://id.edgeroot.example/88.ABC.99/X", "one spelling"),
        ("HTTPS://ID.EDGEROOT.EXAMPLE/88.123.99/X", "one spelling"),
        ("https://id.edgeroot.example/88.123.99/X?lot=1", "no query or fragment"),
        ("https://id.edgeroot.example/88.123.99/X#top", "no query or fragment"),
        ("https://id.edgeroot.example/88.123.99/X/", "empty"),
        ("https://id.edgeroot.example/88.123.99/%2E%2E/X", "'..'"),
        ("https://id.edgeroot.example/88.123.99/A%2FB", "one spelling"),
        ("https://id.edgeroot.example/88.123.99", "PREFIX/SUFFIX"),
        ("https://id.edgeroot.example/88.123.99/%E2%80%8BPUMP", "format"),
        ("https://id.edgeroot.example/88.123.99/%FF", "not UTF-8"),
        ("https://id.edgeroot.example/88.123.99/%4", "two hex digits"),
    ],
)
def test_other_spellings_under_a_base_are_refused_by_name(uri: str, words: str) -> None:
    """Under a known base only the one spelling is an identifier URI; the error names the rule."""
    with pytest.raises(IdentifierError, match=words):
        parse_identifier_uri(uri, BASES)


def test_uris_outside_every_base_are_not_edgeroot_identifiers() -> None:
    """Another origin, a look-alike host or http:// is simply not ours (None), not an error."""
    for uri in (
        "https://id.edgeroot.example.evil/88.123.99/X",
        "http://id.edgeroot.example/88.123.99/X",
        "https://example.com/88.123.99/X",
        "urn:epc:id:sgtin:0614141.107346.2017",
    ):
        assert parse_identifier_uri(uri, BASES) is None


@pytest.mark.parametrize(
    "base",
    [
        "http://id.example.com",
        "https://id.example.com/",
        "https://id.example.com/x",
        "id.example.com",
        "https://",
    ],
)
def test_a_base_is_an_https_origin(base: str) -> None:
    """The identifier base is https:// and a host, nothing else."""
    with pytest.raises(IdentifierError, match="https:// origin"):
        check_base(base)


_SUFFIX_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"), exclude_characters="\\"
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True), min_size=1, max_size=4),
    st.lists(st.text(_SUFFIX_CHARS, min_size=1, max_size=12), min_size=1, max_size=3),
)
def test_identifier_uri_round_trips_for_every_valid_identifier(prefix: list[str], parts: list[str]) -> None:
    """Every valid identifier has an identifier URI that parses back to it, and is an EPCIS URI."""
    text = ".".join(prefix) + "/" + "/".join(parts)
    try:
        ident = Identifier.parse(text)
    except IdentifierError:
        assume(False)
        raise
    uri = identifier_uri(text, BASE)
    assert parse_identifier_uri(uri, BASES) == ident
    assert uri.isascii() and " " not in uri
    assert classify(uri, "epc", BASES).key == str(ident.folded())


def test_identifier_uris_stand_in_epcis_events_and_hash_as_written() -> None:
    """An event naming identifier URIs passes the capture schema; its hash ID keeps them verbatim."""
    batch = identifier_uri("88.123.99/BATCH-20261130-07", BASE)
    document = {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T08:00:00Z",
        "epcisBody": {
            "eventList": [
                {
                    "type": "ObjectEvent",
                    "eventTime": "2026-11-30T09:15:00+08:00",
                    "eventTimeZoneOffset": "+08:00",
                    "epcList": [batch],
                    "action": "OBSERVE",
                }
            ]
        },
    }
    event = read_capture_document(document).events[0]
    from chain_lite.epcis import pre_hash_string

    assert f"epc={batch}" in pre_hash_string(event)
    assert event_hash_id(event).startswith("ni:///sha-256;")


def test_gs1_forms_of_one_key_share_a_key_and_others_are_foreign() -> None:
    """urn:epc:id and its Digital Link are one GS1 key; another https URI is an 'other' identifier."""
    urn = classify("urn:epc:id:sgtin:0614141.107346.2017", "epc", BASES)
    link = classify("https://example.com/01/10614141073464/21/2017?x=1", "epc", BASES)
    assert urn.kind == link.kind == "gs1"
    assert urn.key == link.key == "https://id.gs1.org/01/10614141073464/21/2017"
    other = classify("https://supplier.example/lots/77", "input", BASES)
    assert (other.kind, other.key) == ("other", "https://supplier.example/lots/77")
    ours = classify(identifier_uri("88.123.99/Batch-7", BASE), "output", BASES)
    assert (ours.kind, ours.key) == ("edgeroot", "88.123.99/batch-7")


def test_event_identifiers_lists_every_role_in_field_order() -> None:
    """Each object role, the quantity classes and the context roles come out with their role."""
    ours = [identifier_uri(f"88.123.99/{n}", BASE) for n in ("RAW-1", "MIX-1", "PAL-1", "OVEN-3")]
    event = {
        "type": "TransformationEvent",
        "inputEPCList": [ours[0], "urn:epc:id:sgtin:4012345.011122.25"],
        "inputQuantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.011111.4444", "quantity": 10}],
        "outputEPCList": [ours[1]],
        "outputQuantityList": [{"epcClass": "https://supplier.example/class/9", "quantity": 1}],
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
        "bizLocation": {"id": ours[2]},
        "sensorElementList": [
            {
                "sensorMetadata": {"deviceID": ours[3]},
                "sensorReport": [{"type": "Temperature", "deviceID": ours[3]}],
            }
        ],
    }
    found = [(i.role, i.kind) for i in event_identifiers(event, BASES)]
    assert found == [
        ("input", "edgeroot"),
        ("input", "gs1"),
        ("input_quantity", "gs1"),
        ("output", "edgeroot"),
        ("output_quantity", "other"),
        ("read_point", "gs1"),
        ("biz_location", "edgeroot"),
        ("sensor_device", "edgeroot"),
        ("sensor_device", "edgeroot"),
    ]
    assert set(ROLES) >= {role for role, _ in found}
    assert set(OBJECT_ROLES.values()) == {
        "epc",
        "quantity",
        "parent",
        "child",
        "child_quantity",
        "input",
        "input_quantity",
        "output",
        "output_quantity",
    }


@pytest.mark.parametrize("path", sorted((VECTORS / "gs1").glob("*.jsonld")), ids=lambda p: p.stem)
def test_every_identifier_of_the_standard_examples_is_read(path: Path) -> None:
    """In the standard's examples every object identifier is found, GS1 keys classified as gs1."""
    document = json.loads(path.read_text(encoding="utf-8-sig"))
    for event in document["epcisBody"]["eventList"]:
        found = event_identifiers(event, BASES)
        expected = sum(len(v) if isinstance(v, list) else 1 for k, v in event.items() if k in OBJECT_ROLES)
        assert len([i for i in found if i.role in OBJECT_ROLES.values()]) == expected
        assert all(i.kind != "edgeroot" for i in found)
