"""Notes, checkpoints and receipts made by an independent implementation verify through chain_lite
and through the CLI; every single-bit change to them is rejected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from chain_lite.note import Ed25519Verifier, VerifierKey, open_note, parse_note
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt, verify_receipt
from edgeroot.cli import main

from . import independent_c2sp as ind

ORIGIN = "log.example.com/independent"
WITNESS_NAMES = ["w1.example.com", "w2.example.com"]
LEAVES = [f"entry {i}".encode() for i in range(13)]


@pytest.fixture(scope="module")
def world() -> dict[str, object]:
    log_key = Ed25519PrivateKey.generate()
    witness_keys = [Ed25519PrivateKey.generate() for _ in WITNESS_NAMES]
    root, paths = ind.rfc6962_tree(LEAVES)
    text = ind.checkpoint_text(ORIGIN, len(LEAVES), root)
    signed = text + "\n" + ind.log_signature(ORIGIN, log_key, text)
    for name, key in zip(WITNESS_NAMES, witness_keys, strict=True):
        signed += ind.cosignature(name, key, text, 1_760_000_000)
    policy = f"log {ind.vkey(ORIGIN, 0x01, log_key)}\n"
    for name, key in zip(WITNESS_NAMES, witness_keys, strict=True):
        policy += f"witness {name} {ind.vkey(name, 0x04, key)}\n"
    policy += f"group both all {' '.join(WITNESS_NAMES)}\nquorum both\n"
    return {
        "log_vkey": ind.vkey(ORIGIN, 0x01, log_key),
        "checkpoint": signed.encode(),
        "policy": policy.encode(),
        "receipt": ind.receipt(5, paths[5], signed),
    }


def test_independent_note_verifies_with_its_vkey(world: dict[str, bytes]) -> None:
    """A note from the independent signer opens with the independent vkey."""
    verifier = Ed25519Verifier.from_vkey(VerifierKey.parse(str(world["log_vkey"])))
    good = open_note(parse_note(world["checkpoint"]), [verifier])
    assert [v.name for v in good] == [ORIGIN]
    assert SignedCheckpoint.parse(world["checkpoint"]).checkpoint.size == len(LEAVES)


def test_independent_receipt_verifies_through_the_api(world: dict[str, bytes]) -> None:
    """The receipt verifies against the independent policy, cosigned by both witnesses."""
    verified = verify_receipt(world["receipt"], LEAVES[5], Policy.parse(world["policy"]), is_hash=False)
    assert set(verified.cosigners) == set(WITNESS_NAMES)
    assert verified.cosigned_at == dict.fromkeys(WITNESS_NAMES, 1_760_000_000)


def test_independent_receipt_verifies_through_the_cli(world: dict[str, bytes], tmp_path: Path) -> None:
    """`edgeroot verify receipt` accepts a receipt it did not produce, by leaf file and by leaf hash."""
    (tmp_path / "r").write_bytes(world["receipt"])
    (tmp_path / "p").write_bytes(world["policy"])
    (tmp_path / "leaf").write_bytes(LEAVES[5])
    assert main(["verify", "receipt", str(tmp_path / "r"), "--policy", str(tmp_path / "p"),
                 "--leaf", str(tmp_path / "leaf")]) == 0  # fmt: skip
    leaf_hash = hashlib.sha256(b"\x00" + LEAVES[5]).hexdigest()
    assert main(["verify", "receipt", str(tmp_path / "r"), "--policy", str(tmp_path / "p"),
                 "--leaf-hash", leaf_hash]) == 0  # fmt: skip
    assert main(["verify", "receipt", str(tmp_path / "r"), "--policy", str(tmp_path / "p"),
                 "--leaf-hash", hashlib.sha256(b"\x00" + LEAVES[6]).hexdigest()]) == 1  # fmt: skip


def _bit_flips(data: bytes):  # type: ignore[no-untyped-def]
    for i in range(len(data)):
        for bit in range(8):
            out = bytearray(data)
            out[i] ^= 1 << bit
            yield i, bit, bytes(out)


@pytest.mark.slow
def test_every_single_bit_change_to_a_receipt_is_rejected(world: dict[str, bytes]) -> None:
    """Flip each bit of the receipt in turn: not one variant verifies."""
    policy = Policy.parse(world["policy"])
    leaf = hashlib.sha256(b"\x00" + LEAVES[5]).digest()
    verify_receipt(world["receipt"], leaf, policy)
    accepted = []
    for i, bit, variant in _bit_flips(world["receipt"]):
        try:
            verify_receipt(variant, leaf, policy)
        except ChainError:
            continue
        accepted.append((i, bit))
    assert accepted == []


def test_every_single_bit_change_to_a_checkpoint_is_rejected(world: dict[str, bytes]) -> None:
    """Flip each bit of the signed checkpoint: none passes the policy."""
    policy = Policy.parse(world["policy"])
    policy.verify_checkpoint(world["checkpoint"])
    accepted = []
    for i, bit, variant in _bit_flips(world["checkpoint"]):
        try:
            policy.verify_checkpoint(variant)
        except ChainError:
            continue
        accepted.append((i, bit))
    assert accepted == []


def test_bit_flipped_receipts_are_rejected_by_the_cli(world: dict[str, bytes], tmp_path: Path) -> None:
    """A sample of flipped receipts through the CLI: each exits 1 with one reason line."""
    (tmp_path / "p").write_bytes(world["policy"])
    (tmp_path / "leaf").write_bytes(LEAVES[5])
    data = world["receipt"]
    for i in range(0, len(data), max(1, len(data) // 40)):
        variant = bytearray(data)
        variant[i] ^= 0x04
        (tmp_path / "r").write_bytes(bytes(variant))
        code = main(["verify", "receipt", str(tmp_path / "r"), "--policy", str(tmp_path / "p"),
                     "--leaf", str(tmp_path / "leaf")])  # fmt: skip
        assert code == 1, i


def test_our_receipts_parse_back_identically(world: dict[str, bytes]) -> None:
    """chain_lite writes the same bytes it read: one canonical form."""
    assert Receipt.parse(world["receipt"]).to_bytes() == world["receipt"]
