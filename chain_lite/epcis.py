"""GS1 EPCIS 2.0 events: the CBV event hash ID (CBV 2.0 §8.9), computed from the parsed JSON event.

The event hash ID names an event by its content, whatever its serialisation: a *pre-hash string* is
built from the event's fields in the canonical property order, each value canonicalised (UTC timestamps
at millisecond precision, numbers without trailing zeros, CBV URNs and bare JSON-LD terms as CBV Web
URIs, EPC URIs and GS1 Digital Links as constrained canonical Digital Links, list members sorted), and
its SHA-256 is written as an RFC 6920 ``ni`` URI: ``ni:///sha-256;<hex>?ver=CBV2.0``.

The standard's prose leaves room (which fields a leftover extension is sorted with, how a type pairs with
its value); GS1's reference implementation (``epcis-event-hash-generator`` 1.9.3, the oracle of
tests/test_epcis_hash.py) fixes those choices, and this module reproduces its pre-hash string, with the
deviations listed in docs/decisions.md D-066 (where the reference crashes, depends on the rest of the
document, or rounds half-to-even against the standard's text).

The tree below mirrors the reference's model of an event (the XML infoset): a node is
``(name, text, children)``; JSON lists become repeated children; ``xxxList`` members are named ``xxx``;
``bizTransaction``/``source``/``destination`` members are (type, value) pairs. Fields the canonical order
names are taken out of the tree as they are written; what is left is written after them, sorted.

Pure: a mapping in, a string out, :class:`EpcisError` for what cannot be an event.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import TypeGuard, cast

from chain_lite import cbv_vocabulary as vocab
from chain_lite.errors import FormatError
from chain_lite.gs1_link import canonical_digital_link

EVENT_TYPES = frozenset(
    {"ObjectEvent", "AggregationEvent", "TransformationEvent", "TransactionEvent", "AssociationEvent"}
)

# Deeper than any EPCIS event (sensorElementList/sensorElement/sensorReport/value is 4); the bound makes
# hostile nesting a clear error instead of a RecursionError.
MAX_DEPTH = 32


class EpcisError(FormatError):
    """An EPCIS event or document that cannot be read; ``path`` names where (JSON pointer style)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__("EPCIS event", f"{path or '/'}: {reason}")
        self.path = path or "/"
        self.detail = reason


# A node of the event tree: (name, text, children). A pair node groups a type with its value.
Node = tuple[str, str, list["Element"]]
Pair = tuple[Node, ...]
Element = Node | Pair


def _is_node(element: Element) -> TypeGuard[Node]:
    return type(element[0]) is str


# CBV 2.0 §8.9's order of the fields of a sensor element's metadata and of each of its reports.
SENSOR_METADATA_FIELDS = (
    "time",
    "startTime",
    "endTime",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "bizRules",
)
SENSOR_REPORT_FIELDS = (
    "type",
    "exception",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "time",
    "microorganism",
    "chemicalSubstance",
    "value",
    "component",
    "stringValue",
    "booleanValue",
    "hexBinaryValue",
    "uriValue",
    "minValue",
    "maxValue",
    "meanValue",
    "sDev",
    "percRank",
    "percValue",
    "uom",
    "coordinateReferenceSystem",
)
_QUANTITY: list[tuple[str, object]] = [("epcClass", None), ("quantity", None), ("uom", None)]
# CBV 2.0 §8.9 canonical property order, as the reference implementation applies it (its PROP_ORDER:
# certificationInfo after the offset, parentID before epcList; the typed lists are written with the
# leftovers, since their members are pairs).
_ORDER: list[tuple[str, object]] = [
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("certificationInfo", None),
    ("parentID", None),
    ("epcList", [("epc", None)]),
    ("inputEPCList", [("epc", None)]),
    ("childEPCs", [("epc", None)]),
    ("quantityList", [("quantityElement", _QUANTITY)]),
    ("childQuantityList", [("quantityElement", _QUANTITY)]),
    ("inputQuantityList", [("quantityElement", _QUANTITY)]),
    ("outputEPCList", [("epc", None)]),
    ("outputQuantityList", [("quantityElement", _QUANTITY)]),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", [("set", None), ("unset", None)]),
    ("readPoint", [("id", None)]),
    ("bizLocation", [("id", None)]),
    (
        "sensorElementList",
        [
            (
                "sensorElement",
                [
                    (
                        "sensorMetadata",
                        [(name, None) for name in SENSOR_METADATA_FIELDS],
                    ),
                    (
                        "sensorReport",
                        [(name, None) for name in SENSOR_REPORT_FIELDS],
                    ),
                ],
            )
        ],
    ),
]
# Never part of the hash (CBV 2.0 §8.9: recordTime and eventID are not the event's content; an error
# declaration is a later statement about the event; type is written first as eventType).
_IGNORED_TOP = frozenset({"recordTime", "eventID", "type", "errorDeclaration"})
# Keys dropped when the tree is built (JSON-LD comments, the XML text key).
_IGNORED_KEYS = frozenset({"#text", "rdfs:comment", "comment"})
_PAIR_LISTS = {
    "sourceList": "source",
    "destinationList": "destination",
    "bizTransactionList": "bizTransaction",
}
_PAIR_VALUES = frozenset(_PAIR_LISTS.values())

# Bare JSON-LD terms by the field they stand in (rule 16), as the EPCIS 2.0 context scopes them.
_VOCAB_BY_FIELD: dict[tuple[str, ...], Mapping[str, str]] = {
    ("bizStep",): vocab.BIZ_STEP,
    ("disposition",): vocab.DISPOSITION,
    ("persistentDisposition", "set"): vocab.DISPOSITION,
    ("persistentDisposition", "unset"): vocab.DISPOSITION,
    ("bizTransactionList", "type"): vocab.BIZ_TRANSACTION_TYPE,
    ("sourceList", "type"): vocab.SOURCE_DESTINATION_TYPE,
    ("destinationList", "type"): vocab.SOURCE_DESTINATION_TYPE,
    ("sensorElementList", "sensorReport", "type"): vocab.MEASUREMENT_TYPE,
    ("sensorElementList", "sensorReport", "exception"): vocab.SENSOR_EXCEPTION,
    ("sensorElementList", "sensorReport", "component"): vocab.COMPONENT,
}
_CBV_URNS = (
    ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def namespaces_of(context: object) -> dict[str, str]:
    """Prefix -> namespace IRI declared in a document's ``@context`` list (its object members).

    Extension keys ``prefix:local`` are written ``{IRI}local`` and values ``prefix:x`` as ``IRIx``, for
    the prefixes the document itself declares (as the reference does; the standard context's own
    prefixes are not applied to values).
    """
    found: dict[str, str] = {}
    if isinstance(context, list):
        for member in context:
            if isinstance(member, Mapping):
                found.update({k: v for k, v in member.items() if isinstance(k, str) and isinstance(v, str)})
    return found


def prefixes_only_in(context: object, event: Mapping[str, object]) -> dict[str, str]:
    """The prefixes a document's ``@context`` declares that ``event``'s own ``@context`` does not
    declare alike: the only way the document can change the event's pre-hash string (the event's own
    declarations win, :func:`pre_hash_string`). Empty: ``event_hash_id(event, context)`` is
    ``event_hash_id(event)``, without hashing twice."""
    declared = namespaces_of(context)
    if not declared:
        return {}
    own = event.get("@context")
    mine = namespaces_of(own if isinstance(own, list) else [own]) if own is not None else {}
    return {prefix: iri for prefix, iri in declared.items() if mine.get(prefix) != iri}


# --- building the tree -----------------------------------------------------------------------------


def _scalar_text(value: object, namespaces: Mapping[str, str]) -> str:
    """The text of a JSON scalar as the reference writes it (Python's ``str`` of the parsed value)."""
    if isinstance(value, str):
        prefix, sep, rest = value.partition(":")
        if sep and prefix in namespaces:
            return namespaces[prefix] + rest
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise EpcisError("", f"number {value!r} is not JSON")
    return str(value)


def _key(key: str, namespaces: Mapping[str, str]) -> str:
    prefix, sep, rest = key.partition(":")
    if sep and prefix in namespaces:
        return "{" + namespaces[prefix] + "}" + rest
    return key


def _expand(value: object, field: tuple[str, ...]) -> object:
    """Rule 16: a bare term (``shipping``) in a vocabulary field becomes its Web URI; lists term by term.

    ``field`` is the path of keys from the event (list members share their list's path).
    """
    table = _VOCAB_BY_FIELD.get(field)
    if table is None:
        return value
    if isinstance(value, str):
        return table.get(value.strip(), value)
    if isinstance(value, Sequence):
        return [table.get(v.strip(), v) if isinstance(v, str) else v for v in value]
    return value


def _path(field: tuple[str, ...]) -> str:
    """The JSON pointer of a field path, for errors (list positions are not tracked: the hot path
    builds no strings it does not need)."""
    return "".join("/" + key for key in field)


def _tree(value: object, namespaces: Mapping[str, str], field: tuple[str, ...], depth: int) -> Node:
    """The reference's ``_json_to_py``: a dict becomes a node whose children are its keys' values."""
    if depth > MAX_DEPTH:
        raise EpcisError(_path(field), f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return ("", _scalar_text(value, namespaces) if namespaces else value, [])
    if isinstance(value, (list, tuple)) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    ):
        return ("", "", [_tree(item, namespaces, field, depth + 1) for item in value])
    if isinstance(value, (dict, Mapping)):
        name = value.get("type")
        text = value.get("#text")
        node: Node = (name if isinstance(name, str) else "", text if isinstance(text, str) else "", [])
        children = node[2]
        for key, item in value.items():
            if not isinstance(key, str):
                raise EpcisError(_path(field), f"key {key!r} is not a string")
            if key in _IGNORED_KEYS or key[:1] == "@":
                continue
            sub_field = (*field, key)
            if sub_field in _VOCAB_BY_FIELD:
                item = _expand(item, sub_field)  # noqa: PLW2901 (the expanded value is the one hashed)
            written = _key(key, namespaces) if ":" in key else key
            if isinstance(item, str):
                # The common case, without a call: a string field.
                children.append((written, _scalar_text(item, namespaces) if namespaces else item, []))
                continue
            child = _tree(item, namespaces, sub_field, depth + 1)
            if isinstance(item, list) or (isinstance(item, Sequence) and not isinstance(item, (str, bytes))):
                # A fresh tree holds nodes only (pairs appear in _correct).
                children.extend((written, e[1], e[2]) for e in cast(list[Node], child[2]))
            else:
                children.append((written, child[1], child[2]))
        return node
    if value is None or isinstance(value, (int, float)):
        return ("", _scalar_text(value, namespaces), [])
    raise EpcisError(_path(field), f"{type(value).__name__} is not a JSON value")


def _correct(node: Node) -> Node:
    """The reference's ``deep_structure_correction``: the JSON model brought to the XML one."""
    name, text, children = node
    if not children:
        return ("epc", text, children) if name in ("inputEPC", "outputEPC") else node
    lists: dict[str, list[Node]] = {}
    for element in [e for e in children if _is_node(e) and e[0].endswith("List")]:
        if _is_node(element):
            lists.setdefault(element[0], []).append((element[0][:-4], element[1], element[2]))
            children.remove(element)
    for list_name, members in lists.items():
        grouped: list[Element] = []
        if list_name in _PAIR_LISTS:
            grouped.extend(_pair(m, _PAIR_LISTS[list_name]) for m in members)
        else:
            grouped.extend(members)
        children.append((list_name, "", grouped))
    child_epcs: list[Element] = []
    for element in [e for e in children if _is_node(e) and e[0] == "childEPCs"]:
        if _is_node(element):
            child_epcs.append(("epc", element[1], []))
            children.remove(element)
    if child_epcs:
        children.append(("childEPCs", "", child_epcs))
    corrected: list[Element] = []
    for kid in children:
        if not _is_node(kid) or kid[0] in _PAIR_LISTS:
            corrected.append(kid)
        elif kid[2]:
            corrected.append(_correct(kid))
        else:
            # A leaf (most of the tree): only the two renamed list members change.
            corrected.append(("epc", kid[1], kid[2]) if kid[0] in ("inputEPC", "outputEPC") else kid)
    if name in ("inputEPC", "outputEPC"):
        return ("epc", text, corrected)
    if name in ("inputQuantity", "outputQuantity", "childQuantity") or (name == "quantity" and corrected):
        return ("quantityElement", text, corrected)
    return (name, text, corrected)


def _pair(member: Node, value_name: str) -> Pair:
    """A typed list member as (type, value): the type first, as in the reference's XML model."""
    kids = [c for c in member[2] if _is_node(c)]
    typed = [c for c in kids if c[0] == "type"]
    valued = [c for c in kids if c[0] == value_name]
    if not typed and not valued and member[1]:
        return ((value_name, member[1], []),)
    return tuple(typed[:1] + valued[:1])


# --- writing the pre-hash string -------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 12)
def _timestamp(text: str) -> str:
    """CBV 2.0 §8.9 rules 8-9: UTC, ``Z``, milliseconds (the 3rd decimal rounded half up on the 4th)."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return text
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (
        1 <= month <= 12
        and 1 <= day <= _days_in_month(year, month)
        and hour < 24
        and minute < 60
        and second < 60
    ):
        return text
    fraction = (m.group(7) or "").ljust(4, "0")
    millis = int(fraction[:3]) + (1 if fraction[3] >= "5" else 0)
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * (1 if m.group(9) == "+" else -1)
    total_ms = (
        ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute - offset) * 60 + second
    ) * 1000
    total_ms += millis
    days, ms_of_day = divmod(total_ms, 86_400_000)
    y, mo, d = _civil_from_days(days)
    if not 1 <= y <= 9999:
        return text
    hh, rest = divmod(ms_of_day, 3_600_000)
    mm, rest = divmod(rest, 60_000)
    ss, ms = divmod(rest, 1000)
    return f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}Z"


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, ``days_from_civil``)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def _numeric(text: str) -> str:
    """Rule 6: a number without trailing zeros (the reference's ``float`` round trip); else unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    if number.is_integer():
        return str(int(number))
    return str(number)


@functools.lru_cache(maxsize=1 << 16)
def canonical_value(text: str) -> str:
    """Rules 6, 14, 17, 18: CBV URNs as Web URIs, numbers normalised, GS1 keys as constrained DL URIs."""
    for urn, web in _CBV_URNS:
        text = text.replace(urn, web)
    text = _numeric(text)
    link = canonical_digital_link(text)
    return link if link is not None else text


@functools.lru_cache(maxsize=1 << 10)
def _is_time_name(name: str) -> bool:
    """The reference treats a field whose name contains ``time`` (and not ``offset``) as a timestamp."""
    lowered = name.lower()
    return "time" in lowered and "offset" not in lowered


def _leaf_text(name: str, text: str) -> str:
    return _timestamp(text) if _is_time_name(name) else canonical_value(text)


def _child(child: Node, sub_order: object) -> str:
    """One field ``name=value`` followed by its sub-fields in their order (``sub_order``, or none)."""
    grand = ""
    if isinstance(sub_order, list):
        grand = _in_order(child[2], sub_order)
    text = ""
    if child[1]:
        text = _leaf_text(child[0], child[1].strip())
        if text:
            text = "=" + text
    if text or grand:
        return child[0] + text + grand
    return ""


def _user_extensions(children: list[Element]) -> list[Element]:
    """Extension fields inside a standard field with an extension point (rule 21), taken out of it."""
    if len(children) <= 1:
        return []
    for child in children:
        if _is_node(child) and ("eventTime" in child[0] or "action" in child[0]):
            return []
    found: list[Element] = [c for c in children if _is_node(c) and "{" in c[0] and "/}" in c[0]]
    for element in found:
        children.remove(element)
    return found


def _in_order(children: list[Element], order: list[tuple[str, object]]) -> str:
    """Rules 1-4, 10-12: the fields ``order`` names, in that order, each list's values sorted."""
    pre_hash = ""
    extensions = _user_extensions(children)
    by_name: dict[str, list[Node]] = {}
    for child in children:
        if _is_node(child):
            by_name.setdefault(child[0], []).append(child)
    consumed: set[int] = set()
    for name, sub_order in order:
        group = by_name.get(name)
        if not group:
            continue
        values: list[str] = []
        for child in group:
            written = _child(child, sub_order)
            if written:
                values.append(written)
            if not child[2]:
                # A field written whole leaves the tree; one with unnamed sub-fields stays for _generic.
                consumed.add(id(child))
        values.sort()
        pre_hash += "".join(values)
    if consumed:
        children[:] = [c for c in children if id(c) not in consumed]
    if extensions:
        pre_hash += _generic(extensions)
    return pre_hash


def _generic(children: Sequence[Element]) -> str:
    """Rules 19-21: whatever the order does not name, key=value, sorted (a typed pair keeps its order)."""
    values: list[str] = []
    for child in children:
        if not _is_node(child):
            values.append(_generic(cast(Pair, child)))
        else:
            name, text, grand = child
            text = text.strip()
            if text:
                text = "=" + canonical_value(text)
            values.append(name + text + _generic(grand))
    if len(children) > 1 and not any(_is_node(c) and c[0] in _PAIR_VALUES for c in children):
        values.sort()
    return "".join(values)


def pre_hash_string(event: Mapping[str, object], context: object = None) -> str:
    """The canonical pre-hash string of one EPCIS 2.0 event (CBV 2.0 §8.9), as the reference writes it.

    ``event`` is the parsed JSON object of the event; ``context`` is the ``@context`` of the document it
    came in (its declared prefixes name extension fields). The event is not changed.
    """
    if not isinstance(event, Mapping):
        raise EpcisError("", "an event is a JSON object")
    event_type = event.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise EpcisError("/type", f"event type {event_type!r} is not one of {sorted(EVENT_TYPES)}")
    namespaces = namespaces_of(context)
    own = event.get("@context")
    if own is not None:
        namespaces = {**namespaces, **namespaces_of(own if isinstance(own, list) else [own])}
    root = _correct(_tree(event, namespaces, (), 0))
    children = root[2]
    ordered = _in_order(children, _ORDER)
    rest = [c for c in children if not _is_node(c) or c[0] not in _IGNORED_TOP]
    return "eventType=" + event_type + ordered + (_generic(rest) if rest else "")


def event_hash_id(event: Mapping[str, object], context: object = None) -> str:
    """The CBV 2.0 event hash ID of an EPCIS 2.0 event: ``ni:///sha-256;<64 hex>?ver=CBV2.0``."""
    digest = hashlib.sha256(pre_hash_string(event, context).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"
