"""The verifiable map as of some log size, rebuilt from the ``history`` table and kept current.

``history`` holds one row per registry change: ``(identifier, log index, record or NULL)``. The map as
of log size ``S`` maps H(identifier) to H(record) for each identifier's latest row below ``S`` (a NULL
record means deleted), where H is the log's hash profile (SHA-256, or SM3 in an SM3 log). The
sequencer and every API process derive the same map from the same rows; only the sequencer writes them.

Two shapes of the same map (same root, same proofs as :class:`chain_lite.sparse_map.SparseMap`):

* :class:`MapState`, mutable, over :class:`chain_lite.sparse_map.SparseMap` and decoding each record:
  the slow reference the tests cross-check the other against;
* :class:`MapSnapshot`, immutable and persistent: moving it forward builds a new snapshot that shares
  every untouched subtree with the old one (O(changes x depth), never O(map size)). The API answers
  from a snapshot while the next one is built in a worker thread, so readers need no lock and never
  see a half-applied batch.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from typing import cast

from chain_lite.epcis_capture import INDEX_KEY_PREFIX
from chain_lite.registry import Record
from chain_lite.sparse_map import (
    EMPTY,
    HASH_SIZE,
    KEY_BITS,
    MapProof,
    SparseMap,
    leaf_hash,
    map_key,
    node_hash,
)
from chain_lite.suite import SHA256, HashSuite
from resolver.db import Row, Tx

_AS_OF_QUERY = (
    "SELECT h.identifier, h.record FROM history h JOIN "
    "(SELECT identifier, MAX(idx) AS m FROM history WHERE idx < ? GROUP BY identifier) x "
    "ON h.identifier = x.identifier AND h.idx = x.m"
)
_CHANGES_QUERY = "SELECT identifier, record FROM history WHERE idx >= ? AND idx < ? ORDER BY idx"


def value_of(record: bytes | None, suite: HashSuite = SHA256) -> bytes | None:
    """The map value of a record's bytes (H of its encoding; ``Record.value_hash`` for SHA-256): hashed
    straight from the bytes, which the sequencer wrote from ``Record.encode()``, not decoded again."""
    return None if record is None else suite.digest(record)


class MapState:
    """A :class:`SparseMap` moved forward change by change: the reference for :class:`MapSnapshot`."""

    def __init__(self, suite: HashSuite = SHA256) -> None:
        self.suite = suite
        self.map = SparseMap(suite=suite)
        self.size = 0

    @classmethod
    def as_of(cls, tx: Tx, size: int, suite: HashSuite = SHA256) -> MapState:
        state = cls(suite)
        entries = {}
        for identifier, record in tx.all(_AS_OF_QUERY, (size,)):
            if record is not None:
                data = bytes(record)
                if not identifier.startswith(INDEX_KEY_PREFIX):  # EPCIS index entries are no records (D-070)
                    data = Record.decode(data).encode()  # the reference decodes each record
                entries[map_key(identifier, suite=suite)] = suite.digest(data)
        state.map = SparseMap(entries, suite=suite)
        state.size = size
        return state

    def apply(self, identifier: str, record: bytes | None) -> None:
        self.map.set(map_key(identifier, suite=self.suite), value_of(record, self.suite))

    def root(self) -> bytes:
        return self.map.root()

    def __len__(self) -> int:
        return len(self.map)


# --- the persistent map -------------------------------------------------------------------------------------


class _Leaf:
    """A subtree holding exactly one entry; ``record`` is the record's bytes when the snapshot keeps them."""

    __slots__ = ("hash", "key", "record", "value")

    def __init__(self, key: bytes, value: bytes, record: bytes | None, suite: HashSuite) -> None:
        self.key = key
        self.value = value
        self.record = record
        self.hash = leaf_hash(key, value, suite=suite)


class _Branch:
    """A subtree holding two or more entries; a side without entries is ``None``."""

    __slots__ = ("hash", "left", "right")

    def __init__(self, left: _Tree, right: _Tree, suite: HashSuite) -> None:
        self.left = left
        self.right = right
        self.hash = node_hash(_hash(left), _hash(right), suite=suite)


_Tree = _Leaf | _Branch | None


def _hash(tree: _Tree) -> bytes:
    return EMPTY if tree is None else tree.hash


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def _join(a: _Leaf, b: _Leaf, depth: int, suite: HashSuite) -> _Branch:
    """The subtree at ``depth`` holding two leaves whose keys share at least ``depth`` bits."""
    common = KEY_BITS - (int.from_bytes(a.key, "big") ^ int.from_bytes(b.key, "big")).bit_length()
    tree = _Branch(a, b, suite) if a.key < b.key else _Branch(b, a, suite)
    for d in range(common - 1, depth - 1, -1):  # the shared bits above the split, deepest first
        tree = _Branch(None, tree, suite) if _bit(a.key, d) else _Branch(tree, None, suite)
    return tree


def _set(tree: _Tree, depth: int, key: bytes, leaf: _Leaf | None, suite: HashSuite) -> _Tree:
    """``tree`` (at ``depth``) with ``key`` mapped to ``leaf`` (``None``: removed); ``tree`` is untouched."""
    if tree is None:
        return leaf
    if isinstance(tree, _Leaf):
        if tree.key == key:
            return leaf
        return tree if leaf is None else _join(tree, leaf, depth, suite)
    left, right = tree.left, tree.right
    if _bit(key, depth):
        right = _set(right, depth + 1, key, leaf, suite)
    else:
        left = _set(left, depth + 1, key, leaf, suite)
    if left is tree.left and right is tree.right:
        return tree
    return _branch(left, right, suite)


def _apply(  # noqa: PLR0917 (the recursion's whole state)
    tree: _Tree,
    depth: int,
    keys: Sequence[bytes],
    leaves: Sequence[_Leaf | None],
    lo: int,
    hi: int,
    suite: HashSuite,
) -> _Tree:
    """``tree`` (at ``depth``) with ``keys[lo:hi]`` (sorted, distinct, all under this subtree) mapped to
    ``leaves[lo:hi]``. A batch shares the top of its paths, so each new branch is built (and hashed)
    once per batch rather than once per change."""
    if hi - lo <= 1:
        return tree if hi == lo else _set(tree, depth, keys[lo], leaves[lo], suite)
    prefix = int.from_bytes(keys[lo], "big") >> (KEY_BITS - depth)
    split = (((prefix << 1) | 1) << (KEY_BITS - 1 - depth)).to_bytes(HASH_SIZE, "big")
    mid = bisect_left(keys, split, lo, hi)
    if isinstance(tree, _Branch):
        left, right = tree.left, tree.right
    elif tree is None or _bit(tree.key, depth):
        left, right = None, tree  # a lone leaf (or nothing) goes down the side its key takes
    else:
        left, right = tree, None
    new_left = _apply(left, depth + 1, keys, leaves, lo, mid, suite)
    new_right = _apply(right, depth + 1, keys, leaves, mid, hi, suite)
    if isinstance(tree, _Branch) and new_left is tree.left and new_right is tree.right:
        return tree
    return _branch(new_left, new_right, suite)


def _branch(left: _Tree, right: _Tree, suite: HashSuite) -> _Tree:
    """The subtree with these two sides: a subtree left holding a single entry (one side empty, the
    other a leaf) is that entry's leaf, wherever it sits."""
    if left is None and not isinstance(right, _Branch):
        return right
    if right is None and not isinstance(left, _Branch):
        return left
    return _Branch(left, right, suite)


class MapSnapshot:
    """The map as of one log size; immutable, so any number of threads may read it without a lock."""

    __slots__ = ("_count", "_records", "_tree", "size", "suite")

    def __init__(
        self, tree: _Tree, count: int, size: int, *, records: bool, suite: HashSuite = SHA256
    ) -> None:
        self.suite = suite
        self._tree = tree
        self._count = count
        self._records = records
        self.size = size

    @classmethod
    def as_of(cls, tx: Tx, size: int, *, records: bool = True, suite: HashSuite = SHA256) -> MapSnapshot:
        """Built from ``history`` as of log size ``size`` (``records``: keep each record's bytes),
        hashing with the log's profile ``suite``."""
        leaves = []
        for identifier, record in tx.all(_AS_OF_QUERY, (size,)):
            if record is not None:
                data = bytes(record)
                value = suite.digest(data)  # value_of, without the None case
                key = map_key(identifier, suite=suite)
                leaves.append(_Leaf(key, value, data if records else None, suite))
        leaves.sort(key=lambda leaf: leaf.key)
        keys = [leaf.key for leaf in leaves]
        tree = _apply(None, 0, keys, leaves, 0, len(leaves), suite)
        return cls(tree, len(leaves), size, records=records, suite=suite)

    def with_changes(self, changes: Sequence[Row], size: int) -> MapSnapshot:
        """A new snapshot at log size ``size``: ``changes`` (``(identifier, record or None)`` in log order)
        applied to this one."""
        suite = self.suite
        latest: dict[bytes, _Leaf | None] = {}
        for identifier, raw in changes:  # in log order, so an identifier's last change wins
            key = map_key(identifier, suite=suite)
            if raw is None:
                latest[key] = None
            else:
                data = bytes(raw)
                latest[key] = _Leaf(key, suite.digest(data), data if self._records else None, suite)
        keys = sorted(latest)
        leaves = [latest[key] for key in keys]
        count = self._count
        for key, leaf in zip(keys, leaves, strict=True):
            count += (leaf is not None) - (self._find(self._tree, key) is not None)
        tree = _apply(self._tree, 0, keys, leaves, 0, len(keys), suite)
        return MapSnapshot(tree, count, size, records=self._records, suite=suite)

    def advanced(self, tx: Tx, size: int) -> MapSnapshot:
        """This map moved forward to log size ``size`` by the changes logged in ``[self.size, size)``."""
        if size <= self.size:
            return self
        return self.with_changes(tx.all(_CHANGES_QUERY, (self.size, size)), size)

    @staticmethod
    def _find(tree: _Tree, key: bytes) -> _Leaf | None:
        depth = 0
        while isinstance(tree, _Branch):
            tree = tree.right if _bit(key, depth) else tree.left
            depth += 1
        return tree if tree is not None and tree.key == key else None

    def root(self) -> bytes:
        return _hash(self._tree)

    def _walk(self, identifier: str) -> tuple[_Leaf | None, MapProof]:
        """The identifier's leaf (``None`` when absent) and the map proof of its value or absence."""
        key = map_key(identifier, suite=self.suite)
        siblings: list[bytes] = []
        tree = self._tree
        # Every read walks this loop (about 20 levels at 100,000 entries): the key's bits are taken from
        # one integer, most significant first, and the sibling's hash read inline (_bit and _hash as
        # calls were half of the walk's time).
        bits = int.from_bytes(key, "big")
        shift = KEY_BITS - 1
        while type(tree) is _Branch:
            if (bits >> shift) & 1:
                other, tree = tree.left, tree.right
            else:
                other, tree = tree.right, tree.left
            siblings.append(EMPTY if other is None else other.hash)
            shift -= 1
        leaf = cast("_Leaf | None", tree)  # the loop ends below every branch (mypy cannot see `type() is`)
        terminal = None if leaf is None else (leaf.key, leaf.value)
        own = leaf if leaf is not None and leaf.key == key else None
        return own, MapProof(tuple(siblings), terminal)

    def prove(self, identifier: str) -> MapProof:
        """The map proof of the identifier's value, or of its absence."""
        return self._walk(identifier)[1]

    def record_and_proof(self, identifier: str) -> tuple[bytes | None, MapProof]:
        """The current record's bytes and its map proof, read together (needs ``records``)."""
        assert self._records, "this MapSnapshot was built without records"
        leaf, proof = self._walk(identifier)
        return None if leaf is None else leaf.record, proof

    def __len__(self) -> int:
        return self._count


class AsOfCache:
    """A few historical maps for ``?at=N`` queries, least recently used first out."""

    def __init__(self, capacity: int = 2) -> None:
        self._maps: OrderedDict[int, MapSnapshot] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, tx: Tx, size: int, suite: HashSuite = SHA256) -> MapSnapshot:
        """The map as of ``size`` of a log hashing with ``suite`` (one log per node: one profile)."""
        with self._lock:
            hit = self._maps.get(size)
            if hit is not None:
                self._maps.move_to_end(size)
                return hit
        state = MapSnapshot.as_of(tx, size, records=False, suite=suite)
        with self._lock:
            self._maps[size] = state
            while len(self._maps) > self._capacity:
                self._maps.popitem(last=False)
        return state
