"""A parent node witnesses its child logs and anchors their checkpoints in its own log (D-078, D-079).

The node serves C2SP tlog-witness ``POST /add-checkpoint`` for its child logs (:class:`ChildLogs`, the
one lookup): the logs of ``[[child]]`` tables in ``root.toml`` (external logs, not delegated) and the
log of every node its registry delegates a prefix to (D-085): each delegation record names the child's
log key, and its policy's ``log-hash`` line, if any, the child's hash. The delegations are read as of
the node's published view, again whenever a newer view is published (:class:`DelegatedChildren`); a
delegation deleted or changed stops the cosigning of that log (404 ``unknown log``, as tlog-witness
says). The checks are the standalone witness's (:class:`resolver.witness_server.Witness`):
the child's signature, ``old`` equal to the size last cosigned, a consistency proof from there. The
state lives in the node's own database (:class:`AnchorStore`): when it moves to a new child checkpoint,
the same transaction queues a :class:`~chain_lite.log_leaf.ChildAnchor` leaf (type 0x06), so every
child checkpoint the parent cosigned is committed in the parent's log. A child that shows two roots for
one size has forked: both signed notes are kept in ``anchor_evidence`` and the child is not cosigned
again.

``GET /v1/anchors/{origin}?size=N`` points at the newest anchor of a child covered by the parent's
checkpoint of size ``N`` (the latest published one without ``size``), with any fork evidence; the
client checks everything it says (:mod:`chain_lite.anchor`): the answer is a pointer, not a proof.

The parent cosigns with its own witness key (``STATE/witness.skey``, name ``<origin>/witness``), made
by ``root init`` of the log's suite (Ed25519 tlog-cosignature v1, or SM2 on an SM node: D-105), or at
the first start of a node initialised before that (Ed25519); a child lists it as one more ``[[witness]]``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.concurrency import run_in_threadpool

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cosignature import LogVerifier, log_verifier
from chain_lite.errors import ChainError, FormatError
from chain_lite.keys import NoteKey
from chain_lite.log_leaf import ChildAnchor
from chain_lite.merkle import EMPTY_ROOT, leaf_hash
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_SM2_COSIGNATURE, VerifierKey
from chain_lite.registry import PREFIX_HANDLE_PREFIX, Delegation, Record
from chain_lite.suite import HashSuite, hash_suite
from resolver import openapi_models as om
from resolver import witness_server as witness_http
from resolver.config import ChildConfig
from resolver.db import Database
from resolver.errors import NotFound, NotYetPublished
from resolver.reads import RootNode
from resolver.witness_server import SIZE_CONTENT_TYPE, Witness
from rootclient import routes
from runtime.clock import now_ms
from runtime.keyfiles import write_private
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
refusals = RateLimitedLog(log, 10.0)
WITNESS_KEY = "witness.skey"
WITNESS_VKEY = "witness.vkey"


def witness_name(origin: str) -> str:
    """The parent's cosigning key name: distinct from its log key (a key is used for one purpose)."""
    return f"{origin}/witness"


COSIGNATURE_SIGTYPES = (SIGTYPE_COSIGNATURE_V1, SIGTYPE_SM2_COSIGNATURE)


def ensure_witness_key(state: Path, origin: str, sigtype: int = SIGTYPE_COSIGNATURE_V1) -> NoteKey:
    """The node's cosignature key, created (0600) of ``sigtype`` on first use (``root init`` passes its
    suite's, D-105); an existing key is kept whatever its type. ``STATE/witness.vkey`` is for children.

    Several processes may start on one fresh state directory at once (``root run --workers N``): the key
    is written whole under a name of this process's own and linked into place, so exactly one key wins
    and the others read it, never a half-written file."""
    if sigtype not in COSIGNATURE_SIGTYPES:
        raise ChainError(f"signature type {sigtype:#x} is not a cosignature type")
    path = state / WITNESS_KEY
    if not path.exists():
        key = NoteKey.generate(witness_name(origin), sigtype)
        mine = path.with_name(f"{path.name}.{os.getpid()}")
        write_private(mine, (key.skey() + "\n").encode(), force=True)
        try:
            os.link(mine, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        else:
            (state / WITNESS_VKEY).write_text(key.vkey() + "\n")
        finally:
            mine.unlink()
    key = NoteKey.parse_skey(path.read_text())
    if key.sigtype not in COSIGNATURE_SIGTYPES:
        raise ChainError(f"{path} is not a cosignature (0x04 or SM2) key")
    if not (state / WITNESS_VKEY).exists():  # a crash between the link and this file: write it now
        (state / WITNESS_VKEY).write_text(key.vkey() + "\n")
    return key


@dataclass(frozen=True, slots=True)
class ChildLog:
    origin: str
    vkey: VerifierKey
    url: str


class ChildLogs(Mapping[str, LogVerifier]):
    """Origin → verifier of each child log this node witnesses: the ``[[child]]`` tables of ``root.toml``
    (fixed until a restart) ∪ the logs of the node's delegations (:meth:`set_delegated`, as of its
    published view). A ``[[child]]`` table wins over a delegation naming the same log."""

    def __init__(self, children: Sequence[ChildLog], suites: Mapping[str, HashSuite] | None = None) -> None:
        self._configured = list(children)
        self._configured_suites = dict(suites or {})
        self._children: dict[str, ChildLog] = {}
        self._verifiers: dict[str, LogVerifier] = {}
        self.suites: dict[str, HashSuite] = {}
        """Origin → hash profile of each child log (SHA-256 when absent), for the witness's checks."""
        self.replace(children, self._configured_suites)

    @classmethod
    def from_config(cls, children: Sequence[ChildConfig]) -> ChildLogs:
        suites = {c.origin: hash_suite(c.hash) for c in children}
        return cls([ChildLog(c.origin, c.vkey, c.url) for c in children], suites)

    def replace(self, children: Sequence[ChildLog], suites: Mapping[str, HashSuite] | None = None) -> None:
        """Witness exactly ``children``. The three mappings are swapped in by assignment (a request sees
        the old set or the new one); ``suites`` before ``verifiers``, so a newly added log is never checked
        with a default hash."""
        by_origin = {c.origin: c for c in children}
        self.suites = {o: s for o, s in (suites or {}).items() if o in by_origin}
        self._children = by_origin
        self._verifiers = {c.origin: log_verifier(c.vkey) for c in children}

    def set_delegated(self, delegations: Sequence[Delegation]) -> None:
        """The configured children plus the child log of each delegation (its first URL; its hash from the
        delegated policy's ``log-hash`` line)."""
        children = list(self._configured)
        suites = dict(self._configured_suites)
        configured = {c.origin for c in children}
        for d in delegations:
            if d.origin in configured:
                continue
            children.append(ChildLog(d.origin, VerifierKey.parse(d.vkey), d.urls[0]))
            suites[d.origin] = d.trust_policy().logs[0].suite
        self.replace(children, suites)

    def child(self, origin: str) -> ChildLog | None:
        return self._children.get(origin)

    def __getitem__(self, origin: str) -> LogVerifier:
        return self._verifiers[origin]

    def __iter__(self) -> Iterator[str]:
        return iter(self._verifiers)

    def __len__(self) -> int:
        return len(self._verifiers)


_DELEGATIONS_QUERY = (
    "SELECT h.identifier, h.record FROM history h JOIN "
    "(SELECT identifier, MAX(idx) AS m FROM history WHERE idx < ? AND identifier LIKE ? "
    "GROUP BY identifier) x "
    "ON h.identifier = x.identifier AND h.idx = x.m ORDER BY h.identifier"
)


def delegations_as_of(db: Database, size: int) -> list[Delegation]:
    """Every delegation in the node's registry as of log size ``size`` (the prefix records ``0.na/<p>``
    whose latest version below ``size`` carries an ``HS_SITE`` value), in identifier order."""
    with db.transaction(write=False) as tx:
        rows = tx.all(_DELEGATIONS_QUERY, (size, f"{PREFIX_HANDLE_PREFIX}/%"))
    found: list[Delegation] = []
    for identifier, record in rows:
        if record is None:  # deleted: no delegation any more
            continue
        try:
            delegation = Record.decode(bytes(record)).delegation()
        except FormatError as exc:  # the registry accepts only well-formed ones: say so, skip it
            log.warning("prefix record %s holds a malformed delegation, not witnessed: %s", identifier, exc)
            continue
        if delegation is not None:
            found.append(delegation)
    return found


def prefix_records_changed(db: Database, start: int, end: int) -> bool:
    """Whether a leaf in ``[start, end)`` wrote a prefix record (``history_by_idx``: a range read)."""
    with db.transaction(write=False) as tx:
        row = tx.one(
            "SELECT 1 FROM history WHERE idx >= ? AND idx < ? AND identifier LIKE ? LIMIT 1",
            (start, end, f"{PREFIX_HANDLE_PREFIX}/%"),
        )
    return row is not None


class DelegatedChildren:
    """Keeps :class:`ChildLogs` (and the witness's hashes) equal to the ``[[child]]`` tables ∪ the
    delegations as of the node's published view: :meth:`refresh` rereads them when a newer view was
    published since the last time and its new leaves wrote a prefix record (one integer compare when
    the view did not move, one range read of ``history`` when it moved)."""

    def __init__(self, db: Database, node: RootNode, logs: ChildLogs, witness: Witness) -> None:
        self.db = db
        self.node = node
        self.logs = logs
        self.witness = witness
        self._size = -1
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Blocking (a database read when the view moved): call it from a worker thread."""
        try:
            size = self.node.view().size
        except NotYetPublished:
            return  # no view yet: no delegations yet, only the configured children
        if size == self._size:
            return
        with self._lock:
            if size == self._size:
                return
            if 0 <= self._size < size and not prefix_records_changed(self.db, self._size, size):
                self._size = size  # the new leaves touch no prefix record: the same delegations
                return
            before = set(self.logs)
            self.logs.set_delegated(delegations_as_of(self.db, size))
            self.witness.suites = self.logs.suites
            self._size = size
            after = set(self.logs)
        for origin in sorted(after - before):
            log.info("witnessing child log %s (delegated as of log size %d)", origin, size)
        for origin in sorted(before - after):
            log.warning(
                "no longer witnessing child log %s: its delegation is gone at log size %d", origin, size
            )


class AnchorStore:
    """:class:`resolver.witness_server.WitnessStore` in the node's database, logging what it cosigns."""

    def __init__(self, db: Database, children: ChildLogs) -> None:
        self.db = db
        self.children = children

    def get(self, origin: str) -> tuple[int, bytes]:
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT size, root FROM anchor_heads WHERE origin = ?", (origin,))
        return (0, EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))

    def advance(self, origin: str, old: int, signed: SignedCheckpoint, now_s: int) -> bool:
        """Compare-and-set the child's head from ``old``; a new size also queues its anchor leaf, in the
        same transaction (an anchor is logged exactly when the head moves)."""
        cp = signed.checkpoint
        child = self.children.child(origin)
        if child is None:  # the children changed under the request
            return False
        if cp.size == old:
            return self.get(origin) == (cp.size, cp.root)  # cosigned again: already anchored
        anchor = ChildAnchor.of(child.vkey, signed, now_s)
        leaf = anchor.leaf()
        h = leaf_hash(leaf)
        received_ms = now_ms()
        with self.db.transaction() as tx:
            moved = tx.one(
                "INSERT INTO anchor_heads (origin, size, root) VALUES (?, ?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root "
                "WHERE anchor_heads.size = ? RETURNING origin",
                (origin, cp.size, cp.root, old),
            )
            if moved is None:
                return False
            tx.execute(
                "INSERT INTO anchors (origin, size, root, note, leaf_hash, cosigned_s, received_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (origin, cp.size, cp.root, anchor.checkpoint.to_bytes(), h, now_s, received_ms),
            )
            pending = "INSERT INTO pending (leaf, ref, received_ms) VALUES (?, ?, ?)"
            tx.execute(pending, (leaf, h, received_ms))
        return True

    def keep_evidence(self, origin: str, refused: SignedCheckpoint, now_s: int) -> None:
        size = refused.checkpoint.size
        with self.db.transaction() as tx:
            row = tx.one("SELECT note FROM anchors WHERE origin = ? AND size = ?", (origin, size))
            if row is None:  # size 0 is never anchored: nothing signed to hold against it
                return
            tx.execute(
                "INSERT INTO anchor_evidence (origin, size, cosigned_note, refused_note, received_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (origin, size, bytes(row[0]), refused.to_bytes(), now_s * 1000),
            )
        log.error(
            "child log %s showed two roots for size %d: evidence kept, no longer cosigning", origin, size
        )

    def forked(self, origin: str) -> bool:
        with self.db.transaction(write=False) as tx:
            return tx.one("SELECT 1 FROM anchor_evidence WHERE origin = ? LIMIT 1", (origin,)) is not None

    def answer(self, origin: str, covered_by: int) -> dict[str, Any]:
        """What ``GET /v1/anchors/{origin}`` says: the newest anchor logged below ``covered_by``."""
        child = self.children.child(origin)
        with self.db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT idx, size, cosigned_s FROM anchors WHERE origin = ? AND idx IS NOT NULL AND idx < ? "
                "ORDER BY size DESC LIMIT 1",
                (origin, covered_by),
            )
            head = tx.one("SELECT size FROM anchor_heads WHERE origin = ?", (origin,))
            evidence = tx.all(
                "SELECT size, cosigned_note, refused_note FROM anchor_evidence WHERE origin = ? "
                "ORDER BY size",
                (origin,),
            )
        if child is None and row is None and head is None:
            raise NotFound(f"{origin!r} is not a child log this node witnesses")
        return {
            "origin": origin,
            "tree_size": covered_by,
            "vkey": None if child is None else str(child.vkey),
            "url": None if child is None or not child.url else child.url,
            "anchor": None
            if row is None
            else {"index": int(row[0]), "size": int(row[1]), "cosigned_at": int(row[2])},
            "cosigned_size": None if head is None else int(head[0]),
            "evidence": [
                {"size": int(s), "cosigned": bytes(a).decode(), "refused": bytes(b).decode()}
                for s, a, b in evidence
            ],
        }

    def logged_sizes(self) -> dict[str, tuple[int, int]]:
        """Child origin → (latest size cosigned, latest size whose anchor leaf is in the log)."""
        with self.db.transaction(write=False) as tx:
            heads = tx.all("SELECT origin, size FROM anchor_heads")
            logged = tx.all("SELECT origin, MAX(size) FROM anchors WHERE idx IS NOT NULL GROUP BY origin")
        done = {str(o): int(s) for o, s in logged}
        return {str(o): (int(s), done.get(str(o), 0)) for o, s in heads}


class AnchorMetrics:
    """The parent's side of anchoring, on the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answers = Counter(
            "edgeroot_root_anchor_answers",
            "add-checkpoint answers to child logs, by child and HTTP status",
            ["child", "status"],
            registry=registry,
        )
        self.cosigned_size = Gauge(
            "edgeroot_root_anchor_cosigned_size",
            "Size of the latest child checkpoint this node cosigned (its anchor leaf queued)",
            ["child"],
            registry=registry,
        )
        self.last_cosigned = Gauge(
            "edgeroot_root_anchor_last_cosigned_timestamp_seconds",
            "When this node last cosigned a new checkpoint of the child (POSIX seconds)",
            ["child"],
            registry=registry,
        )
        self.forked = Gauge(
            "edgeroot_root_anchor_child_forked",
            "1 when the child showed two roots for one size (evidence kept, no longer cosigned)",
            ["child"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class ParentWitness:
    """The parent's side of anchoring, as :func:`build` makes it."""

    store: AnchorStore
    witness: Witness
    metrics: AnchorMetrics
    delegated: DelegatedChildren


def install(app: FastAPI, node: RootNode, parent: ParentWitness) -> None:
    """Add ``POST /add-checkpoint`` and ``GET /v1/anchors/{origin}`` to the root node's app."""
    store, witness, metrics, delegated = parent.store, parent.witness, parent.metrics, parent.delegated

    @app.post(
        routes.WITNESS_ADD_CHECKPOINT,
        response_class=PlainTextResponse,
        tags=["anchoring"],
        responses=om.witness_answers(SIZE_CONTENT_TYPE),
        openapi_extra=om.request_body("text/plain", "tlog-witness: old size, proof, checkpoint"),
    )
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness add-checkpoint for this node's child logs; a new checkpoint is anchored."""
        now_s = int(time.time())
        await run_in_threadpool(delegated.refresh)  # the children as of the latest published view
        body, answer = await witness_http.serve(witness, request, now_s)
        origin = _origin(body)
        # Labels only for configured children, so a stranger cannot mint label values.
        known = origin if origin is not None and origin in witness.logs else "?"
        metrics.answers.labels(child=known, status=str(answer.status)).inc()
        if answer.status == 200 and known != "?":
            size, _ = await run_in_threadpool(store.get, known)
            metrics.cosigned_size.labels(child=known).set(size)
            metrics.last_cosigned.labels(child=known).set(now_s)
        elif witness_http.is_refusal(answer):
            refusals.warning(
                f"{known}:{answer.status}", "refused add-checkpoint from %s (%d): %s",
                known, answer.status, answer.body.decode().strip(),
            )  # fmt: skip
            if known != "?" and answer.status == 409:
                forked = await run_in_threadpool(store.forked, known)
                metrics.forked.labels(child=known).set(1 if forked else 0)
        return witness_http.http_response(answer)

    @app.get(
        routes.ANCHORS, tags=["anchoring"], responses={200: {"model": om.AnchorAnswer}, **om.errors(404, 503)}
    )
    def anchors(origin: str, size: int | None = None) -> dict[str, Any]:
        """The newest anchor of child log ``origin`` in this log at ``size`` (default: the latest
        published checkpoint), with fork evidence; a pointer for ``edgeroot verify anchor``."""
        published = node.view().size
        delegated.refresh()
        covered = published if size is None else min(size, published)
        return store.answer(origin, covered)


def _origin(body: bytes) -> str | None:
    """The checkpoint origin in an add-checkpoint body (for labels only; never trusted)."""
    _, _, note = body.partition(b"\n\n")
    line = note.split(b"\n", 1)[0]
    try:
        return line.decode("ascii") if line else None
    except UnicodeDecodeError:
        return None


def build(
    state: Path,
    origin: str,
    db: Database,
    node: RootNode,
    *,
    children: Sequence[ChildConfig],
    registry: CollectorRegistry,
) -> ParentWitness:
    """The parent's witness over its database, with its key (created on first start), following the
    ``[[child]]`` tables and the node's delegations."""
    logs = ChildLogs.from_config(children)
    store = AnchorStore(db, logs)
    witness = Witness(ensure_witness_key(state, origin).cosigner(), [], store)
    witness.logs = logs
    # Each child's hash (D-064): an SM3 child's checkpoints are checked with SM3, and one declaring
    # another hash than its [[child]] table (or its delegated policy's log-hash line) says is refused.
    witness.suites = logs.suites
    return ParentWitness(store, witness, AnchorMetrics(registry), DelegatedChildren(db, node, logs, witness))
