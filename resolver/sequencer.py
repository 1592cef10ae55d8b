"""The sequencer: integrates queued leaves in batches, logs the map head, signs one checkpoint a batch.

One batch, in one database transaction:

1. take up to ``max_batch`` queued leaves in arrival order;
2. give each the next log index; registry changes become ``history`` rows and map updates, blocks get
   their index;
3. append a map head leaf as the batch's *last* leaf, so the last leaf of every checkpointed tree is
   the map root as of that tree (a resolution proof is therefore provably current);
4. append everything to the Merkle tree, then **re-verify** a consistency proof from the previous
   signed checkpoint to the new root before signing (a storage fault must never become a signed fork);
5. sign the checkpoint and store it unpublished when witnesses are configured (published otherwise).

Exactly one sequencer runs per database: it holds :class:`SequencerLock` (a PostgreSQL advisory lock,
or an exclusive ``flock`` beside the SQLite file) for as long as it lives.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from typing import Any

import psycopg

from chain_lite import merkle
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint, suite_extensions
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE, EventFacts
from chain_lite.errors import ChainError
from chain_lite.log_leaf import LEAF_ANCHOR, LEAF_BLOCK, LEAF_EPCIS, LEAF_REGISTRY, MapHead
from chain_lite.note import Signer
from resolver import epcis_index, epcis_intake, registry
from resolver.db import Database, Tx
from resolver.errors import ResolverError, StorageError
from resolver.log_store import TxNodeStore, latest_checkpoint, log_suite, tree_size
from resolver.map_state import MapSnapshot

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.25
DEFAULT_MAX_BATCH = 1000
_ADVISORY_LOCK = (
    "SELECT pg_try_advisory_lock("
    "hashtextextended('edgeroot-sequencer:' || coalesce(current_schema(), ''), 0))"
)
"""One sequencer per log: the key is the schema the node's tables live in (its URL's ``search_path``),
so nodes in separate schemas of one database each sequence their own log."""


class SequencerBusy(ResolverError):
    """Another sequencer already holds this database's lock."""


class SequencerLock:
    """Held for the sequencer's lifetime; released on close (or by the OS when the process dies)."""

    def __init__(self, db: Database) -> None:
        self._fd: int | None = None
        self._conn: Any = None
        if db.dialect == "sqlite":
            assert db.path is not None
            self._fd = os.open(f"{db.path}.sequencer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(self._fd)
                raise SequencerBusy(f"another sequencer holds {db.path}.sequencer.lock") from exc
        else:
            try:
                self._conn = psycopg.connect(db.url, autocommit=True)
                row = self._conn.execute(_ADVISORY_LOCK).fetchone()
            except psycopg.Error as exc:
                raise StorageError(f"cannot take the sequencer lock: {exc}") from exc
            if not row or not row[0]:
                self._conn.close()
                raise SequencerBusy("another sequencer holds this schema's advisory lock")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class Batch:
    first_index: int
    leaves: int
    checkpoint: SignedCheckpoint


class Sequencer:
    def __init__(
        self,
        db: Database,
        signer: Signer,
        origin: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        publish: bool,
        identifier_bases: tuple[str, ...] = (DEFAULT_IDENTIFIER_BASE,),
    ) -> None:
        self.db = db
        self.signer = signer
        self.origin = origin
        self.max_batch = max_batch
        self.publish_immediately = publish
        self.identifier_bases = identifier_bases
        self.lock = SequencerLock(db)
        try:
            self.map = self._load_map()
        except BaseException:
            self.lock.close()
            raise

    def _load_map(self) -> MapSnapshot:
        with self.db.transaction(write=False) as tx:
            # The log's hash profile is fixed at creation: read once, used for the tree, map, checkpoints.
            self.suite = log_suite(tx)
            return MapSnapshot.as_of(tx, tree_size(tx), records=False, suite=self.suite)

    def close(self) -> None:
        self.lock.close()

    def integrate(self, now_ms: int) -> Batch | None:
        """Integrate one batch; ``None`` when nothing is queued."""
        with self.db.transaction() as tx:
            done = self._integrate(tx, now_ms)
        if done is None:
            return None
        # Committed: only now does the map move on (it is immutable, so a batch that rolled back
        # leaves the old one exactly as it was).
        batch, self.map = done
        return batch

    def _integrate(self, tx: Tx, now_ms: int) -> tuple[Batch, MapSnapshot] | None:
        rows = tx.all("SELECT id, leaf, ref FROM pending ORDER BY id LIMIT ?", (self.max_batch,))
        if not rows:
            return None
        size = tree_size(tx)
        leaves: list[bytes] = []
        history: list[tuple[str, int, bytes | None]] = []
        block_indexes: list[tuple[int, bytes]] = []
        events: list[tuple[int, EventFacts]] = []
        anchor_indexes: list[tuple[int, bytes]] = []
        for _, raw_leaf, ref in rows:
            leaf = bytes(raw_leaf)
            index = size + len(leaves)
            if leaf[0] == LEAF_REGISTRY:
                identifier, encoded = registry.change_of(leaf)
                history.append((identifier, index, encoded))
            elif leaf[0] == LEAF_BLOCK:
                block_indexes.append((index, bytes(ref)))
            elif leaf[0] == LEAF_EPCIS:
                events.append((index, epcis_intake.facts_of_leaf(leaf, self.identifier_bases)))
            elif leaf[0] == LEAF_ANCHOR:  # ref: the leaf hash (resolver.anchoring)
                anchor_indexes.append((index, bytes(ref)))
            leaves.append(leaf)
        if events:
            # Each mentioned identifier's completeness entry moves on with the event (D-070).
            history.extend(epcis_index.index_changes(tx, events))
        head_index = size + len(leaves)
        # The whole batch in one descent of the map (each new branch hashed once per batch).
        new_map = self.map.with_changes([(identifier, rec) for identifier, _, rec in history], head_index + 1)
        leaves.append(MapHead(head_index + 1, new_map.root(), len(new_map)).leaf())

        tx.executemany(
            "INSERT INTO leaves (idx, leaf, kind) VALUES (?, ?, ?)",
            [(size + i, leaf, leaf[0]) for i, leaf in enumerate(leaves)],
        )
        if history:
            tx.executemany("INSERT INTO history (identifier, idx, record) VALUES (?, ?, ?)", history)
        for index, block_id in block_indexes:
            tx.execute("UPDATE blocks SET idx = ? WHERE block_id = ?", (index, block_id))
        if events:
            tx.executemany(
                "UPDATE epcis_events SET idx = ? WHERE hash_id = ?", [(i, f.hash_id) for i, f in events]
            )
        for index, anchor_hash in anchor_indexes:
            tx.execute("UPDATE anchors SET idx = ? WHERE leaf_hash = ?", (index, anchor_hash))
        tree = merkle.MerkleTree(TxNodeStore(tx), size=size, suite=self.suite)
        tree.append_entries(leaves)
        new_size, new_root = tree.size, tree.root()
        self._check_consistency(tx, tree, new_root)
        checkpoint = Checkpoint(self.origin, new_size, new_root, suite_extensions(self.suite))
        signed = sign_checkpoint(checkpoint, self.signer)
        tx.execute(
            "INSERT INTO checkpoints (size, note, published, created_ms) VALUES (?, ?, ?, ?)",
            (new_size, signed.to_bytes(), 1 if self.publish_immediately else 0, now_ms),
        )
        ids = [row[0] for row in rows]
        tx.execute(f"DELETE FROM pending WHERE id IN ({','.join('?' * len(ids))})", ids)  # noqa: S608
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('tree_size', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(new_size),),
        )
        log.debug("integrated %d leaves at %d..%d", len(leaves), size, new_size - 1)
        return Batch(size, len(leaves), signed), new_map

    def _check_consistency(self, tx: Tx, tree: merkle.MerkleTree, new_root: bytes) -> None:
        previous = latest_checkpoint(tx, published_only=False)
        if previous is None or previous.checkpoint.size == 0:
            return
        old = previous.checkpoint
        try:
            proof = tree.consistency_proof(old.size, tree.size)
            merkle.verify_consistency(old.size, tree.size, proof, old.root, new_root, suite=self.suite)
        except ChainError as exc:
            log.exception("refusing to sign: new tree is not consistent with checkpoint %d", old.size)
            raise StorageError(f"new tree is inconsistent with signed checkpoint {old.size}: {exc}") from exc
