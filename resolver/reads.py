"""The root node's read and write operations, independent of HTTP (the API module is a thin shell).

Reads are answered as of the latest *published* checkpoint (signed, and through its witness round),
so every answer comes with a proof a client can check against that checkpoint. The published map is
held in memory (:class:`MapState`) and moved forward from ``history`` as checkpoints are published;
the map head's receipt is computed once per checkpoint and shared by every answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from chain_lite import b64, merkle
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import IdentifierError
from chain_lite.log_leaf import MapHead, parse_leaf
from chain_lite.receipt import Receipt
from chain_lite.registry import Record, canonical_identifier
from chain_lite.resolution import ResolutionProof
from chain_lite.sparse_map import MapProof
from resolver import block_intake, registry
from resolver.db import Database, Tx
from resolver.errors import BadRequest, InvalidHandle, NotFound, NotYetPublished, StorageError
from resolver.log_store import TxNodeStore, latest_checkpoint, leaf_at, receipt_for
from resolver.map_state import AsOfCache, MapState
from resolver.tiles import TILE_HEIGHT, TILE_WIDTH, TilePath, bundle

log = logging.getLogger(__name__)
REFRESH_INTERVAL_S = 0.05


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Published:
    checkpoint: SignedCheckpoint
    map_head: bytes
    receipt: Receipt
    # Shared by every answer as of this checkpoint, encoded once.
    map_head_b64: str
    receipt_text: str


@dataclass(frozen=True, slots=True)
class Resolution:
    identifier: str
    record: Record | None
    proof: ResolutionProof
    epoch: int
    map_head_b64: str
    receipt_text: str


class RootNode:
    def __init__(self, db: Database, origin: str) -> None:
        self.db = db
        self.origin = origin
        self.map = MapState(keep_records=True)
        self._as_of = AsOfCache()
        self._published: _Published | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    # --- writes ------------------------------------------------------------------------------------------

    def write(self, raw: bytes) -> registry.Accepted:
        return registry.submit_write(self.db, raw, origin=self.origin, now_ms=now_ms())

    def submit_blocks(
        self, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]
    ) -> tuple[list[block_intake.BlockResult], Exception | None]:
        return block_intake.submit_blocks(self.db, blocks, now_ms=now_ms())

    # --- the published view --------------------------------------------------------------------------------

    def published(self) -> _Published:
        """The latest published checkpoint, with the map moved up to it."""
        now = time.monotonic()
        current = self._published
        if current is not None and now - self._checked_at < REFRESH_INTERVAL_S:
            return current
        with self._lock:
            if self._published is not None and time.monotonic() - self._checked_at < REFRESH_INTERVAL_S:
                return self._published
            with self.db.transaction(write=False) as tx:
                cp = latest_checkpoint(tx)
                if cp is None:
                    raise NotYetPublished("the log has no published checkpoint yet")
                if self._published is None or cp.to_bytes() != self._published.checkpoint.to_bytes():
                    self._published = self._load(tx, cp)
            self._checked_at = time.monotonic()
            return self._published

    def _load(self, tx: Tx, cp: SignedCheckpoint) -> _Published:
        size = cp.checkpoint.size
        head_leaf = leaf_at(tx, size - 1)
        head = parse_leaf(head_leaf)
        if not isinstance(head, MapHead):
            raise StorageError(f"leaf {size - 1} is not a map head: the log is corrupt")
        if size < self.map.size:
            self.map = MapState.as_of(tx, size, keep_records=True)
        self.map.advance(tx, size)
        if self.map.root() != head.root:
            log.error("in-memory map disagrees with the logged map head at %d; rebuilding", size)
            self.map = MapState.as_of(tx, size, keep_records=True)
            if self.map.root() != head.root:
                raise StorageError(f"history does not reproduce the map head at log size {size}")
        receipt = receipt_for(tx, size - 1, cp)
        return _Published(cp, head_leaf, receipt, b64.encode(head_leaf), receipt.to_bytes().decode())

    # --- reads ---------------------------------------------------------------------------------------------

    @staticmethod
    def canonical(identifier: str) -> str:
        try:
            return canonical_identifier(identifier)
        except IdentifierError as exc:
            raise InvalidHandle(str(exc)) from exc

    def resolve(self, identifier: str, at: int | None = None) -> Resolution:
        ident = self.canonical(identifier)
        pub = self.published()
        size = pub.checkpoint.checkpoint.size
        if at is None or at >= size:
            current = self._current(ident, pub)
            while current is None:  # another thread moved the map on; answer as of the newer checkpoint
                pub = self.published()
                current = self._current(ident, pub)
            record, proof = current
            head_leaf, receipt, epoch = pub.map_head, pub.receipt, pub.checkpoint.checkpoint.size
            head_b64, receipt_text = pub.map_head_b64, pub.receipt_text
        else:
            with self.db.transaction(write=False) as tx:
                epoch, head_leaf = self._map_head_before(tx, at)
                state = self._as_of.get(tx, epoch)
                _, proof = state.root_and_proof(ident)
                record = self._record_at(tx, ident, epoch)
                receipt = receipt_for(tx, epoch - 1, pub.checkpoint)
            head_b64, receipt_text = b64.encode(head_leaf), receipt.to_bytes().decode()
        return Resolution(
            ident,
            None if record is None else Record.decode(record),
            ResolutionProof(ident, record, proof.to_bytes(), head_leaf, receipt),
            epoch,
            head_b64,
            receipt_text,
        )

    def _current(self, ident: str, pub: _Published) -> tuple[bytes | None, MapProof] | None:
        """Record and map proof as of ``pub``, from memory; ``None`` if the map has moved past it."""
        with self._lock:
            if self._published is not pub:
                return None
            return self.map.record_and_proof(ident)

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
        size = self.published().checkpoint.checkpoint.size
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT idx, record FROM history WHERE identifier = ? AND idx < ? ORDER BY idx", (ident, size)
            )
        return [(int(i), None if r is None else Record.decode(bytes(r))) for i, r in rows]

    def block(self, block_id: bytes) -> tuple[str, int, int | None, Receipt | None]:
        """(gateway, height, log index or None, receipt or None) of an accepted block."""
        pub = self.published()
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT gateway, height, idx FROM blocks WHERE block_id = ?", (block_id,))
            if row is None:
                raise NotFound(f"no block {block_id.hex()} has been accepted")
            gateway, height, idx = str(row[0]), int(row[1]), None if row[2] is None else int(row[2])
            receipt = None
            if idx is not None and idx < pub.checkpoint.checkpoint.size:
                receipt = receipt_for(tx, idx, pub.checkpoint)
        return gateway, height, idx, receipt

    def gateway_head(self, gateway: str) -> tuple[int, bytes] | None:
        with self.db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT height, block_id FROM blocks WHERE gateway = ? ORDER BY height DESC LIMIT 1",
                (gateway,),
            )
        return None if row is None else (int(row[0]), bytes(row[1]))

    def consistency(self, old: int, new: int) -> list[bytes]:
        size = self.published().checkpoint.checkpoint.size
        if not 0 <= old <= new <= size:
            raise BadRequest(f"need 0 <= old <= new <= {size} (the published size)")
        if old in (0, new):
            return []
        with self.db.transaction(write=False) as tx:
            return merkle.consistency_proof(old, new, TxNodeStore(tx))

    def inclusion(self, index: int, size: int) -> list[bytes]:
        published = self.published().checkpoint.checkpoint.size
        if not 0 <= index < size <= published:
            raise BadRequest(f"need 0 <= index < size <= {published} (the published size)")
        with self.db.transaction(write=False) as tx:
            return merkle.inclusion_proof(index, size, TxNodeStore(tx))

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.published().checkpoint.checkpoint.size:
            raise NotFound(f"no published leaf at index {index}")
        with self.db.transaction(write=False) as tx:
            return leaf_at(tx, index)

    def tile(self, path: TilePath) -> bytes:
        size = self.published().checkpoint.checkpoint.size
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
