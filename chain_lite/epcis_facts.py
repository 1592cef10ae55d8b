"""What the node indexes and a verifier re-derives from one EPCIS 2.0 event: its CBV hash ID, type,
time, business step, and the identifiers it mentions by role with their edgeroot prefixes.

The EPCIS rules themselves are elsewhere: the hash ID in :mod:`chain_lite.epcis`, identifier URIs and
roles in :mod:`chain_lite.epcis_identifiers`, document validation in :mod:`rootclient.epcis_document`;
this module only gathers what capture, the completeness index and the trace need.

Identifiers are indexed and traced by their *comparison key* (``EventIdentifier.key``): the folded
identifier for an edgeroot one (``88.123.99/batch-7``), the canonical GS1 Digital Link for a GS1 one
(so an EPC URI and the Digital Link of one item are one identifier), the URI otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite.epcis import EVENT_TYPES, event_hash_id
from chain_lite.epcis_identifiers import classify, event_identifiers
from chain_lite.errors import FormatError, IdentifierError
from chain_lite.registry import canonical_identifier

DEFAULT_IDENTIFIER_BASE = "https://id.edgeroot.example"
"""The identifier base (decisions D-068) a node and its clients use unless configured otherwise."""


TRACE_ROLES = ("epc", "parent", "child", "input", "output")
"""The roles EPCIS 2.0's ``MATCH_anyEPC`` covers (epcList, parentID, childEPCs, inputEPCList,
outputEPCList): the ones the completeness index and a trace follow."""


@dataclass(frozen=True, slots=True)
class Mention:
    """One identifier an event mentions: its role (:data:`TRACE_ROLES`), its comparison key (module
    docstring), the URI as written, and its edgeroot prefix (``None`` for a foreign identifier)."""

    role: str
    identifier: str
    uri: str
    prefix: str | None


@dataclass(frozen=True, slots=True)
class EventFacts:
    hash_id: str
    event_type: str
    event_time: str
    """``eventTime`` as the event writes it (ISO 8601 with an offset; the node converts it)."""
    biz_step: str | None
    mentions: tuple[Mention, ...]

    def identifiers(self) -> list[str]:
        """Each identifier in a :data:`TRACE_ROLES` role once, in first-mention order: the keys of the
        completeness index, and what ``MATCH_anyEPC`` matches."""
        return list(dict.fromkeys(m.identifier for m in self.mentions if m.role in TRACE_ROLES))


def _event_time(event: Mapping[str, Any]) -> str:
    text = event.get("eventTime")
    if not isinstance(text, str) or not text:
        raise FormatError("epcis event", "eventTime must be an ISO 8601 date-time")
    return text


def identifier_key(text: str, bases: Sequence[str]) -> str:
    """The comparison key of an identifier a user or a query names: an edgeroot identifier
    (``88.123.99/BATCH-7``), its identifier URI, a GS1 URI, or any other URI."""
    if "://" not in text and not text.startswith("urn:"):
        return canonical_identifier(text)
    return classify(text, "epc", bases).key


def event_facts(event: Mapping[str, Any], bases: Sequence[str]) -> EventFacts:
    """What the node indexes and a verifier re-derives from one event (of a validated document): its
    CBV hash ID, type, time, business step and the identifiers it mentions in :data:`TRACE_ROLES`,
    each with its edgeroot prefix (``None`` when foreign). ``bases``: the identifier bases (D-068)."""
    if event.get("type") not in EVENT_TYPES:
        raise FormatError("epcis event", f"type {event.get('type')!r} is not an EPCIS 2.0 event type")
    try:
        found = event_identifiers(event, bases)
    except IdentifierError as exc:
        raise FormatError("epcis event", str(exc)) from exc
    mentions = []
    for item in found:
        if item.role in TRACE_ROLES:
            prefix = None if item.identifier is None else item.identifier.prefix
            mentions.append(Mention(item.role, item.key, item.uri, prefix))
    step = event.get("bizStep")
    return EventFacts(
        event_hash_id(event),
        str(event.get("type")),
        _event_time(event),
        None if not isinstance(step, str) else bare_biz_step(step),
        tuple(mentions),
    )


_BIZSTEP_PREFIXES = ("https://ref.gs1.org/cbv/BizStep-", "urn:epcglobal:cbv:bizstep:")


def bare_biz_step(value: str) -> str:
    """A CBV business step in its bare JSON form (``commissioning``), whatever form it was written in."""
    for prefix in _BIZSTEP_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value
