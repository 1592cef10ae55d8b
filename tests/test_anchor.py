"""The anchor leaf (0x06) byte for byte, and the pure proof that a child checkpoint is anchored in its
parent's log: every verdict, and the corruptions that must raise instead of judging."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.anchor import (
    Anchored,
    AnchorProof,
    Inconsistent,
    NotAnchoredYet,
    is_fork_evidence,
    needs_child_proof,
    prove_anchor,
    verify_anchor,
)
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint, suite_extensions
from chain_lite.errors import ChainError, FormatError, OriginMismatch, ProofError, SignatureError
from chain_lite.keys import NoteKey
from chain_lite.log_leaf import ANCHOR_LABEL, LEAF_ANCHOR, ChildAnchor, parse_leaf, registry_leaf
from chain_lite.merkle import MerkleTree
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, VerifierKey
from chain_lite.suite import LOG_PROFILES, SHA256, SM3, HashSuite
from tests.helpers import TIME, LogBuilder

CHILD = "child.test"


@dataclass
class Child:
    key: NoteKey = field(default_factory=lambda: NoteKey.generate(CHILD, SIGTYPE_ED25519))
    tree: MerkleTree = field(default_factory=MerkleTree)
    suite: HashSuite = SHA256
    """The child log's hash: its tree and its checkpoints' hash line follow it."""

    def __post_init__(self) -> None:
        if self.tree.suite is not self.suite:
            self.tree = MerkleTree(suite=self.suite)

    @property
    def vkey(self) -> VerifierKey:
        return VerifierKey.parse(self.key.vkey())

    def grow(self, n: int) -> None:
        start = self.tree.size
        self.tree.append_entries(f"child {i}".encode() for i in range(start, start + n))

    def checkpoint(self, size: int | None = None, root: bytes | None = None) -> SignedCheckpoint:
        size = self.tree.size if size is None else size
        root = self.tree.root_at(size) if root is None else root
        cp = Checkpoint(CHILD, size, root, suite_extensions(self.suite))
        return sign_checkpoint(cp, self.key.log_signer())


@dataclass
class World:
    """A parent log (three witnesses, quorum two) holding some entries and one anchor of the child."""

    parent: LogBuilder = field(default_factory=LogBuilder)
    child: Child = field(default_factory=Child)

    def anchor(self, size: int, *, before: int = 3, after: int = 2) -> AnchorProof:
        self.parent.add(before)
        leaf = ChildAnchor.of(self.child.vkey, self.child.checkpoint(size), TIME).leaf()
        index = self.parent.tree.size
        self.parent.tree.append_entries([leaf])
        self.parent.add(after)
        size_p = self.parent.tree.size
        inclusion = tuple(self.parent.tree.inclusion_proof(index, size_p))
        return AnchorProof(self.parent.checkpoint(), index, leaf, inclusion)


@pytest.fixture(
    params=[("default", "default"), ("sm", "sm"), ("default", "sm"), ("sm", "default")],
    ids=["sha256", "sm", "sm-child-of-sha256", "sha256-child-of-sm"],
)
def world(request: pytest.FixtureRequest) -> World:
    """Once per pair of log profiles (parent, child), as ``root init --suite`` makes them: each log proves
    with its own hash (D-064) and signs with its own key type (``sm``: SM2 log key and witnesses, D-084)."""
    parent, child = (LOG_PROFILES[name] for name in request.param)
    child_key = NoteKey.generate(CHILD, child.log_sigtype)
    w = World(LogBuilder.of_profile(parent), Child(child_key, suite=child.hash))
    w.child.grow(10)
    return w


# --- the leaf -------------------------------------------------------------------------------------------


def test_anchor_leaf_bytes_are_type_06_and_a_labelled_deterministic_cbor_array(world: World) -> None:
    """0x06 ‖ CBOR [label, vkey text, note bytes, cosigned_at], decoded by plain cbor2 as documented."""
    signed = world.child.checkpoint()
    leaf = ChildAnchor.of(world.child.vkey, signed, TIME).leaf()
    assert leaf[0] == LEAF_ANCHOR == 0x06
    assert leaf[1] == 0x84  # a definite array of 4 items
    assert leaf[2:21] == b"\x72edgeroot/anchor/v1"  # text of 18 bytes (formats.md §13's example)
    assert leaf.endswith(bytes.fromhex("1a68e77800"))  # cosigned_at 1,760,000,000 as a 4-byte unsigned
    label, vkey, note, at = cbor2.loads(leaf[1:])
    assert (label, vkey, note, at) == (ANCHOR_LABEL, world.child.key.vkey(), signed.to_bytes(), TIME)
    assert cbor2.dumps([label, vkey, note, at], canonical=True) == leaf[1:]
    parsed = parse_leaf(leaf)
    assert isinstance(parsed, ChildAnchor) and parsed.leaf() == leaf
    assert parsed.checkpoint.checkpoint == signed.checkpoint


def test_anchor_keeps_only_the_child_log_signature(world: World) -> None:
    """Cosignatures the posted note carried are dropped: the leaf is the same whoever else witnessed."""
    signed = world.child.checkpoint()
    witness = NoteKey.generate("other.witness", SIGTYPE_COSIGNATURE_V1).cosigner()
    cosigned = SignedCheckpoint(
        signed.checkpoint, signed.note.with_signatures([witness.cosign(signed.note, 5)])
    )
    a = ChildAnchor.of(world.child.vkey, cosigned, TIME)
    assert a.leaf() == ChildAnchor.of(world.child.vkey, signed, TIME).leaf()


def test_anchor_of_a_checkpoint_the_child_did_not_sign_is_refused(world: World) -> None:
    """A checkpoint signed by another key of the same name cannot become an anchor."""
    impostor = NoteKey.generate(CHILD, SIGTYPE_ED25519)
    forged = sign_checkpoint(world.child.checkpoint().checkpoint, impostor.log_signer())
    with pytest.raises(SignatureError):
        ChildAnchor.of(world.child.vkey, forged, TIME)


def _leaf(*items: object) -> bytes:
    return bytes([LEAF_ANCHOR]) + cbor2.dumps(list(items), canonical=True)


def test_malformed_anchor_leaves_are_refused_with_a_format_error(world: World) -> None:
    """Wrong label, arity, types, key type or name, extra signatures, non-canonical parts: FormatError."""
    signed = world.child.checkpoint()
    note, vkey = signed.to_bytes(), world.child.key.vkey()
    witness_vkey = NoteKey.generate(CHILD, SIGTYPE_COSIGNATURE_V1).vkey()
    other_name = NoteKey.generate("other.test", SIGTYPE_ED25519).vkey()
    second = sign_checkpoint(signed.checkpoint, NoteKey.generate("x", SIGTYPE_ED25519).log_signer())
    two_sigs = signed.note.with_signatures(second.note.signatures).to_bytes()
    bad = [
        _leaf("edgeroot/anchor/v2", vkey, note, TIME),
        _leaf(ANCHOR_LABEL, vkey, note),
        _leaf(ANCHOR_LABEL, vkey, note, TIME, 0),
        _leaf(ANCHOR_LABEL, vkey.encode(), note, TIME),
        _leaf(ANCHOR_LABEL, vkey, note.decode(), TIME),
        _leaf(ANCHOR_LABEL, vkey, note, -1),
        _leaf(ANCHOR_LABEL, vkey, note, "1"),
        _leaf(ANCHOR_LABEL, witness_vkey, note, TIME),
        _leaf(ANCHOR_LABEL, other_name, note, TIME),
        _leaf(ANCHOR_LABEL, vkey, two_sigs, TIME),
        _leaf(ANCHOR_LABEL, " " + vkey, note, TIME),
        _leaf(ANCHOR_LABEL, vkey, note + b"\n", TIME),
        _leaf(ANCHOR_LABEL, "not a key", note, TIME),
        _leaf(ANCHOR_LABEL, vkey, b"not a note", TIME),
        bytes([LEAF_ANCHOR]) + cbor2.dumps({"a": 1}),
        bytes([LEAF_ANCHOR]),
        # the same array, not in deterministic encoding (a 1-byte length written in 2 bytes)
        bytes([LEAF_ANCHOR, 0x98, 4]) + _leaf(ANCHOR_LABEL, vkey, note, TIME)[2:],
    ]
    good = _leaf(ANCHOR_LABEL, vkey, note, TIME)
    assert isinstance(parse_leaf(good), ChildAnchor)
    bad.append(good[:-1])
    for leaf in bad:
        with pytest.raises(FormatError):
            parse_leaf(leaf)


_KEY = NoteKey.generate(CHILD, SIGTYPE_ED25519)
_VALID = ChildAnchor.of(
    VerifierKey.parse(_KEY.vkey()), sign_checkpoint(Checkpoint(CHILD, 3, bytes(32)), _KEY.log_signer()), TIME
).leaf()


@given(st.binary(max_size=300), st.integers(1, len(_VALID) - 1), st.integers(1, 255))
def test_anchor_leaf_parser_never_crashes(data: bytes, at: int, xor: int) -> None:
    """Random bytes after 0x06, or a valid leaf with one byte changed, parse to an anchor that
    re-encodes to the same bytes, or raise FormatError; nothing else."""
    mutated = bytearray(_VALID)
    mutated[at] ^= xor
    for leaf in (bytes([LEAF_ANCHOR]) + data, bytes(mutated)):
        try:
            parsed = parse_leaf(leaf)
        except FormatError:
            continue
        assert isinstance(parsed, ChildAnchor) and parsed.leaf() == leaf


# --- the verdicts ---------------------------------------------------------------------------------------


def test_the_anchored_checkpoint_itself_is_anchored(world: World) -> None:
    """The very checkpoint the parent logged needs no child proof."""
    proof = world.anchor(10)
    given = world.child.checkpoint(10)
    proven = prove_anchor(world.parent.policy(), proof)
    assert needs_child_proof(proven, given) is None
    verdict = verify_anchor(world.parent.policy(), proof, given, None)
    assert isinstance(verdict, Anchored)
    assert verdict.proven.index == 3 and verdict.proven.parent.checkpoint.size == 6


def test_an_older_checkpoint_is_anchored_through_the_childs_consistency_proof(world: World) -> None:
    """A checkpoint the anchored one extends is anchored, with the child's proof from it."""
    proof = world.anchor(10)
    given = world.child.checkpoint(4)
    proven = prove_anchor(world.parent.policy(), proof)
    assert needs_child_proof(proven, given) == (4, 10)
    child_proof = world.child.tree.consistency_proof(4, 10)
    assert isinstance(verify_anchor(world.parent.policy(), proof, given, child_proof), Anchored)
    with pytest.raises(ChainError, match="consistency proof from size 4 to 10 is needed"):
        verify_anchor(world.parent.policy(), proof, given, None)


def test_a_newer_checkpoint_is_not_anchored_yet(world: World) -> None:
    """A checkpoint beyond the newest anchor is not anchored yet, with or without a proof."""
    proof = world.anchor(6)
    given = world.child.checkpoint(10)
    assert isinstance(verify_anchor(world.parent.policy(), proof, given, None), NotAnchoredYet)
    good = world.child.tree.consistency_proof(6, 10)
    assert isinstance(verify_anchor(world.parent.policy(), proof, given, good), NotAnchoredYet)


def test_two_roots_at_one_size_are_inconsistent(world: World) -> None:
    """A child checkpoint of the anchored size with another root is evidence."""
    proof = world.anchor(10)
    other = world.child.checkpoint(10, root=bytes(32))
    verdict = verify_anchor(world.parent.policy(), proof, other, None)
    assert isinstance(verdict, Inconsistent) and "two different roots at size 10" in verdict.reason
    assert is_fork_evidence(
        world.child.vkey, verdict.given.to_bytes(), verdict.proven.anchor.checkpoint.to_bytes()
    )


def test_a_failing_well_formed_child_proof_is_inconsistent_both_ways(world: World) -> None:
    """A history the child rewrote (its proof cannot link the two) is evidence, older or newer."""
    proof = world.anchor(10)
    forked = Child(world.child.key, suite=world.child.suite)
    forked.tree.append_entries(f"rewritten {i}".encode() for i in range(12))
    for size in (4, 12):
        given = forked.checkpoint(size)
        lo, hi = sorted((size, 10))
        wrong = (
            world.child.tree.consistency_proof(lo, hi) if hi <= 10 else forked.tree.consistency_proof(lo, hi)
        )
        verdict = verify_anchor(world.parent.policy(), proof, given, wrong)
        assert isinstance(verdict, Inconsistent), size


def test_a_child_checkpoint_declaring_another_hash_is_inconsistent(world: World) -> None:
    """The child signed checkpoints of two hashes: a log's hash never changes, so that is evidence."""
    proof = world.anchor(10)
    other = SHA256 if world.child.suite is SM3 else SM3
    switched = Child(world.child.key, suite=other)
    switched.tree.append_entries(f"child {i}".encode() for i in range(12))
    verdict = verify_anchor(world.parent.policy(), proof, switched.checkpoint(12), None)
    assert isinstance(verdict, Inconsistent)
    assert f"declares hash {other.name}, the anchored one {world.child.suite.name}" in verdict.reason


def test_malformed_child_proofs_raise_instead_of_judging(world: World) -> None:
    """A proof with a hash missing or extra proves nothing either way."""
    proof = world.anchor(10)
    given = world.child.checkpoint(4)
    good = world.child.tree.consistency_proof(4, 10)
    for broken in (good[:-1], [*good, good[0]], [h[:31] for h in good]):
        with pytest.raises(ProofError):
            verify_anchor(world.parent.policy(), proof, given, broken)


def test_an_empty_child_checkpoint_with_a_non_empty_root_is_inconsistent(world: World) -> None:
    """Size 0 has exactly one root."""
    proof = world.anchor(10)
    verdict = verify_anchor(world.parent.policy(), proof, world.child.checkpoint(0, root=bytes(32)), None)
    assert isinstance(verdict, Inconsistent)
    assert isinstance(verify_anchor(world.parent.policy(), proof, world.child.checkpoint(0), None), Anchored)


def test_corrupted_parent_side_raises(world: World) -> None:
    """Inclusion index ±1, a flipped proof or leaf bit, a missing hash, a parent checkpoint below the
    quorum or by another key, a non-anchor leaf: each raises; none is a verdict."""
    proof = world.anchor(10)
    given = world.child.checkpoint(10)
    policy = world.parent.policy()
    flipped = bytes([proof.inclusion[0][0] ^ 1]) + proof.inclusion[0][1:]
    leaf = bytearray(proof.leaf)
    leaf[-1] ^= 1
    other_log = LogBuilder()
    other_log.tree = world.parent.tree
    broken = [
        replace(proof, index=proof.index + 1),
        replace(proof, index=proof.index - 1),
        replace(proof, inclusion=(flipped, *proof.inclusion[1:])),
        replace(proof, inclusion=proof.inclusion[:-1]),
        replace(proof, inclusion=(*proof.inclusion, proof.inclusion[0])),
        replace(proof, leaf=bytes(leaf)),
        replace(proof, parent_checkpoint=world.parent.checkpoint(cosigners=1)),
        replace(proof, parent_checkpoint=other_log.checkpoint()),
        replace(proof, leaf=registry_leaf(b"x"), index=0),
    ]
    for bad in broken:
        with pytest.raises(ChainError):
            verify_anchor(policy, bad, given, None)


def test_a_given_checkpoint_not_signed_by_the_anchored_key_or_of_another_log_raises(world: World) -> None:
    """The verdict is about the child the parent anchored: another key or origin is not judged."""
    proof = world.anchor(10)
    impostor = Child(NoteKey.generate(CHILD, SIGTYPE_ED25519), world.child.tree)
    with pytest.raises(SignatureError):
        verify_anchor(world.parent.policy(), proof, impostor.checkpoint(10, root=bytes(32)), None)
    stranger = NoteKey.generate("stranger.test", SIGTYPE_ED25519)
    alien = sign_checkpoint(
        Checkpoint("stranger.test", 10, world.child.tree.root_at(10)), stranger.log_signer()
    )
    with pytest.raises(OriginMismatch):
        verify_anchor(world.parent.policy(), proof, alien, None)


def test_fork_evidence_needs_two_child_signatures_one_size_two_roots(world: World) -> None:
    """Evidence is checkable by anyone: both notes signed by the child, same size, different roots."""
    a = world.child.checkpoint(10).to_bytes()
    b = world.child.checkpoint(10, root=bytes(32)).to_bytes()
    vkey = world.child.vkey
    assert is_fork_evidence(vkey, a, b)
    assert not is_fork_evidence(vkey, a, a)
    assert not is_fork_evidence(vkey, a, world.child.checkpoint(9).to_bytes())
    impostor = NoteKey.generate(CHILD, SIGTYPE_ED25519)
    forged = sign_checkpoint(Checkpoint(CHILD, 10, bytes(32)), impostor.log_signer()).to_bytes()
    assert not is_fork_evidence(vkey, a, forged)
    assert not is_fork_evidence(vkey, a, b"garbage")


@given(st.integers(1, 24), st.integers(0, 24), st.integers(0, 24), st.booleans())
def test_verdicts_match_the_naive_rule_for_small_trees(
    anchored: int, given_size: int, fork_at: int, forked: bool
) -> None:
    """Against a reference rule: the child holds one history (maybe rewritten from ``fork_at`` on) and
    serves its proofs from it; the verdict is INCONSISTENT exactly when that history's tree at the
    anchored size is not the anchored one (an empty given tree is consistent with anything), else
    ANCHORED for a given size up to the anchored one and NOT YET above it."""
    world = World()
    world.child.grow(max(anchored, given_size))
    proof = world.anchor(anchored, before=1, after=0)
    held = Child(world.child.key)
    held.tree.append_entries(
        f"child {i}".encode() if not forked or i < fork_at else f"forked {i}".encode()
        for i in range(max(anchored, given_size))
    )
    given = held.checkpoint(given_size)
    lo, hi = sorted((given_size, anchored))
    child_proof = None if lo in (0, hi) else held.tree.consistency_proof(lo, hi)
    consistent = given_size == 0 or held.tree.root_at(anchored) == world.child.tree.root_at(anchored)
    assert consistent == (given_size == 0 or not forked or fork_at >= anchored)  # the reference itself
    verdict = verify_anchor(world.parent.policy(), proof, given, child_proof)
    if not consistent:
        assert isinstance(verdict, Inconsistent)
    elif given_size <= anchored:
        assert isinstance(verdict, Anchored)
    else:
        assert isinstance(verdict, NotAnchoredYet)
