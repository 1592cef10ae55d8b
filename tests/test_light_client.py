"""The light client state machine: accept, reject with a reason, or keep evidence; never go back."""

from __future__ import annotations

import pytest

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import (
    FormatError,
    OriginMismatch,
    ProofLengthError,
    QuorumNotMet,
    StaleCheckpoint,
    UnverifiedCheckpoint,
)
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.merkle import leaf_hash
from chain_lite.receipt import Receipt

from .helpers import ORIGIN, LogBuilder


@pytest.fixture
def log() -> LogBuilder:
    builder = LogBuilder()
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
    """An older, honestly signed checkpoint is stale, and the pinned one stays."""
    old = log.checkpoint()
    log.add(5)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    outcome = client.update(old, [])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, StaleCheckpoint)
    assert client.size == 15


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
    other = LogBuilder()
    outcome = LightClient(log.policy(), ORIGIN).update(other.checkpoint(), [])
    assert isinstance(outcome, Rejected)
    assert client.pinned is None


def test_receipts_verify_only_against_checkpoints_the_client_verified(log: LogBuilder) -> None:
    """A receipt with a valid but unseen checkpoint is refused until the client has verified it."""
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    client.verify_receipt(receipt, leaf_hash(b"entry 3"))
    log.add(4)
    newer = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    with pytest.raises(UnverifiedCheckpoint):
        client.verify_receipt(newer, leaf_hash(b"entry 3"))
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10)), Accepted)
    client.verify_receipt(newer, leaf_hash(b"entry 3"))
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
    other = LogBuilder()
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
    assert client.verify_receipt(receipt, leaf_hash(b"entry 3"), verified=verified) is verified
    log.add(2)
    assert isinstance(client.update(log.checkpoint(), log.tree.consistency_proof(10)), Accepted)
    newer = policy.verify_checkpoint(log.checkpoint())
    with pytest.raises(FormatError):
        client.verify_receipt(receipt, leaf_hash(b"entry 3"), verified=newer)
