"""chain_lite.merkle against a naive RFC 6962 reference, exhaustively for small trees, by property beyond."""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import merkle
from chain_lite.errors import (
    ChainError,
    HashSizeError,
    IndexOutOfRange,
    MissingNodes,
    ProofLengthError,
    RootMismatch,
    SizeOrderError,
)
from chain_lite.suite import SHA256, SM3, HashSuite

from .rfc6962_reference import (
    consistency_path_length,
    consistency_roots,
    inclusion_path_length,
    inclusion_root,
    make_reference,
    sha256,
)

MAX_EXHAUSTIVE = 256
LEAVES = tuple(f"leaf-{i}".encode() for i in range(MAX_EXHAUSTIVE))
MTH, PATH, PROOF = make_reference(LEAVES)


@pytest.fixture(scope="module")
def tree() -> merkle.MerkleTree:
    t = merkle.MerkleTree()
    t.append_entries(LEAVES)
    return t


def test_empty_tree_root_is_hash_of_empty_string() -> None:
    """Size 0 has the documented root SHA-256("") and no leaf can be proven in it."""
    assert merkle.MerkleTree().root() == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.root_of([]) == merkle.EMPTY_ROOT
    with pytest.raises(IndexOutOfRange):
        merkle.verify_inclusion(0, 0, merkle.leaf_hash(b""), [], merkle.EMPTY_ROOT)


def test_roots_match_reference_for_every_size_up_to_256(tree: merkle.MerkleTree) -> None:
    """Incremental roots, batch roots and stored roots all equal the reference MTH."""
    incremental = merkle.MerkleTree()
    for n in range(MAX_EXHAUSTIVE + 1):
        want = MTH(0, n)
        assert incremental.root() == want
        assert tree.root_at(n) == want
        assert merkle.root_of(LEAVES[:n]) == want
        if n < MAX_EXHAUSTIVE:
            incremental.append(LEAVES[n])


@pytest.mark.slow
def test_inclusion_proofs_match_reference_for_every_index_up_to_256(tree: merkle.MerkleTree) -> None:
    """Every (index, size) proof equals the reference PATH and verifies."""
    for n in range(1, MAX_EXHAUSTIVE + 1):
        root = MTH(0, n)
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == PATH(m, 0, n), (m, n)
            merkle.verify_inclusion(m, n, merkle.leaf_hash(LEAVES[m]), proof, root)


@pytest.mark.slow
def test_consistency_proofs_match_reference_for_every_pair_up_to_256(tree: merkle.MerkleTree) -> None:
    """Every (size1, size2) proof equals the reference PROOF and verifies."""
    for n in range(1, MAX_EXHAUSTIVE + 1):
        root2 = MTH(0, n)
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == (PROOF(m, n) if m < n else []), (m, n)
            merkle.verify_consistency(m, n, proof, MTH(0, m), root2)


def _corruptions(proof: list[bytes]) -> list[list[bytes]]:
    out = [[*proof, proof[0] if proof else b"\x00" * 32], [b"\x11" * 32, *proof]]
    if proof:
        out.append(proof[:-1])
        out.append(proof[1:])
        for i in range(len(proof)):
            flipped = bytearray(proof[i])
            flipped[i % 32] ^= 1 << (i % 8)
            out.append([*proof[:i], bytes(flipped), *proof[i + 1 :]])
        if len(proof) > 1:
            out.append(list(reversed(proof)))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 64, 100, 255, 256])
def test_every_corrupted_inclusion_proof_is_rejected(tree: merkle.MerkleTree, n: int) -> None:
    """Index ±1, flipped bits, missing, extra and reordered hashes, wrong root, wrong size: all fail."""
    root = MTH(0, n)
    for m in range(n):
        leaf = merkle.leaf_hash(LEAVES[m])
        proof = tree.inclusion_proof(m, n)
        for bad in _corruptions(proof):
            with pytest.raises(ChainError):
                merkle.verify_inclusion(m, n, leaf, bad, root)
        for idx in (m - 1, m + 1, m ^ 2):
            if idx != m:
                with pytest.raises(ChainError):
                    merkle.verify_inclusion(idx, n, leaf, proof, root)
        with pytest.raises(ChainError):
            merkle.verify_inclusion(m, n, leaf, proof, MTH(0, n - 1))
        with pytest.raises(ChainError):
            merkle.verify_inclusion(m, n, merkle.leaf_hash(b"other"), proof, root)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 100, 256])
def test_every_corrupted_consistency_proof_is_rejected(tree: merkle.MerkleTree, n: int) -> None:
    """Flipped bits, missing, extra and reordered hashes, swapped roots and wrong sizes all fail."""
    root2 = MTH(0, n)
    for m in range(1, n):
        root1 = MTH(0, m)
        proof = tree.consistency_proof(m, n)
        for bad in _corruptions(proof):
            with pytest.raises(ChainError):
                merkle.verify_consistency(m, n, bad, root1, root2)
        with pytest.raises(ChainError):
            merkle.verify_consistency(m, n, proof, root2, root1)
        with pytest.raises(ChainError):
            merkle.verify_consistency(m, n, proof, MTH(0, m - 1), root2)
        if m + 1 < n:
            with pytest.raises(ChainError):
                merkle.verify_consistency(m + 1, n, proof, root1, root2)


def test_size_zero_rules_are_explicit() -> None:
    """0→0 needs the empty root; 0→n is refused (callers treat it as trivially consistent)."""
    merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(RootMismatch):
        merkle.verify_consistency(0, 0, [], b"x" * 32, b"x" * 32)
    with pytest.raises(SizeOrderError):
        merkle.verify_consistency(0, 1, [], merkle.EMPTY_ROOT, merkle.leaf_hash(b"a"))
    with pytest.raises(SizeOrderError):
        merkle.verify_consistency(2, 1, [], b"a" * 32, b"b" * 32)
    with pytest.raises(ProofLengthError):
        merkle.verify_consistency(3, 3, [b"a" * 32], b"r" * 32, b"r" * 32)
    with pytest.raises(SizeOrderError):
        merkle.consistency_proof(0, 3, merkle.MemoryNodeStore())
    assert merkle.consistency_proof(0, 0, merkle.MemoryNodeStore()) == []


def test_errors_carry_their_facts() -> None:
    """Typed errors expose expected and got values, not just a message."""
    with pytest.raises(ProofLengthError) as length:
        merkle.verify_inclusion(0, 4, b"\x00" * 32, [b"\x00" * 32], b"\x00" * 32)
    assert (length.value.expected, length.value.got) == (2, 1)
    with pytest.raises(HashSizeError) as size:
        merkle.verify_inclusion(0, 1, b"\x00" * 31, [], b"\x00" * 32)
    assert (size.value.expected, size.value.got) == (32, 31)
    with pytest.raises(RootMismatch) as mismatch:
        merkle.verify_inclusion(0, 1, b"\x00" * 32, [], b"\x01" * 32)
    assert mismatch.value.expected == b"\x01" * 32
    assert mismatch.value.computed == b"\x00" * 32


def test_tree_reopens_from_its_store_and_keeps_appending() -> None:
    """A tree opened over an existing store at size n continues exactly like one never closed."""
    store = merkle.MemoryNodeStore()
    first = merkle.MerkleTree(store)
    first.append_entries(LEAVES[:77])
    reopened = merkle.MerkleTree(store, size=77)
    assert reopened.root() == first.root()
    reopened.append_entries(LEAVES[77:200])
    assert reopened.root() == MTH(0, 200)


def test_missing_nodes_is_a_storage_error_not_a_bad_proof() -> None:
    """A store that lost nodes reports which, instead of producing a wrong proof."""
    store = merkle.MemoryNodeStore()
    merkle.MerkleTree(store).append_entries(LEAVES[:8])
    store.levels[1][1] = None  # lose node (1, 1)
    with pytest.raises(MissingNodes) as err:
        merkle.inclusion_proof(0, 8, store)
    assert err.value.missing == [(1, 1)]
    store.levels[2][0] = None  # and (2, 0)
    with pytest.raises(MissingNodes):
        merkle.MerkleTree(store, size=4)


def test_append_rejects_wrong_sized_hash_without_changing_the_tree() -> None:
    """append_leaf_hashes is all-or-nothing."""
    t = merkle.MerkleTree()
    t.append(b"a")
    before = t.root()
    with pytest.raises(HashSizeError):
        t.append_leaf_hashes([merkle.leaf_hash(b"b"), b"short"])
    assert (t.size, t.root()) == (1, before)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=1200), st.data())
def test_random_trees_prove_inclusion_and_consistency(entries: list[bytes], data: st.DataObject) -> None:
    """Beyond 256 leaves: random sizes, indexes and prefixes agree with the reference and verify."""
    n = len(entries)
    mth, path, proof_ref = make_reference(tuple(entries))
    t = merkle.MerkleTree()
    t.append_entries(entries)
    assert t.root() == mth(0, n)
    m = data.draw(st.integers(0, n - 1))
    proof = t.inclusion_proof(m)
    assert proof == path(m, 0, n)
    merkle.verify_inclusion(m, n, merkle.leaf_hash(entries[m]), proof, t.root())
    size1 = data.draw(st.integers(1, n))
    cproof = t.consistency_proof(size1)
    assert cproof == (proof_ref(size1, n) if size1 < n else [])
    merkle.verify_consistency(size1, n, cproof, mth(0, size1), t.root())


@given(
    st.integers(0, 2**64),
    st.integers(0, 2**64),
    st.lists(st.binary(max_size=40), max_size=70),
    st.binary(max_size=40),
    st.binary(max_size=40),
)
def test_verifiers_raise_only_chain_errors(i: int, n: int, proof: list[bytes], a: bytes, b: bytes) -> None:
    """Arbitrary inputs to the verifiers produce a verdict or a ChainError, nothing else."""
    for call in (
        lambda: merkle.verify_inclusion(i, n, a, proof, b),
        lambda: merkle.verify_consistency(i, n, proof, a, b),
    ):
        with contextlib.suppress(ChainError):
            call()


class _PairStore:
    """A NodeStore that only speaks ``(NodeId, hash)`` pairs, like the root node's SQL store."""

    def __init__(self) -> None:
        self.nodes: dict[merkle.NodeId, bytes] = {}

    def get_nodes(self, ids: list[merkle.NodeId]) -> list[bytes | None]:
        return [self.nodes.get(i) for i in ids]

    def put_nodes(self, nodes: list[tuple[merkle.NodeId, bytes]]) -> None:
        self.nodes.update(nodes)


@given(st.lists(st.integers(0, 40), max_size=12))
def test_batched_appends_store_every_node_of_the_reference_tree(batches: list[int]) -> None:
    """Appends in arbitrary batches store exactly the perfect subtrees of the reference, in both stores."""
    memory, pairs = merkle.MemoryNodeStore(), _PairStore()
    a, b = merkle.MerkleTree(memory), merkle.MerkleTree(pairs)
    n = 0
    for wanted in batches:
        k = min(wanted, MAX_EXHAUSTIVE - n)
        assert a.append_entries(LEAVES[n : n + k]) == b.append_entries(LEAVES[n : n + k]) == n
        n += k
        assert a.root() == b.root() == MTH(0, n)
    want = {
        (level, index): MTH(index << level, (index + 1) << level)
        for level in range(n.bit_length())
        for index in range(n >> level)
    }
    assert pairs.nodes == want
    assert memory.get_nodes(list(want)) == list(want.values())
    assert memory.get_nodes([(0, n), (n.bit_length(), 0), (-1, 0), (0, -1)]) == [None] * 4


def test_memory_store_takes_nodes_out_of_order() -> None:
    """put_nodes at any (level, index) leaves the gaps absent, and a tree reopens over such a store."""
    store = merkle.MemoryNodeStore()
    source = merkle.MemoryNodeStore()
    merkle.MerkleTree(source).append_entries(LEAVES[:6])
    ids = [(2, 0), (1, 2), (0, 5), (0, 4)]
    store.put_nodes(list(zip(ids, source.get_nodes(ids), strict=True)))
    assert store.get_nodes([(0, 0), (1, 0), (1, 1)]) == [None, None, None]
    reopened = merkle.MerkleTree(store, size=6)
    reopened.append_entries(LEAVES[6:9])
    assert reopened.root() == MTH(0, 9)


# --- the verifiers against RFC 9162's own algorithms, on honest and arbitrary proofs ---------------------

EXHAUSTIVE_VERIFY = 64
NAIVE_HASH = {"sha256": sha256, "sm3": SM3.digest}


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def _proofs_around(honest: list[bytes], rng: random.Random) -> list[list[bytes]]:
    """The honest proof, then random 32-byte hashes one short of its length, as long, and one longer."""
    n = len(honest)
    return [honest] + [[rng.randbytes(32) for _ in range(k)] for k in (n - 1, n, n + 1) if k >= 0]


def _check_inclusion_agrees(index: int, size: int, leaf: bytes, proof: list[bytes], suite: HashSuite) -> None:
    """merkle's inclusion verifier computes the root RFC 9162 §2.1.3.2 computes, and fails where it fails."""
    want = inclusion_root(index, size, leaf, proof, NAIVE_HASH[suite.name])
    if want is None:
        with pytest.raises((ProofLengthError, IndexOutOfRange)):
            merkle.root_from_inclusion_proof(index, size, leaf, proof, suite=suite)
        return
    assert merkle.root_from_inclusion_proof(index, size, leaf, proof, suite=suite) == want
    merkle.verify_inclusion(index, size, leaf, proof, want, suite=suite)
    with pytest.raises(RootMismatch):
        merkle.verify_inclusion(index, size, leaf, proof, _flip(want), suite=suite)


def _check_consistency_agrees(
    size1: int, size2: int, proof: list[bytes], root1: bytes, suite: HashSuite
) -> None:
    """merkle's consistency verifier accepts exactly the roots RFC 9162 §2.1.4.2 accepts, and fails on the
    proof's shape exactly where that algorithm does."""
    h = NAIVE_HASH[suite.name]
    roots = consistency_roots(size1, size2, proof, root1, h)
    if roots is None:
        with pytest.raises(ProofLengthError):
            merkle.verify_consistency(size1, size2, proof, root1, root1, suite=suite)
        return
    fr, sr = roots
    # With root1 = fr the RFC algorithm accepts (for a power-of-two size1, fr is root1 itself).
    merkle.verify_consistency(size1, size2, proof, fr, sr, suite=suite)
    for old, new in ((_flip(fr), sr), (fr, _flip(sr)), (sr, fr)):
        again = consistency_roots(size1, size2, proof, old, h)
        if again == (old, new):  # only when a swap of equal roots changes nothing
            merkle.verify_consistency(size1, size2, proof, old, new, suite=suite)
        else:
            with pytest.raises(RootMismatch):
                merkle.verify_consistency(size1, size2, proof, old, new, suite=suite)


@pytest.mark.parametrize("suite", [SHA256, SM3], ids=lambda s: s.name)
def test_inclusion_verifier_agrees_with_rfc9162_for_every_index_up_to_64(suite: HashSuite) -> None:
    """Honest proofs, and random ones of every nearby length, give the root RFC 9162's verifier gives."""
    rng = random.Random(6962)
    t = merkle.MerkleTree(suite=suite)
    t.append_entries(LEAVES[:EXHAUSTIVE_VERIFY])
    for n in range(1, EXHAUSTIVE_VERIFY + 1):
        for m in range(n + 1):  # m == n: out of range for both
            leaf = merkle.leaf_hash(LEAVES[m], suite=suite)
            for proof in _proofs_around(t.inclusion_proof(min(m, n - 1), n), rng):
                _check_inclusion_agrees(m, n, leaf, proof, suite)


@pytest.mark.parametrize("suite", [SHA256, SM3], ids=lambda s: s.name)
def test_consistency_verifier_agrees_with_rfc9162_for_every_pair_up_to_64(suite: HashSuite) -> None:
    """Honest proofs, and random ones of every nearby length, are judged as RFC 9162's verifier judges."""
    rng = random.Random(9162)
    t = merkle.MerkleTree(suite=suite)
    t.append_entries(LEAVES[:EXHAUSTIVE_VERIFY])
    for n in range(2, EXHAUSTIVE_VERIFY + 1):
        for m in range(1, n):
            root1 = t.root_at(m)
            for i, proof in enumerate(_proofs_around(t.consistency_proof(m, n), rng)):
                _check_consistency_agrees(m, n, proof, root1 if i == 0 else rng.randbytes(32), suite)


@given(st.integers(1, 2**64), st.data())
def test_inclusion_verifier_agrees_with_rfc9162_at_any_size(size: int, data: st.DataObject) -> None:
    """Any size up to 2^64, any index, 32-byte proofs one short, as long, one longer: same root or failure."""
    index = data.draw(st.integers(0, size))
    want = inclusion_path_length(index, size) if index < size else 0
    length = data.draw(st.integers(max(want - 1, 0), want + 1))
    proof = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=length, max_size=length))
    _check_inclusion_agrees(index, size, data.draw(st.binary(min_size=32, max_size=32)), proof, SHA256)


@given(st.integers(2, 2**64), st.data())
def test_consistency_verifier_agrees_with_rfc9162_at_any_size(size2: int, data: st.DataObject) -> None:
    """Any sizes up to 2^64, 32-byte proofs one short, as long or one longer: the same verdict."""
    size1 = data.draw(st.integers(1, size2 - 1))
    want = consistency_path_length(size1, size2)
    length = data.draw(st.integers(max(want - 1, 0), want + 1))
    proof = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=length, max_size=length))
    _check_consistency_agrees(size1, size2, proof, data.draw(st.binary(min_size=32, max_size=32)), SHA256)


# --- appends: every batch at every size ------------------------------------------------------------------

EXHAUSTIVE_APPEND = 64
REFERENCE_LEVELS = [
    [MTH(index << level, (index + 1) << level) for index in range((2 * EXHAUSTIVE_APPEND) >> level)]
    for level in range((2 * EXHAUSTIVE_APPEND).bit_length())
]


def _reference_levels(size: int) -> list[list[bytes]]:
    """Every perfect subtree of the reference tree of ``size`` leaves, one list per level."""
    return [REFERENCE_LEVELS[level][: size >> level] for level in range(size.bit_length())]


@pytest.mark.slow
def test_any_batch_appended_at_any_size_stores_exactly_the_reference_nodes() -> None:
    """For every size up to 64 and every batch up to 64 leaves: the index, the root, the border after
    reopening, and exactly the reference's perfect subtrees in the store."""
    for first in range(EXHAUSTIVE_APPEND + 1):
        base = merkle.MemoryNodeStore()
        merkle.MerkleTree(base).append_entries(LEAVES[:first])
        assert base.levels == _reference_levels(first)
        for count in range(EXHAUSTIVE_APPEND + 1):
            store = merkle.MemoryNodeStore()
            store.levels = [list(row) for row in base.levels]
            t = merkle.MerkleTree(store, size=first)
            assert t.append_entries(LEAVES[first : first + count]) == first
            size = first + count
            assert (t.size, t.root()) == (size, MTH(0, size))
            assert store.levels == _reference_levels(size), (first, count)
            assert merkle.MerkleTree(store, size=size).root() == MTH(0, size)
