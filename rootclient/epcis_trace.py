"""Trace an identifier's genealogy through EPCIS events, every step verified.

One loop (:func:`trace`), a level at a time: :func:`fetch_events_for` the frontier's identifiers (their
events, and the proof that they are all the log holds for each), then follow the events to the next
identifiers:
backwards, a TransformationEvent's outputs lead to its inputs and an AggregationEvent's parent to its
children; forwards, inputs lead to outputs and children to their parent. ObjectEvents are the item's
own history and lead nowhere. Which node to ask is the ``fetch`` function's choice: today one root; a
hop to another node (federation) is that function asking another root client, the loop does not
change. Identifiers are asked in chunks (:data:`CHUNK`) so a level costs a few requests, not two per
identifier, and each event is verified once however many identifiers it mentions.

With a :class:`Verifier` every event is checked (inclusion in a checkpoint the pinned light client
accepted, the signer's key proven from the registry, the signature, the CBV hash ID) and so is every
completeness claim (the identifier's index entry in the map under the same kind of checkpoint).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chain_lite import b64
from chain_lite.block import open_block, parse_block, verify_reading
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.coverage import DuplicateReading, ShownReading, complete_blocks
from chain_lite.envelope import decode_envelope, open_envelope, resolve
from chain_lite.epcis import namespaces_of
from chain_lite.epcis_capture import (
    IncompleteIndex,
    IndexEntry,
    NotACaptureKey,
    attribution,
    capture_key,
    parse_capture,
    signer_authority,
)
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE, EventFacts, event_facts
from chain_lite.epcis_identifiers import classify, parse_identifier_uri
from chain_lite.epcis_proof import EventNotProven, IndexProof, verify_event, verify_index, verify_map_head
from chain_lite.errors import ChainError, FormatError, SignatureError
from chain_lite.keys import PublicKey
from chain_lite.log_leaf import MapHead, block_leaf
from chain_lite.merkle import leaf_hash
from chain_lite.policy import VerifiedCheckpoint
from chain_lite.receipt import check_inclusion
from chain_lite.registry import canonical_identifier
from rootclient.client import AsyncRootClient, HoldPin, NodeClients, PinStoreFor, follow_hints
from rootclient.codecs import EPCIS_NAMESPACE, EventsPage, ShownEvent, WindowBlock, resolution_from_json
from rootclient.pinned_log import Older, PinnedLog
from runtime.clock import parse_instant_ms

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
    key_as_of: int | None = None
    """Set when the signer's current record no longer holds the signing key: the log size as of which
    the registry proved it did (the key was rotated or revoked after the event)."""


@dataclass(frozen=True, slots=True)
class IdentifierEvents:
    identifier: str
    events: list[TracedEvent]
    complete_as_of: int | None
    """The log size as of which the events are proven to be all the log holds; ``None`` unverified."""
    entry: IndexEntry | None = None


MAP_HEADS_KEPT = 64
"""Verified map heads a :class:`Verifier` keeps (the most recently used): an answer's map head is one per
checkpoint, and a long-lived verifier meets a new checkpoint every few seconds of a busy log."""
CHUNK = 40
"""Identifiers per request (``MATCH_anyEPC=a|b|...`` and ``id=a&id=b...``): well inside URL limits."""
IN_FLIGHT = 4
"""Event queries of one level in flight at once."""


class Verifier:
    """Checks checkpoints with a pinned light client and signer keys with proven resolutions; keeps
    what it verified (checkpoints, keys, events by log index), so a warm verifier re-checks nothing."""

    def __init__(
        self,
        client: AsyncRootClient,
        pinned: PinnedLog,
        *,
        bases: Sequence[str] = (DEFAULT_IDENTIFIER_BASE,),
        keys: dict[str, PublicKey] | None = None,
    ) -> None:
        self.client = client
        self.pinned = pinned
        self.bases = tuple(bases)
        self._checkpoints: dict[bytes, VerifiedCheckpoint] = {}
        self.keys: dict[str, PublicKey] = {} if keys is None else keys
        """Signer keys proven so far (shared by verifiers of one client session: a warm client)."""
        self._events: dict[tuple[int, bytes], TracedEvent] = {}
        self._map_heads: dict[tuple[bytes, bytes, bytes], MapHead] = {}

    def map_head(self, proof: IndexProof, verified: VerifiedCheckpoint) -> MapHead:
        """The map head of an index answer, checked once for all the identifiers it proves (the last
        :data:`MAP_HEADS_KEPT` kept, least recently used forgotten first)."""
        key = (proof.map_head, proof.receipt.to_bytes(), verified.checkpoint.root)
        head = self._map_heads.pop(key, None)  # taken out and put back last: the most recently used
        if head is None:
            head = verify_map_head(proof.map_head, proof.receipt, verified)
            if len(self._map_heads) >= MAP_HEADS_KEPT:
                del self._map_heads[next(iter(self._map_heads))]
        self._map_heads[key] = head
        return head

    async def checkpoint(self, signed: SignedCheckpoint) -> VerifiedCheckpoint:
        note = signed.to_bytes()
        hit = self._checkpoints.get(note)
        if hit is None:
            hit = (await self.pinned.accept(signed, older=Older.USE)).checkpoint
            self._checkpoints[note] = hit
        return hit

    async def signer_key(self, kid: str) -> PublicKey:
        key = self.keys.get(kid)
        if key is None:
            authority = signer_authority(kid)
            proof = resolution_from_json(await self.client.resolve(authority.identifier))
            proven = await self.pinned.verify_resolution(proof, older=Older.USE)
            key = capture_key(authority, kid, proven.proven.record)
            self.keys[kid] = key
        return key

    async def signer_key_at(self, kid: str, size: int) -> tuple[PublicKey, int]:
        """The signer's key as the registry held it within the first ``size`` log leaves (proven as of
        the newest checkpoint there), and that checkpoint's size: for an event logged at ``size - 1``
        whose signer's key was rotated or revoked since."""
        authority = signer_authority(kid)
        proof = resolution_from_json(await self.client.resolve(authority.identifier, size))
        proven = await self.pinned.verify_resolution(proof, older=Older.USE, as_of=True)
        if proven.proven.epoch > size:
            raise FormatError("epcis capture", f"{kid} proven as of {proven.proven.epoch}, not {size}")
        return capture_key(authority, kid, proven.proven.record), proven.proven.epoch

    async def event(self, shown: ShownEvent, verified: VerifiedCheckpoint) -> TracedEvent:
        # Inclusion at an index in one verified checkpoint holds in every later one (consistency is the
        # pin's job), so an event checked once is the same event whatever page shows it again.
        cache_key = (shown.index, shown.signed_capture)
        hit = self._events.get(cache_key)
        if hit is None:
            key_as_of = None
            raw, index, inclusion = shown.signed_capture, shown.index, shown.inclusion
            try:
                parsed = parse_capture(raw)
                signer = parsed.signer
                try:
                    key = await self.signer_key(signer)
                    proven = verify_event(raw, index, inclusion, verified, key, self.bases, parsed=parsed)
                except (SignatureError, NotACaptureKey):
                    # The current record does not hold the key that signed: was it the signer's key
                    # when the event was logged? (A key rotated or revoked since does not unsign the past.)
                    key, key_as_of = await self.signer_key_at(signer, index + 1)
                    proven = verify_event(raw, index, inclusion, verified, key, self.bases, parsed=parsed)
            except ChainError as exc:
                raise EventNotProven(index, exc) from exc  # which event of the page failed, by name
            attrs = {m.identifier: proven.attribution_of(m) for m in proven.facts.mentions}
            hit = TracedEvent(proven.index, signer, proven.event, proven.facts, True, attrs, key_as_of)
            self._events[cache_key] = hit
        return hit


def _unverified(shown: ShownEvent, bases: Sequence[str]) -> TracedEvent:
    signed = parse_capture(shown.signed_capture)
    event = json.loads(signed.capture.event_json)
    if not isinstance(event, dict):
        raise FormatError("epcis capture", "the signed event is not a JSON object")
    facts = event_facts(event, bases)
    authority = signer_authority(signed.signer)
    attrs = {m.identifier: attribution(m.prefix, authority) for m in facts.mentions}
    return TracedEvent(shown.index, signed.signer, event, facts, False, attrs)


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [list(items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]


async def fetch_events_for(
    client: AsyncRootClient,
    identifiers: Sequence[str],
    verifier: Verifier | None,
    bases: Sequence[str] = (DEFAULT_IDENTIFIER_BASE,),
) -> dict[str, IdentifierEvents]:
    """Every event ``client``'s node holds for each of ``identifiers``; with ``verifier``, each event
    checked and each identifier's list proven complete as of its index proof's checkpoint (asked first,
    so the events' pages, as of the same or a later checkpoint, must hold every index it commits to).
    ``identifiers`` are comparison keys (:func:`chain_lite.epcis_facts.identifier_key`); ``bases`` are
    the identifier bases (a verifier's own)."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def chunk_answers(chunk: list[str]) -> tuple[list[IndexProof], list[EventsPage]]:
        # The chunk's completeness proofs and its event pages are asked side by side (one round trip,
        # not two); the pages must be as of the proofs' checkpoint or a later one, so that they hold
        # every index the proofs commit to: pages that came back older (a checkpoint was published in
        # between) are asked again, once, now that the proofs' checkpoint is published.
        async with gate:
            query = {"MATCH_anyEPC": "|".join(chunk)}
            if verifier is None:
                return [], await client.epcis_events_all(query)
            proofs, pages = await asyncio.gather(client.epcis_index(chunk), client.epcis_events_all(query))
            if (
                proofs
                and min(p.checkpoint.checkpoint.size for p in pages)
                < proofs[0].receipt.checkpoint.checkpoint.size
            ):
                pages = await client.epcis_events_all(query)
            return proofs, pages

    proofs: list[IndexProof] = []
    events: dict[int, TracedEvent] = {}
    # The node answers the next chunks while this process verifies the ones that arrived (the
    # verification is CPU work on this side; the queries are on the node's).
    for arriving in asyncio.as_completed([chunk_answers(chunk) for chunk in _chunks(identifiers)]):
        chunk_proofs, pages = await arriving
        proofs += chunk_proofs
        for page in pages:
            if verifier is None:
                events.update((s.index, _unverified(s, bases)) for s in page.events)
                continue
            verified = await verifier.checkpoint(page.checkpoint)
            for shown in page.events:
                events[shown.index] = await verifier.event(shown, verified)
    by_identifier: dict[str, list[TracedEvent]] = {identifier: [] for identifier in identifiers}
    for index in sorted(events):
        for identifier in events[index].facts.identifiers():
            if identifier in by_identifier:
                by_identifier[identifier].append(events[index])
    found = {i: IdentifierEvents(i, mine, None) for i, mine in by_identifier.items()}
    for proof in proofs:
        assert verifier is not None
        verified_index = await verifier.checkpoint(proof.receipt.checkpoint)
        entry = verify_index(proof, verified_index, head=verifier.map_head(proof, verified_index))
        size = verified_index.checkpoint.size
        mine = found[proof.identifier].events
        shown_before = [e.index for e in mine if e.index < size]
        if shown_before != list(proof.indices):
            missing = sorted(set(proof.indices) - set(shown_before))
            extra = sorted(set(shown_before) - set(proof.indices))
            raise IncompleteIndex(
                proof.identifier,
                f"INCOMPLETE as of log size {size}: the map commits to {len(proof.indices)} events; "
                f"not shown {missing[:10]}, shown but not committed {extra[:10]}",
            )
        found[proof.identifier] = IdentifierEvents(proof.identifier, mine, size, entry)
    return found


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
    depth: int
    events: IdentifierEvents | None = None
    children: list[tuple[int, TraceNode]] = field(default_factory=list)
    """(log index of the event that leads there, the node)."""


Fetch = Callable[[list[str]], Awaitable[dict[str, IdentifierEvents]]]


async def trace(start: str, fetch: Fetch, *, direction: str, depth: int) -> TraceNode:
    """The genealogy of ``start`` up to ``depth`` hops, each identifier fetched (and verified) once,
    a level per round of ``fetch``."""
    root = TraceNode(start, 0)
    seen = {start}
    level = [root]
    while level:
        found = await fetch([node.identifier for node in level])
        following: list[TraceNode] = []
        for node in level:
            node.events = found[node.identifier]
            if node.depth >= depth:
                continue
            for event in node.events.events:
                for nxt in next_identifiers(node.identifier, event.facts, direction):
                    if nxt not in seen:
                        seen.add(nxt)
                        child = TraceNode(nxt, node.depth + 1)
                        node.children.append((event.index, child))
                        following.append(child)
        level = following
    return root


# --- which node answers (issue 14: a hop to another node is one more step of the loop, D-100) -------------


@dataclass(frozen=True, slots=True)
class NodeAt:
    """A node that holds some identifiers' events (or a gateway's blocks): its client and the verifier
    of its log (``None``: an unverified trace)."""

    url: str
    client: AsyncRootClient
    verifier: Verifier | None


def _foreign(identifier: str) -> bool:
    """A comparison key that is not an edgeroot identifier (a GS1 Digital Link, another URI)."""
    return "/" not in identifier or ":" in identifier.partition("/")[0]


class Nodes:
    """The node responsible for an identifier: the one its prefix is delegated to, found from the trust
    anchor by following referrals (:func:`rootclient.client.resolve_referrals`: proofs at every hop,
    one pin per log, each child's answers judged under the policy its delegation commits to), or
    without a verifier by the answers' unverified referral hints. Foreign identifiers are asked of the
    trust anchor. Each prefix is followed once; each log has one :class:`Verifier`."""

    def __init__(
        self,
        top: AsyncRootClient,
        verifier: Verifier | None,
        *,
        pins: PinStoreFor | None = None,
        hold: HoldPin | None = None,
        bases: Sequence[str] = (DEFAULT_IDENTIFIER_BASE,),
    ) -> None:
        self.top = NodeAt(top.base_url, top, verifier)
        self.bases = tuple(bases)
        self.clients = NodeClients(pins=pins, hold=hold)
        self._by_prefix: dict[str, NodeAt] = {}
        self._by_log: dict[tuple[str, str, str], NodeAt] = {}
        if verifier is not None:  # the trust anchor's pinned log is the verifier's, not a second one
            self.clients.logs[(verifier.pinned.origin, top.base_url, "")] = verifier.pinned

    async def of(self, identifier: str) -> NodeAt:
        if _foreign(identifier):
            return self.top
        prefix = identifier.partition("/")[0]
        hit = self._by_prefix.get(prefix)
        if hit is None:
            hit = await (self._hinted(identifier) if self.top.verifier is None else self._proven(identifier))
            self._by_prefix[prefix] = hit
        return hit

    async def _proven(self, identifier: str) -> NodeAt:
        verifier = self.top.verifier
        assert verifier is not None
        hops = await self.clients.resolve(self.top.client, identifier, verifier.pinned.policy)
        if len(hops) == 1:
            return self.top
        last, via = hops[-1], hops[-2].referral
        assert via is not None  # a later hop is reached only through a referral
        key = (last.origin, last.url, via.policy)
        node = self._by_log.get(key)
        if node is None:
            client = await self.clients.get(last.url)
            child = Verifier(client, self.clients.logs[key], bases=self.bases)
            node = self._by_log[key] = NodeAt(last.url, client, child)
        return node

    async def _hinted(self, identifier: str) -> NodeAt:
        client, _, _ = await follow_hints(self.top.client, identifier, self.clients)
        if client is self.top.client:
            return self.top
        return NodeAt(client.base_url, client, None)

    async def aclose(self) -> None:
        await self.clients.aclose()


def fetch_across(nodes: Nodes) -> Fetch:
    """The :data:`Fetch` of a trace over many nodes: each level's identifiers asked of the node
    responsible for each (:class:`Nodes`), with that node's verifier."""

    async def fetch(identifiers: list[str]) -> dict[str, IdentifierEvents]:
        groups: dict[str, tuple[NodeAt, list[str]]] = {}
        for identifier in identifiers:
            node = await nodes.of(identifier)
            groups.setdefault(node.url, (node, []))[1].append(identifier)
        found: dict[str, IdentifierEvents] = {}
        for node, mine in groups.values():
            found.update(await fetch_events_for(node.client, mine, node.verifier, nodes.bases))
        return found

    return fetch


# --- readings behind an event (issue 15 item 4, D-086) ----------------------------------------------------

EDGEROOT_NS = EPCIS_NAMESPACE
"""The namespace IRI of edgeroot's EPCIS extensions (``edgeroot:signedCapture``, ``edgeroot:gateway``)."""
GATEWAY_FIELD = "gateway"
"""The local name of the sensor metadata extension that names the gateway the readings went through."""
MAX_WINDOW_PAGES = 16
"""Pages of ``GET /v1/blocks`` read for one window (64 blocks each) before the answer says it stopped."""


@dataclass(frozen=True, slots=True)
class ReadingsRef:
    """One ``sensorElementList`` entry whose ``sensorMetadata.deviceID`` is an edgeroot identifier: the
    device, the gateway its readings went through, and the window ``[from_ms, to_ms)``. ``problem`` says
    why the readings cannot be looked up (no gateway named, a window that does not parse)."""

    device: str
    gateway: str | None
    from_ms: int | None
    to_ms: int | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceBlock:
    """A gateway block covering a window, as the root answered it (D-074), and what was checked of it."""

    height: int
    time_ms: int
    block_id: str
    log_index: int | None
    at_root: bool
    """The readings are at the root (replicate mode) or stay at the gateway (anchor mode)."""
    device_readings: int
    """Readings the device signed in the block (its counter ranges); a bridge signs for its devices."""
    receipt: str | None
    verified: bool
    """The gateway's signature (key proven from the registry) and the receipt's inclusion in a
    checkpoint the pinned light client accepted."""
    header: bytes = b""
    """The gateway-signed header as the root logged it: what readings fetched from the gateway are
    checked against (:func:`check_fetched_readings`)."""


@dataclass(frozen=True, slots=True)
class FetchedReadings:
    """The readings of an event's window fetched from the gateway that keeps them (anchor mode), with the
    gateway's bearer token (``GET /v1/readings``, D-072), and what was checked of them (D-101, D-120)."""

    gateway_url: str
    fetched: int
    """Readings of the device the gateway answered for the window (by arrival time)."""
    included: int
    """Of those, in a block the root listed for the window, each proven (RFC 6962) to be the reading at
    its index of that block's header as the root showed it, none listed twice."""
    verified: int
    """Of those included, signed by the device (its key proven from the registry), in a block whose
    gateway signature and receipt the trace verified; 0 for an unverified trace, which proves nothing."""
    elsewhere: int
    """In a block the root did not list for the window (a backlog reading signed later): not judged."""
    values: tuple[float, ...]
    unit: str | None
    complete_blocks: tuple[int, ...] = ()
    """Heights of the window's blocks that hold no reading of the device but those fetched (every one
    the device signed there is in the answer: :func:`chain_lite.coverage.complete_blocks`)."""


@dataclass(frozen=True, slots=True)
class ReadingsEvidence:
    ref: ReadingsRef
    blocks: list[EvidenceBlock]
    note: str | None
    """Said plainly when there is nothing to show: no gateway, no blocks in the window, a cut-off."""
    fetched: FetchedReadings | None = None
    """The readings themselves, when asked of the gateway (``trace --gateway``)."""


def _instant(text: object, what: str) -> int:
    if not isinstance(text, str):
        raise FormatError("sensor metadata", f"{what} is not a timestamp string")
    try:
        return parse_instant_ms(text)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _gateway_of(metadata: dict[str, Any], namespaces: dict[str, str], bases: Sequence[str]) -> str | None:
    """The gateway named by ``P:gateway`` in the sensor metadata, ``P`` any prefix the event's
    ``@context`` declares as :data:`EDGEROOT_NS`; its value is the gateway's identifier URI."""
    for key, value in metadata.items():
        prefix, sep, local = key.partition(":")
        if sep and local == GATEWAY_FIELD and namespaces.get(prefix) == EDGEROOT_NS:
            if not isinstance(value, str):
                raise ValueError(f"{key} is not a string")
            ident = parse_identifier_uri(value, bases)
            if ident is None:
                raise ValueError(f"{key} {value!r} is not an identifier URI under {', '.join(bases)}")
            return canonical_identifier(str(ident))
    return None


def readings_refs(event: dict[str, Any], bases: Sequence[str]) -> list[ReadingsRef]:
    """The readings an event points at (module section above; docs/traceability.md §8). A malformed
    entry becomes a ref with its ``problem``, never an exception: the trace still shows the event."""
    elements = event.get("sensorElementList")
    namespaces = namespaces_of(event.get("@context"))
    refs: list[ReadingsRef] = []
    for element in elements if isinstance(elements, list) else []:
        metadata = element.get("sensorMetadata") if isinstance(element, dict) else None
        if not isinstance(metadata, dict) or not isinstance(metadata.get("deviceID"), str):
            continue
        try:
            device = classify(metadata["deviceID"], "sensor_device", bases)
        except ChainError:
            continue  # a malformed identifier URI: the event's own checks name it
        if device.kind != "edgeroot":
            continue  # a device that is not ours: no blocks of ours cover it
        ident = canonical_identifier(str(device.identifier))
        try:
            gateway = _gateway_of(metadata, namespaces, bases)
            if "startTime" in metadata or "endTime" in metadata:
                start = _instant(metadata.get("startTime"), "sensorMetadata.startTime")
                end = _instant(metadata.get("endTime"), "sensorMetadata.endTime")
            elif "time" in metadata:
                start = end = _instant(metadata["time"], "sensorMetadata.time")
            else:
                start = end = _instant(event.get("eventTime"), "eventTime")
            if end < start:
                raise ValueError("sensorMetadata.endTime is before startTime")
        except (ValueError, ChainError) as exc:
            refs.append(ReadingsRef(ident, None, None, None, str(exc)))
            continue
        if gateway is None:
            problem = f"no edgeroot:gateway in the sensor metadata: the gateway of {ident} is not named"
            refs.append(ReadingsRef(ident, None, start, end + 1, problem))
            continue
        refs.append(ReadingsRef(ident, gateway, start, end + 1))  # endTime inclusive
    return refs


async def proven_key(client: AsyncRootClient, verifier: Verifier, identifier: str, kind: str) -> PublicKey:
    """The key of the ``kind`` record (``GATEWAY``, ``DEVICE``) ``identifier``, proven from the registry
    of ``client``'s node as of a checkpoint ``verifier``'s pinned light client accepts."""
    cached = verifier.keys.get(f"{kind}:{identifier}")
    if cached is None:
        what = "gateway block" if kind == "GATEWAY" else "reading"
        proof = resolution_from_json(await client.resolve(identifier))
        proven = await verifier.pinned.verify_resolution(proof, older=Older.USE)
        record = proven.proven.record
        if record is None or not record.has_type(kind):
            raise FormatError(what, f"{identifier} is not a registered {kind.lower()}")
        cached = record.signing_key()
        if cached is None:
            raise FormatError(what, f"{identifier} has no HS_PUBKEY value")
        verifier.keys[f"{kind}:{identifier}"] = cached
    return cached


async def _check_block(client: AsyncRootClient, verifier: Verifier, gateway: str, block: WindowBlock) -> None:
    """The block is the gateway's (its signature, key proven), is the one listed, and its receipt puts
    it in a checkpoint the pinned light client accepts. Raises :class:`ChainError` naming what failed."""
    gateway = canonical_identifier(gateway)
    if block.receipt is None:
        raise FormatError("gateway block", f"block {block.height} of {gateway} has no receipt yet")
    verified = await verifier.checkpoint(block.receipt.checkpoint)
    suite = verified.checkpoint.suite
    key = await proven_key(client, verifier, gateway, "GATEWAY")
    signed = open_block(
        block.header, lambda kid: key if canonical_identifier(kid) == gateway else None, suite=suite
    )
    header = signed.header
    if (canonical_identifier(header.gateway), header.height, header.time_ms) != (
        gateway,
        block.height,
        block.time_ms,
    ):
        raise FormatError("gateway block", f"block {block.height} of {gateway} is not the block listed")
    if block.receipt.index != block.log_index:
        raise FormatError("gateway block", f"block {block.height}: the receipt is for another log index")
    check_inclusion(block.receipt, leaf_hash(block_leaf(block.header), suite=suite), verified)


async def readings_evidence(
    client: AsyncRootClient, ref: ReadingsRef, verifier: Verifier | None
) -> ReadingsEvidence:
    """The blocks that commit to ``ref``'s readings (D-074's window), each checked with ``verifier``."""
    if ref.gateway is None or ref.from_ms is None or ref.to_ms is None:
        return ReadingsEvidence(ref, [], ref.problem)
    blocks: list[EvidenceBlock] = []
    after: int | None = None
    for _ in range(MAX_WINDOW_PAGES):
        page, after = await client.blocks_in_window(ref.gateway, ref.from_ms, ref.to_ms, after)
        for b in page:
            if verifier is not None:
                await _check_block(client, verifier, ref.gateway, b)
            header = parse_block(b.header).header
            mine = sum(r.count for r in header.counters if canonical_identifier(r.signer) == ref.device)
            blocks.append(
                EvidenceBlock(
                    b.height,
                    b.time_ms,
                    b.block_id.hex(),
                    b.log_index,
                    b.at_root,
                    mine,
                    b.receipt_text,
                    verifier is not None,
                    b.header,
                )
            )
        if after is None:
            break
    else:
        return ReadingsEvidence(ref, blocks, f"stopped after {len(blocks)} blocks; narrow the window")
    if not blocks:
        return ReadingsEvidence(
            ref, [], f"NO BLOCKS of {ref.gateway} at the root cover [{ref.from_ms}, {ref.to_ms}) ms"
        )
    return ReadingsEvidence(ref, blocks, None)


def traced_events(node: TraceNode) -> list[TracedEvent]:
    """Every event of a trace tree, once each, in log order."""
    found: dict[int, TracedEvent] = {}
    stack = [node]
    while stack:
        here = stack.pop()
        if here.events is not None:
            found.update((e.index, e) for e in here.events.events)
        stack.extend(child for _, child in here.children)
    return [found[i] for i in sorted(found)]


async def evidence_of(tree: TraceNode, nodes: Nodes) -> dict[int, list[ReadingsEvidence]]:
    """For each event of ``tree`` that points at readings (log index → its evidence, one per ref), the
    blocks asked of the node responsible for the gateway (where its blocks are logged)."""
    out: dict[int, list[ReadingsEvidence]] = {}
    for event in traced_events(tree):
        refs = readings_refs(event.event, nodes.bases)
        found = []
        for ref in refs:
            node = nodes.top if ref.gateway is None else await nodes.of(ref.gateway)
            found.append(await readings_evidence(node.client, ref, node.verifier))
        if found:
            out[event.index] = found
    return out


async def device_key(nodes: Nodes, device: str) -> PublicKey | None:
    """The device's key proven at the node responsible for it (``None`` for an unverified trace)."""
    node = await nodes.of(device)
    return None if node.verifier is None else await proven_key(node.client, node.verifier, device, "DEVICE")


def _b64(value: object, what: str) -> bytes:
    data = b64.decode(value) if isinstance(value, str) else None
    if data is None:
        raise FormatError("reading", f"{what} is not canonical base64")
    return data


def check_fetched_readings(
    found: ReadingsEvidence, gateway_url: str, readings: Sequence[dict[str, Any]], key: PublicKey | None
) -> FetchedReadings:
    """Judge what the gateway's ``GET /v1/readings`` answered for ``found``'s window (its ``readings``
    items: ``envelope``, ``block``, ``index``, ``proof``, base64 as the gateway sends them): each one in a
    block the root listed (and the trace verified) must be reading ``index`` of that block's logged
    header (inclusion proof), signed by the device (``key``, proven; ``None``: the trace is unverified,
    the signature is not checked and nothing counts as verified) and shown once; then which of the
    window's blocks the answer covers whole, by the evidence bundle's own rule
    (:func:`chain_lite.coverage.complete_blocks`). Raises :class:`ChainError` naming the first reading
    that fails: the gateway showed a reading its anchored block does not commit to, one the device did
    not sign, or one twice."""
    by_height = {b.height: b for b in found.blocks}
    headers = {b.height: parse_block(b.header).header for b in found.blocks if b.header}
    device = found.ref.device
    values: list[float] = []
    units: set[str] = set()
    shown: list[ShownReading] = []
    elsewhere = 0
    for n, item in enumerate(readings):
        try:
            envelope = _b64(item["envelope"], f"reading {n}'s envelope")
            height, index = int(item["block"]), int(item["index"])
            proof = [_b64(h, f"reading {n}'s proof") for h in item.get("proof") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError("reading", f"reading {n} of the gateway's answer is malformed: {exc}") from exc
        header = headers.get(height)
        if header is None:
            elsewhere += 1
            continue
        try:
            verify_reading(header, envelope, index, proof)
        except ChainError as exc:
            raise FormatError(
                "reading", f"reading {index} of block {height}: not in the logged block: {exc}"
            ) from exc
        env = decode_envelope(envelope) if key is None else open_envelope(envelope, lambda kid: key)
        if canonical_identifier(env.signer) != device:
            raise FormatError(
                "reading", f"reading {index} of block {height} is signed by {env.signer}, not {device}"
            )
        shown.append(ShownReading(height, index, env.signer))
        for record in resolve(env.records):
            if isinstance(record["value"], int | float) and not isinstance(record["value"], bool):
                values.append(float(record["value"]))
                if record["unit"] is not None:
                    units.add(str(record["unit"]))
    try:
        complete = complete_blocks(device, headers, shown)
    except DuplicateReading as exc:
        raise FormatError("reading", f"{exc} in the gateway's answer") from exc
    trusted = key is not None and all(by_height[s.height].verified for s in shown)
    unit = units.pop() if len(units) == 1 else None
    return FetchedReadings(
        gateway_url,
        len(readings),
        len(shown),
        len(shown) if trusted else 0,
        elsewhere,
        tuple(values),
        unit,
        complete,
    )
