"""What the node indexes and a verifier re-derives from one EPCIS 2.0 event: its CBV hash ID, type,
time, business step, and the identifiers it mentions by role with their edgeroot prefixes.

The EPCIS rules themselves (validation, the hash ID, the URI form of identifiers, the roles) are
:mod:`chain_lite.epcis`'s; this module only gathers what capture, the index and the trace need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain_lite.epcis import edgeroot_identifier, event_hash_id, identifiers_by_role, validate_event
from chain_lite.errors import FormatError


TRACE_ROLES = ("epc", "parent", "child", "input", "output")
"""The roles EPCIS 2.0's ``MATCH_anyEPC`` covers (epcList, parentID, childEPCs, inputEPCList,
outputEPCList): the ones the completeness index and a trace follow."""


@dataclass(frozen=True, slots=True)
class Mention:
    """One identifier an event mentions: its role (``epc``, ``parent``, ``child``, ``input``,
    ``output``, as EPCIS 2.0 names the lists), the identifier as written in the event (normalised
    URI) and its edgeroot prefix (``None`` for a foreign identifier)."""

    role: str
    identifier: str
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


def _event_time(event: dict[str, Any]) -> str:
    text = event.get("eventTime")
    if not isinstance(text, str) or not text:
        raise FormatError("epcis event", "eventTime must be an ISO 8601 date-time")
    return text


def event_facts(event: dict[str, Any]) -> EventFacts:
    """What the node indexes and a verifier re-derives from one event (validated as EPCIS 2.0 by
    :mod:`chain_lite.epcis`): its CBV hash ID, type, time, business step and the identifiers it
    mentions by role, each with its edgeroot prefix (``None`` when foreign)."""
    validate_event(event)
    mentions = []
    for role, uri in identifiers_by_role(event):
        ident = edgeroot_identifier(uri)
        mentions.append(Mention(role, uri, None if ident is None else ident.partition("/")[0]))
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
