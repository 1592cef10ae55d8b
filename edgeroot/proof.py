"""``edgeroot proof checkpoint|receipt|consistency``: fetch from a root node the files ``edgeroot verify``
checks offline.

- ``checkpoint --out FILE``: the latest signed checkpoint, as served (for ``verify note`` and, kept from
  two moments, for ``verify consistency``);
- ``receipt (--index N | --block ID | --gateway ID) --out FILE --leaf-out FILE``: a C2SP tlog-proof
  receipt of one log entry and the entry's exact bytes (for ``verify receipt --leaf``): entry N against
  the latest checkpoint, or a gateway block (by its hex id, or a gateway's latest accepted block) with
  the receipt the root keeps for it (the one the gateway stored);
- ``consistency --old FILE --new FILE --out FILE``: the consistency proof between two saved checkpoints,
  one base64 hash a line (for ``verify consistency``);
- ``export --gateway URL --token-file F --root URL --device ID --from T1 --to T2 --out DIR``: an evidence
  bundle (for ``verify bundle``): the device's readings received in [T1, T2) with every proof, written
  and checked by :mod:`edgeroot.evidence_commands`.

Nothing is verified here (the point is to check it offline, with ``verify``), but every answer is
decoded strictly, so a file written is always one ``verify`` can read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from chain_lite.merkle import leaf_hash
from chain_lite.receipt import Receipt
from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from rootclient import codecs
from rootclient.client import RootClient
from rootclient.errors import ClientError, ProtocolError
from runtime.keyfiles import read_bytes


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "proof", help="fetch a checkpoint, receipt or consistency proof into files", description=__doc__
    )
    psub = p.add_subparsers(dest="what", required=True, metavar="{checkpoint,receipt,consistency,export}")

    cp = psub.add_parser("checkpoint", help="the latest signed checkpoint", parents=[JSON_FLAG])
    cp.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    cp.add_argument("--out", type=Path, required=True, help="file for the checkpoint (a signed note)")
    cp.set_defaults(run=run_checkpoint)

    rc = psub.add_parser("receipt", help="a receipt of one log entry, and the entry", parents=[JSON_FLAG])
    rc.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    which = rc.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the entry's index in the log")
    which.add_argument("--block", help="a gateway block id (hex, as the root answers it)")
    which.add_argument("--gateway", help="a gateway identifier: its latest block the root accepted")
    rc.add_argument("--out", type=Path, required=True, help="file for the receipt (C2SP tlog-proof)")
    rc.add_argument("--leaf-out", type=Path, required=True, help="file for the entry's exact bytes")
    rc.set_defaults(run=run_receipt)

    cons = psub.add_parser(
        "consistency", help="the consistency proof between two saved checkpoints", parents=[JSON_FLAG]
    )
    cons.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    cons.add_argument("--old", type=Path, required=True, help="the older checkpoint file")
    cons.add_argument("--new", type=Path, required=True, help="the newer checkpoint file")
    cons.add_argument("--out", type=Path, required=True, help="file for the proof: one base64 hash a line")
    cons.set_defaults(run=run_consistency)

    ex = psub.add_parser(
        "export", help="an evidence bundle of a device's readings, verifiable offline", parents=[JSON_FLAG]
    )
    ex.add_argument("--gateway", required=True, help="the gateway's local API, e.g. http://127.0.0.1:8480")
    ex.add_argument("--token-file", type=Path, required=True, help="file holding the gateway's http.token")
    ex.add_argument("--root", required=True, help="root node URL: the keys' records with their map proofs")
    ex.add_argument("--device", required=True, help="the device identifier")
    ex.add_argument("--from", dest="from_", required=True, help="from (inclusive): RFC 3339 or epoch ms")
    ex.add_argument("--to", required=True, help="to (exclusive): RFC 3339 or epoch ms")
    ex.add_argument(
        "--policy", type=Path, help="C2SP tlog-policy to ship (default: the root's published one)"
    )
    ex.add_argument("--out", type=Path, required=True, help="a new (or empty) directory for the bundle")
    ex.set_defaults(run=lazy("edgeroot.evidence_commands", "run_export"))


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
