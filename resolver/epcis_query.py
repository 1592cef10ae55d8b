"""EPCIS 2.0 event queries and completeness proofs, as of the published checkpoint.

``GET /epcis/events`` takes the EPCIS 2.0 query parameters a trace needs (``MATCH_anyEPC``,
``MATCH_inputEPC``, ``MATCH_outputEPC``, ``MATCH_parentID``, ``GE_eventTime``, ``LT_eventTime``,
``EQ_bizStep``; several values of one parameter separated by ``|``, parameters combined with AND) and
pages with ``perPage`` and ``nextPageToken``. Every page is answered as of one published checkpoint
(the first page's, carried in the token), in log order, and each event comes with its signed capture
and its inclusion proof in that checkpoint, so a client checks every event it is shown.

``GET /v1/epcis/index?id=ID`` proves completeness: the identifier's index entry with a map proof under
the map head the checkpoint ends with, and the list of log indices the entry commits to (D-070).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite import b64, merkle
from chain_lite.epcis_capture import index_key_name, parse_capture
from chain_lite.epcis_facts import TRACE_ROLES, bare_biz_step, identifier_key
from chain_lite.errors import ChainError
from chain_lite.merkle import NodeId
from resolver.db import Database
from resolver.epcis_index import indices_as_of
from resolver.epcis_intake import SIGNATURE_PROPERTY, EventInvalid, event_time_ms
from resolver.errors import BadRequest
from resolver.log_store import TxNodeStore, checkpoint_at
from resolver.reads import PublishedView
from rootclient.codecs import EPCIS_NAMESPACE

ROLES_OF = {
    "MATCH_anyEPC": TRACE_ROLES,
    "MATCH_epc": ("epc",),
    "MATCH_inputEPC": ("input",),
    "MATCH_outputEPC": ("output",),
    "MATCH_parentID": ("parent",),
}
QUERY_PARAMETERS = (*ROLES_OF, "GE_eventTime", "LT_eventTime", "EQ_bizStep", "perPage", "nextPageToken")
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 1000
EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
EDGEROOT_CONTEXT = {"edgeroot": EPCIS_NAMESPACE}


def _key(name: str, text: str, bases: Sequence[str]) -> str:
    try:
        return identifier_key(text, bases)
    except ChainError as exc:
        raise BadRequest(f"{name}: {exc}") from exc


def _time_ms(name: str, text: str) -> int:
    try:
        return event_time_ms(text)
    except EventInvalid as exc:
        raise BadRequest(f"{name}: {text!r} is not an ISO 8601 date-time with a time zone offset") from exc


@dataclass(frozen=True, slots=True)
class Page:
    size: int
    checkpoint: bytes
    events: list[dict[str, Any]]
    next_token: str | None


def _token(size: int, after: int) -> str:
    return f"v1.{size}.{after}"


def _parse_token(token: str) -> tuple[int, int]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit() or not parts[2].isdigit():
        raise BadRequest(f"nextPageToken {token[:40]!r} is not a token this node issued")
    return int(parts[1]), int(parts[2])


def query_events(
    db: Database,
    view: PublishedView,
    params: Mapping[str, str],
    bases: Sequence[str],
    caches: QueryCaches | None = None,
) -> Page:
    """One page of the events matching ``params`` (EPCIS 2.0 query parameters, module docstring)."""
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise BadRequest(
            f"unsupported query parameter(s) {', '.join(unknown)}; supported: {', '.join(QUERY_PARAMETERS)}"
        )
    per_page = DEFAULT_PER_PAGE
    if "perPage" in params:
        text = params["perPage"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_PER_PAGE:
            raise BadRequest(f"perPage must be an integer in 1..{MAX_PER_PAGE}")
        per_page = int(text)
    size, after = view.size, -1
    if "nextPageToken" in params:
        size, after_plus = _parse_token(params["nextPageToken"])
        after = after_plus - 1
        if size > view.size:
            raise BadRequest("nextPageToken is for a checkpoint this node has not published")
    where = ["e.idx IS NOT NULL", "e.idx < ?", "e.idx > ?"]
    args: list[Any] = [size, after]
    _filters(params, bases, where, args)
    sql = (
        f"SELECT e.idx, e.leaf FROM epcis_events e WHERE {' AND '.join(where)} "  # noqa: S608 (placeholders only)
        "ORDER BY e.idx LIMIT ?"
    )
    args.append(per_page + 1)
    return _page(db, view, sql, args, size, per_page, caches)


def _filters(params: Mapping[str, str], bases: Sequence[str], where: list[str], args: list[Any]) -> None:
    """The SQL conditions (placeholders only) and their values for the query parameters."""
    for name, roles in ROLES_OF.items():
        if name in params:
            values = [_key(name, v, bases) for v in params[name].split("|") if v]
            if not values:
                raise BadRequest(f"{name} needs at least one identifier")
            where.append(  # placeholders only, the values go in args
                "e.hash_id IN (SELECT hash_id FROM epcis_mentions WHERE "  # noqa: S608
                f"identifier IN ({','.join('?' * len(values))}) AND role IN ({','.join('?' * len(roles))}))"
            )
            args += [*values, *roles]
    if "GE_eventTime" in params:
        where.append("e.event_time_ms >= ?")
        args.append(_time_ms("GE_eventTime", params["GE_eventTime"]))
    if "LT_eventTime" in params:
        where.append("e.event_time_ms < ?")
        args.append(_time_ms("LT_eventTime", params["LT_eventTime"]))
    if "EQ_bizStep" in params:
        steps = [bare_biz_step(v) for v in params["EQ_bizStep"].split("|") if v]
        where.append(f"e.biz_step IN ({','.join('?' * len(steps))})")
        args += steps


def _page(  # noqa: PLR0917 (the query and where its answer comes from)
    db: Database,
    view: PublishedView,
    sql: str,
    args: list[Any],
    size: int,
    per_page: int,
    caches: QueryCaches | None,
) -> Page:
    with db.transaction(write=False) as tx:
        rows = tx.all(sql, args)
        if size == view.size:
            note = view.checkpoint_bytes
        else:
            cp = checkpoint_at(tx, size)
            if cp is None:
                raise BadRequest("nextPageToken names a log size with no checkpoint")
            note = cp.to_bytes()
        caches = caches or QueryCaches(events=0, nodes=0)
        store = _CachedNodes(TxNodeStore(tx), caches.nodes)
        suite = view.checkpoint.checkpoint.suite  # the log's hash profile
        events = [
            _event_json(
                int(idx),
                bytes(leaf),
                merkle.inclusion_proof(int(idx), size, store, suite=suite),
                caches.events,
            )
            for idx, leaf in rows[:per_page]
        ]
    more = len(rows) > per_page
    next_token = _token(size, int(rows[per_page - 1][0]) + 1) if more else None
    return Page(size, note, events, next_token)


class _Bounded:
    """A cache of values that never change once written, least recently used out first. A lock
    because queries run in the thread pool."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class QueryCaches:
    """What one node's queries keep between requests (one per served database, so never shared by
    two logs): logged events as shown (a leaf never changes) and Merkle node hashes (a stored node is
    a complete subtree of the log, which never changes)."""

    def __init__(self, events: int = 20_000, nodes: int = 200_000) -> None:
        self.events = _Bounded(events)
        self.nodes = _Bounded(nodes)


class _CachedNodes:
    """A :class:`chain_lite.merkle.NodeReader` that asks the database only for nodes not seen before."""

    def __init__(self, store: TxNodeStore, cache: _Bounded) -> None:
        self._store = store
        self._cache = cache

    def get_nodes(self, ids: Sequence[NodeId]) -> list[bytes | None]:
        found = {node: self._cache.get(node) for node in ids}
        missing = [node for node, value in found.items() if value is None]
        if missing:
            for node, value in zip(missing, self._store.get_nodes(missing), strict=True):
                if value is not None:
                    self._cache.put(node, value)
                    found[node] = value
        return [found[node] for node in ids]


def _event_json(index: int, leaf: bytes, inclusion: Sequence[bytes], cache: _Bounded) -> dict[str, Any]:
    shown: dict[str, Any] | None = cache.get((index, leaf))
    if shown is None:
        signed = parse_capture(leaf[1:])
        shown = json.loads(signed.capture.event_json)
        shown[SIGNATURE_PROPERTY] = b64.encode(signed.raw)
        cache.put((index, leaf), shown)
    proof = {"logIndex": index, "inclusion": [b64.encode(h) for h in inclusion]}
    return {**shown, "edgeroot:proof": proof}


def query_document(page: Page, created: str) -> dict[str, Any]:
    """The EPCIS 2.0 ``EPCISQueryDocument`` of a page, with the checkpoint its proofs are against."""
    return {
        "@context": [EPCIS_CONTEXT, EDGEROOT_CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": created,
        "epcisBody": {
            "queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": page.events}}
        },
        "edgeroot:checkpoint": page.checkpoint.decode(),
    }


MAX_INDEX_IDS = 100


def index_answer(
    db: Database, view: PublishedView, identifiers: Sequence[str], bases: Sequence[str]
) -> dict[str, Any]:
    """The completeness proofs of ``identifiers`` as of ``view``: each one's entry (or absence) in the
    map the checkpoint ends with, and the event indices it commits to; the map head and its receipt
    are shared."""
    if not 1 <= len(identifiers) <= MAX_INDEX_IDS:
        raise BadRequest(f"give 1..{MAX_INDEX_IDS} id parameters")
    keys = []
    for identifier in identifiers:
        if not identifier or len(identifier.encode()) > 2048:
            raise BadRequest("an id must be an identifier of 1..2048 bytes")
        keys.append(_key("id", identifier, bases))  # the key the index is under
    with db.transaction(write=False) as tx:
        indices = indices_as_of(tx, keys, view.size)
    proofs = []
    for key in keys:
        entry, proof = view.map.record_and_proof(index_key_name(key))
        proofs.append(
            {
                "identifier": key,
                "indices": indices[key],
                "entry": None if entry is None else b64.encode(entry),
                "map_proof": b64.encode(proof.to_bytes()),
            }
        )
    return {"epoch": view.size, "map_head": view.map_head_b64, "receipt": view.receipt_text, "proofs": proofs}
