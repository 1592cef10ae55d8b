"""The verifiable map against a naive reference written from its definition, plus negative proofs."""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.errors import ChainError, FormatError, ProofError, RootMismatch
from chain_lite.sparse_map import (
    EMPTY,
    MapProof,
    MapProofError,
    SparseMap,
    leaf_hash,
    map_key,
    node_hash,
    root_from_proof,
    verify_map_proof,
)


def naive_root(entries: dict[bytes, bytes], depth: int = 0) -> bytes:
    """Straight from the definition: empty → EMPTY, one entry → its leaf, else hash the two halves."""
    if not entries:
        return EMPTY
    if len(entries) == 1:
        ((k, v),) = entries.items()
        return leaf_hash(k, v)
    left = {k: v for k, v in entries.items() if not (k[depth // 8] >> (7 - depth % 8)) & 1}
    right = {k: v for k, v in entries.items() if k not in left}
    return node_hash(naive_root(left, depth + 1), naive_root(right, depth + 1))


def h(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def test_empty_map_root_is_empty_and_proves_absence() -> None:
    """An empty map has root EMPTY and proves any key absent with no siblings."""
    m = SparseMap()
    assert m.root() == EMPTY
    proof = m.prove(h(1))
    assert proof == MapProof((), None)
    verify_map_proof(EMPTY, h(1), None, proof)


def test_single_entry_root_is_its_leaf_hash() -> None:
    """One entry sits at the root: the root is that entry's leaf hash."""
    m = SparseMap({h(1): h(2)})
    assert m.root() == leaf_hash(h(1), h(2))


def test_root_matches_naive_reference_for_many_sizes() -> None:
    """Roots agree with the naive reference for maps of 0..300 entries."""
    entries: dict[bytes, bytes] = {}
    m = SparseMap()
    for i in range(300):
        assert m.root() == naive_root(entries)
        entries[h(i)] = h(i + 1000)
        m.set(h(i), h(i + 1000))
    assert m.root() == naive_root(entries)


def test_keys_sharing_long_prefixes_hash_correctly() -> None:
    """Keys differing only in their last bits force deep paths; roots and proofs still agree."""
    base = int.from_bytes(h(7), "big") & ~0xFF
    keys = [(base | i).to_bytes(32, "big") for i in (0, 1, 2, 128, 255)]
    entries = {k: h(i) for i, k in enumerate(keys)}
    m = SparseMap(entries)
    assert m.root() == naive_root(entries)
    for k, v in entries.items():
        proof = m.prove(k)
        assert len(proof.siblings) >= 249
        verify_map_proof(m.root(), k, v, proof)
    absent = (base | 3).to_bytes(32, "big")
    verify_map_proof(m.root(), absent, None, m.prove(absent))


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.one_of(st.none(), st.integers(0, 5))),
        max_size=120,
    )
)
def test_updates_and_deletes_match_reference_and_every_proof_verifies(
    ops: list[tuple[int, int | None]],
) -> None:
    """Any sequence of sets and deletes keeps the cached root equal to the reference; all proofs verify."""
    m = SparseMap()
    ref: dict[bytes, bytes] = {}
    for key_n, value_n in ops:
        value = None if value_n is None else h(10_000 + value_n)
        m.set(h(key_n), value)
        if value is None:
            ref.pop(h(key_n), None)
        else:
            ref[h(key_n)] = value
    root = m.root()
    assert root == naive_root(ref)
    assert len(m) == len(ref)
    for key_n in range(61):
        key = h(key_n)
        proof = m.prove(key)
        verify_map_proof(root, key, ref.get(key), proof)
        assert MapProof.from_bytes(proof.to_bytes()) == proof


def test_absence_proof_ending_at_a_neighbour_entry_verifies() -> None:
    """A key whose path ends at another entry is proven absent by that entry."""
    m = SparseMap({h(i): h(i) for i in range(50)})
    for i in range(50, 200):
        proof = m.prove(h(i))
        verify_map_proof(m.root(), h(i), None, proof)
    assert any(m.prove(h(i)).terminal is not None for i in range(50, 200))


def _sample() -> tuple[SparseMap, bytes, bytes, MapProof]:
    m = SparseMap({h(i): h(i + 1) for i in range(64)})
    return m, h(5), h(6), m.prove(h(5))


def test_wrong_value_is_rejected() -> None:
    """A membership proof does not prove a different value."""
    m, key, _, proof = _sample()
    with pytest.raises(MapProofError):
        verify_map_proof(m.root(), key, h(999), proof)


def test_present_key_cannot_be_proven_absent() -> None:
    """The membership proof of a key is refused as a proof of its absence."""
    m, key, _, proof = _sample()
    with pytest.raises(MapProofError):
        verify_map_proof(m.root(), key, None, proof)


def test_absence_of_a_present_key_cannot_be_forged_from_a_neighbour() -> None:
    """Another key's membership proof, reused as an absence proof, fails on the path or the root."""
    m, key, _, _ = _sample()
    other = m.prove(h(6))
    with pytest.raises(ProofError):
        verify_map_proof(m.root(), key, None, other)


def test_every_flipped_sibling_bit_is_rejected() -> None:
    """Flipping any bit of any sibling changes the computed root."""
    m, key, value, proof = _sample()
    for i, sib in enumerate(proof.siblings):
        for bit in range(0, 256, 7):
            bad = bytearray(sib)
            bad[bit // 8] ^= 1 << (bit % 8)
            sibs = list(proof.siblings)
            sibs[i] = bytes(bad)
            with pytest.raises(RootMismatch):
                verify_map_proof(m.root(), key, value, MapProof(tuple(sibs), proof.terminal))


def test_dropped_or_extra_sibling_is_rejected() -> None:
    """A proof one level too short or too long does not reach the root."""
    m, key, value, proof = _sample()
    with pytest.raises(ProofError):
        verify_map_proof(m.root(), key, value, MapProof(proof.siblings[1:], proof.terminal))
    with pytest.raises(ProofError):
        verify_map_proof(m.root(), key, value, MapProof((*proof.siblings, EMPTY), proof.terminal))


def test_terminal_off_the_path_is_rejected() -> None:
    """An entry that does not share the key's path bits cannot end its proof."""
    m = SparseMap({h(i): h(i) for i in range(64)})
    key = h(1000)
    proof = m.prove(key)
    far = next(bytes(32 * [b]) for b in (0x00, 0xFF) if bytes(32 * [b])[0] >> 7 != key[0] >> 7)
    forged = MapProof(proof.siblings, (far, h(1)))
    with pytest.raises(MapProofError):
        root_from_proof(key, forged)


def test_map_key_is_sha256_of_the_identifier() -> None:
    """Map keys are SHA-256 of the canonical identifier's UTF-8 bytes."""
    assert map_key("88.123.99/PUMP-0042") == hashlib.sha256(b"88.123.99/PUMP-0042").digest()


@given(st.binary(max_size=400))
def test_proof_parser_raises_only_chain_errors(data: bytes) -> None:
    """Random bytes never crash the proof parser."""
    with contextlib.suppress(ChainError):
        MapProof.from_bytes(data)


def test_malformed_proof_encodings_are_refused() -> None:
    """Wrong label, short hashes and non-canonical CBOR are each refused with FormatError."""
    from chain_lite import cbor

    for bad in (
        cbor.encode(["other", [], None]),
        cbor.encode(["edgeroot/map-proof/v1", [b"x"], None]),
        cbor.encode(["edgeroot/map-proof/v1", [], [b"x", b"y"]]),
        cbor.encode(["edgeroot/map-proof/v1", [os.urandom(32)] * 257, None]),
    ):
        with pytest.raises(FormatError):
            MapProof.from_bytes(bad)
