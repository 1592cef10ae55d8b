"""The CBV 2.0 event hash ID (chain_lite.epcis) against GS1's reference implementation and the standard."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain_lite import cbv_vocabulary, epcis
from chain_lite.epcis import EpcisError, event_hash_id, pre_hash_string
from chain_lite.gs1_link import canonical_digital_link
from tests.epcis_oracle import reference_documents, reference_event

VECTORS = Path(__file__).parent / "vectors" / "epcis"
GS1_EXAMPLES = sorted((VECTORS / "gs1").glob("*.jsonld"))
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
NI = re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0")


def _events(document: dict[str, Any]) -> list[dict[str, Any]]:
    body = document["epcisBody"]
    return list(body["eventList"]) if "eventList" in body else [body["event"]]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8-sig"))  # type: ignore[no-any-return]


def test_standard_examples_are_present() -> None:
    """The standard's example documents are kept as vectors (tests/vectors/epcis/README.md)."""
    assert len(GS1_EXAMPLES) >= 40


@pytest.mark.parametrize("path", GS1_EXAMPLES, ids=lambda p: p.stem)
def test_hash_equals_reference_for_every_event_of_the_standard_examples(path: Path) -> None:
    """Our pre-hash string and hash ID equal the reference's for each event of each GS1 example."""
    document = _load(path)
    reference = reference_documents(document)
    events = _events(document)
    assert len(reference) == len(events)
    for event, (pre, hash_id) in zip(events, reference, strict=True):
        assert pre_hash_string(event, document.get("@context")) == pre
        assert event_hash_id(event, document.get("@context")) == hash_id
        assert NI.fullmatch(hash_id)


REFERENCE_EXAMPLES = sorted((VECTORS / "reference").glob("*.jsonld"))


@pytest.mark.parametrize("path", REFERENCE_EXAMPLES, ids=lambda p: p.stem)
def test_published_hashes_of_the_reference_implementation(path: Path) -> None:
    """The reference repository's example documents hash to the hash IDs it publishes beside them."""
    document = _load(path)
    expected = path.with_suffix(".hashes").read_text(encoding="utf-8").split()
    body = document["epcisBody"]
    events = body["queryResults"]["resultsBody"]["eventList"] if "queryResults" in body else _events(document)
    assert [event_hash_id(e, document["@context"]) for e in events] == expected


def test_hash_does_not_mutate_the_event() -> None:
    """Hashing reads the event; the caller's object is unchanged."""
    document = _load(VECTORS / "gs1" / "Example_9.6.4-TransformationEvent.jsonld")
    event = _events(document)[0]
    before = copy.deepcopy(event)
    event_hash_id(event, document["@context"])
    assert event == before


# --- the canonical forms, one rule each -----------------------------------------------------------


def _object_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": "2026-11-30T09:15:00.000+08:00",
        "eventTimeZoneOffset": "+08:00",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "action": "OBSERVE",
        "bizStep": "inspecting",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.00777.0"},
    }
    event.update(fields)
    return event


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("2026-11-30T09:15:00+08:00", "2026-11-30T01:15:00.000Z"),
        ("2026-11-30T01:15:00.000Z", "2026-11-30T01:15:00.000Z"),
        ("2026-11-30T01:15:00.1415Z", "2026-11-30T01:15:00.142Z"),
        ("2026-11-30T01:15:00.1424Z", "2026-11-30T01:15:00.142Z"),
        ("2026-12-31T23:59:59.9996Z", "2027-01-01T00:00:00.000Z"),
        ("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00.000Z"),
        ("2026-01-01T00:00:00-05:30", "2026-01-01T05:30:00.000Z"),
    ],
)
def test_timestamps_are_utc_at_millisecond_precision(written: str, canonical: str) -> None:
    """CBV 2.0 §8.9 rules 8-9: UTC with Z, three decimals, the third rounded up on a 4th digit of 5-9."""
    assert f"eventTime={canonical}" in pre_hash_string(_object_event(eventTime=written))


def test_timestamp_rounding_follows_the_standard_text_not_half_even() -> None:
    """.1425 rounds up to .143 (the 4th decimal is 5); the reference rounds microseconds half-to-even."""
    pre = pre_hash_string(_object_event(eventTime="2026-11-30T01:15:00.1425Z"))
    assert "eventTime=2026-11-30T01:15:00.143Z" in pre


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("1.0", "1"), ("0.3434", "0.3434"), ("+12.50", "12.5"), ("007", "7"), ("-0", "0"), ("abc", "abc")],
)
def test_numbers_lose_trailing_zeros(written: str, canonical: str) -> None:
    """Rule 6: numeric values without trailing zeros; other text unchanged."""
    assert epcis.canonical_value(written) == canonical


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("urn:epc:id:sgtin:0614141.107346.2017", "https://id.gs1.org/01/10614141073464/21/2017"),
        ("urn:epc:id:sscc:0614141.1234567890", "https://id.gs1.org/00/106141412345678908"),
        ("urn:epc:id:sgln:0614141.00777.0", "https://id.gs1.org/414/0614141007776"),
        ("urn:epc:id:sgln:0614141.00777.987", "https://id.gs1.org/414/0614141007776/254/987"),
        ("urn:epc:class:lgtin:4012345.012345.998877", "https://id.gs1.org/01/04012345123456/10/998877"),
        ("urn:epc:idpat:sgtin:4012345.098765.*", "https://id.gs1.org/01/04012345987652"),
        ("urn:epc:id:pgln:4000001.00012", "https://id.gs1.org/417/4000001000128"),
        (
            "https://example.com/gtin/9520123456788/ser/12345?17=290101",
            "https://id.gs1.org/01/09520123456788/21/12345",
        ),
        (
            "https://id.gs1.org/01/09520123456788/10/LOT1/21/12345",
            "https://id.gs1.org/01/09520123456788/21/12345",
        ),
        (
            "https://id.gs1.org/01/09520123456788/22/2A/21/12345",
            "https://id.gs1.org/01/09520123456788/21/12345",
        ),
        ("urn:epc:id:sgtin:0614141.107346.a:b(c)", "https://id.gs1.org/01/10614141073464/21/a%3Ab%28c%29"),
    ],
)
def test_gs1_identifiers_become_constrained_digital_links(written: str, canonical: str) -> None:
    """Rules 17-18: EPC URIs and Digital Links end as one constrained canonical Digital Link."""
    assert canonical_digital_link(written) == canonical
    assert reference_event(_object_event(epcList=[written]))[0].count(f"epc={canonical}") == 1


@pytest.mark.parametrize(
    "value",
    [
        "https://id.edgeroot.example/88.123.99/BATCH-1",
        "urn:epc:id:sgtin:0614141.107346",
        "88.123.99/X",
        "plain",
    ],
)
def test_other_identifiers_are_hashed_as_written(value: str) -> None:
    """A URI that is not a GS1 key in a form the standard names is left alone."""
    assert canonical_digital_link(value) is None
    assert f"epc={value}" in pre_hash_string(_object_event(epcList=[value]))


def test_bare_vocabulary_terms_and_cbv_urns_expand_to_web_uris() -> None:
    """Rules 14 and 16: 'shipping', the URN and the Web URI of a bizStep are one value."""
    forms = ["shipping", "urn:epcglobal:cbv:bizstep:shipping", "https://ref.gs1.org/cbv/BizStep-shipping"]
    assert len({event_hash_id(_object_event(bizStep=form)) for form in forms}) == 1


def test_bare_term_outside_its_field_is_not_expanded() -> None:
    """A CBV term in a field with no vocabulary (an extension) stays a plain string."""
    event = _object_event(**{"example:note": "shipping"})
    context = [*CONTEXT, {"example": "https://ns.example.com/epcis/"}]
    assert "{https://ns.example.com/epcis/}note=shipping" in pre_hash_string(event, context)


def test_vocabulary_module_matches_the_standard_context() -> None:
    """chain_lite/cbv_vocabulary.py is what gen_vocabulary.py makes of the EPCIS 2.0 context file."""
    import epcis_event_hash_generator

    from tests.vectors.epcis.gen_vocabulary import render

    context_file = (
        Path(epcis_event_hash_generator.__file__).parent
        / "e532647e8eb371379b8b0e8602d8981c8566bc60f7351f22c76a5bc865962008.jsonld"
    )
    module = Path(cbv_vocabulary.__file__).read_text(encoding="utf-8")
    assert module == render(json.loads(context_file.read_text(encoding="utf-8")))


def test_typed_member_key_order_does_not_matter() -> None:
    """A bizTransaction written value-first hashes as type-first (the reference follows the JSON order)."""
    first = _object_event(bizTransactionList=[{"type": "po", "bizTransaction": "http://t.example/po/1"}])
    second = _object_event(bizTransactionList=[{"bizTransaction": "http://t.example/po/1", "type": "po"}])
    assert event_hash_id(first) == event_hash_id(second) == reference_event(first)[1]


def test_fields_never_hashed() -> None:
    """eventID, recordTime, errorDeclaration and comments do not change the hash ID (CBV 2.0 §8.9)."""
    base = _object_event()
    decorated = _object_event(
        eventID="ni:///sha-256;00?ver=CBV2.0",
        recordTime="2026-11-30T10:00:00Z",
        errorDeclaration={"declarationTime": "2026-12-01T00:00:00Z", "reason": "incorrect_data"},
        comment="checked by line 3",
    )
    assert event_hash_id(decorated) == event_hash_id(base)


# --- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [{}, {"type": "Event"}, {"type": 7}, {"eventTime": "2026-11-30T00:00:00Z"}],
)
def test_not_an_event_is_refused_by_name(event: dict[str, Any]) -> None:
    """An object without one of the five event types is an EpcisError naming /type."""
    with pytest.raises(EpcisError, match="/type"):
        event_hash_id(event)


def test_hostile_nesting_is_a_clear_error() -> None:
    """Nesting beyond MAX_DEPTH is refused with its path, not a RecursionError."""
    deep: Any = "x"
    for _ in range(10_000):
        deep = {"a": deep}
    with pytest.raises(EpcisError, match="nested deeper"):
        event_hash_id(_object_event(**{"example:deep": deep}))


def test_non_json_values_are_refused() -> None:
    """NaN and non-JSON Python objects cannot be hashed (they have no JSON text)."""
    with pytest.raises(EpcisError):
        event_hash_id(_object_event(quantity=float("nan")))
    with pytest.raises(EpcisError):
        event_hash_id(_object_event(extra={1, 2}))


# --- properties -------------------------------------------------------------------------------------

_EPCS = st.sampled_from(
    [
        "urn:epc:id:sgtin:0614141.107346.2017",
        "urn:epc:id:sgtin:4012345.011111.987",
        "https://id.gs1.org/01/09520123456788/21/12345",
        "urn:epc:id:sscc:4012345.0000000333",
        "https://id.edgeroot.example/88.123.99/BATCH-20261130-07",
        "urn:epc:id:giai:4000001.12345",
        "urn:epc:id:grai:4012345.55555.987",
    ]
)
_TIMES = st.builds(
    lambda d, h, m, s, ms, off: (
        f"2026-{d // 28 + 1:02d}-{d % 28 + 1:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}{off}"
    ),
    st.integers(0, 335),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
    st.sampled_from(["Z", "+08:00", "-05:00", "+01:00"]),
)
_QUANTITY = st.fixed_dictionaries(
    {
        "epcClass": st.sampled_from(
            [
                "urn:epc:class:lgtin:4012345.012345.998877",
                "urn:epc:idpat:sgtin:4012345.098765.*",
                "88.1/CLASS",
            ]
        ),
        "quantity": st.one_of(
            st.integers(0, 10_000), st.floats(0, 1000, allow_nan=False).map(lambda f: round(f, 3))
        ),
    },
    optional={"uom": st.sampled_from(["KGM", "LTR", "CEL"])},
)
_SENSOR = st.fixed_dictionaries(
    {
        "sensorReport": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["Temperature", "gs1:Humidity", "AbsoluteHumidity"])},
                optional={
                    "booleanValue": st.booleans(),
                    "stringValue": st.sampled_from(["ok", "door open"]),
                    "sDev": st.just(0.25),
                    "time": _TIMES,
                    "component": st.sampled_from(["x", "y"]),
                    "exception": st.just("ALARM_CONDITION"),
                    "example:calibration": st.just("c-1"),
                    "value": st.floats(-50, 300, allow_nan=False).map(lambda f: round(f, 2)),
                    "uom": st.sampled_from(["CEL", "A93"]),
                    "deviceID": st.sampled_from(
                        ["urn:epc:id:giai:4000001.111", "https://id.edgeroot.example/88.1/OVEN-3"]
                    ),
                },
            ),
            min_size=1,
            max_size=3,
        )
    },
    optional={"sensorMetadata": st.fixed_dictionaries({"time": _TIMES})},
)
# The type first: the reference pairs a typed member's keys in their JSON order (D-066), we type-first.
_TYPED = st.builds(
    lambda t, b: {"type": t, "bizTransaction": b},
    st.sampled_from(["po", "desadv", "inv"]),
    st.sampled_from(["urn:epcglobal:cbv:bt:0614141073467:1152", "http://t.example/po/1"]),
)
_PARTY = st.sampled_from(["owning_party", "possessing_party", "location"])


def _events_strategy() -> st.SearchStrategy[dict[str, Any]]:
    common: dict[str, st.SearchStrategy[Any]] = {
        "bizStep": st.sampled_from(
            ["shipping", "receiving", "commissioning", "urn:epcglobal:cbv:bizstep:packing"]
        ),
        "disposition": st.sampled_from(["in_progress", "in_transit", "active"]),
        "readPoint": st.fixed_dictionaries(
            {
                "id": st.sampled_from(
                    ["urn:epc:id:sgln:0614141.00777.0", "https://id.edgeroot.example/88.1/LINE-2"]
                )
            }
        ),
        "bizLocation": st.fixed_dictionaries({"id": st.just("urn:epc:id:sgln:0614141.00888.0")}),
        "bizTransactionList": st.lists(
            _TYPED, min_size=1, max_size=3, unique_by=lambda d: d["bizTransaction"]
        ),
        "sourceList": st.lists(
            st.builds(lambda t: {"type": t, "source": "urn:epc:id:pgln:4000001.00012"}, _PARTY),
            min_size=1,
            max_size=2,
            unique_by=lambda d: d["type"],
        ),
        "destinationList": st.lists(
            st.builds(lambda t: {"type": t, "destination": "urn:epc:id:sgln:4012345.00001.0"}, _PARTY),
            min_size=1,
            max_size=2,
            unique_by=lambda d: d["type"],
        ),
        "sensorElementList": st.lists(_SENSOR, min_size=1, max_size=2),
        "example:line": st.sampled_from(["L1", "L2", "12.50"]),
        "persistentDisposition": st.fixed_dictionaries(
            {
                "set": st.lists(
                    st.sampled_from(["completeness_verified", "needs_replacement"]),
                    min_size=1,
                    max_size=2,
                    unique=True,
                )
            },
            optional={"unset": st.just(["completeness_inferred"])},
        ),
        "certificationInfo": st.sampled_from(
            ["https://cert.example/1", "urn:uuid:4a8c1b8e-0c1c-4a2e-9a4e-0b4f7e2f1d11"]
        ),
        "example:nested": st.recursive(
            st.one_of(
                st.integers(-5, 5),
                st.sampled_from(["lot-x", "2.50", " padded ", "urn:epc:id:sgtin:0614141.107346.2017"]),
                st.booleans(),
            ),
            lambda inner: st.one_of(
                st.lists(inner, min_size=1, max_size=3),
                st.dictionaries(
                    st.sampled_from(["example:a", "example:b", "example:c"]), inner, min_size=1, max_size=3
                ),
            ),
            max_leaves=6,
        ),
        "eventID": st.just("urn:uuid:9d1e3b4c-2f6a-4a55-8f0a-3c2b1a0f9e8d"),
        "recordTime": _TIMES,
        "errorDeclaration": st.fixed_dictionaries(
            {"declarationTime": _TIMES, "reason": st.just("incorrect_data")}
        ),
    }
    epcs = st.lists(_EPCS, min_size=1, max_size=4, unique=True)
    quantities = st.lists(_QUANTITY, min_size=1, max_size=3)
    object_event = st.fixed_dictionaries(
        {
            "type": st.just("ObjectEvent"),
            "eventTime": _TIMES,
            "eventTimeZoneOffset": st.just("+08:00"),
            "action": st.sampled_from(["ADD", "OBSERVE", "DELETE"]),
        },
        optional={
            "epcList": epcs,
            "quantityList": quantities,
            "ilmd": st.fixed_dictionaries({"example:bestBefore": st.just("2027-01-01")}),
            **common,
        },
    )
    aggregation = st.fixed_dictionaries(
        {
            "type": st.just("AggregationEvent"),
            "eventTime": _TIMES,
            "eventTimeZoneOffset": st.just("-05:00"),
            "action": st.sampled_from(["ADD", "DELETE"]),
            "parentID": st.sampled_from(
                ["urn:epc:id:sscc:4012345.0000000333", "https://id.edgeroot.example/88.1/PALLET-9"]
            ),
        },
        optional={"childEPCs": epcs, "childQuantityList": quantities, **common},
    )
    transformation = st.fixed_dictionaries(
        {
            "type": st.just("TransformationEvent"),
            "eventTime": _TIMES,
            "eventTimeZoneOffset": st.just("+00:00"),
        },
        optional={
            "inputEPCList": epcs,
            "outputEPCList": epcs,
            "inputQuantityList": quantities,
            "outputQuantityList": quantities,
            "transformationID": st.just("urn:epc:id:gdti:0614141.12345.400"),
            **common,
        },
    )
    transaction = st.fixed_dictionaries(
        {
            "type": st.just("TransactionEvent"),
            "eventTime": _TIMES,
            "eventTimeZoneOffset": st.just("+01:00"),
            "action": st.sampled_from(["ADD", "OBSERVE", "DELETE"]),
            "bizTransactionList": st.lists(
                _TYPED, min_size=1, max_size=2, unique_by=lambda d: d["bizTransaction"]
            ),
        },
        optional={
            "epcList": epcs,
            "quantityList": quantities,
            "parentID": st.just("urn:epc:id:sscc:4012345.0000000333"),
        },
    )
    association = st.fixed_dictionaries(
        {
            "type": st.just("AssociationEvent"),
            "eventTime": _TIMES,
            "eventTimeZoneOffset": st.just("+01:00"),
            "action": st.sampled_from(["ADD", "DELETE"]),
            "parentID": st.just("urn:epc:id:grai:4012345.55555.987"),
        },
        optional={"childEPCs": epcs, "childQuantityList": quantities, "readPoint": common["readPoint"]},
    )
    return st.one_of(object_event, aggregation, transformation, transaction, association)


EVENTS = _events_strategy()
EXAMPLE_CONTEXT = [*CONTEXT, {"example": "https://ns.example.com/epcis/"}]


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON with every object's keys in another order and every list's members reordered."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        members = [_shuffled(v, rng) for v in value]
        rng.shuffle(members)
        return members
    return value


def _padded(value: Any) -> Any:
    """The same JSON with whitespace around every string value (rule 5 trims it)."""
    if isinstance(value, dict):
        return {
            k: (v if k == "type" and isinstance(v, str) and v.endswith("Event") else _padded(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_padded(v) for v in value]
    if isinstance(value, str):
        return f"  {value}\t"
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_random_events_hash_as_the_reference_hashes_them(event: dict[str, Any]) -> None:
    """For generated events of three types with every list kind, our pre-hash equals the reference's."""
    pre, hash_id = reference_event(event, EXAMPLE_CONTEXT)
    assert pre_hash_string(event, EXAMPLE_CONTEXT) == pre
    assert event_hash_id(event, EXAMPLE_CONTEXT) == hash_id


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.randoms(use_true_random=False))
def test_key_order_and_list_order_do_not_change_the_hash(event: dict[str, Any], rng: random.Random) -> None:
    """Rules 10-12: reordering keys and list members gives the same hash ID."""
    assert event_hash_id(_shuffled(event, rng), EXAMPLE_CONTEXT) == event_hash_id(event, EXAMPLE_CONTEXT)


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_whitespace_and_serialisation_do_not_change_the_hash(event: dict[str, Any]) -> None:
    """Rule 5 and the JSON text: padding values, reindenting or re-parsing leave the hash ID alone."""
    expected = event_hash_id(event, EXAMPLE_CONTEXT)
    reparsed = json.loads(json.dumps(event, indent=7, sort_keys=True))
    assert event_hash_id(reparsed, EXAMPLE_CONTEXT) == expected
    if "eventTime" in event:
        assert event_hash_id(_padded(event), EXAMPLE_CONTEXT) == expected


@settings(max_examples=100, deadline=None)
@given(EVENTS, st.data())
def test_a_changed_field_changes_the_hash(event: dict[str, Any], data: st.DataObject) -> None:
    """Any change of a hashed value, or a field added or removed, changes the hash ID."""
    expected = event_hash_id(event, EXAMPLE_CONTEXT)
    changed = copy.deepcopy(event)
    kind = data.draw(st.sampled_from(["time", "add", "remove", "action"]))
    if kind == "time":
        changed["eventTime"] = "1999-01-01T00:00:00.000Z"
    elif kind == "add":
        changed["example:added"] = "yes"
    elif kind == "action" and "action" in changed:
        changed["action"] = "OBSERVE" if changed["action"] != "OBSERVE" else "ADD"
    else:
        removable = [
            k for k in changed if k not in ("type", "eventTime", "eventID", "recordTime", "errorDeclaration")
        ]
        if not removable:
            changed["example:added"] = "yes"
        else:
            del changed[data.draw(st.sampled_from(sorted(removable)))]
    assert event_hash_id(changed, EXAMPLE_CONTEXT) != expected


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["sgtin", "sscc", "sgln", "grai", "giai", "gsrn", "pgln", "lgtin"]), st.data())
def test_epc_uris_translate_as_the_reference_translates_them(scheme: str, data: st.DataObject) -> None:
    """Generated EPC URIs of eight schemes and every company-prefix length give the reference's link."""
    from epcis_event_hash_generator.dl_normaliser import normaliser

    cp = data.draw(st.integers(6, 12))
    digits = st.text("0123456789", min_size=1, max_size=1)
    serial = data.draw(st.text("ABCxyz0129-_.:!()*+,", min_size=1, max_size=12))

    def num(n: int) -> str:
        return "".join(data.draw(digits) for _ in range(n))

    uri = {
        "sgtin": f"urn:epc:id:sgtin:{num(cp)}.{num(13 - cp)}.{serial}",
        "sscc": f"urn:epc:id:sscc:{num(cp)}.{num(17 - cp)}",
        "sgln": f"urn:epc:id:sgln:{num(cp)}.{num(12 - cp)}.{data.draw(st.sampled_from(['0', serial]))}",
        "grai": f"urn:epc:id:grai:{num(cp)}.{num(12 - cp)}.{serial}",
        "giai": f"urn:epc:id:giai:{num(cp)}.{serial}",
        "gsrn": f"urn:epc:id:gsrn:{num(cp)}.{num(17 - cp)}",
        "pgln": f"urn:epc:id:pgln:{num(cp)}.{num(12 - cp)}",
        "lgtin": f"urn:epc:class:lgtin:{num(cp)}.{num(13 - cp)}.{serial}",
    }[scheme]
    assert canonical_digital_link(uri) == normaliser(uri)


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_equivalent_forms_of_values_give_the_same_hash(event: dict[str, Any]) -> None:
    """The same instant in another offset, a GS1 key as EPC URI or Digital Link, a CBV value as bare term
    or URN, a quantity as 5 or 5.0: one hash ID (rules 6, 8, 14, 16, 17)."""
    expected = event_hash_id(event, EXAMPLE_CONTEXT)
    other = copy.deepcopy(event)
    other["eventTime"] = epcis._timestamp(event["eventTime"]).replace(".000Z", "Z")
    dl = {"urn:epc:id:sgtin:0614141.107346.2017": "https://example.com/01/10614141073464/21/2017?x=1"}
    for field in ("epcList", "inputEPCList", "outputEPCList", "childEPCs"):
        if field in other:
            other[field] = [dl.get(e, e) for e in other[field]]
    if other.get("bizStep") in cbv_vocabulary.BIZ_STEP:
        other["bizStep"] = "urn:epcglobal:cbv:bizstep:" + other["bizStep"]
    for field in ("quantityList", "inputQuantityList", "outputQuantityList", "childQuantityList"):
        for element in other.get(field, []):
            element["quantity"] = float(element["quantity"])
    assert event_hash_id(other, EXAMPLE_CONTEXT) == expected
