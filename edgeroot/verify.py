"""``edgeroot verify``: check notes, receipts, consistency proofs and evidence bundles offline.

Each exits 0 and says what was proven, or exits 1 with one line saying why not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cosignature import verifier_from_vkey
from chain_lite.errors import ChainError, StaleCheckpoint
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.merkle import HASH_SIZE, leaf_hash
from chain_lite.note import open_note, parse_note
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt, verify_receipt
from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.keyfiles import load_vkey, read_bytes


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify notes, receipts, proofs, anchors and evidence bundles offline")
    vsub = p.add_subparsers(dest="what", required=True, metavar="{note,receipt,consistency,anchor,bundle}")

    note = vsub.add_parser("note", help="verify a signed note against verifier keys", parents=[JSON_FLAG])
    note.add_argument("--vkey", action="append", required=True, help="verifier key, inline or a file")
    note.add_argument("file", type=Path)
    note.set_defaults(run=run_note)

    receipt = vsub.add_parser(
        "receipt", help="verify a C2SP tlog-proof receipt against a trust policy", parents=[JSON_FLAG]
    )
    receipt.add_argument("receipt", type=Path)
    receipt.add_argument("--policy", type=Path, required=True, help="C2SP tlog-policy file")
    receipt.add_argument("--origin", help="expected log origin (when the policy lists several logs)")
    leaf = receipt.add_mutually_exclusive_group(required=True)
    leaf.add_argument("--leaf", type=Path, help="file holding the logged entry's exact bytes")
    leaf.add_argument("--leaf-hash", help="the entry's RFC 6962 leaf hash, hex")
    receipt.set_defaults(run=run_receipt)

    cons = vsub.add_parser(
        "consistency", help="verify that one checkpoint extends another", parents=[JSON_FLAG]
    )
    cons.add_argument("--policy", type=Path, required=True, help="C2SP tlog-policy file")
    cons.add_argument("--old", type=Path, required=True, help="the older signed checkpoint")
    cons.add_argument("--new", type=Path, required=True, help="the newer signed checkpoint")
    cons.add_argument("--proof", type=Path, required=True, help="consistency proof: one base64 hash a line")
    cons.set_defaults(run=run_consistency)

    anchor = vsub.add_parser(
        "anchor",
        help="prove from a parent node's log that a child log's checkpoint is anchored there",
        description=(
            "Proves from the parent's log that CHILD_CHECKPOINT, or a later checkpoint consistent with it, "
            "was cosigned by the parent and logged as an anchor leaf: the parent checkpoint meets "
            "--policy, the anchor leaf is included under it, and the child's consistency proof (fetched "
            "from the child) links the two. Exit 0 anchored; 1 inconsistent (evidence shown) or the "
            "parent's answer does not verify; 3 not anchored yet; 2 could not judge."
        ),
        parents=[JSON_FLAG],
    )
    anchor.add_argument("checkpoint", type=Path, help="the child log's signed checkpoint (a file)")
    anchor.add_argument("--policy", type=Path, required=True, help="C2SP tlog-policy trusting the parent")
    anchor.add_argument("--root", help="the parent node's URL (default: the log URL in --policy)")
    anchor.add_argument("--child", help="the child node's URL (default: the one the parent names)")
    anchor.set_defaults(run=lazy("edgeroot.anchor_commands", "run_anchor"))

    bundle = vsub.add_parser(
        "bundle", help="verify an evidence bundle (proof export) offline, naming any bad file",
        parents=[JSON_FLAG],
    )  # fmt: skip
    bundle.add_argument("dir", type=Path, help="the bundle's directory (with manifest.json)")
    bundle.add_argument("--policy", type=Path, required=True, help="your C2SP tlog-policy file")
    bundle.set_defaults(run=lazy("edgeroot.evidence_commands", "run_verify_bundle"))


def read_policy(path: Path) -> Policy:
    """A C2SP tlog-policy file; one that cannot be read or parsed is a usage error (exit 2), not a verdict."""
    try:
        return Policy.parse(read_bytes(path, "policy"))
    except ChainError as exc:
        raise CommandFailed(f"cannot read policy {path}: {exc}") from exc


def read_proof_file(path: Path) -> list[bytes]:
    """A consistency proof file: one canonical base64 SHA-256 hash per line, as in C2SP tlog-witness."""
    proof = []
    for number, line in enumerate(read_bytes(path, "proof").decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        h = b64.decode(line.strip())
        if h is None or len(h) != HASH_SIZE:
            raise CommandFailed(f"{path}:{number}: not a base64 SHA-256 hash")
        proof.append(h)
    return proof


def run_note(args: argparse.Namespace, report: Reporter) -> int:
    try:
        verifiers = [verifier_from_vkey(load_vkey(v)) for v in args.vkey]
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    try:
        note = parse_note(read_bytes(args.file, "note"))
        good = open_note(note, verifiers)
    except ChainError as exc:
        return report.invalid(f"{args.file}: {exc}")
    names = [v.name for v in good]
    return report.ok(f"note signed by {', '.join(names)}", signers=names, text=note.text)


def run_receipt(args: argparse.Namespace, report: Reporter) -> int:
    policy = read_policy(args.policy)
    entry: bytes | None = None
    if args.leaf is not None:
        entry = leaf = read_bytes(args.leaf, "leaf")  # hashed with the log's profile once it is known
    else:
        try:
            leaf = bytes.fromhex(args.leaf_hash)
        except ValueError as exc:
            raise CommandFailed("--leaf-hash is not hex") from exc
    try:
        receipt = Receipt.parse(read_bytes(args.receipt, "receipt"))
        verified = verify_receipt(receipt, leaf, policy, origin=args.origin, is_hash=entry is None)
    except ChainError as exc:
        return report.invalid(f"{args.receipt}: {exc}")
    cp = verified.checkpoint
    if entry is not None:
        leaf = leaf_hash(entry, suite=cp.suite)
    return report.ok(
        f"entry {receipt.index} is in {cp.origin} at size {cp.size}",
        origin=cp.origin,
        index=receipt.index,
        tree_size=cp.size,
        root=cp.root.hex(),
        leaf_hash=leaf.hex(),
        log=verified.log,
        cosigners=list(verified.cosigners),
    )


def run_consistency(args: argparse.Namespace, report: Reporter) -> int:
    policy = read_policy(args.policy)
    proof = read_proof_file(args.proof)
    try:
        old = SignedCheckpoint.parse(read_bytes(args.old, "checkpoint"))
        client = LightClient(policy, old.checkpoint.origin, old)
    except ChainError as exc:
        return report.invalid(f"{args.old}: {exc}")
    new = read_bytes(args.new, "checkpoint")
    try:
        new_size = SignedCheckpoint.parse(new).checkpoint.size
    except ChainError as exc:
        return report.invalid(f"{args.new}: {exc}")
    if new_size < old.checkpoint.size:
        # This command proves that NEW extends OLD; the light client would also judge an older NEW
        # (consistent or evidence), which is not the question asked here.
        return report.invalid(f"{args.new}: {StaleCheckpoint(old.checkpoint.size, new_size)}")
    outcome = client.update(new, proof)
    if isinstance(outcome, Rejected):
        return report.invalid(f"{args.new}: {outcome.reason}")
    if isinstance(outcome, Evidence):
        return report.invalid(
            f"EQUIVOCATION: both checkpoints are validly signed but inconsistent ({outcome.reason}); "
            "keep both files as evidence"
        )
    assert isinstance(outcome, Accepted)
    old_cp, new_cp = old.checkpoint, outcome.checkpoint.checkpoint
    return report.ok(
        f"{new_cp.origin}: size {new_cp.size} extends size {old_cp.size}",
        origin=new_cp.origin,
        old_size=old_cp.size,
        new_size=new_cp.size,
        new_root=new_cp.root.hex(),
        cosigners=list(outcome.checkpoint.cosigners),
    )
