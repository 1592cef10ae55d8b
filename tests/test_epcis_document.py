"""EPCIS 2.0 capture documents (rootclient.epcis_document): the standard's examples, GS1's schema as the
oracle, clear errors with JSON pointers, and bounded work on hostile input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rootclient.epcis_document import (
    MAX_DEPTH,
    EpcisDocumentError,
    read_capture_document,
)

VECTORS = Path(__file__).parent / "vectors" / "epcis"
GS1_EXAMPLES = sorted((VECTORS / "gs1").glob("*.jsonld"))
OUR_SCHEMA = json.loads(
    (Path(__file__).parent.parent / "rootclient" / "schemas" / "epcis-capture.schema.json").read_text()
)
GS1_SCHEMA = json.loads((VECTORS / "gs1-schema" / "EPCIS-JSON-Schema.json").read_text())
GS1 = jsonschema.Draft7Validator(GS1_SCHEMA)
OURS_REFERENCE = jsonschema.Draft7Validator(OUR_SCHEMA)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8-sig"))  # type: ignore[no-any-return]


def _document(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T08:00:00Z",
        "epcisBody": {"eventList": list(events)},
    }


def _event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": "2026-11-30T09:15:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "epcList": ["https://id.edgeroot.example/88.123.99/BATCH-20261130-07"],
        "action": "OBSERVE",
        "bizStep": "inspecting",
    }
    event.update(fields)
    return event


def test_our_schema_is_a_valid_draft_7_schema() -> None:
    """rootclient/schemas/epcis-capture.schema.json is itself valid JSON Schema (draft 7)."""
    jsonschema.Draft7Validator.check_schema(OUR_SCHEMA)


@pytest.mark.parametrize("path", GS1_EXAMPLES, ids=lambda p: p.stem)
def test_every_standard_example_is_accepted_with_its_events_in_order(path: Path) -> None:
    """Each of the standard's example documents passes, bytes or parsed, and keeps its events in order."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    document = _load(path)
    assert not list(GS1.iter_errors(document)), "GS1's own schema accepts its example"
    if path.stem == "AssociationEvent_AssociationEvent-h":
        # GS1's example repeats "eventID" in one object; Python's json keeps the last, others the first.
        with pytest.raises(EpcisDocumentError, match="'eventID' appears twice"):
            read_capture_document(raw)
        return
    from_bytes = read_capture_document(raw)
    from_object = read_capture_document(document)
    assert list(from_bytes.events) == list(from_object.events) == document["epcisBody"]["eventList"]
    assert from_bytes.context == document["@context"]
    assert len(from_bytes.hash_ids()) == len(document["epcisBody"]["eventList"])


@pytest.mark.parametrize(
    ("event", "pointer", "words"),
    [
        (_event(eventTime=5), "/epcisBody/eventList/0/eventTime", "must be string"),
        (_event(eventTime="30/11/2026 09:15"), "/epcisBody/eventList/0/eventTime", "must match pattern"),
        (_event(eventTime="2026-11-30T09:15:00"), "/epcisBody/eventList/0/eventTime", "must match pattern"),
        (_event(action="MOVE"), "/epcisBody/eventList/0/action", "must be one of"),
        (_event(epcList=["not a uri"]), "/epcisBody/eventList/0/epcList/0", "must match pattern"),
        (_event(epcList=["urn:x:1", "urn:x:1"]), "/epcisBody/eventList/0/epcList", "unique"),
        (_event(quantityList=[{"quantity": 3}]), "/epcisBody/eventList/0/quantityList/0", "epcClass"),
        (_event(readPoint={"name": "line 2"}), "/epcisBody/eventList/0/readPoint", "id"),
        (_event(eventTimeZoneOffset="+15:00"), "/epcisBody/eventList/0/eventTimeZoneOffset", "pattern"),
        (
            _event(sensorElementList=[{"sensorReport": []}]),
            "/epcisBody/eventList/0/sensorElementList/0/sensorReport",
            "must contain at least 1",
        ),
    ],
)
def test_violations_name_their_json_pointer(event: dict[str, Any], pointer: str, words: str) -> None:
    """The error names the JSON pointer of the first violation and what rule it broke."""
    with pytest.raises(EpcisDocumentError) as caught:
        read_capture_document(_document(event))
    assert caught.value.path == pointer
    assert words in str(caught.value)
    assert caught.value.status == 400
    assert GS1.iter_errors(_document(event)), "GS1's schema refuses it too"


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in _event().items() if k != "action"},
        {k: v for k, v in _event().items() if k != "eventTime"},
        _event(type="ThingEvent"),
        _event(color="red"),
        {
            "type": "AggregationEvent",
            "eventTime": "2026-11-30T09:15:00Z",
            "eventTimeZoneOffset": "+00:00",
            "action": "ADD",
        },
        {"type": "TransformationEvent", "eventTime": "2026-11-30T09:15:00Z", "eventTimeZoneOffset": "+00:00"},
        {
            "type": "AssociationEvent",
            "eventTime": "2026-11-30T09:15:00Z",
            "eventTimeZoneOffset": "+00:00",
            "action": "ADD",
            "childEPCs": ["urn:x:1"],
        },
    ],
    ids=[
        "no-action",
        "no-eventTime",
        "unknown-type",
        "unnamespaced-extension",
        "aggregation-without-children",
        "transformation-without-lists",
        "association-without-parent",
    ],
)
def test_events_missing_what_the_standard_requires_are_refused(event: dict[str, Any]) -> None:
    """Required fields per event type, known types only, extensions only under a namespace."""
    with pytest.raises(EpcisDocumentError) as caught:
        read_capture_document(_document(event))
    assert caught.value.path.startswith("/epcisBody/eventList/0")
    if event["type"] != "ThingEvent" and "color" not in event:
        # GS1 refuses the other two through "format": "uri", which jsonschema checks only with rfc3987.
        assert list(GS1.iter_errors(_document(event))), "GS1's schema refuses it too"


def test_namespaced_extensions_are_accepted() -> None:
    """An extension field under a declared prefix or a full URI is allowed (EPCIS 2.0 §9.1.3)."""
    event = _event(**{"edgeroot:line": "L2", "https://ns.example.com/oven": {"t": 180}})
    assert read_capture_document(_document(event)).events[0]["edgeroot:line"] == "L2"


# --- hostile input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 200_000, "nested deeper"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "nested deeper"),
        (b'{"type": "EPCISDocument", "type": "x"}', "appears twice"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"n": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"n": 1', "not JSON"),
        (b"\xff\xfe{}", "not"),
        (b"[1, 2, 3]", "a capture document is a JSON object"),
        (b'"EPCISDocument"', "a capture document is a JSON object"),
    ],
    ids=[
        "deep-arrays",
        "deep-objects",
        "duplicate-key",
        "nan",
        "infinity",
        "truncated",
        "not-utf8",
        "array",
        "string",
    ],
)
def test_hostile_bytes_get_a_clear_error(raw: bytes, words: str) -> None:
    """Deep nesting, duplicate keys, NaN, truncation, bad encoding and wrong types are named, not crashes."""
    with pytest.raises(EpcisDocumentError, match=words):
        read_capture_document(raw)


def test_deep_nesting_inside_an_event_names_its_path() -> None:
    """A parsed object nested past MAX_DEPTH is refused by pointer before the schema runs."""
    deep: Any = 1
    for _ in range(MAX_DEPTH + 5):
        deep = {"x": deep}
    with pytest.raises(EpcisDocumentError, match="nested deeper") as caught:
        read_capture_document(_document(_event(**{"edgeroot:deep": deep})))
    assert caught.value.path.startswith("/epcisBody/eventList/0/edgeroot:deep/x/x")


def test_size_and_event_count_are_bounded_before_parsing_and_validation() -> None:
    """A document over the byte budget, or with too many events, is refused by its size alone."""
    huge = b'{"epcisBody": {"eventList": [' + b"1," * 5_000_000 + b"1]}}"
    with pytest.raises(EpcisDocumentError, match="bytes, the limit is"):
        read_capture_document(huge)
    many = _document(*[_event()] * 11)
    with pytest.raises(EpcisDocumentError, match="11 events, the limit is 10") as caught:
        read_capture_document(many, max_events=10)
    assert caught.value.path == "/epcisBody/eventList"
    assert len(read_capture_document(many, max_events=11).events) == 11


def test_huge_flat_array_inside_the_budget_is_refused_quickly_by_type() -> None:
    """A million numbers where events belong: one pass, and the error names the first bad member."""
    doc = _document()
    doc["epcisBody"]["eventList"] = [1] * 1_000_000
    with pytest.raises(EpcisDocumentError) as caught:
        read_capture_document(doc, max_events=2_000_000)
    assert caught.value.path == "/epcisBody/eventList/0"


# --- our schema against GS1's, on mutants of the standard's examples --------------------------------

_MUTATIONS = st.sampled_from(
    ["delete", "to_number", "to_string", "to_list", "to_object", "empty", "unknown_key"]
)


def _mutate(document: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """One random change at one random place of the document."""
    mutant = copy.deepcopy(document)
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in node:
                places.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for i in range(len(node)):
                places.append((node, i))
                walk(node[i])

    walk(mutant)
    parent, key = data.draw(st.sampled_from(places))
    kind = data.draw(_MUTATIONS)
    if kind == "delete":
        del parent[key]
    elif kind == "to_number":
        parent[key] = data.draw(st.sampled_from([0, -1, 2.5, True]))
    elif kind == "to_string":
        parent[key] = data.draw(st.sampled_from(["", "x y", "urn:x:1", "2026-13-45T99:99:99Z", "OBSERVE"]))
    elif kind == "to_list":
        parent[key] = [parent[key]]
    elif kind == "to_object":
        parent[key] = {"id": parent[key]}
    elif kind == "empty":
        parent[key] = type(parent[key])() if isinstance(parent[key], (list, dict, str)) else None
    elif isinstance(parent[key], dict):
        parent[key][data.draw(st.sampled_from(["color", "Type", "event time"]))] = "x"
    return mutant


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GS1_EXAMPLES), st.data())
def test_we_accept_nothing_gs1s_schema_refuses(path: Path, data: st.DataObject) -> None:
    """On random mutants of the standard's examples: accepted by us => accepted by GS1's schema; and the
    compiled validator agrees with the reference jsonschema validator on our schema."""
    mutant = _mutate(_load(path), data)
    try:
        read_capture_document(mutant)
        ours = True
    except EpcisDocumentError:
        ours = False
    assert ours == OURS_REFERENCE.is_valid(mutant) or not isinstance(mutant.get("epcisBody"), dict)
    if ours:
        assert GS1.is_valid(mutant), [e.message for e in GS1.iter_errors(mutant)][:3]


def test_mutants_are_mostly_refused() -> None:
    """The mutation test above has teeth: most single changes of an example are refused by both schemas."""
    document = _load(VECTORS / "gs1" / "Example_9.6.1-ObjectEvent.jsonld")
    event = document["epcisBody"]["eventList"][0]
    refused = 0
    for key in list(event):
        for value in (5, "", [], {"id": 1}):
            mutant = copy.deepcopy(document)
            mutant["epcisBody"]["eventList"][0][key] = value
            try:
                read_capture_document(mutant)
            except EpcisDocumentError:
                refused += 1
                continue
            assert GS1.is_valid(mutant)
    assert refused >= len(event) * 3


def test_committed_schema_is_what_its_generator_writes() -> None:
    """rootclient/schemas/epcis-capture.schema.json == gen_capture_schema.py's output (its vocabulary
    enums come from chain_lite.cbv_vocabulary, so the hash and the schema know the same terms)."""
    from tests.vectors.epcis.gen_capture_schema import render

    path = Path(__file__).parent.parent / "rootclient" / "schemas" / "epcis-capture.schema.json"
    assert path.read_text(encoding="utf-8") == render()
