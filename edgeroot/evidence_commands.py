"""``edgeroot proof export`` and ``edgeroot verify bundle``: evidence bundles (D-073).

``proof export`` asks the gateway (with its bearer token) for a device's readings in a time window with
their blocks, inclusion proofs and receipts, asks the root for the keys' records with their map proofs
as of the newest receipt's checkpoint, writes the directory :mod:`chain_lite.evidence` describes and
checks it with the same verifier an auditor runs. ``verify bundle`` only reads files: the verdict is
:func:`chain_lite.evidence.verify_bundle`'s.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from chain_lite.block import parse_block
from chain_lite.envelope import decode_envelope
from chain_lite.errors import ChainError
from chain_lite.evidence import (
    MANIFEST,
    BlockEntry,
    BundleError,
    BundleReport,
    KeyEntry,
    Manifest,
    ReadingEntry,
    hash_lines,
    parse_manifest,
    sha256_hex,
    verify_bundle,
)
from chain_lite.identifier import normalize
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt
from edgeroot.gateway_readings import GatewayReadings, fetch_readings, read_token
from edgeroot.output import CommandFailed, Reporter
from edgeroot.verify import read_policy
from rootclient import codecs
from rootclient.client import RootClient
from rootclient.errors import ClientError, ProtocolError
from runtime.clock import parse_instant_ms
from runtime.keyfiles import read_bytes


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise CommandFailed(f"the gateway's answer: {what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise CommandFailed(f"the gateway's answer: {what} is not base64") from exc


class _Writer:
    """Files of the bundle under ``out``, each remembered with its SHA-256 for the manifest."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: dict[str, str] = {}

    def put(self, name: str, data: bytes) -> str:
        path = self.out / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise CommandFailed(f"cannot write {path}: {exc.strerror}") from exc
        self.files[name] = sha256_hex(data)
        return name


def run_export(args: argparse.Namespace, report: Reporter) -> int:
    token = read_token(args.token_file)
    try:
        device = normalize(args.device)
        from_ms, to_ms = parse_instant_ms(args.from_), parse_instant_ms(args.to)
    except (ChainError, ValueError) as exc:
        raise CommandFailed(str(exc)) from exc
    if to_ms < from_ms:
        raise CommandFailed(f"--to {args.to} is before --from {args.from_}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise CommandFailed(f"{args.out} exists and is not an empty directory; choose a new one")
    # Progress on stderr, gone when done (and none with --json): a long window takes minutes.
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True, disable=args.json
    )
    with progress:
        task = progress.add_task("fetching readings", total=None)
        fetched = fetch_readings(
            args.gateway, token, device, from_ms, to_ms, token_file=args.token_file,
            on_page=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
        try:
            return _export(args, report, progress, fetched, (device, from_ms, to_ms))
        except (
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:  # a gateway answer of the wrong shape
            raise CommandFailed(f"the gateway's answer is malformed: {type(exc).__name__} {exc}") from exc


def _export(  # noqa: PLR0915 (one export, step by step)
    args: argparse.Namespace,
    report: Reporter,
    progress: Progress,
    fetched: GatewayReadings,
    window: tuple[str, int, int],
) -> int:
    device, from_ms, to_ms = window
    usable = []
    for r in fetched.readings:
        height = r.get("block")
        block = fetched.blocks.get(height) if isinstance(height, int) else None
        if block is not None and block.get("state") == "anchored" and block.get("receipt"):
            usable.append((r, block))
    skipped = len(fetched.readings) - len(usable)
    if not usable:
        raise CommandFailed(
            f"no anchored reading of {device} received in [{from_ms}, {to_ms}) ms "
            f"({len(fetched.readings)} stored, none in an anchored block yet)"
        )

    out = _Writer(args.out)
    blocks: dict[int, BlockEntry] = {}
    receipts: list[Receipt] = []
    signers: set[str] = set()
    gateway = None
    for _, block in usable:
        height = int(block["height"])
        if height in blocks:
            continue
        raw = _b64(block["header"], f"block {height} header")
        try:
            header = parse_block(raw).header
            receipt = Receipt.parse(str(block["receipt"]).encode())
        except ChainError as exc:
            raise CommandFailed(f"the gateway's block {height}: {exc}") from exc
        if gateway is not None and header.gateway != gateway:
            raise CommandFailed(f"block {height} is of {header.gateway}, the others of {gateway}")
        gateway = header.gateway
        receipts.append(receipt)
        blocks[height] = BlockEntry(
            height,
            out.put(f"blocks/{height}.cose", raw),
            out.put(f"blocks/{height}.tlog-proof", receipt.to_bytes()),
        )
    assert gateway is not None
    readings = []
    writing = progress.add_task("writing readings", total=len(usable))
    for r, _ in usable:
        height, index = int(r["block"]), int(r["index"])
        envelope = _b64(r["envelope"], f"reading {r.get('id')}")
        proof = [_b64(h, f"reading {r.get('id')} proof") for h in r.get("proof") or []]
        try:
            signers.add(decode_envelope(envelope).signer)  # whose key to prove: from the signed bytes
        except ChainError as exc:
            raise CommandFailed(f"the gateway's reading {r.get('id')}: {exc}") from exc
        progress.advance(writing)
        readings.append(
            ReadingEntry(
                height,
                index,
                out.put(f"readings/{height}-{index}.cose", envelope),
                out.put(f"readings/{height}-{index}.proof", hash_lines(proof)),
                int(r["received_ms"]),
            )
        )

    # Keys as of the newest receipt's checkpoint: the records the readings were anchored under.
    at = max(r.checkpoint.checkpoint.size for r in receipts)
    keys = []
    with RootClient(args.root) as root:
        try:
            policy_bytes = root.policy() if args.policy is None else read_bytes(args.policy, "policy")
            shipped = codecs.parse_policy(policy_bytes, "policy")
            for i, ident in enumerate([gateway, *sorted(signers - {gateway})]):
                found = codecs.proof_from_json(ident, root.resolve(ident, at=at).get("proof"))
                if found.record is None:
                    raise CommandFailed(f"{ident} is not registered at {args.root} (as of log size {at})")
                receipts.append(found.receipt)
                keys.append(
                    KeyEntry(
                        ident,
                        out.put(f"keys/{i}.record.cbor", found.record),
                        out.put(f"keys/{i}.map-proof", found.map_proof),
                        out.put(f"keys/{i}.map-head", found.map_head),
                        out.put(f"keys/{i}.tlog-proof", found.receipt.to_bytes()),
                    )
                )
        except (ClientError, ProtocolError) as exc:
            raise CommandFailed(f"the root {args.root}: {exc}") from exc
    checkpoints: dict[tuple[str, int], bytes] = {}
    for receipt in receipts:
        cp, data = receipt.checkpoint.checkpoint, receipt.checkpoint.to_bytes()
        if checkpoints.setdefault((cp.origin, cp.size), data) != data:  # two signed views of one size
            raise CommandFailed(
                f"two different checkpoints of {cp.origin} at size {cp.size}: keep them as evidence"
            )
    names = [out.put(f"checkpoints/{size}.note", data) for (_, size), data in sorted(checkpoints.items())]
    policy_file = out.put("policy.txt", policy_bytes)
    manifest = Manifest(
        device=device,
        gateway=gateway,
        from_ms=from_ms,
        to_ms=to_ms,
        files=dict(sorted(out.files.items())),
        policy=policy_file,
        checkpoints=tuple(names),
        blocks=tuple(blocks[h] for h in sorted(blocks)),
        readings=tuple(readings),
        keys=tuple(keys),
    )
    data = manifest.encode()
    out.put(MANIFEST, data)
    # The exporter checks what it wrote with the auditor's verifier: a bundle that fails is not handed on.
    progress.add_task("verifying the bundle", total=None)
    try:
        verdict = _verify_dir(args.out, shipped)
    except BundleError as exc:
        raise CommandFailed(f"the bundle written to {args.out} does not verify: {exc}") from exc
    return report.ok(
        f"{len(readings)} reading(s) of {device} in {len(blocks)} block(s) written to {args.out}, verified",
        out=str(args.out),
        readings=len(readings),
        blocks=sorted(blocks),
        skipped_unanchored=skipped,
        files=len(out.files),
        manifest_sha256=sha256_hex(data),
        complete_blocks=list(verdict.complete_blocks),
    )


def _read_listed(root: Path, names: list[str]) -> dict[str, bytes | None]:
    """The listed files' bytes; None for one missing, unreadable or reaching outside the directory."""
    base = root.resolve()
    out: dict[str, bytes | None] = {}
    for name in names:
        path = (root / name).resolve()
        try:
            inside = path.is_relative_to(base) and path.is_file()
            out[name] = path.read_bytes() if inside else None
        except OSError:
            out[name] = None
    return out


def _verify_dir(root: Path, policy: Policy) -> BundleReport:
    """The verdict on the bundle in ``root``; raises :class:`BundleError` naming the file at fault."""
    try:
        data = (root / MANIFEST).read_bytes()
    except OSError as exc:
        raise BundleError(MANIFEST, f"cannot read: {exc.strerror}") from exc
    manifest = parse_manifest(data)
    return verify_bundle(manifest, _read_listed(root, manifest.paths), policy)


def run_verify_bundle(args: argparse.Namespace, report: Reporter) -> int:
    policy = read_policy(args.policy)
    if not args.dir.is_dir():
        raise CommandFailed(f"{args.dir} is not a directory")
    try:
        verdict = _verify_dir(args.dir, policy)
    except BundleError as exc:
        return report.invalid(f"{args.dir / exc.file}: {exc.reason}", file=exc.file)
    message = f"bundle {args.dir} verified: {verdict.readings} reading(s) of {verdict.device}"
    if not report.as_json:
        report.ok(message)
        for line in verdict.summary():
            report.line(f"  proven: {line}")
        for line in verdict.not_proven:
            report.line(f"  not proven: {line}")
        return 0
    return report.ok(
        message,
        proven=verdict.summary(),
        not_proven=list(verdict.not_proven),
        device=verdict.device,
        gateway=verdict.gateway,
        readings=verdict.readings,
        blocks=list(verdict.blocks),
        complete_blocks=list(verdict.complete_blocks),
        checkpoint_sizes=list(verdict.checkpoint_sizes),
        cosigners=list(verdict.cosigners),
        policy_matches=verdict.policy_matches,
        arrivals_consistent=verdict.arrivals_consistent,
    )
