"""The light client state machine: accept, reject with a reason, or keep evidence; never go back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chain_lite import light_client
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import (
    FormatError,
    HashSizeError,
    OriginMismatch,
    ProofLengthError,
    QuorumNotMet,
    UnverifiedCheckpoint,
)
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.merkle import leaf_hash
from chain_lite.receipt import Receipt
from chain_lite.suite import SHA256, SM3

from .helpers import ORIGIN, LogBuilder


@pytest.fixture(params=[SHA256, SM3], ids=lambda s: s.name)
def log(request: pytest.FixtureRequest) -> LogBuilder:
    """A log of 10 entries, once per hash profile: every test using it runs for SHA-256 and SM3 logs."""
    builder = LogBuilder(suite=request.param)
    builder.add(10)
    return builder


def test_first_checkpoint_needs_an_empty_proof_then_proofs_advance_it(log: LogBuilder) -> None:
    """From the empty tree any valid checkpoint is consistent; later ones need a proof."""
    client = LightClient(log.policy(), ORIGIN)
    assert isinstance(client.update(log.checkpoint(), [b"\x00" * 32]), Rejected)
    first = client.update(log.checkpoint(), [])
    assert isinstance(first, Accepted) and first.moved and client.size == 10
    log.add(7)
    nxt = client.update(log.checkpoint(), log.tree.consistency_proof(10))
    assert isinstance(nxt, Accepted) and nxt.moved and client.size == 17


def test_one_consistency_proof_covers_a_long_offline_gap(log: LogBuilder) -> None:
    """A client offline for thousands of entries catches up with a single proof."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    log.add(5000)
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10)), Accepted)
    assert client.size == 5010


def test_never_moves_backwards(log: LogBuilder) -> None:
    """An older, honestly signed checkpoint proven consistent is accepted without moving the pin; without
    its proof (from it to the pin) it is refused; the pinned one stays either way."""
    old = log.checkpoint()
    log.add(5)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    outcome = client.update(old, [])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, ProofLengthError)
    assert client.size == 15
    outcome = client.update(old, log.tree.consistency_proof(10, 15))
    assert isinstance(outcome, Accepted) and not outcome.moved and outcome.checkpoint.checkpoint.size == 10
    assert client.size == 15 and client.pinned is not None and client.pinned.checkpoint.size == 15


def test_a_forked_checkpoint_older_than_the_pin_is_evidence(log: LogBuilder) -> None:
    """A validly signed older checkpoint that the pinned tree does not extend is evidence, with the proof
    the log served (from the older size to the pinned one); the pin stays."""
    log.add(6)
    pinned = log.checkpoint()
    client = LightClient(log.policy(), ORIGIN, pinned)
    forked = log.checkpoint(10, root=b"\x07" * 32)
    proof = log.tree.consistency_proof(10, 16)
    outcome = client.update(forked, proof)
    assert isinstance(outcome, Evidence)
    assert outcome.pinned == pinned and outcome.conflicting == forked and outcome.proof == tuple(proof)
    assert client.size == 16 and client.needs_proof(SignedCheckpoint.parse(forked).checkpoint) == (10, 16)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda p: p[:-1], id="a-hash-missing"),
        pytest.param(lambda p: [*p, p[0]], id="a-hash-too-many"),
        pytest.param(lambda p: [p[0][:31], *p[1:]], id="a-31-byte-hash"),
    ],
)
def test_a_malformed_proof_for_an_older_checkpoint_is_rejected_not_evidence(
    log: LogBuilder, mangle: Callable[[list[bytes]], list[bytes]]
) -> None:
    """Below the pin too, a proof of the wrong shape proves nothing either way: refused, no evidence."""
    older = log.checkpoint()
    log.add(6)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    outcome = client.update(older, mangle(log.tree.consistency_proof(10, 16)))
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, ProofLengthError | HashSizeError)
    assert client.size == 16 and client.needs_proof(SignedCheckpoint.parse(older).checkpoint) == (10, 16)


def test_the_proof_a_checkpoint_needs_is_named_by_the_client(log: LogBuilder) -> None:
    """From the pin to a newer size, from an older size to the pin, none for the pinned size, for an
    older checkpoint already proven, for the empty tree, or when nothing is pinned yet."""
    client = LightClient(log.policy(), ORIGIN)
    at_10 = SignedCheckpoint.parse(log.checkpoint()).checkpoint
    assert client.needs_proof(at_10) is None
    log.add(6)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    assert client.needs_proof(at_10) == (10, 16)
    assert client.needs_proof(SignedCheckpoint.parse(log.checkpoint()).checkpoint) is None
    assert client.needs_proof(SignedCheckpoint.parse(log.checkpoint(0)).checkpoint) is None
    log.add(4)
    assert client.needs_proof(SignedCheckpoint.parse(log.checkpoint()).checkpoint) == (16, 20)
    assert isinstance(client.update(log.checkpoint(10), log.tree.consistency_proof(10, 16)), Accepted)
    assert client.needs_proof(at_10) is None  # proven once, remembered (and kept in the state)
    assert LightClient.from_state(log.policy(), client.state()).needs_proof(at_10) is None


def test_an_older_checkpoint_of_a_remembered_size_is_judged_without_a_proof(log: LogBuilder) -> None:
    """The root remembered for that size decides: the same root is accepted, another one is evidence."""
    at_10 = log.checkpoint()
    client = LightClient(log.policy(), ORIGIN, at_10)
    log.add(6)
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10, 16)), Accepted)
    same = client.update(at_10, [])
    assert isinstance(same, Accepted) and not same.moved and client.size == 16
    forked = log.checkpoint(10, root=b"\x07" * 32)
    outcome = client.update(forked, [])
    assert isinstance(outcome, Evidence) and outcome.conflicting == forked and client.size == 16


def test_the_empty_tree_below_the_pin_has_one_root(log: LogBuilder) -> None:
    """A signed size-0 checkpoint is consistent with every tree when its root is the empty tree's root;
    with any other root it cannot be true, so it is evidence."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    empty = client.update(log.checkpoint(0), [])
    assert isinstance(empty, Accepted) and not empty.moved and client.size == 10
    outcome = client.update(log.checkpoint(0, root=b"\x07" * 32), [])
    assert isinstance(outcome, Evidence) and client.size == 10


def test_a_receipt_against_an_older_proven_checkpoint_verifies_even_past_the_memory_bound(
    log: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older checkpoint just proven consistent is remembered even when the memory of earlier sizes is
    full (the oldest other size is dropped), so a receipt against it verifies."""
    monkeypatch.setattr(light_client, "MAX_REMEMBERED", 2)
    at_10 = log.checkpoint()
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(at_10))
    log.add(2)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    for _ in range(2):
        old = client.size
        log.add(2)
        assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(old)), Accepted)
    assert sorted(client.state()["known"]) == ["14", "16"]
    assert isinstance(client.update(at_10, log.tree.consistency_proof(10, 16)), Accepted)
    assert client.verify_receipt(receipt, leaf_hash(b"entry 3", suite=log.suite)).checkpoint.size == 10
    assert client.size == 16 and sorted(client.state()["known"]) == ["10", "16"]


def test_same_size_different_root_is_evidence(log: LogBuilder) -> None:
    """Two signed checkpoints of one size with different roots are kept as evidence."""
    pinned = log.checkpoint()
    client = LightClient(log.policy(), ORIGIN, pinned)
    forked = log.checkpoint(root=b"\x42" * 32)
    outcome = client.update(forked, [])
    assert isinstance(outcome, Evidence)
    assert outcome.pinned == pinned
    assert outcome.conflicting == forked
    assert client.size == 10


def test_inconsistent_larger_checkpoint_is_evidence(log: LogBuilder) -> None:
    """A validly signed larger tree that is not an extension yields evidence, not acceptance."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    log.add(6)
    proof = log.tree.consistency_proof(10)
    forked = log.checkpoint(root=b"\x07" * 32)
    outcome = client.update(forked, proof)
    assert isinstance(outcome, Evidence) and outcome.proof == tuple(proof)
    assert client.size == 10


def test_a_proof_of_the_wrong_shape_is_rejected_not_evidence(log: LogBuilder) -> None:
    """A truncated proof proves nothing either way."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    log.add(6)
    outcome = client.update(log.checkpoint(), log.tree.consistency_proof(10)[:-1])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, ProofLengthError)


def test_checkpoints_failing_the_policy_are_rejected(log: LogBuilder) -> None:
    """Too few cosignatures, or a foreign log, change nothing."""
    client = LightClient(log.policy(quorum=3), ORIGIN)
    outcome = client.update(log.checkpoint(cosigners=2), [])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, QuorumNotMet)
    other = LogBuilder(suite=log.suite)
    outcome = LightClient(log.policy(), ORIGIN).update(other.checkpoint(), [])
    assert isinstance(outcome, Rejected)
    assert client.pinned is None


def test_receipts_verify_only_against_checkpoints_the_client_verified(log: LogBuilder) -> None:
    """A receipt with a valid but unseen checkpoint is refused until the client has verified it."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    client.verify_receipt(receipt, leaf_hash(b"entry 3", suite=log.suite))
    log.add(4)
    newer = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    with pytest.raises(UnverifiedCheckpoint):
        client.verify_receipt(newer, leaf_hash(b"entry 3", suite=log.suite))
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10)), Accepted)
    client.verify_receipt(newer, leaf_hash(b"entry 3", suite=log.suite))
    client.verify_receipt(receipt, b"entry 3", is_hash=False)  # the older checkpoint is remembered


def test_state_round_trips_and_is_reverified(log: LogBuilder) -> None:
    """Saved state restores the pinned checkpoint; a policy that no longer trusts it refuses it."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    restored = LightClient.from_state(log.policy(), client.state())
    assert restored.size == 10 and restored.state() == client.state()
    with pytest.raises(QuorumNotMet):
        LightClient.from_state(
            log.policy(quorum=3), LightClient(log.policy(), ORIGIN, log.checkpoint(cosigners=2)).state()
        )
    with pytest.raises(OriginMismatch):
        LightClient(log.policy(), "another.origin", log.checkpoint())


def test_advance_takes_a_verified_checkpoint_and_still_refuses_another_log(log: LogBuilder) -> None:
    """advance() judges an already verified checkpoint like update(); one of another log is refused."""
    policy = log.policy()
    client = LightClient(policy, ORIGIN)
    assert isinstance(client.advance(policy.verify_checkpoint(log.checkpoint()), []), Accepted)
    other = LogBuilder(suite=log.suite)
    other.add(12)
    foreign = other.policy().verify_checkpoint(other.checkpoint())
    outcome = LightClient(policy, "another.origin").advance(foreign, [])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, OriginMismatch)
    assert client.size == 10


def test_a_receipt_with_someone_elses_verified_checkpoint_is_refused(log: LogBuilder) -> None:
    """verify_receipt(verified=...) skips re-checking signatures only for the receipt's own checkpoint."""
    policy = log.policy()
    client = LightClient(policy, ORIGIN, log.checkpoint())
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    verified = policy.verify_checkpoint(receipt.checkpoint)
    assert (
        client.verify_receipt(receipt, leaf_hash(b"entry 3", suite=log.suite), verified=verified) is verified
    )
    log.add(2)
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10)), Accepted)
    newer = policy.verify_checkpoint(log.checkpoint())
    with pytest.raises(FormatError):
        client.verify_receipt(receipt, leaf_hash(b"entry 3", suite=log.suite), verified=newer)


def test_every_older_size_is_judged_against_the_pin_exhaustively_for_small_trees() -> None:
    """For every pinned size n <= 12 and older size 0 < m < n: the honest checkpoint with its proof is
    accepted without moving the pin; a root flipped in one bit, or a proof hash flipped in one bit, is
    evidence; a proof missing its last hash is rejected, never evidence."""
    log = LogBuilder()
    log.add(12)
    policy = log.policy(quorum=1)
    signed = {m: log.checkpoint(m, cosigners=1) for m in range(1, 13)}
    for n in range(2, 13):
        for m in range(1, n):
            proof = log.tree.consistency_proof(m, n)
            flipped_root = bytes([log.tree.root_at(m)[0] ^ 1]) + log.tree.root_at(m)[1:]
            flipped_proof = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
            cases = [
                (signed[m], proof, Accepted),
                (log.checkpoint(m, cosigners=1, root=flipped_root), proof, Evidence),
                (signed[m], flipped_proof, Evidence),
                (signed[m], proof[:-1], Rejected),
            ]
            for checkpoint, given, verdict in cases:
                client = LightClient(policy, ORIGIN, signed[n])
                outcome = client.update(checkpoint, given)
                assert isinstance(outcome, verdict), (m, n, verdict, outcome)
                assert client.size == n and client.pinned is not None
                assert client.pinned.to_bytes() == signed[n]
