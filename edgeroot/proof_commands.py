"""What ``edgeroot proof checkpoint|receipt|consistency`` run (:mod:`edgeroot.proof` has the parser and
says what each writes); loaded only when one of them runs, so other commands never import the root
client and httpx."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from chain_lite.merkle import leaf_hash
from chain_lite.receipt import Receipt
from edgeroot.output import CommandFailed, Reporter
from rootclient import codecs
from rootclient.client import RootClient
from rootclient.errors import ClientError, ProtocolError
from runtime.keyfiles import read_bytes


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise CommandFailed(f"cannot write {path}: {exc.strerror}") from exc


def _checkpoint_file(path: Path) -> SignedCheckpoint:
    try:
        return SignedCheckpoint.parse(read_bytes(path, "checkpoint"))
    except ChainError as exc:
        raise CommandFailed(f"{path}: {exc}") from exc


def _fail(root: str, exc: ClientError | ProtocolError) -> CommandFailed:
    if isinstance(exc, ProtocolError):
        return CommandFailed(f"{root} answered out of protocol: {exc}")
    return CommandFailed(exc.message)


def run_checkpoint(args: argparse.Namespace, report: Reporter) -> int:
    with RootClient(args.root) as client:
        try:
            raw = client.checkpoint()
            signed = codecs.parse_checkpoint(raw, f"checkpoint of {args.root}")
        except (ClientError, ProtocolError) as exc:
            raise _fail(args.root, exc) from exc
    _write(args.out, raw)
    cp = signed.checkpoint
    return report.ok(
        f"checkpoint of {cp.origin} at size {cp.size} written to {args.out}",
        origin=cp.origin,
        size=cp.size,
        file=str(args.out),
    )


def run_receipt(args: argparse.Namespace, report: Reporter) -> int:
    with RootClient(args.root) as client:
        try:
            if args.block is not None or args.gateway is not None:
                if args.gateway is not None:
                    _, block_id = client.gateway_head(args.gateway)
                else:
                    try:
                        block_id = bytes.fromhex(args.block)
                    except ValueError as exc:
                        raise CommandFailed(f"--block {args.block}: not a hex block id") from exc
                info = client.block(block_id)
                if info.receipt is None or info.receipt_text is None or info.log_index is None:
                    raise CommandFailed(f"block {block_id.hex()} is not in the log yet; try again shortly")
                receipt, text = info.receipt, info.receipt_text.encode()
                leaf, _ = client.inclusion(info.log_index, receipt.checkpoint.checkpoint.size)
            else:
                if args.index < 0:
                    raise CommandFailed(f"--index {args.index}: an index is at least 0")
                signed = codecs.parse_checkpoint(client.checkpoint(), f"checkpoint of {args.root}")
                if args.index >= signed.checkpoint.size:
                    raise CommandFailed(
                        f"--index {args.index} is beyond the log's size {signed.checkpoint.size}"
                    )
                leaf, path = client.inclusion(args.index, signed.checkpoint.size)
                receipt = Receipt(args.index, tuple(path), signed)
                text = receipt.to_bytes()
        except (ClientError, ProtocolError) as exc:
            raise _fail(args.root, exc) from exc
    _write(args.out, text)
    _write(args.leaf_out, leaf)
    cp = receipt.checkpoint.checkpoint
    return report.ok(
        f"receipt of entry {receipt.index} in {cp.origin} at size {cp.size} written to {args.out}, "
        f"the entry to {args.leaf_out}",
        origin=cp.origin,
        index=receipt.index,
        size=cp.size,
        receipt=str(args.out),
        leaf=str(args.leaf_out),
        leaf_hash=leaf_hash(leaf, suite=cp.suite).hex(),
    )


def run_consistency(args: argparse.Namespace, report: Reporter) -> int:
    old, new = _checkpoint_file(args.old).checkpoint, _checkpoint_file(args.new).checkpoint
    if old.origin != new.origin:
        raise CommandFailed(f"{args.old} is of {old.origin}, {args.new} of {new.origin}: not one log")
    if not 0 < old.size <= new.size:
        raise CommandFailed(f"want 0 < old size <= new size, got {old.size} and {new.size}")
    with RootClient(args.root) as client:
        try:
            hashes = client.consistency(old.size, new.size) if old.size < new.size else []
        except (ClientError, ProtocolError) as exc:
            raise _fail(args.root, exc) from exc
    _write(args.out, "".join(b64.encode(h) + "\n" for h in hashes).encode())
    return report.ok(
        f"consistency proof {old.size} -> {new.size} of {new.origin} ({len(hashes)} hashes) "
        f"written to {args.out}",
        origin=new.origin,
        old_size=old.size,
        new_size=new.size,
        file=str(args.out),
    )
