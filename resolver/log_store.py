"""The node's log in the database: Merkle nodes, leaves, checkpoints, and the proofs built from them.

The log's hash profile (SHA-256 or SM3, :mod:`chain_lite.suite`) is fixed when the log is created and
kept in the ``meta`` row ``hash`` (no row: SHA-256, as every log made before profiles existed).
"""

from __future__ import annotations

from collections.abc import Sequence

from chain_lite import merkle
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from chain_lite.merkle import NodeId
from chain_lite.receipt import Receipt
from chain_lite.suite import SHA256, HashSuite, hash_suite
from resolver.db import Tx
from resolver.errors import NotFound, StorageError

_CHUNK = 400  # (level, idx) pairs per query: far below SQLite's 32k bound-parameter limit


class TxNodeStore:
    """:class:`chain_lite.merkle.NodeStore` over the ``nodes`` table, inside one transaction."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    def get_nodes(self, ids: Sequence[NodeId]) -> list[bytes | None]:
        found: dict[NodeId, bytes] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            query = f"SELECT level, idx, hash FROM nodes WHERE {where}"  # noqa: S608 (placeholders only)
            params = [v for node in chunk for v in node]
            for level, idx, h in self._tx.all(query, params):
                found[(int(level), int(idx))] = bytes(h)
        return [found.get(node) for node in ids]

    def put_nodes(self, nodes: Sequence[tuple[NodeId, bytes]]) -> None:
        self._tx.executemany(
            "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?) ON CONFLICT (level, idx) DO NOTHING",
            [(level, idx, h) for (level, idx), h in nodes],
        )


def tree_size(tx: Tx) -> int:
    row = tx.one("SELECT value FROM meta WHERE key = 'tree_size'")
    return 0 if row is None else int(row[0])


def log_suite(tx: Tx) -> HashSuite:
    """The hash profile this log was created with."""
    row = tx.one("SELECT value FROM meta WHERE key = 'hash'")
    if row is None:
        return SHA256
    try:
        return hash_suite(str(row[0]))
    except ChainError as exc:
        raise StorageError(f"the database's log hash: {exc}") from exc


def set_log_suite(tx: Tx, suite: HashSuite) -> None:
    """Fix the log's hash profile. Only an empty log takes one; a profile never changes afterwards
    (a new profile means a new log)."""
    current = log_suite(tx)
    if current is suite:
        return
    if tree_size(tx) or tx.one("SELECT 1 FROM pending LIMIT 1") is not None:
        raise StorageError(f"this log hashes with {current.name}; a log's hash never changes")
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('hash', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (suite.name,),
    )


def latest_checkpoint_bytes(tx: Tx, *, published_only: bool = True) -> bytes | None:
    """The latest (published) checkpoint as stored, unparsed: cheap to compare with a known one."""
    if published_only:
        row = tx.one("SELECT note FROM checkpoints WHERE published = 1 ORDER BY size DESC LIMIT 1")
    else:
        row = tx.one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
    return None if row is None else bytes(row[0])


def latest_checkpoint(tx: Tx, *, published_only: bool = True) -> SignedCheckpoint | None:
    note = latest_checkpoint_bytes(tx, published_only=published_only)
    return None if note is None else SignedCheckpoint.parse(note)


def checkpoint_at(tx: Tx, size: int) -> SignedCheckpoint | None:
    row = tx.one("SELECT note FROM checkpoints WHERE size = ?", (size,))
    return None if row is None else SignedCheckpoint.parse(bytes(row[0]))


def leaf_at(tx: Tx, index: int) -> bytes:
    row = tx.one("SELECT leaf FROM leaves WHERE idx = ?", (index,))
    if row is None:
        raise NotFound(f"no log leaf at index {index}")
    return bytes(row[0])


def receipt_for(tx: Tx, index: int, checkpoint: SignedCheckpoint) -> Receipt:
    """A C2SP tlog-proof for the leaf at ``index`` against ``checkpoint`` (hashed with its profile)."""
    size = checkpoint.checkpoint.size
    if index >= size:
        raise NotFound(f"leaf {index} is not yet covered by a published checkpoint (size {size})")
    proof = merkle.inclusion_proof(index, size, TxNodeStore(tx), suite=checkpoint.checkpoint.suite)
    return Receipt(index, tuple(proof), checkpoint)


def consistency(tx: Tx, size1: int, size2: int) -> list[bytes]:
    return merkle.consistency_proof(size1, size2, TxNodeStore(tx), suite=log_suite(tx))
