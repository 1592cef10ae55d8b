"""The root node's read and write operations, independent of HTTP (the API module is a thin shell).

Reads are answered as of the latest *published* checkpoint (signed, and through its witness round),
so every answer comes with a proof a client can check against that checkpoint. Everything such an
answer shares (the checkpoint and its bytes, the map as an immutable :class:`MapSnapshot` with the
records, the map head and its receipt) is one :class:`PublishedView`, built in a worker thread by
:meth:`RootNode.follow` when a checkpoint is published and swapped in by one assignment. A current
resolution reads only that view: no lock, no database, no waiting for the next view to be built.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from chain_lite import b64, merkle
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from chain_lite.errors import IdentifierError
from chain_lite.log_leaf import MapHead, parse_leaf
from chain_lite.receipt import Receipt
from chain_lite.registry import PREFIX_HANDLE_PREFIX, Delegation, Record, canonical_identifier, prefix_handle
from chain_lite.resolution import PrefixProof, ResolutionProof, home_prefixes
from chain_lite.suite import HashSuite
from resolver import block_intake, registry
from resolver.db import Database, Tx
from resolver.errors import (
    BadRequest,
    InvalidHandle,
    NotFound,
    NotYetPublished,
    StorageError,
    ViewBehind,
)
from resolver.log_store import TxNodeStore, latest_checkpoint_bytes, leaf_at, receipt_for
from resolver.map_state import AsOfCache, MapSnapshot
from resolver.published_marker import PublishedMarker
from resolver.tiles import TILE_HEIGHT, TILE_WIDTH, TilePath, bundle
from runtime.clock import now_ms

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.1
"""How often the view looks for a checkpoint published by another process sharing the database; a
publication by this process's own sequencer wakes it at once (:meth:`RootNode.wake`)."""


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""An encoded HTTP answer: status, raw headers, body (exactly the bytes sent)."""
PREFIX_PROOFS_PER_VIEW = 4096
"""How many prefixes' proofs one view keeps (any client may ask under made-up prefixes)."""
ANSWER_CACHE_BYTES = 32 * 1024 * 1024
"""What one view keeps of encoded answers (about 15,000 resolutions with proof at 100k ids)."""


class AnswerCache:
    """Encoded answers of one view, by request (path and query), least recently used out first, bounded
    by their total size. Only the event loop uses it (no lock)."""

    def __init__(self, max_bytes: int = ANSWER_CACHE_BYTES) -> None:
        self._answers: OrderedDict[bytes, Answer] = OrderedDict()
        self._max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: bytes) -> Answer | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, key: bytes, answer: Answer) -> None:
        size = len(key) + len(answer[2])
        if size > self._max_bytes or key in self._answers:
            return
        self._answers[key] = answer
        self.bytes += size
        while self.bytes > self._max_bytes:
            old_key, old = self._answers.popitem(last=False)
            self.bytes -= len(old_key) + len(old[2])

    def __len__(self) -> int:
        return len(self._answers)


@dataclass(frozen=True, slots=True)
class PublishedView:
    """What every answer as of one published checkpoint shares, built once and never changed.

    The node swaps its reference to a new view in one assignment, so an answer built from one view
    (record, map proof, map head, receipt, checkpoint) never mixes two checkpoints.
    """

    checkpoint: SignedCheckpoint
    checkpoint_bytes: bytes
    map: MapSnapshot
    map_head: bytes
    receipt: Receipt
    # Shared by every answer as of this checkpoint, encoded once.
    map_head_b64: str
    receipt_text: str
    # Encoded answers as of this checkpoint (resolver.fast_reads): a new view starts empty, and since
    # the view never changes an entry never goes stale.
    answers: AnswerCache = field(default_factory=AnswerCache, compare=False, repr=False)
    # The proofs of prefix records as of this checkpoint, by prefix: every answer under a prefix carries
    # the same ones (D-076), so each is computed once per view (by the event loop; a race computes one
    # twice, with the same result).
    prefix_proofs: dict[str, PrefixProof] = field(default_factory=dict, compare=False, repr=False)
    # The same proofs as the chain every identifier under one prefix carries (``P/S`` by ``P``), so an
    # answer takes them in one look-up.
    prefix_chains: dict[str, tuple[PrefixProof, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return self.checkpoint.checkpoint.size

    @property
    def suite(self) -> HashSuite:
        """The log's hash profile, as its own signed checkpoint declares it."""
        return self.checkpoint.checkpoint.suite


@dataclass(frozen=True, slots=True)
class Resolution:
    identifier: str
    record: Record | None
    proof: ResolutionProof
    epoch: int
    map_head_b64: str
    receipt_text: str

    @property
    def prefixes(self) -> tuple[PrefixProof, ...]:
        return self.proof.prefixes or ()

    def referral(self) -> Delegation | None:
        """The delegation this node's own registry points to for the identifier (the shortest delegated
        prefix of its chain), or ``None`` when it answers for it. Records the node accepted carry only
        well-formed delegations (:func:`resolver.registry.check_and_apply`)."""
        for p in self.prefixes:
            if p.record is not None:
                delegation = _delegation_in(p.record)
                if delegation is not None:
                    return delegation
        return None


@functools.lru_cache(maxsize=1024)
def _delegation_in(record: bytes) -> Delegation | None:
    """The delegation a prefix record's bytes carry: decoded once per distinct record, not per answer
    (a delegation's policy is parsed to check it)."""
    return Record.decode(record).delegation()


class RootNode:
    """Reads answered from the current :class:`PublishedView` (no lock, no database for the current
    map), writes and proofs from the database. :meth:`follow` keeps the view current."""

    def __init__(
        self,
        db: Database,
        origin: str,
        *,
        identifier_bases: tuple[str, ...] = (DEFAULT_IDENTIFIER_BASE,),
        marker: PublishedMarker | None = None,
    ) -> None:
        self.db = db
        self.origin = origin
        self.identifier_bases = identifier_bases
        """Where edgeroot identifiers stand in EPCIS events (decisions D-068): the EPCIS routes' keys."""
        self._as_of = AsOfCache()
        self._view: PublishedView | None = None
        # Serialises builders of the next view (the follower, a test); readers never take it.
        self._refresh_lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self.marker = marker
        """Shared with the other workers of ``root run --workers N`` (:mod:`resolver.published_marker`);
        ``None`` when this process serves alone."""
        self._catching_up: asyncio.Future[bool] | None = None

    # --- writes ------------------------------------------------------------------------------------------

    def write(self, raw: bytes) -> registry.Accepted:
        return registry.submit_write(self.db, raw, origin=self.origin, now_ms=now_ms())

    def submit_blocks(
        self, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]
    ) -> tuple[list[block_intake.BlockResult], Exception | None]:
        return block_intake.submit_blocks(self.db, blocks, now_ms=now_ms())

    # --- the published view --------------------------------------------------------------------------------

    def view(self) -> PublishedView:
        """The current published view: one attribute read, safe from any thread, never blocks."""
        view = self._view
        if view is None:
            raise NotYetPublished("the log has no published checkpoint yet")
        return view

    def refresh(self) -> bool:
        """Build the view of the latest published checkpoint if it changed, and swap it in; ``True`` if
        it did. Blocking (database, and the map moved forward): call it from a worker thread."""
        with self._refresh_lock, self.db.transaction(write=False) as tx:
            note = latest_checkpoint_bytes(tx)
            current = self._view
            if note is None or (current is not None and note == current.checkpoint_bytes):
                return False
            view = self._build(tx, note, current)
            if self.marker is not None:
                # Before the swap: once any worker answers from this view, every worker knows its size.
                self.marker.raise_to(view.size)
            # The one swap (under the builders' lock, so a slower builder cannot put back an older view):
            # readers see the old view or the new one, never a mix.
            self._view = view
        return True

    async def caught_up(self) -> None:
        """Make sure the view is not older than one another worker of this node already serves (a memory
        read when it is not; see :mod:`resolver.published_marker`); a no-op for a node serving alone.

        When behind, the view is refreshed in a worker thread, one refresh shared by the requests that
        wait. A refresh that started after the marker was read sees the marker's checkpoint (it was
        committed before the marker moved), so two refreshes suffice; :class:`ViewBehind` (503) if the
        view is still behind after them (the database failed), rather than an older answer.
        """
        marker = self.marker
        if marker is None:
            return
        target = marker.size
        if target == 0:
            return  # nothing served yet by any worker: view() says "no published checkpoint yet"
        for _ in range(2):
            view = self._view
            if view is not None and view.size >= target:
                return
            task = self._catching_up
            if task is None or task.done():
                # The database and the map: a worker thread, as the follower does it.
                task = self._catching_up = asyncio.ensure_future(asyncio.to_thread(self.refresh))
            try:
                await asyncio.shield(task)
            except Exception as exc:
                raise ViewBehind(f"cannot move the published view to log size {target}: {exc}") from exc
        view = self._view
        if view is None or view.size < target:
            raise ViewBehind(f"the published view is behind log size {target}, which this node has served")

    def _build(self, tx: Tx, note: bytes, current: PublishedView | None) -> PublishedView:
        cp = SignedCheckpoint.parse(note)
        size = cp.checkpoint.size
        head_leaf = leaf_at(tx, size - 1)
        head = parse_leaf(head_leaf)
        if not isinstance(head, MapHead):
            raise StorageError(f"leaf {size - 1} is not a map head: the log is corrupt")
        suite = cp.checkpoint.suite
        if current is None or size < current.size:
            snapshot = MapSnapshot.as_of(tx, size, suite=suite)
        else:
            snapshot = current.map.advanced(tx, size)  # shares every untouched subtree with the old map
        if snapshot.root() != head.root:
            log.error("in-memory map disagrees with the logged map head at %d; rebuilding", size)
            snapshot = MapSnapshot.as_of(tx, size, suite=suite)
            if snapshot.root() != head.root:
                raise StorageError(f"history does not reproduce the map head at log size {size}")
        receipt = receipt_for(tx, size - 1, cp)
        text = receipt.to_bytes().decode()
        return PublishedView(cp, note, snapshot, head_leaf, receipt, b64.encode(head_leaf), text)

    def wake(self) -> None:
        """A checkpoint was just published (by this process's sequencer): refresh the view now.
        Call it on the event loop that runs :meth:`follow`."""
        if self._wake is not None:
            self._wake.set()

    async def follow(self, stop: asyncio.Event, poll_s: float = POLL_INTERVAL_S) -> None:
        """Keep the view current until ``stop`` is set (then call :meth:`wake`): refresh when woken, and
        every ``poll_s`` for checkpoints published by another process. On a database failure the old
        view keeps serving and the next round retries."""
        self._wake = wake = asyncio.Event()
        failing = False
        while not stop.is_set():
            wake.clear()
            try:
                # Reading the checkpoint and moving the map forward block: a worker thread does it,
                # and handlers keep answering from the current view meanwhile. asyncio's executor, not
                # the request handlers' thread pool, so a long rebuild never holds a handler's thread.
                await asyncio.to_thread(self.refresh)
            except Exception:
                # A database outage or a bug: keep serving the old view, say so once, retry next round.
                if not failing:
                    log.exception("cannot refresh the published view; still serving the old one")
                failing = True
            else:
                if failing:
                    log.info("published view refreshed again")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_s)
        self._wake = None

    # --- reads ---------------------------------------------------------------------------------------------

    @staticmethod
    def canonical(identifier: str) -> str:
        try:
            return canonical_identifier(identifier)
        except IdentifierError as exc:
            raise InvalidHandle(str(exc)) from exc

    def resolve(self, identifier: str, at: int | None = None) -> Resolution:
        """The record as of the published checkpoint (from the view, no database), or, with ``at``
        below it, as of the newest checkpoint within the first ``at`` leaves (database: call it from a
        worker thread)."""
        ident = self.canonical(identifier)
        view = self.view()
        if at is None or at >= view.size:
            return self._current(view, ident)
        with self.db.transaction(write=False) as tx:
            epoch, head_leaf = self._map_head_before(tx, at)
            snapshot = self._as_of.get(tx, epoch, view.suite)
            proof = snapshot.prove(ident)
            record = self._record_at(tx, ident, epoch)
            prefixes = tuple(
                PrefixProof(p, self._record_at(tx, handle, epoch), snapshot.prove(handle).to_bytes())
                for p, handle in ((p, prefix_handle(p)) for p in home_prefixes(ident))
            )
            receipt = receipt_for(tx, epoch - 1, view.checkpoint)
        return self._resolution(
            ident,
            record,
            proof.to_bytes(),
            epoch,
            head_leaf,
            receipt,
            b64.encode(head_leaf),
            receipt.to_bytes().decode(),
            prefixes,
        )

    def resolve_in(self, view: PublishedView, identifier: str) -> Resolution:
        """The record as of ``view`` (memory only): the answer :meth:`resolve` gives while ``view`` is the
        current one, for a caller that must know which view it came from (to cache it there)."""
        return self._current(view, self.canonical(identifier))

    def _current(self, view: PublishedView, ident: str) -> Resolution:
        record, proof = view.map.record_and_proof(ident)
        return self._resolution(
            ident, record, proof.to_bytes(), view.size, view.map_head, view.receipt,
            view.map_head_b64, view.receipt_text, self._prefix_chain(view, ident),
        )  # fmt: skip

    @staticmethod
    def _prefix_chain(view: PublishedView, ident: str) -> tuple[PrefixProof, ...]:
        """The proofs of :func:`home_prefixes` of ``ident`` as of ``view``, each computed once per view.
        For ``P/S`` they depend on ``P`` alone (for a prefix record ``0.na/Q``, on ``Q``)."""
        home = ident.partition("/")[0]
        chain = None if home == PREFIX_HANDLE_PREFIX else view.prefix_chains.get(home)
        if chain is not None:
            return chain
        prefixes = []
        for p in home_prefixes(ident):
            known = view.prefix_proofs.get(p)
            if known is None:
                prefix_record, prefix_proof = view.map.record_and_proof(prefix_handle(p))
                known = PrefixProof(p, prefix_record, prefix_proof.to_bytes())
                if len(view.prefix_proofs) < PREFIX_PROOFS_PER_VIEW:  # asked prefixes are the client's choice
                    view.prefix_proofs[p] = known
            prefixes.append(known)
        chain = tuple(prefixes)
        if home != PREFIX_HANDLE_PREFIX and len(view.prefix_chains) < PREFIX_PROOFS_PER_VIEW:
            view.prefix_chains[home] = chain
        return chain

    @staticmethod
    def _resolution(  # noqa: PLR0917 (the answer's parts, each from the view or the database)
        ident: str, record: bytes | None, map_proof: bytes, epoch: int, head_leaf: bytes, receipt: Receipt,
        head_b64: str, receipt_text: str, prefixes: tuple[PrefixProof, ...],
    ) -> Resolution:  # fmt: skip
        return Resolution(
            ident,
            # ident is canonical (the map key it was found under is its hash): compared, not recomputed.
            None if record is None else Record.decode(record, identifier=ident),
            ResolutionProof(ident, record, map_proof, head_leaf, receipt, prefixes),
            epoch,
            head_b64,
            receipt_text,
        )

    @staticmethod
    def _record_at(tx: Tx, ident: str, size: int) -> bytes | None:
        row = tx.one(
            "SELECT record FROM history WHERE identifier = ? AND idx < ? ORDER BY idx DESC LIMIT 1",
            (ident, size),
        )
        return None if row is None or row[0] is None else bytes(row[0])

    @staticmethod
    def _map_head_before(tx: Tx, at: int) -> tuple[int, bytes]:
        """The newest checkpointed map head within the first ``at`` leaves: (its epoch, its leaf)."""
        row = tx.one("SELECT size FROM checkpoints WHERE size <= ? ORDER BY size DESC LIMIT 1", (at,))
        if row is None:
            raise NotFound(f"no checkpoint at or below log size {at}")
        epoch = int(row[0])
        return epoch, leaf_at(tx, epoch - 1)

    def history(self, identifier: str) -> list[tuple[int, Record | None]]:
        ident = self.canonical(identifier)
        size = self.view().size
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT idx, record FROM history WHERE identifier = ? AND idx < ? ORDER BY idx", (ident, size)
            )
        return [(int(i), None if r is None else Record.decode(bytes(r))) for i, r in rows]

    def block(self, block_id: bytes) -> tuple[str, int, int | None, Receipt | None]:
        """(gateway, height, log index or None, receipt or None) of an accepted block."""
        view = self.view()
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT gateway, height, idx FROM blocks WHERE block_id = ?", (block_id,))
            if row is None:
                raise NotFound(f"no block {block_id.hex()} has been accepted")
            gateway, height, idx = str(row[0]), int(row[1]), None if row[2] is None else int(row[2])
            receipt = None
            if idx is not None and idx < view.size:
                receipt = receipt_for(tx, idx, view.checkpoint)
        return gateway, height, idx, receipt

    def blocks_in_window(
        self, gateway: str, from_ms: int, to_ms: int, *, after: int = -1, limit: int = 64
    ) -> tuple[list[tuple[block_intake.WindowBlock, Receipt | None]], int | None]:
        """The gateway's blocks covering ``[from_ms, to_ms)`` (:func:`block_intake.blocks_in_window`),
        each with its receipt against the published checkpoint (None until sequenced into it), and the
        height to continue after. ``gateway`` is canonical."""
        view = self.view()
        with self.db.transaction(write=False) as tx:
            found, after_height = block_intake.blocks_in_window(
                tx, gateway, from_ms, to_ms, after=after, limit=limit
            )
            out = [
                (b, None if b.log_index is None or b.log_index >= view.size
                 else receipt_for(tx, b.log_index, view.checkpoint))
                for b in found
            ]  # fmt: skip
        return out, after_height

    def gateway_head(self, gateway: str) -> tuple[int, bytes] | None:
        with self.db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT height, block_id FROM blocks WHERE gateway = ? ORDER BY height DESC LIMIT 1",
                (gateway,),
            )
        return None if row is None else (int(row[0]), bytes(row[1]))

    def consistency(self, old: int, new: int) -> list[bytes]:
        view = self.view()
        size = view.size
        if not 0 <= old <= new <= size:
            raise BadRequest(f"need 0 <= old <= new <= {size} (the published size)")
        if old in (0, new):
            return []
        with self.db.transaction(write=False) as tx:
            return merkle.consistency_proof(old, new, TxNodeStore(tx), suite=view.suite)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        view = self.view()
        published = view.size
        if not 0 <= index < size <= published:
            raise BadRequest(f"need 0 <= index < size <= {published} (the published size)")
        with self.db.transaction(write=False) as tx:
            return merkle.inclusion_proof(index, size, TxNodeStore(tx), suite=view.suite)

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.view().size:
            raise NotFound(f"no published leaf at index {index}")
        with self.db.transaction(write=False) as tx:
            return leaf_at(tx, index)

    def tile(self, path: TilePath, view: PublishedView | None = None) -> bytes:
        """A tile or entry bundle within ``view``'s tree (default: the current view)."""
        size = (view or self.view()).size
        first = path.index * TILE_WIDTH
        with self.db.transaction(write=False) as tx:
            if path.level is None:
                if first + path.width > size:
                    raise NotFound("entry bundle beyond the published tree")
                rows = tx.all(
                    "SELECT leaf FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                    (first, first + path.width),
                )
                return bundle([bytes(r[0]) for r in rows])
            level = path.level * TILE_HEIGHT
            if first + path.width > size >> level:
                raise NotFound("tile beyond the published tree")
            rows = tx.all(
                "SELECT hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (level, first, first + path.width),
            )
        if len(rows) != path.width:
            raise StorageError(f"node store lacks hashes of tile {path}")
        return b"".join(bytes(r[0]) for r in rows)
