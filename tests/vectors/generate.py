"""Writes edgeroot's own test vectors to tests/vectors/*.json (run with `make vectors`, commit the output).

Keys come from fixed seeds so the Ed25519 parts are reproducible; ECDSA signatures are randomised, so a
rerun changes those bytes but not what each case expects. Each case names the outcome: "ok" or the
chain_lite error class a verifier must raise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain_lite import b64, keys
from chain_lite.block import GENESIS_PREV, build_header, sign_block
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from chain_lite.cose import CoseSigner
from chain_lite.envelope import BN, BT, N, U, V, decode_envelope, encode_envelope
from chain_lite.keys import NoteKey
from chain_lite.merkle import MerkleTree, leaf_hash
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, NoteSignature, parse_note
from chain_lite.policy import Group, Log, Policy, Witness
from chain_lite.receipt import Receipt

OUT = Path(__file__).resolve().parent
ORIGIN = "vectors.edgeroot.example/log"


def _seeded_ed25519(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _seeded_p256(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (2**255)
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def main() -> None:
    log_key = NoteKey(ORIGIN, SIGTYPE_ED25519, _seeded_ed25519("log"))
    other_log = NoteKey(ORIGIN, SIGTYPE_ED25519, _seeded_ed25519("impostor"))
    wkeys = [
        NoteKey(f"w{i}.vectors.edgeroot.example", SIGTYPE_COSIGNATURE_V1, _seeded_ed25519(f"w{i}"))
        for i in range(2)
    ]
    policy = Policy(
        [Log(log_key.log_signer().verifier)],
        [Witness(w.name, w.cosigner().verifier) for w in wkeys],
        [Group("both", 2, tuple(w.name for w in wkeys))],
        quorum="both",
    )
    entries = [f"vector entry {i}".encode() for i in range(21)]
    tree = MerkleTree()
    tree.append_entries(entries)

    def signed(size: int, root: bytes | None = None, signer: NoteKey = log_key, cosigners: int = 2) -> bytes:
        cp = Checkpoint(ORIGIN, size, root if root is not None else tree.root_at(size))
        note = sign_checkpoint(cp, signer.log_signer()).note
        return note.with_signatures(
            w.cosigner().cosign(note, 1_760_000_000) for w in wkeys[:cosigners]
        ).to_bytes()

    good_cp = signed(21)
    cases: list[dict[str, Any]] = []

    def receipt_case(name: str, index: int, proof: list[bytes], cp: bytes, leaf: bytes, want: str) -> None:  # noqa: PLR0917 (a table row)
        r = Receipt(index, tuple(proof), SignedCheckpoint.parse(cp))
        cases.append({"name": name, "receipt": r.to_bytes().decode(), "leaf_hash": leaf.hex(), "want": want})

    idx = 13
    proof = tree.inclusion_proof(idx)
    leaf = leaf_hash(entries[idx])
    receipt_case("happy path", idx, proof, good_cp, leaf, "ok")
    receipt_case("index plus one", idx + 1, proof, good_cp, leaf, "RootMismatch")
    receipt_case("index minus one", idx - 1, proof, good_cp, leaf, "RootMismatch")
    receipt_case(
        "flipped bit in first proof hash",
        idx,
        [_flip(proof[0], 0), *proof[1:]],
        good_cp,
        leaf,
        "RootMismatch",
    )
    receipt_case("missing proof hash", idx, proof[:-1], good_cp, leaf, "ProofLengthError")
    receipt_case("extra proof hash", idx, [*proof, proof[0]], good_cp, leaf, "ProofLengthError")
    receipt_case(
        "checkpoint with swapped root", idx, proof, signed(21, root=tree.root_at(20)), leaf, "RootMismatch"
    )
    receipt_case("checkpoint of another size", idx, proof, signed(20), leaf, "RootMismatch")
    receipt_case("wrong leaf", idx, proof, good_cp, leaf_hash(entries[idx + 1]), "RootMismatch")
    receipt_case(
        "signed by a key not in the policy",
        idx,
        proof,
        signed(21, signer=other_log),
        leaf,
        "NoTrustedSignature",
    )
    receipt_case("missing cosignature", idx, proof, signed(21, cosigners=1), leaf, "QuorumNotMet")
    note = parse_note(good_cp)
    forged = note.signatures[1]
    bad_cosig = type(note)(
        note.text,
        (
            note.signatures[0],
            NoteSignature(forged.name, forged.key_id, _flip(forged.signature, 20)),
            note.signatures[2],
        ),
    )
    receipt_case("corrupted cosignature", idx, proof, bad_cosig.to_bytes(), leaf, "BadSignature")
    moved = type(note)(
        note.text,
        (
            note.signatures[0],
            NoteSignature(
                forged.name, forged.key_id, (1_760_000_001).to_bytes(8, "big") + forged.signature[8:]
            ),
            note.signatures[2],
        ),
    )
    receipt_case("cosignature timestamp changed", idx, proof, moved.to_bytes(), leaf, "BadSignature")

    consistency: list[dict[str, Any]] = []
    for name, old, new, cproof, want in [
        ("happy path 7 -> 21", signed(7), good_cp, tree.consistency_proof(7), "ok"),
        ("same size, same root", good_cp, good_cp, [], "ok"),
        (
            "flipped bit in proof",
            signed(7),
            good_cp,
            [_flip(tree.consistency_proof(7)[0], 31, 7), *tree.consistency_proof(7)[1:]],
            "Evidence",
        ),
        ("missing hash", signed(7), good_cp, tree.consistency_proof(7)[:-1], "ProofLengthError"),
        ("new checkpoint is older, without a proof", good_cp, signed(7), [], "ProofLengthError"),
        ("new checkpoint is older, proven 7 -> 21", good_cp, signed(7), tree.consistency_proof(7), "ok"),
        (
            "new checkpoint is older and forked",
            good_cp,
            signed(7, root=tree.root_at(6)),
            tree.consistency_proof(7),
            "Evidence",
        ),
        ("same size, different root", good_cp, signed(21, root=tree.root_at(20)), [], "Evidence"),
        (
            "new checkpoint lacks a cosignature",
            signed(7),
            signed(21, cosigners=1),
            tree.consistency_proof(7),
            "QuorumNotMet",
        ),
    ]:
        consistency.append(
            {
                "name": name,
                "old": old.decode(),
                "new": new.decode(),
                "proof": [b64.encode(h) for h in cproof],
                "want": want,
            }
        )

    device = "88.123.99/PUMP-0042"
    dkey = _seeded_p256("device")
    dsigner = CoseSigner(device, dkey)
    env = encode_envelope(
        dsigner, [{BN: "urn:dev:pump42:", BT: 1_760_000_000, N: "flow", U: "m3/h", V: 41.25}], 17
    )
    envelopes: list[dict[str, Any]] = [
        {"name": "happy path ES256", "envelope": env.hex(), "want": "ok"},
        {
            "name": "flipped bit in payload",
            "envelope": _flip(env, len(env) - 70).hex(),
            "want": "BadSignature",
        },
        {
            "name": "flipped bit in signature",
            "envelope": _flip(env, len(env) - 1).hex(),
            "want": "BadSignature",
        },
        {"name": "truncated", "envelope": env[:-1].hex(), "want": "FormatError"},
        {
            "name": "signed by another key",
            "envelope": encode_envelope(
                CoseSigner(device, _seeded_p256("other")), [{N: "flow", V: 41.25}], 17
            ).hex(),
            "want": "BadSignature",
        },
        {
            "name": "unknown signer",
            "envelope": encode_envelope(CoseSigner("88.123.99/ghost", dkey), [{N: "flow", V: 1}], 1).hex(),
            "want": "UnknownSigner",
        },
    ]

    gw = "88.123.99/gw-1"
    gsigner = CoseSigner(gw, _seeded_p256("gateway"))
    opened = [decode_envelope(encode_envelope(dsigner, [{N: "flow", V: i}], 100 + i)) for i in range(6)]
    b0 = sign_block(build_header(gw, 0, GENESIS_PREV, opened[:3], 1_760_000_000_000), gsigner)
    b1 = sign_block(build_header(gw, 1, b0.block_id, opened[3:], 1_760_000_001_000), gsigner)
    b1_bad_prev = sign_block(build_header(gw, 1, bytes(31) + b"\x01", opened[3:], 1_760_000_001_000), gsigner)
    b2_gap = sign_block(build_header(gw, 2, b0.block_id, opened[3:], 1_760_000_001_000), gsigner)
    blocks: list[dict[str, Any]] = [
        {"name": "two linked blocks", "blocks": [b0.raw.hex(), b1.raw.hex()], "want": "ok"},
        {
            "name": "prev does not link",
            "blocks": [b0.raw.hex(), b1_bad_prev.raw.hex()],
            "want": "ChainLinkError",
        },
        {"name": "height gap", "blocks": [b0.raw.hex(), b2_gap.raw.hex()], "want": "ChainLinkError"},
        {
            "name": "flipped bit in header",
            "blocks": [b0.raw.hex(), _flip(b1.raw, 30).hex()],
            "want": "ChainError",
        },
        {
            "name": "signed by another key",
            "blocks": [sign_block(b0.header, CoseSigner(gw, _seeded_p256("x"))).raw.hex()],
            "want": "BadSignature",
        },
    ]

    files = {
        "receipts.json": {"policy": policy.to_text(), "cases": cases},
        "consistency.json": {"policy": policy.to_text(), "cases": consistency},
        "envelopes.json": {
            "signer": device,
            "public_key": keys.public_pem(dkey.public_key()).decode(),
            "cases": envelopes,
        },
        "blocks.json": {
            "gateway": gw,
            "public_key": keys.public_pem(gsigner.public_key).decode(),
            "body_root_hex": b0.header.readings_root.hex(),
            "cases": blocks,
        },
    }
    for name, content in files.items():
        (OUT / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {OUT / name}: {len(content['cases'])} cases")


if __name__ == "__main__":
    main()
