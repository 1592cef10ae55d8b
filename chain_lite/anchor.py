"""Verifying that a child log's checkpoint is anchored in its parent's log (D-078, formats §13).

A parent node witnesses its children: it cosigns a child's checkpoint only after checking that it
extends the last one it cosigned, and logs each cosigned checkpoint as a :class:`ChildAnchor` leaf
(type 0x06). :func:`verify_anchor` proves, from the parent's log alone plus one consistency proof the
child serves, that a given child checkpoint is committed there:

1. the parent checkpoint verifies under the caller's trust policy (log signature and witness quorum);
2. the anchor leaf is included under it (RFC 9162 inclusion proof);
3. the anchored child checkpoint verifies under the child key the leaf names, and so does the given one;
4. the given checkpoint is the anchored one, or a consistency proof links it to the anchored one.

The verdict is :class:`Anchored`, :class:`NotAnchoredYet` (the parent's latest anchor is older than
the given checkpoint) or :class:`Inconsistent` (the two signed child checkpoints cannot both be true:
evidence). What cannot be judged (a bad parent signature, a broken inclusion proof, a malformed proof)
raises a :class:`~chain_lite.errors.ChainError` instead: it proves nothing about the child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chain_lite.checkpoint import Checkpoint, SignedCheckpoint
from chain_lite.cosignature import log_verifier
from chain_lite.errors import ChainError, FormatError, OriginMismatch, RootMismatch
from chain_lite.log_leaf import LEAF_ANCHOR, ChildAnchor, parse_leaf
from chain_lite.merkle import leaf_hash, verify_consistency, verify_inclusion
from chain_lite.note import VerifierKey, open_note
from chain_lite.policy import Policy, VerifiedCheckpoint


@dataclass(frozen=True, slots=True)
class AnchorProof:
    """What the parent serves: its checkpoint, the anchor leaf's index and bytes, the inclusion proof."""

    parent_checkpoint: bytes
    index: int
    leaf: bytes
    inclusion: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ProvenAnchor:
    """An anchor leaf proven to be in a parent checkpoint that meets the policy."""

    parent: VerifiedCheckpoint
    index: int
    anchor: ChildAnchor


@dataclass(frozen=True, slots=True)
class Anchored:
    """The given child checkpoint is the anchored one, or the anchored one provably extends it."""

    proven: ProvenAnchor
    given: Checkpoint


@dataclass(frozen=True, slots=True)
class NotAnchoredYet:
    """The parent's newest anchor of this child is older than the given checkpoint (and, when a
    consistency proof was given, the given checkpoint extends it)."""

    proven: ProvenAnchor
    given: Checkpoint


@dataclass(frozen=True, slots=True)
class Inconsistent:
    """The given and the anchored child checkpoints are both validly signed by the child and cannot
    both be views of one append-only log: keep both notes as evidence."""

    proven: ProvenAnchor
    given: SignedCheckpoint
    reason: str


Verdict = Anchored | NotAnchoredYet | Inconsistent


def prove_anchor(policy: Policy, proof: AnchorProof, *, parent_origin: str | None = None) -> ProvenAnchor:
    """Steps 1–2 and the anchor's own signature. Raises :class:`ChainError` on any failure."""
    parent = policy.verify_checkpoint(proof.parent_checkpoint, origin=parent_origin)
    if not proof.leaf or proof.leaf[0] != LEAF_ANCHOR:
        raise FormatError("anchor", f"log entry {proof.index} is not an anchor leaf (type 0x06)")
    pcp = parent.checkpoint  # its hash profile checked against the policy's (D-064)
    leaf = leaf_hash(proof.leaf, suite=pcp.suite)
    verify_inclusion(proof.index, pcp.size, leaf, proof.inclusion, pcp.root, suite=pcp.suite)
    anchor = parse_leaf(proof.leaf)
    assert isinstance(anchor, ChildAnchor)
    # The parent checked this signature before logging the leaf; an auditor checks it again.
    open_note(anchor.checkpoint.note, [log_verifier(anchor.child_vkey)])
    return ProvenAnchor(parent, proof.index, anchor)


def needs_child_proof(proven: ProvenAnchor, given: SignedCheckpoint) -> tuple[int, int] | None:
    """The (old, new) sizes of the consistency proof the child must serve, or ``None`` if none is needed."""
    a, g = proven.anchor.checkpoint.checkpoint.size, given.checkpoint.size
    if a == g or min(a, g) == 0:
        return None
    return (min(a, g), max(a, g))


def judge(proven: ProvenAnchor, given: SignedCheckpoint, child_proof: Sequence[bytes] | None) -> Verdict:
    """Steps 3–4. ``child_proof`` is the child's consistency proof for :func:`needs_child_proof`'s sizes
    (``None`` when none is needed, or when the given checkpoint is newer and the child was not asked).

    Raises :class:`ChainError` when the given checkpoint is not the child's (another origin, not signed
    by the anchored key) or the proof is malformed (wrong length or shape): neither proves anything.
    """
    anchored = proven.anchor.checkpoint.checkpoint
    cp = given.checkpoint
    if cp.origin != anchored.origin:
        raise OriginMismatch(anchored.origin, cp.origin)
    open_note(given.note, [log_verifier(proven.anchor.child_vkey)])
    if cp.suite is not anchored.suite:  # both signed by the child: a log's hash never changes (D-065)
        hashes = f"it declares hash {cp.suite.name}, the anchored one {anchored.suite.name}"
        return Inconsistent(proven, given, hashes)
    if cp.size == 0 and cp.root != cp.suite.empty_root:
        return Inconsistent(proven, given, "an empty tree with a root other than the empty root")
    if cp.size == anchored.size:
        if cp.root != anchored.root:
            return Inconsistent(proven, given, f"two different roots at size {cp.size}")
        return Anchored(proven, cp)
    sizes = needs_child_proof(proven, given)
    if sizes is not None and child_proof is not None:
        old, new = (cp, anchored) if cp.size < anchored.size else (anchored, cp)
        try:
            verify_consistency(old.size, new.size, child_proof, old.root, new.root, suite=cp.suite)
        except RootMismatch as exc:  # a well-formed proof that fails: the two roots are evidence
            return Inconsistent(proven, given, f"size {new.size} does not extend size {old.size} ({exc})")
    elif sizes is not None and cp.size < anchored.size:
        raise ChainError(f"a consistency proof from size {cp.size} to {anchored.size} is needed")
    return Anchored(proven, cp) if cp.size < anchored.size else NotAnchoredYet(proven, cp)


def verify_anchor(
    policy: Policy,
    proof: AnchorProof,
    given: SignedCheckpoint,
    child_proof: Sequence[bytes] | None,
    *,
    parent_origin: str | None = None,
) -> Verdict:
    """:func:`prove_anchor` then :func:`judge`."""
    return judge(prove_anchor(policy, proof, parent_origin=parent_origin), given, child_proof)


def is_fork_evidence(child_vkey: VerifierKey, first: bytes, second: bytes) -> bool:
    """Whether two notes are both signed by the child's key, for the same size, with different roots:
    what a parent keeps when a child shows it two inconsistent checkpoints."""
    verifier = log_verifier(child_vkey)
    try:
        a, b = SignedCheckpoint.parse(first), SignedCheckpoint.parse(second)
        open_note(a.note, [verifier])
        open_note(b.note, [verifier])
    except ChainError:
        return False
    ca, cb = a.checkpoint, b.checkpoint
    same_log = ca.origin == cb.origin == child_vkey.name
    return same_log and ca.size == cb.size and ca.root != cb.root
