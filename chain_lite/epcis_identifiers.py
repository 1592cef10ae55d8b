"""Identifiers in EPCIS events: edgeroot's own, written as URIs, and everyone else's, as foreign ones.

EPCIS 2.0 and CBV 2.0 §8 want every identifier in an event (``epcList``, ``parentID``, ``epcClass``...)
to be a URI, and name three kinds: EPC URIs and GS1 Digital Links for GS1 keys, and, for private or
industry-wide identifiers, an HTTP(S) URL under a domain the issuer controls. An edgeroot identifier
``88.123.99/BATCH-20261130-07`` is such a private identifier; its URI form (docs/traceability.md, D-068) is
the **identifier URI** ``{base}/{prefix}/{suffix}``:

* ``base`` is the network's identifier base, an ``https://`` origin fixed per deployment (the policy names
  it; a federation may list several). Like ``https://id.gs1.org`` for Digital Links, it is part of the
  identity, so every party writes the same one; a resolver at that origin can answer for it.
* the path is the identifier itself: the prefix in lowercase, then the suffix in its normalised spelling
  (NFC), each ``/``-separated part percent-encoded as an RFC 3986 path segment (UTF-8, upper-case hex);
  the identifier policy (chain_lite.identifier) already refuses empty, ``.`` and ``..`` parts.
* no query, no fragment.

:func:`identifier_uri` writes it; :func:`parse_identifier_uri` reads it back and refuses any other
spelling, so one identifier has one URI and the event hash ID (which hashes non-GS1 URIs as written)
is stable. GS1 identifiers (``urn:epc:...``, Digital Links) and any other URI are *foreign*: they may stand
in an event, keyed by their canonical Digital Link or as written (:func:`classify`).

Pure.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from chain_lite.errors import IdentifierError
from chain_lite.gs1_link import canonical_digital_link
from chain_lite.identifier import Identifier, ascii_lower

# RFC 3986 §3.3 pchar without "%": unreserved / sub-delims / ":" / "@". Everything else is %-encoded.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_HEX = "0123456789ABCDEF"


def _encode_segment(text: str) -> str:
    return "".join(chr(b) if b in _SAFE else f"%{_HEX[b >> 4]}{_HEX[b & 15]}" for b in text.encode("utf-8"))


def _decode_segment(segment: str, uri: str) -> str:
    out = bytearray()
    i = 0
    raw = segment.encode("utf-8")
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # "%"
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in pair):
                raise IdentifierError(uri, "a '%' in an identifier URI is not followed by two hex digits")
            out.append(int(pair, 16))
            i += 3
        elif b in _SAFE:
            out.append(b)
            i += 1
        else:
            raise IdentifierError(uri, f"character {chr(b)!r} must be percent-encoded in an identifier URI")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentifierError(uri, "percent-encoded bytes of an identifier URI are not UTF-8") from None


@functools.lru_cache(maxsize=64)
def check_base(base: str) -> str:
    """An identifier base: ``https://`` and a host (an origin), no path, query or trailing slash."""
    rest = base.removeprefix("https://")
    if rest == base or not rest or any(c in rest for c in "/?#@ \\") or rest != rest.strip():
        raise IdentifierError(
            base, "an identifier base is an https:// origin without path, e.g. https://id.example.com"
        )
    return "https://" + ascii_lower(rest)


def identifier_uri(identifier: str, base: str) -> str:
    """The identifier URI of an edgeroot identifier under ``base`` (its one spelling)."""
    return _spelling(Identifier.parse(identifier), check_base(base))


def _spelling(ident: Identifier, origin: str) -> str:
    """The identifier URI of a parsed identifier under a checked base."""
    parts = [ident.prefix, *ident.suffix.split("/")]
    return origin + "/" + "/".join(_encode_segment(p) for p in parts)


def parse_identifier_uri(uri: str, bases: Iterable[str]) -> Identifier | None:
    """The edgeroot identifier an identifier URI names, or ``None`` if ``uri`` is under none of ``bases``.

    A URI under one of the bases that is not the identifier URI of a valid identifier, spelled exactly
    as :func:`identifier_uri` writes it, is an :class:`IdentifierError` naming the rule.
    """
    for base in bases:
        origin = check_base(base)
        if not uri.startswith(origin + "/") and ascii_lower(uri[: len(origin) + 1]) != origin + "/":
            continue
        path = uri[len(origin) + 1 :]
        if "?" in path or "#" in path:
            raise IdentifierError(uri, "an identifier URI has no query or fragment")
        segments = [_decode_segment(s, uri) for s in path.split("/")]
        if len(segments) < 2:
            raise IdentifierError(uri, "an identifier URI's path is PREFIX/SUFFIX")
        ident = Identifier.parse("/".join(segments))
        spelling = _spelling(ident, origin)
        if spelling != uri:
            raise IdentifierError(uri, f"not the identifier URI's one spelling: {spelling}")
        return ident
    return None


Kind = Literal["edgeroot", "gs1", "other"]


@dataclass(frozen=True, slots=True)
class EventIdentifier:
    """One identifier an event speaks of.

    ``role`` is the field it stands in (:data:`ROLES`); ``uri`` is as written in the event; ``kind`` says
    whose it is: ``edgeroot`` (an identifier URI under a known base; ``identifier`` holds it), ``gs1`` (an
    EPC URI or GS1 Digital Link) or ``other``. ``key`` compares identifiers across spellings: the folded
    identifier for edgeroot, the constrained canonical Digital Link for GS1 (so ``urn:epc:id:sgtin:...``
    and its Digital Link are one key), the URI itself otherwise.
    """

    role: str
    uri: str
    kind: Kind
    key: str
    identifier: Identifier | None = None


# Field -> role, in the order an event is read. Object roles name what the event is about; the others
# name where it happened and what measured it (trace and evidence need them, authority does not).
OBJECT_ROLES: Mapping[str, str] = {
    "epcList": "epc",
    "quantityList": "quantity",
    "parentID": "parent",
    "childEPCs": "child",
    "childQuantityList": "child_quantity",
    "inputEPCList": "input",
    "inputQuantityList": "input_quantity",
    "outputEPCList": "output",
    "outputQuantityList": "output_quantity",
}
CONTEXT_ROLES = ("read_point", "biz_location", "sensor_device")
ROLES = (*OBJECT_ROLES.values(), *CONTEXT_ROLES)


def classify(uri: str, role: str, bases: Iterable[str]) -> EventIdentifier:
    """Which kind of identifier ``uri`` is, with its comparison key (see :class:`EventIdentifier`)."""
    kind, key, ident = _kind_of(uri, tuple(bases))
    return EventIdentifier(role, uri, kind, key, ident)


@functools.lru_cache(maxsize=1 << 14)
def _kind_of(uri: str, bases: tuple[str, ...]) -> tuple[Kind, str, Identifier | None]:
    """:func:`classify` without the role. Memoised: a pure function of its arguments, and one URI
    (a read point, a batch that is output here and input there) recurs across events and traces."""
    ident = parse_identifier_uri(uri, bases)
    if ident is not None:
        return "edgeroot", str(ident.folded()), ident
    link = canonical_digital_link(uri)
    if link is not None:
        return "gs1", link, None
    if uri.startswith("urn:epc:"):
        return "gs1", uri, None
    return "other", uri, None


def event_identifiers(event: Mapping[str, object], bases: Iterable[str]) -> list[EventIdentifier]:
    """Every identifier ``event`` speaks of, by role, in field order (a validated event: lists of URIs).

    Object roles: ``epc``, ``parent``, ``child``, ``input``, ``output`` and the quantity classes
    (``quantity``, ``child_quantity``, ``input_quantity``, ``output_quantity``: the ``epcClass``).
    Context roles: ``read_point``, ``biz_location`` and ``sensor_device`` (each sensor report's and
    metadata's ``deviceID``). An identifier URI under a base that is not well spelled raises
    :class:`IdentifierError`.
    """
    bases = tuple(bases)
    found: list[EventIdentifier] = []

    def add(value: object, role: str) -> None:
        if isinstance(value, str):
            found.append(classify(value, role, bases))

    for field, role in OBJECT_ROLES.items():
        value = event.get(field)
        if field.endswith("QuantityList") or field == "quantityList":
            for element in value if isinstance(value, list) else []:
                if isinstance(element, Mapping):
                    add(element.get("epcClass"), role)
        elif isinstance(value, list):
            for item in value:
                add(item, role)
        else:
            add(value, role)
    for field, role in (("readPoint", "read_point"), ("bizLocation", "biz_location")):
        location = event.get(field)
        if isinstance(location, Mapping):
            add(location.get("id"), role)
    sensors = event.get("sensorElementList")
    for element in sensors if isinstance(sensors, list) else []:
        if not isinstance(element, Mapping):
            continue
        metadata = element.get("sensorMetadata")
        if isinstance(metadata, Mapping):
            add(metadata.get("deviceID"), "sensor_device")
        reports = element.get("sensorReport")
        for report in reports if isinstance(reports, list) else []:
            if isinstance(report, Mapping):
                add(report.get("deviceID"), "sensor_device")
    return found
