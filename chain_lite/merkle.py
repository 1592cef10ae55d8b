"""RFC 6962 / RFC 9162 Merkle trees: hashing, roots, proofs and an append-only tree.

One implementation serves every tree in edgeroot (a block's readings, the global log).

* Leaf hash ``H(0x00 || data)``, node hash ``H(0x01 || left || right)`` (RFC 9162 §2.1.1), where ``H`` is
  the log's hash profile (:mod:`chain_lite.suite`): SHA-256 by default, SM3 for an SM3 log. Every
  function takes ``suite=``; leaving it out is SHA-256, as RFC 6962 has it.
* A range of leaves splits at the largest power of two smaller than its size.
* Size 0: the root of the empty tree is ``H("")`` (:data:`EMPTY_ROOT` for SHA-256). No leaf is included in it,
  and :func:`verify_consistency` refuses a proof *from* size 0, as RFC 9162 §2.1.4 has no such proof.
  Every tree is trivially consistent with the empty one; callers that accept that (light clients,
  witnesses, as C2SP tlog-witness does for ``old 0``) decide so themselves, with an empty proof.

Node addressing: ``(level, index)`` names the perfect subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 nodes are leaf hashes. Proof generation reads
only such perfect nodes, through :class:`NodeReader`, so any storage can serve proofs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Protocol

from chain_lite.errors import (
    HashSizeError,
    IndexOutOfRange,
    MissingNodes,
    ProofLengthError,
    RootMismatch,
    SizeOrderError,
)
from chain_lite.suite import SHA256, Digest, HashSuite

HASH_SIZE = 32
EMPTY_ROOT = SHA256.empty_root
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_HASH_SIZES = frozenset((HASH_SIZE,))

NodeId = tuple[int, int]
"""``(level, index)`` of a perfect subtree."""


def leaf_hash(data: bytes, *, suite: HashSuite = SHA256) -> bytes:
    """Hash of one leaf's data (RFC 9162 §2.1.1)."""
    return suite.new(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes, *, suite: HashSuite = SHA256) -> bytes:
    """Hash of an interior node from its two children (RFC 9162 §2.1.1)."""
    return suite.new(_NODE_PREFIX + left + right).digest()


@cache
def _prepared(suite: HashSuite) -> tuple[Callable[[], Digest], Callable[[], Digest]]:
    """``copy`` of a hash object fed the leaf prefix, and of one fed the node prefix.

    The hot loops start each hash from such a copy, then ``update`` it with the data, instead of
    concatenating the prefix and the children into a new bytes object for a one-shot hash: measured in
    issue 13, that is cheaper per node in CPython with OpenSSL's SHA-256 and SM3 (D-136). The prepared
    objects are never updated, so every copy starts from the prefix alone, and copying is thread-safe.
    """
    return suite.new(_LEAF_PREFIX).copy, suite.new(_NODE_PREFIX).copy


def _leaf_hashes(entries: Iterable[bytes], leaf: Callable[[], Digest]) -> list[bytes]:
    """Leaf hashes of raw leaf data, in order."""
    out: list[bytes] = []
    append = out.append
    for data in entries:
        h = leaf()
        h.update(data)
        append(h.digest())
    return out


def _pair_up(run: Sequence[bytes], node: Callable[[], Digest]) -> list[bytes]:
    """Node hashes of ``run``'s consecutive pairs, left to right; an odd last hash is left out."""
    out: list[bytes] = []
    append = out.append
    pairs = iter(run)
    # strict=False: the caller deals with an odd node out at the end.
    for left, right in zip(pairs, pairs, strict=False):
        h = node()
        h.update(left)
        h.update(right)
        append(h.digest())
    return out


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes], *, suite: HashSuite = SHA256) -> bytes:
    """Root of the tree over ``hashes`` (already leaf hashes); the empty root when empty."""
    if not hashes:
        return suite.empty_root
    # Bottom-up pairing gives the same tree as the recursive split: an odd node out at the right
    # border is carried up unchanged until it meets its left sibling.
    node = _prepared(suite)[1]
    level = hashes
    while len(level) > 1:
        paired = _pair_up(level, node)
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_of(entries: Iterable[bytes], *, suite: HashSuite = SHA256) -> bytes:
    """Root of the tree whose leaves are ``entries`` (raw leaf data)."""
    return root_from_leaf_hashes(_leaf_hashes(entries, _prepared(suite)[0]), suite=suite)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------------------------------------


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    # One pass over the lengths in C; the loop below only runs to name the offending hash.
    if set(map(len, hashes)) <= _HASH_SIZES:
        return
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise HashSizeError(what, HASH_SIZE, len(h))


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """Split a proof for leaf ``index`` of a ``size`` tree into its inner and border parts.

    ``inner`` hashes lie below the point where the paths to ``index`` and ``size - 1`` part; above it,
    the ``border`` hashes are all left siblings along the right edge of the tree.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], *, suite: HashSuite = SHA256
) -> bytes:
    """The root that ``proof`` yields for leaf hash ``leaf`` at ``index``; needs ``0 <= index < size``."""
    if not 0 <= index < size:
        raise IndexOutOfRange(index, size)
    if len(leaf) != HASH_SIZE:
        raise HashSizeError("leaf hash", HASH_SIZE, len(leaf))
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise ProofLengthError(inner + border, len(proof))
    _check_hashes("proof hash", proof)
    # Hashing in the loop, as in verify_consistency: every receipt a client checks lands here. Bit i of
    # ``left`` says the proof's hash i is a left sibling: below the split, where the index has a 1;
    # above it, every border hash.
    node = _prepared(suite)[1]
    left = (index & ((1 << inner) - 1)) | (((1 << border) - 1) << inner)
    h = leaf
    for sibling in proof:
        step = node()
        if left & 1:
            step.update(sibling)
            step.update(h)
        else:
            step.update(h)
            step.update(sibling)
        h = step.digest()
        left >>= 1
    return h


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes, *, suite: HashSuite = SHA256
) -> None:
    """Raise unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the ``size`` tree with ``root``."""
    computed = root_from_inclusion_proof(index, size, leaf, proof, suite=suite)
    if computed != root:
        raise RootMismatch(root, computed)


def verify_consistency(
    size1: int,
    size2: int,
    proof: Sequence[bytes],
    root1: bytes,
    root2: bytes,
    *,
    suite: HashSuite = SHA256,
) -> None:
    """Raise unless ``proof`` shows the ``size1`` tree (``root1``) is a prefix of the ``size2`` tree.

    Preconditions: ``0 < size1 <= size2``, or ``size1 == size2 == 0`` with both roots the empty root.
    Equal sizes need an empty proof and equal roots.
    """
    if size1 < 0 or size2 < size1:
        raise SizeOrderError(size1, size2, "size2 is smaller than size1")
    if size1 == size2:
        if proof:
            raise ProofLengthError(0, len(proof))
        if size1 == 0 and root1 != suite.empty_root:
            raise RootMismatch(suite.empty_root, root1)
        if root1 != root2:
            raise RootMismatch(root1, root2)
        return
    if size1 == 0:
        raise SizeOrderError(size1, size2, "a proof from the empty tree is meaningless")
    _check_hashes("proof hash", proof)

    # The proof is the inclusion path of leaf size1-1 in the size2 tree, cut at the level where the
    # size1 tree's rightmost perfect subtree (2**shift leaves) sits, plus that subtree's hash unless
    # it is the whole size1 tree.
    inner, border = _inclusion_shape(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    whole = size1 == 1 << shift
    want = inner + border + (0 if whole else 1)
    if len(proof) != want:
        raise ProofLengthError(want, len(proof))

    # The verifier runs once per checkpoint a light client or witness sees, so the loop hashes itself
    # rather than calling node_hash (a Python call per node was a tenth of the cost, issue 13), walks the
    # proof with one iterator, and feeds a left sibling once for both paths.
    node = _prepared(suite)[1]
    siblings = iter(proof)
    h1 = h2 = root1 if whole else next(siblings)
    # Bit i of ``left`` says the path's hash i is a left sibling, as in root_from_inclusion_proof.
    left = (((size1 - 1) >> shift) & ((1 << inner) - 1)) | (((1 << border) - 1) << inner)
    for sibling in siblings:
        if left & 1:
            step1 = node()
            step1.update(sibling)
            step2 = step1.copy()
            step1.update(h1)
            step2.update(h2)
            h1 = step1.digest()
            h2 = step2.digest()
        else:
            step2 = node()
            step2.update(h2)
            step2.update(sibling)
            h2 = step2.digest()
        left >>= 1
    if h1 != root1:
        raise RootMismatch(root1, h1)
    if h2 != root2:
        raise RootMismatch(root2, h2)


# --- storage interface and proof generation ----------------------------------------------------------------


class NodeReader(Protocol):
    """Read access to perfect-subtree hashes; a batch call so a database answers a proof in one query."""

    def get_nodes(self, ids: Sequence[NodeId]) -> Sequence[bytes | None]:
        """Hashes for ``ids`` in order, ``None`` where a node is not stored."""
        ...


class NodeStore(NodeReader, Protocol):
    def put_nodes(self, nodes: Sequence[tuple[NodeId, bytes]]) -> None:
        """Store newly completed perfect subtrees (they never change once complete)."""
        ...


class MemoryNodeStore:
    """A :class:`NodeStore` in memory: tests, blocks, and the root node's cache.

    One list per level, indexed by node index (``None`` where a node is absent): an append-only tree
    completes the nodes of each level left to right, so :meth:`put_levels` extends lists instead of
    building a ``((level, index), hash)`` key per node (that bookkeeping, not the hashing, was the cost
    of appending; issue 13).
    """

    def __init__(self) -> None:
        self.levels: list[list[bytes | None]] = []

    def get_nodes(self, ids: Sequence[NodeId]) -> list[bytes | None]:
        levels = self.levels
        out: list[bytes | None] = []
        for level, index in ids:
            row = levels[level] if 0 <= level < len(levels) else None
            out.append(row[index] if row is not None and 0 <= index < len(row) else None)
        return out

    def put_nodes(self, nodes: Sequence[tuple[NodeId, bytes]]) -> None:
        for (level, index), h in nodes:
            self._row(level, index)[index] = h

    def put_levels(self, first: int, runs: Sequence[Sequence[bytes]]) -> None:
        """Store ``runs[level]``, the hashes of consecutive nodes from index ``first >> level`` on."""
        for level, run in enumerate(runs):
            start = first >> level
            row = self._row(level, start - 1)
            if len(row) == start:
                row.extend(run)
            else:  # rewriting stored nodes (with equal hashes: complete nodes never change)
                row[start : start + len(run)] = run

    def _row(self, level: int, index: int) -> list[bytes | None]:
        """The list for ``level``, grown (with ``None``) so that ``index`` is a valid position."""
        while len(self.levels) <= level:
            self.levels.append([])
        row = self.levels[level]
        if len(row) <= index:
            row.extend([None] * (index + 1 - len(row)))
        return row


def perfect_subtrees(begin: int, end: int) -> list[NodeId]:
    """The perfect subtrees, left to right, whose concatenation is the leaf range ``[begin, end)``.

    Only ranges that occur in RFC 6962 proofs are supported: ``begin`` is a multiple of a power of two
    that is at least ``end - begin``.
    """
    ids: list[NodeId] = []
    size = end - begin
    while size:
        level = size.bit_length() - 1
        ids.append((level, begin >> level))
        begin += 1 << level
        size -= 1 << level
    return ids


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes make up PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf first."""
    ranges: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index - begin < k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes make up PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1), in proof order."""
    ranges: list[tuple[int, int]] = []
    begin, end, m, whole = 0, size2, size1, True
    while m != end - begin:
        k = _split(end - begin)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
            whole = False
    if not whole:
        ranges.append((begin, end))
    ranges.reverse()
    return ranges


def _hash_ranges(ranges: Sequence[tuple[int, int]], reader: NodeReader, suite: HashSuite) -> list[bytes]:
    """Hash each leaf range from the perfect subtrees in ``reader``, fetched in one batch."""
    pieces = [perfect_subtrees(b, e) for b, e in ranges]
    wanted = [node for piece in pieces for node in piece]
    found = _fetch(wanted, reader)
    out: list[bytes] = []
    for piece in pieces:
        # An imperfect range is its perfect subtrees folded from the right (each split is left-heavy).
        h = found[piece[-1]]
        for node in reversed(piece[:-1]):
            h = node_hash(found[node], h, suite=suite)
        out.append(h)
    return out


def _fetch(ids: Sequence[NodeId], reader: NodeReader) -> dict[NodeId, bytes]:
    found: dict[NodeId, bytes] = {}
    missing: list[NodeId] = []
    for node, h in zip(ids, reader.get_nodes(ids), strict=True):
        if h is None:
            missing.append(node)
        else:
            found[node] = h
    if missing:
        raise MissingNodes(missing)
    return found


def inclusion_proof(index: int, size: int, reader: NodeReader, *, suite: HashSuite = SHA256) -> list[bytes]:
    """Audit path for leaf ``index`` in the first ``size`` leaves held by ``reader``."""
    if not 0 <= index < size:
        raise IndexOutOfRange(index, size)
    return _hash_ranges(_inclusion_ranges(index, size), reader, suite=suite)


def consistency_proof(
    size1: int, size2: int, reader: NodeReader, *, suite: HashSuite = SHA256
) -> list[bytes]:
    """Proof that the first ``size1`` leaves are a prefix of the first ``size2``; empty if equal."""
    if size1 < 0 or size2 < size1:
        raise SizeOrderError(size1, size2, "size2 is smaller than size1")
    if size1 == size2:
        return []
    if size1 == 0:
        raise SizeOrderError(size1, size2, "a proof from the empty tree is meaningless")
    return _hash_ranges(_consistency_ranges(size1, size2), reader, suite=suite)


def root_at(size: int, reader: NodeReader, *, suite: HashSuite = SHA256) -> bytes:
    """Root of the first ``size`` leaves held by ``reader``."""
    if size == 0:
        return suite.empty_root
    return _hash_ranges([(0, size)], reader, suite=suite)[0]


class MerkleTree:
    """Append-only RFC 6962 tree: O(log n) append over a compact range, proofs from its node store.

    The compact range is the list of perfect subtrees along the right border (one per set bit of the
    size); appending merges equal-sized neighbours, writing each completed node to the store once.
    """

    def __init__(self, store: NodeStore | None = None, *, size: int = 0, suite: HashSuite = SHA256) -> None:
        """Open a tree over ``store`` already holding ``size`` leaves (0 for a new tree), hashing with
        ``suite`` (the store holds hashes only: the caller knows which profile made them)."""
        self.store: NodeStore = store if store is not None else MemoryNodeStore()
        self.suite = suite
        self._size = 0
        self._border: list[bytes] = []
        if size:
            border_ids = perfect_subtrees(0, size)
            found = _fetch(border_ids, self.store)
            self._border = [found[node] for node in border_ids]
            self._size = size

    @property
    def size(self) -> int:
        return self._size

    def root(self) -> bytes:
        if not self._border:
            return self.suite.empty_root
        h = self._border[-1]
        for left in reversed(self._border[:-1]):
            h = node_hash(left, h, suite=self.suite)
        return h

    def append(self, data: bytes) -> int:
        """Append one leaf's data; returns its index."""
        return self._append([leaf_hash(data, suite=self.suite)])

    def append_entries(self, entries: Iterable[bytes]) -> int:
        """Append raw leaf data in order; returns the index of the first appended leaf."""
        return self._append(_leaf_hashes(entries, _prepared(self.suite)[0]))

    def append_leaf_hashes(self, hashes: Sequence[bytes]) -> int:
        """Append leaves given as leaf hashes; returns the index of the first. All-or-nothing."""
        _check_hashes("leaf hash", hashes)
        return self._append(list(hashes))

    def _append(self, hashes: list[bytes]) -> int:
        """Append leaf hashes known to be hash-sized; ``hashes`` is used as is (the caller's own list)."""
        first = self._size
        if not hashes:
            return first
        size = first + len(hashes)
        # The old border holds, for each set bit ``level`` of ``first``, node (level, (first >> level) - 1):
        # the left sibling waiting for the first new node of that level.
        bits = [level for level in range(first.bit_length() - 1, -1, -1) if (first >> level) & 1]
        left = dict(zip(bits, self._border, strict=True))

        # Level by level, the new nodes of each level are consecutive, from index first >> level: pair
        # them (with the waiting left sibling when that index is odd) to get the next level's run.
        node = _prepared(self.suite)[1]
        runs: list[list[bytes]] = []
        run = hashes
        start = first
        level = 0
        while run:
            runs.append(run)
            # An odd node out at the end waits on the border for its right sibling.
            run = _pair_up([left[level], *run] if start & 1 else run, node)
            start >>= 1
            level += 1

        # The new border: node (level, (size >> level) - 1) for each set bit of size, highest first; it
        # is either new (in that level's run) or the old border's node for the same level.
        border: list[bytes] = []
        for level in range(size.bit_length() - 1, -1, -1):
            if (size >> level) & 1:
                offset = (size >> level) - 1 - (first >> level)
                border.append(runs[level][offset] if offset >= 0 else left[level])

        store = self.store
        if isinstance(store, MemoryNodeStore):
            store.put_levels(first, runs)
        else:
            store.put_nodes(
                [
                    ((level, (first >> level) + i), h)
                    for level, run in enumerate(runs)
                    for i, h in enumerate(run)
                ]
            )
        self._border = border
        self._size = size
        return first

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size if size is None else self._check_size(size)
        return inclusion_proof(index, size, self.store, suite=self.suite)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        size2 = self._size if size2 is None else self._check_size(size2)
        return consistency_proof(size1, size2, self.store, suite=self.suite)

    def root_at(self, size: int) -> bytes:
        return root_at(self._check_size(size), self.store, suite=self.suite)

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self._size:
            raise IndexOutOfRange(size, self._size + 1)
        return size
