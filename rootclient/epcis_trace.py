"""Trace an identifier's genealogy through EPCIS events, every step verified.

One loop (:func:`trace`): take an identifier from the frontier, :func:`fetch_events_for` it (its events
and the proof that they are all the log holds for it), and follow the events to the next identifiers:
backwards, a TransformationEvent's outputs lead to its inputs and an AggregationEvent's parent to its
children; forwards, inputs lead to outputs and children to their parent. ObjectEvents are the item's
own history and lead nowhere. Which node to ask for an identifier is :class:`Source`'s choice: today
one root; a hop to another node (federation) is one more source, the loop does not change.

With a :class:`Verifier` every event is checked (inclusion in a checkpoint the pinned light client
accepted, the signer's key proven from the registry, the signature, the CBV hash ID) and so is every
completeness claim (the identifier's index entry in the map under the same kind of checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chain_lite.epcis_capture import (
    IncompleteIndex,
    IndexEntry,
    attribution,
    capture_key,
    parse_capture,
    signer_authority,
)
from chain_lite.epcis_facts import EventFacts, event_facts
from chain_lite.epcis_proof import ProvenEvent, verify_event, verify_index
from chain_lite.errors import FormatError
from chain_lite.keys import PublicKey
from chain_lite.policy import VerifiedCheckpoint
from rootclient.client import AsyncRootClient
from rootclient.codecs import EventsPage, ShownEvent, resolution_from_json
from rootclient.pinned_log import Older, PinnedLog

BACK = "back"
FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class TracedEvent:
    index: int
    signer: str
    event: dict[str, Any]
    facts: EventFacts
    verified: bool
    attributions: dict[str, str]
    """identifier → ``owner`` or ``asserted`` (chain_lite.epcis_capture.attribution)."""


@dataclass(frozen=True, slots=True)
class IdentifierEvents:
    identifier: str
    events: list[TracedEvent]
    complete_as_of: int | None
    """The log size as of which the events are proven to be all the log holds; ``None`` unverified."""
    entry: IndexEntry | None = None


class Verifier:
    """Checks checkpoints with a pinned light client, and signer keys with proven resolutions (cached)."""

    def __init__(self, client: AsyncRootClient, pinned: PinnedLog) -> None:
        self.client = client
        self.pinned = pinned
        self._checkpoints: dict[bytes, VerifiedCheckpoint] = {}
        self._keys: dict[str, PublicKey] = {}

    async def checkpoint(self, page: EventsPage) -> VerifiedCheckpoint:
        note = page.checkpoint.to_bytes()
        hit = self._checkpoints.get(note)
        if hit is None:
            hit = (await self.pinned.accept(page.checkpoint, older=Older.USE)).checkpoint
            self._checkpoints[note] = hit
        return hit

    async def signer_key(self, kid: str) -> PublicKey:
        key = self._keys.get(kid)
        if key is None:
            authority = signer_authority(kid)
            proof = resolution_from_json(await self.client.resolve(authority.identifier))
            proven = await self.pinned.verify_resolution(proof, older=Older.USE)
            key = capture_key(authority, kid, proven.proven.record)
            self._keys[kid] = key
        return key


async def _traced(
    shown: ShownEvent, verified: VerifiedCheckpoint | None, verifier: Verifier | None
) -> TracedEvent:
    if verifier is None or verified is None:
        signed = parse_capture(shown.signed_capture)
        event = json.loads(signed.capture.event_json)
        if not isinstance(event, dict):
            raise FormatError("epcis capture", "the signed event is not a JSON object")
        facts = event_facts(event)
        authority = signer_authority(signed.signer)
        attrs = {m.identifier: attribution(m.prefix, authority) for m in facts.mentions}
        return TracedEvent(shown.index, signed.signer, event, facts, False, attrs)
    signer = parse_capture(shown.signed_capture).signer
    key = await verifier.signer_key(signer)
    proven: ProvenEvent = verify_event(shown.signed_capture, shown.index, shown.inclusion, verified, key)
    attrs = {m.identifier: proven.attribution_of(m) for m in proven.facts.mentions}
    return TracedEvent(proven.index, signer, proven.event, proven.facts, True, attrs)


async def fetch_events_for(
    client: AsyncRootClient, identifier: str, verifier: Verifier | None
) -> IdentifierEvents:
    """Every event ``client``'s node holds for ``identifier``; with ``verifier``, each checked and the
    list proven complete as of the index proof's checkpoint (asked first, so the events' pages, as of
    the same or a later checkpoint, must contain every index it commits to)."""
    index_proof = await client.epcis_index(identifier) if verifier is not None else None
    pages = await client.epcis_events_all({"MATCH_anyEPC": identifier})
    events: list[TracedEvent] = []
    for page in pages:
        verified = None if verifier is None else await verifier.checkpoint(page)
        events += [await _traced(shown, verified, verifier) for shown in page.events]
    if verifier is None or index_proof is None:
        return IdentifierEvents(identifier, events, None)
    verified_index = (
        await verifier.pinned.accept(index_proof.receipt.checkpoint, older=Older.USE)
    ).checkpoint
    entry = verify_index(index_proof, verified_index)
    size = verified_index.checkpoint.size
    shown_before = [e.index for e in events if e.index < size]
    if shown_before != list(index_proof.indices):
        missing = sorted(set(index_proof.indices) - set(shown_before))
        extra = sorted(set(shown_before) - set(index_proof.indices))
        raise IncompleteIndex(
            identifier,
            f"INCOMPLETE as of log size {size}: the map commits to {len(index_proof.indices)} events; "
            f"not shown {missing[:10]}, shown but not committed {extra[:10]}",
        )
    return IdentifierEvents(identifier, events, size, entry)


def next_identifiers(identifier: str, facts: EventFacts, direction: str) -> list[str]:
    """Where one event leads from ``identifier`` (module docstring)."""
    roles: dict[str, list[str]] = {}
    for m in facts.mentions:
        roles.setdefault(m.role, []).append(m.identifier)
    here = {role for role, ids in roles.items() if identifier in ids}
    if direction == BACK:
        if "output" in here:
            return roles.get("input", [])
        if "parent" in here:
            return roles.get("child", [])
    else:
        if "input" in here:
            return roles.get("output", [])
        if "child" in here:
            return roles.get("parent", [])
    return []


@dataclass
class TraceNode:
    identifier: str
    events: IdentifierEvents
    depth: int
    children: list[tuple[int, TraceNode]] = field(default_factory=list)
    """(log index of the event that leads there, the node)."""


Fetch = Callable[[str], Awaitable[IdentifierEvents]]


async def trace(start: str, fetch: Fetch, *, direction: str, depth: int) -> TraceNode:
    """The genealogy of ``start`` up to ``depth`` hops, each identifier fetched (and verified) once."""
    root = TraceNode(start, await fetch(start), 0)
    seen = {start}
    frontier = [root]
    while frontier:
        node = frontier.pop(0)
        if node.depth >= depth:
            continue
        for event in node.events.events:
            for nxt in next_identifiers(node.identifier, event.facts, direction):
                if nxt in seen:
                    continue
                seen.add(nxt)
                child = TraceNode(nxt, await fetch(nxt), node.depth + 1)
                node.children.append((event.index, child))
                frontier.append(child)
    return root
