"""edgeroot's own vectors (tests/vectors/, written by tests/vectors/generate.py): each case verifies or
fails with exactly the error class it names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chain_lite import b64, errors
from chain_lite.block import verify_chain
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.envelope import open_envelope
from chain_lite.keys import load_public_pem
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.policy import Policy
from chain_lite.receipt import verify_receipt

from .conftest import OWN_VECTORS


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OWN_VECTORS / name).read_text())
    return data


def _cases(name: str) -> list[dict[str, Any]]:
    return list(_load(name)["cases"])


def _expect(want: str, call: Any) -> None:
    if want == "ok":
        call()
    else:
        with pytest.raises(getattr(errors, want)):
            call()


@pytest.mark.parametrize("case", _cases("receipts.json"), ids=lambda c: c["name"])
def test_receipt_vector(case: dict[str, Any]) -> None:
    """Receipt vectors: happy path and each corruption."""
    policy = Policy.parse(_load("receipts.json")["policy"].encode())
    leaf = bytes.fromhex(case["leaf_hash"])
    _expect(case["want"], lambda: verify_receipt(case["receipt"].encode(), leaf, policy))


@pytest.mark.parametrize("case", _cases("consistency.json"), ids=lambda c: c["name"])
def test_consistency_vector(case: dict[str, Any]) -> None:
    """Light-client vectors: accepted, rejected for the named reason, or evidence."""
    policy = Policy.parse(_load("consistency.json")["policy"].encode())
    old = SignedCheckpoint.parse(case["old"].encode())
    client = LightClient(policy, old.checkpoint.origin, case["old"].encode())
    proof = [b64.decode(h) for h in case["proof"]]
    outcome = client.update(case["new"].encode(), [h for h in proof if h is not None])
    if case["want"] == "ok":
        assert isinstance(outcome, Accepted)
    elif case["want"] == "Evidence":
        assert isinstance(outcome, Evidence)
    else:
        assert isinstance(outcome, Rejected)
        assert type(outcome.reason).__name__ == case["want"]


@pytest.mark.parametrize("case", _cases("envelopes.json"), ids=lambda c: c["name"])
def test_envelope_vector(case: dict[str, Any]) -> None:
    """Envelope vectors against the device's public key."""
    meta = _load("envelopes.json")
    lookup = {meta["signer"]: load_public_pem(meta["public_key"].encode())}.get
    _expect(case["want"], lambda: open_envelope(bytes.fromhex(case["envelope"]), lookup))


@pytest.mark.parametrize("case", _cases("blocks.json"), ids=lambda c: c["name"])
def test_block_vector(case: dict[str, Any]) -> None:
    """Block chain vectors against the gateway's public key."""
    meta = _load("blocks.json")
    lookup = {meta["gateway"]: load_public_pem(meta["public_key"].encode())}.get
    _expect(case["want"], lambda: verify_chain([bytes.fromhex(b) for b in case["blocks"]], lookup))
