"""The verifiable map: a binary sparse Merkle tree keyed by H(identifier) (DESIGN §3).

``H`` is the log's hash profile (:mod:`chain_lite.suite`): SHA-256 by default, SM3 in an SM3 log, for
the key, the leaf and the node hashes alike; every function takes ``suite=`` (default SHA-256).

Shape (the "shortcut" sparse Merkle tree, as in Diem/Aptos' JMT):

* a key is 256 bits, read most significant bit first; bit ``d`` chooses the child at depth ``d``;
* an empty subtree hashes to :data:`EMPTY` (32 zero bytes);
* a subtree holding exactly one entry hashes to that entry's :func:`leaf_hash`, wherever it sits,
  so a tree of ``n`` random keys is about ``log2(n)`` levels deep instead of 256;
* any other subtree hashes to :func:`node_hash` of its two children.

Leaf and node hashes carry their own prefix bytes (``0x10``, ``0x11``), distinct from RFC 6962's
``0x00``/``0x01``, so no map hash can be replayed as a log hash or the other way round. The leaf hash
commits to the whole key, which is what makes the shortcut sound: a leaf cannot be shown at any position
but its own, and a proof cannot end early at a subtree that really holds two entries.

A :class:`MapProof` lists the siblings from the root down to where the key's path ends, and what it
ends at: nothing (the key is absent), the key's own entry (membership), or another key's entry that
shares the path (the key is absent). Values are 32-byte hashes of what the caller stores.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chain_lite import cbor
from chain_lite.errors import FormatError, HashSizeError, ProofError, ProofLengthError, RootMismatch
from chain_lite.suite import SHA256, HashSuite

KEY_BITS = 256
HASH_SIZE = 32
EMPTY = bytes(HASH_SIZE)
_LEAF_PREFIX = b"\x10"
_NODE_PREFIX = b"\x11"
PROOF_LABEL = "edgeroot/map-proof/v1"
MAX_PROOF_SIZE = 16 * 1024


def map_key(identifier: str, *, suite: HashSuite = SHA256) -> bytes:
    """The map key of a canonical identifier string: H of its UTF-8 bytes."""
    return suite.new(identifier.encode()).digest()


def leaf_hash(key: bytes, value: bytes, *, suite: HashSuite = SHA256) -> bytes:
    return suite.new(_LEAF_PREFIX + key + value).digest()


def node_hash(left: bytes, right: bytes, *, suite: HashSuite = SHA256) -> bytes:
    return suite.new(_NODE_PREFIX + left + right).digest()


def _check(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise HashSizeError(what, HASH_SIZE, len(value) if isinstance(value, bytes) else 0)


def _bit(key: int, depth: int) -> int:
    return (key >> (KEY_BITS - 1 - depth)) & 1


def _common_prefix_bits(a: int, b: int) -> int:
    return KEY_BITS - (a ^ b).bit_length()


class MapProofError(ProofError):
    """A map proof does not prove what it claims; ``reason`` says which rule failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"map proof: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MapProof:
    """Siblings from the root down, and the entry (key, value) the path ends at, if any."""

    siblings: tuple[bytes, ...]
    terminal: tuple[bytes, bytes] | None

    def to_bytes(self) -> bytes:
        term = None if self.terminal is None else list(self.terminal)
        return cbor.encode([PROOF_LABEL, list(self.siblings), term])

    @classmethod
    def from_bytes(cls, data: bytes) -> MapProof:
        item = cbor.decode_deterministic(data, "map proof", max_size=MAX_PROOF_SIZE)
        if not isinstance(item, list) or len(item) != 3 or item[0] != PROOF_LABEL:
            raise FormatError("map proof", f"not a 3-item array labelled {PROOF_LABEL!r}")
        _, siblings, terminal = item
        if not isinstance(siblings, list) or len(siblings) > KEY_BITS:
            raise FormatError("map proof", f"siblings must be a list of at most {KEY_BITS} hashes")
        for s in siblings:
            if not isinstance(s, bytes) or len(s) != HASH_SIZE:
                raise FormatError("map proof", "a sibling is not a 32-byte hash")
        term: tuple[bytes, bytes] | None = None
        if terminal is not None:
            if not (
                isinstance(terminal, list)
                and len(terminal) == 2
                and all(isinstance(t, bytes) and len(t) == HASH_SIZE for t in terminal)
            ):
                raise FormatError("map proof", "terminal must be null or [32-byte key, 32-byte value]")
            term = (terminal[0], terminal[1])
        return cls(tuple(siblings), term)


def root_from_proof(key: bytes, proof: MapProof, *, suite: HashSuite = SHA256) -> bytes:
    """The root that ``proof`` implies for the path of ``key``."""
    _check("map key", key)
    if len(proof.siblings) > KEY_BITS:
        raise ProofLengthError(KEY_BITS, len(proof.siblings))
    k = int.from_bytes(key, "big")
    if proof.terminal is None:
        h = EMPTY
    else:
        tkey, tvalue = proof.terminal
        _check("terminal key", tkey)
        _check("terminal value", tvalue)
        if _common_prefix_bits(k, int.from_bytes(tkey, "big")) < len(proof.siblings):
            raise MapProofError("the terminal entry does not lie on the key's path")
        h = leaf_hash(tkey, tvalue, suite=suite)
    for depth in range(len(proof.siblings) - 1, -1, -1):
        sibling = proof.siblings[depth]
        _check("sibling", sibling)
        h = node_hash(sibling, h, suite=suite) if _bit(k, depth) else node_hash(h, sibling, suite=suite)
    return h


def verify_map_proof(
    root: bytes, key: bytes, value: bytes | None, proof: MapProof, *, suite: HashSuite = SHA256
) -> None:
    """Check that ``key`` maps to ``value`` (or, with ``value=None``, is absent) under ``root``."""
    _check("map root", root)
    if value is None:
        if proof.terminal is not None and proof.terminal[0] == key:
            raise MapProofError("the proof shows the key present, not absent")
    else:
        _check("value", value)
        if proof.terminal != (key, value):
            raise MapProofError("the proof does not end at this key and value")
    computed = root_from_proof(key, proof, suite=suite)
    if computed != root:
        raise RootMismatch(root, computed)


class SparseMap:
    """An in-memory map with cached interior nodes: O(depth) hashing per change, O(depth) proofs.

    Keys are kept sorted, so the entries under any subtree are a contiguous slice found by bisection.
    Interior hashes are cached by ``(depth, prefix)``; a change drops exactly the cached nodes on its
    path (those down to where it shares bits with its nearest neighbour), so the cache never goes stale.
    """

    def __init__(
        self,
        entries: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]] = (),
        *,
        suite: HashSuite = SHA256,
    ) -> None:
        self.suite = suite
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._values: dict[int, bytes] = {}
        for key, value in items:
            _check("map key", key)
            _check("value", value)
            self._values[int.from_bytes(key, "big")] = value
        self._keys = sorted(self._values)
        self._cache: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(int.from_bytes(key, "big"))

    def set(self, key: bytes, value: bytes | None) -> None:
        """Map ``key`` to ``value``; ``None`` removes it."""
        _check("map key", key)
        k = int.from_bytes(key, "big")
        if value is None:
            if k not in self._values:
                return
            self._invalidate(k)
            del self._values[k]
            del self._keys[bisect_left(self._keys, k)]
            return
        _check("value", value)
        if k not in self._values:
            pos = bisect_left(self._keys, k)
            self._keys.insert(pos, k)
        self._values[k] = value
        self._invalidate(k)

    def _invalidate(self, k: int) -> None:
        # Interior nodes on k's path exist down to the depth where k parts from its nearest neighbour.
        pos = bisect_left(self._keys, k)
        depth = 0
        if pos > 0:
            depth = max(depth, _common_prefix_bits(k, self._keys[pos - 1]))
        if pos + 1 < len(self._keys):
            depth = max(depth, _common_prefix_bits(k, self._keys[pos + 1]))
        for d in range(min(depth, KEY_BITS - 1) + 1):
            self._cache.pop((d, k >> (KEY_BITS - d)), None)

    def _hash(self, depth: int, prefix: int, lo: int, hi: int) -> bytes:
        if hi == lo:
            return EMPTY
        if hi - lo == 1:
            k = self._keys[lo]
            return leaf_hash(k.to_bytes(HASH_SIZE, "big"), self._values[k], suite=self.suite)
        cached = self._cache.get((depth, prefix))
        if cached is not None:
            return cached
        mid = self._split(depth, prefix, lo, hi)
        h = node_hash(
            self._hash(depth + 1, prefix << 1, lo, mid),
            self._hash(depth + 1, (prefix << 1) | 1, mid, hi),
            suite=self.suite,
        )
        self._cache[(depth, prefix)] = h
        return h

    def _split(self, depth: int, prefix: int, lo: int, hi: int) -> int:
        """Index of the first key in ``keys[lo:hi]`` whose bit ``depth`` is 1."""
        return bisect_left(self._keys, ((prefix << 1) | 1) << (KEY_BITS - 1 - depth), lo, hi)

    def root(self) -> bytes:
        return self._hash(0, 0, 0, len(self._keys))

    def prove(self, key: bytes) -> MapProof:
        """A proof of ``key``'s current value, or of its absence."""
        _check("map key", key)
        k = int.from_bytes(key, "big")
        siblings: list[bytes] = []
        depth, prefix, lo, hi = 0, 0, 0, len(self._keys)
        while hi - lo > 1:
            mid = self._split(depth, prefix, lo, hi)
            if _bit(k, depth):
                siblings.append(self._hash(depth + 1, prefix << 1, lo, mid))
                lo, prefix = mid, (prefix << 1) | 1
            else:
                siblings.append(self._hash(depth + 1, (prefix << 1) | 1, mid, hi))
                hi, prefix = mid, prefix << 1
            depth += 1
        terminal = None
        if hi - lo == 1:
            t = self._keys[lo]
            terminal = (t.to_bytes(HASH_SIZE, "big"), self._values[t])
        return MapProof(tuple(siblings), terminal)
