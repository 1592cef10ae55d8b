"""Capturing EPCIS 2.0 events: every event signed, authorised, hashed, then queued as a log leaf.

A capture request is an EPCIS 2.0 ``EPCISDocument`` whose events each carry one extension property,
``edgeroot:signedCapture``: the base64 of the signer's COSE_Sign1 over the event
(:mod:`chain_lite.epcis_capture`). Checks per event, in order; the first failure refuses the whole
document (the EPCIS 2.0 default capture error behaviour, ``rollback``) naming the event's position:

1. the signed capture parses, is for this node (``origin``), and its event JSON is the event the
   document shows (the document stays a plain EPCIS document for any other reader);
2. the signer is registered: a prefix admin key, or a capture key (a record with an ``EPCIS_CAPTURE``
   value) → 403 ``EventUnauthorised`` otherwise;
3. its signature verifies and its hash ID is the CBV event hash of the event → 422 ``EventTampered``;
4. the event is valid EPCIS 2.0 (the whole document first: :mod:`rootclient.epcis_document`, D-067)
   → 400 ``EventInvalid``.

An event whose hash ID the node holds already is a duplicate: answered with the first capture's
index, not logged again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite import b64
from chain_lite.cose import verify_sign1
from chain_lite.epcis import event_hash_id, prefixes_only_in
from chain_lite.epcis_capture import (
    SignedCapture,
    attribution,
    capture_key,
    parse_capture,
    signer_authority,
)
from chain_lite.epcis_facts import EventFacts, event_facts
from chain_lite.errors import ChainError, FormatError, SignatureError
from chain_lite.keys import PublicKey, public_der
from resolver.db import Database, Tx
from resolver.errors import BadRequest, ResolverError
from resolver.registry import load_record
from rootclient.codecs import EPCIS_SIGNATURE
from rootclient.epcis_document import EpcisDocumentError, read_capture_document

SIGNATURE_PROPERTY = EPCIS_SIGNATURE
MAX_EVENTS_PER_CAPTURE = 10_000
"""The capture limit (EPCIS 2.0 lets a server set one; the node advertises it in
``GS1-EPCIS-Capture-Limit``)."""


class EventInvalid(BadRequest):
    """An event (or the document) is not valid EPCIS 2.0, or its signed capture is malformed."""


class EventUnauthorised(ResolverError):
    """The signer is not a registered prefix admin or capture key."""

    status = 403
    handle_code = 403


class EventTampered(ResolverError):
    """The signature does not verify, or the hash ID is not the event's: the event was altered."""

    status = 422
    handle_code = 403


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    hash_id: str
    signer: str
    duplicate: bool


class _AcceptedFacts:
    """Facts of accepted events by log leaf, for the sequencer (as :mod:`resolver.registry` does for
    writes): a pure function of the leaf, so an entry is never wrong, only missing."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._facts: dict[bytes, EventFacts] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, leaf: bytes, facts: EventFacts) -> None:
        with self._lock:
            if len(self._facts) >= self._capacity:
                del self._facts[next(iter(self._facts))]
            self._facts[leaf] = facts

    def pop(self, leaf: bytes) -> EventFacts | None:
        with self._lock:
            return self._facts.pop(leaf, None)


_accepted = _AcceptedFacts()


def facts_of_leaf(leaf: bytes, bases: Sequence[str]) -> EventFacts:
    """The facts of an EPCIS leaf (``0x05 || signed capture``): remembered at acceptance, else parsed."""
    facts = _accepted.pop(leaf)
    if facts is None:
        capture = parse_capture(leaf[1:]).capture
        facts = event_facts(json.loads(capture.event_json), bases)
    return facts


def signer_key(tx: Tx, kid: str) -> PublicKey:
    """The registered key of a capture signer, or :class:`EventUnauthorised` saying why there is none."""
    try:
        authority = signer_authority(kid)
        return capture_key(authority, kid, load_record(tx, authority.identifier))
    except ChainError as exc:
        raise EventUnauthorised(str(exc)) from exc


def check_event(
    event: Mapping[str, Any],
    *,
    origin: str,
    bases: Sequence[str],
    key_of: Callable[[str], PublicKey],
    context: object = None,
) -> tuple[SignedCapture, EventFacts]:
    """Every check of one event of a capture document (module docstring, steps 1-4), without the
    database: ``key_of`` gives a signer's registered key (or raises :class:`EventUnauthorised`);
    ``context``: the document's ``@context``."""
    shown = dict(event)
    signature = shown.pop(SIGNATURE_PROPERTY, None)
    if not isinstance(signature, str):
        raise EventUnauthorised(f"the event is not signed (no {SIGNATURE_PROPERTY} property)")
    raw = b64.decode(signature)
    if raw is None:
        raise EventInvalid(f"{SIGNATURE_PROPERTY} is not canonical base64")
    try:
        signed = parse_capture(raw)
    except FormatError as exc:
        raise EventInvalid(str(exc)) from exc
    capture = signed.capture
    if capture.origin != origin:
        raise EventUnauthorised(f"the capture is signed for node {capture.origin!r}, this is {origin!r}")
    try:
        signed_event = json.loads(capture.event_json)
    except (ValueError, RecursionError) as exc:
        raise EventInvalid(f"the signed event is not JSON: {exc}") from exc
    if signed_event != shown:
        raise EventTampered("the event in the document differs from the event its signer signed")
    _verify(signed, key_of(signed.signer))
    try:
        facts = event_facts(signed_event, bases)
    except FormatError as exc:
        raise EventInvalid(str(exc)) from exc
    event_time_ms(facts.event_time)  # the query's time window needs it: refuse what it cannot read
    if facts.hash_id != capture.hash_id:
        raise EventTampered(
            f"the signed hash ID {capture.hash_id} is not the event's CBV hash ID {facts.hash_id}"
        )
    if prefixes_only_in(context, signed_event) and event_hash_id(signed_event, context) != facts.hash_id:
        # The leaf keeps the event alone: its hash ID must not depend on prefixes only the document
        # declares, or the logged ID would differ from the standard's ID of the event as captured.
        # (When the document declares no prefix the event lacks, the two IDs are one: no second hash.)
        raise EventInvalid(
            "the event uses prefixes declared only in the document's @context: carry them in the "
            "event's own @context (edgeroot event capture does)"
        )
    return signed, facts


def _verify(signed: SignedCapture, key: PublicKey) -> None:
    try:
        verify_sign1(signed.sign1, key)
    except SignatureError as exc:
        raise EventTampered(f"signer {signed.signer}: {exc}") from exc


def event_time_ms(text: str) -> int:
    """An ``eventTime`` (ISO 8601 with a time zone offset) in milliseconds since the Unix epoch."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise EventInvalid(f"eventTime {text!r} is not an ISO 8601 date-time") from exc
    if moment.tzinfo is None:
        raise EventInvalid(f"eventTime {text!r} has no time zone offset")
    return int(moment.timestamp() * 1000)


def capture_id_of(hash_ids: Sequence[str]) -> str:
    """A capture job's id: the SHA-256 of its events' hash IDs, so a retried document is the same job."""
    return hashlib.sha256("\n".join(hash_ids).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CheckedCapture:
    """A capture document whose events all passed their checks (:func:`check_capture`), in order, with
    the signers' keys they were checked with."""

    events: tuple[tuple[SignedCapture, EventFacts], ...]
    keys: Mapping[str, PublicKey]


def check_capture(db: Database, body: bytes, *, origin: str, bases: Sequence[str]) -> CheckedCapture:
    """Every check of a capture document (parse, signed capture, signature, hash ID, schema: the CPU
    work), outside any write transaction, each signer's key read once in a short read transaction;
    the first failure refuses the document, naming the event's position. Blocking: the API runs it in
    a worker thread, one document at a time in the process (D-095), waiting for its turn on the event
    loop rather than in the thread pool (D-122)."""
    keys: dict[str, PublicKey] = {}

    def key_of(kid: str) -> PublicKey:
        key = keys.get(kid)
        if key is None:
            with db.transaction(write=False) as tx:
                key = keys[kid] = signer_key(tx, kid)
        return key

    checked = []
    try:
        document = read_capture_document(body, max_events=MAX_EVENTS_PER_CAPTURE)
    except EpcisDocumentError as exc:
        raise EventInvalid(str(exc)) from exc
    for position, event in enumerate(document.events):
        try:
            checked.append(
                check_event(event, origin=origin, bases=bases, key_of=key_of, context=document.context)
            )
        except ResolverError as exc:
            exc.message = f"event {position}: {exc.message}"
            raise
    return CheckedCapture(tuple(checked), keys)


def store_capture(db: Database, checked: CheckedCapture, *, now_ms: int) -> tuple[str, list[CapturedEvent]]:
    """Queue the new events of a checked document; all or nothing. Returns the capture job's id and each
    event's outcome.

    The write transaction reads each signer's key again and verifies again the events of a signer whose
    key changed since :func:`check_capture` (or refuses them), so every event is logged only under the
    key its signer holds when it is logged, as when everything ran in one transaction, while the
    sequencer and other processes' captures were not held up by the checks (D-095). Blocking."""
    with db.transaction() as tx:
        _recheck_keys(tx, checked.events, checked.keys)
        return _queue(tx, checked.events, now_ms)


def _recheck_keys(
    tx: Tx, checked: Sequence[tuple[SignedCapture, EventFacts]], keys: Mapping[str, PublicKey]
) -> None:
    """Inside the write transaction: each signer's key as registered now; an event whose signer's key
    changed since it was checked is verified again with the current one (or refused)."""
    changed: dict[str, PublicKey] = {}
    for kid, used in keys.items():
        current = signer_key(tx, kid)  # EventUnauthorised if revoked meanwhile
        if public_der(current) != public_der(used):
            changed[kid] = current
    if not changed:
        return
    for position, (signed, _) in enumerate(checked):
        key = changed.get(signed.signer)
        if key is not None:
            try:
                _verify(signed, key)
            except ResolverError as exc:
                exc.message = f"event {position}: {exc.message}"
                raise


def _queue(
    tx: Tx, checked: Sequence[tuple[SignedCapture, EventFacts]], now_ms: int
) -> tuple[str, list[CapturedEvent]]:
    """Store the checked events not held yet (event rows, mentions, pending leaves) and the capture
    job; returns the job's id and each event's outcome."""
    results: list[CapturedEvent] = []
    mentions: list[tuple[str, str, str, str]] = []
    pending: list[tuple[bytes, bytes, int]] = []
    for signed, facts in checked:
        authority = signer_authority(signed.signer)
        leaf = signed.leaf()
        # One statement per event: ON CONFLICT ... RETURNING tells a duplicate apart, also against
        # a concurrent capture of the same event (PostgreSQL runs captures side by side).
        fresh = tx.one(
            "INSERT INTO epcis_events (hash_id, leaf, signer, authority, event_time_ms, biz_step, "
            "received_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hash_id) DO NOTHING RETURNING hash_id",
            (
                facts.hash_id,
                leaf,
                signed.signer,
                authority.prefix,
                event_time_ms(facts.event_time),
                facts.biz_step,
                now_ms,
            ),
        )
        results.append(CapturedEvent(facts.hash_id, signed.signer, duplicate=fresh is None))
        if fresh is None:
            continue
        mentions += [
            (m.identifier, m.role, facts.hash_id, attribution(m.prefix, authority)) for m in facts.mentions
        ]
        pending.append((leaf, facts.hash_id.encode(), now_ms))
        _accepted.remember(leaf, facts)
    if mentions:
        tx.executemany(
            "INSERT INTO epcis_mentions (identifier, role, hash_id, attribution) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            mentions,
        )
    if pending:
        tx.executemany("INSERT INTO pending (leaf, ref, received_ms) VALUES (?, ?, ?)", pending)
    job = capture_id_of([r.hash_id for r in results])
    tx.execute(
        "INSERT INTO epcis_captures (capture_id, hash_ids, created_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (capture_id) DO NOTHING",
        (job, json.dumps([r.hash_id for r in results]), now_ms),
    )
    return job, results
