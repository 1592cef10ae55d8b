"""``edgeroot demo``: the richest honest demonstration of what exists today.

Devices sign readings, a gateway verifies them and chains them into signed blocks, a log commits to
every reading, signs checkpoints that two witnesses cosign, and issues a receipt. Then the real CLI, in
a separate process, verifies the receipt and a consistency proof, and rejects tampered copies.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from chain_lite import b64
from chain_lite.block import GENESIS_PREV, build_header, sign_block, verify_chain
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from chain_lite.cose import CoseSigner
from chain_lite.envelope import BN, BT, BU, N, V, encode_envelope, open_envelope
from chain_lite.keys import NoteKey, PublicKey
from chain_lite.merkle import MerkleTree
from chain_lite.policy import Group, Log, Policy, Witness
from chain_lite.receipt import Receipt
from edgeroot.keyfiles import file_stem, load_private_key
from edgeroot.keygen import generate
from edgeroot.output import EXIT_INVALID, EXIT_OK, JSON_FLAG, Reporter

ORIGIN = "root.demo.edgeroot.example"
GATEWAY = "88.123.99/gw-line-1"
DEVICES = [f"88.123.99/PUMP-{n:04d}" for n in range(1, 5)]
WITNESSES = ["witness-a.demo.edgeroot.example", "witness-b.demo.edgeroot.example"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the demonstration", description=__doc__, parents=[JSON_FLAG])
    p.add_argument("--readings", type=int, default=3000, help="signed readings to generate")
    p.add_argument("--block-size", type=int, default=500, help="readings per gateway block")
    p.add_argument("--dir", type=Path, help="keep the files here instead of a temporary directory")
    p.set_defaults(run=run)


def _cli(console: Console, *args: str) -> int:
    """Run the real ``edgeroot`` CLI in a child process, show the command and what it printed."""
    cmd = [sys.executable, "-m", "edgeroot", *args]
    console.print(f"[dim]$ edgeroot {' '.join(args)}[/dim]")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 (our own CLI)
    for line in (done.stdout + done.stderr).strip().splitlines():
        console.print(f"    {line}", markup=False)
    return done.returncode


def run(args: argparse.Namespace, report: Reporter) -> int:
    if args.readings < 2 or args.block_size < 1:
        return report.failed("--readings must be at least 2 and --block-size at least 1")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="edgeroot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, report, workdir)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, report: Reporter, workdir: Path) -> int:  # noqa: PLR0915 (a script)
    console = report.err if report.as_json else report.out
    started = time.perf_counter()
    keydir = workdir / "keys"
    console.rule("[bold]1. keys")
    for kind, names in (
        ("device", DEVICES),
        ("gateway", [GATEWAY]),
        ("log", [ORIGIN]),
        ("witness", WITNESSES),
    ):
        for name in names:
            generate(kind, name, keydir, force=True)
    console.print(
        f"{len(DEVICES)} device keys (P-256), a gateway key (P-256), a log key and two witness keys "
        f"(Ed25519) in {keydir}"
    )
    device_signers = {d: CoseSigner(d, load_private_key(keydir / f"{file_stem(d)}.key")) for d in DEVICES}
    device_keys: dict[str, PublicKey] = {d: s.public_key for d, s in device_signers.items()}

    console.rule("[bold]2. devices sign readings (COSE_Sign1 over SenML-CBOR)")
    envelopes: list[bytes] = []
    counters = dict.fromkeys(DEVICES, 0)
    rng = random.Random(42)  # noqa: S311 (plausible sensor values, not secrets)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("signing", total=args.readings)
        for i in range(args.readings):
            device = DEVICES[i % len(DEVICES)]
            counters[device] += 1
            records = [
                {
                    BN: f"urn:dev:{device}:",
                    BT: 1_760_000_000 + i,
                    N: "flow",
                    BU: "m3/h",
                    V: round(40 + rng.gauss(0, 2), 2),
                }
            ]
            envelopes.append(encode_envelope(device_signers[device], records, counters[device]))
            progress.advance(task)
    console.print(
        f"{len(envelopes)} signed readings, {sum(map(len, envelopes)) // len(envelopes)} bytes each"
    )

    console.rule("[bold]3. the gateway verifies them and chains signed blocks")
    t = time.perf_counter()
    opened = [open_envelope(raw, device_keys.get) for raw in envelopes]
    verify_rate = len(opened) / (time.perf_counter() - t)
    gateway_signer = CoseSigner(GATEWAY, load_private_key(keydir / f"{file_stem(GATEWAY)}.key"))
    blocks: list[bytes] = []
    prev = GENESIS_PREV
    for height, start in enumerate(range(0, len(opened), args.block_size)):
        header = build_header(
            GATEWAY, height, prev, opened[start : start + args.block_size], 1_760_000_000_000
        )
        block = sign_block(header, gateway_signer)
        blocks.append(block.raw)
        prev = block.block_id
    chain = verify_chain(blocks, {GATEWAY: gateway_signer.public_key}.get)
    console.print(
        f"verified {len(opened)} signatures ({verify_rate:,.0f}/s); {len(chain)} blocks, "
        f"head {chain[-1].block_id.hex()[:16]}…, chain verified"
    )

    console.rule("[bold]4. the log commits to every reading; witnesses cosign its checkpoints")
    log_key = NoteKey.parse_skey((keydir / f"{file_stem(ORIGIN)}.skey").read_text())
    witness_keys = [NoteKey.parse_skey((keydir / f"{file_stem(w)}.skey").read_text()) for w in WITNESSES]
    # Quorum: both witnesses must cosign, written out as a C2SP tlog-policy file.
    policy = Policy(
        [Log(log_key.log_signer().verifier)],
        [Witness(w.name, w.cosigner().verifier) for w in witness_keys],
        [Group("all-witnesses", len(WITNESSES), tuple(WITNESSES))],
        quorum="all-witnesses",
    )
    (workdir / "policy.txt").write_text(policy.to_text())
    tree = MerkleTree()
    half = len(envelopes) // 2
    tree.append_entries(envelopes[:half])
    now = int(time.time())

    def checkpoint_at(size: int, cosign: bool = True) -> bytes:
        signed = sign_checkpoint(Checkpoint(ORIGIN, size, tree.root_at(size)), log_key.log_signer())
        note = signed.note
        if cosign:
            note = note.with_signatures(w.cosigner().cosign(note, now) for w in witness_keys)
        return note.to_bytes()

    old_checkpoint = checkpoint_at(half)
    tree.append_entries(envelopes[half:])
    new_checkpoint = checkpoint_at(tree.size)
    (workdir / "checkpoint.old").write_bytes(old_checkpoint)
    (workdir / "checkpoint.new").write_bytes(new_checkpoint)
    (workdir / "consistency.proof").write_text(
        "".join(b64.encode(h) + "\n" for h in tree.consistency_proof(half))
    )
    pick = len(envelopes) * 2 // 3
    receipt = Receipt(pick, tuple(tree.inclusion_proof(pick)), SignedCheckpoint.parse(new_checkpoint))
    (workdir / "reading.cose").write_bytes(envelopes[pick])
    (workdir / "reading.tlog-proof").write_bytes(receipt.to_bytes())
    console.print(
        f"log of {tree.size} readings, root {tree.root().hex()[:16]}…; checkpoints at {half} and "
        f"{tree.size}, cosigned by {len(witness_keys)} witnesses; receipt for reading {pick}"
    )
    console.print((workdir / "reading.tlog-proof").read_text(), markup=False, highlight=False)

    console.rule("[bold]5. anyone verifies offline, with the CLI")
    w = str(workdir)

    def verify_receipt(receipt_file: str, leaf_file: str) -> int:
        return _cli(
            console, "verify", "receipt", receipt_file, "--policy", f"{w}/policy.txt", "--leaf", leaf_file
        )

    checks = [
        verify_receipt(f"{w}/reading.tlog-proof", f"{w}/reading.cose") == EXIT_OK,
        _cli(
            console,
            "verify",
            "consistency",
            "--policy",
            f"{w}/policy.txt",
            "--old",
            f"{w}/checkpoint.old",
            "--new",
            f"{w}/checkpoint.new",
            "--proof",
            f"{w}/consistency.proof",
        )
        == EXIT_OK,
    ]

    console.rule("[bold]6. tampering is caught")
    first = bytearray(receipt.proof[0])
    first[0] ^= 0x01  # one bit of the first proof hash
    tampered = Receipt(pick, (bytes(first), *receipt.proof[1:]), receipt.checkpoint)
    (workdir / "tampered.tlog-proof").write_bytes(tampered.to_bytes())
    altered = bytearray(envelopes[pick])
    altered[-70] ^= 0x01  # a bit inside the signed SenML payload
    (workdir / "altered-reading.cose").write_bytes(bytes(altered))
    uncosigned = Receipt(pick, receipt.proof, SignedCheckpoint.parse(checkpoint_at(tree.size, cosign=False)))
    (workdir / "uncosigned.tlog-proof").write_bytes(uncosigned.to_bytes())
    checks += [
        verify_receipt(f"{w}/tampered.tlog-proof", f"{w}/reading.cose") == EXIT_INVALID,
        verify_receipt(f"{w}/reading.tlog-proof", f"{w}/altered-reading.cose") == EXIT_INVALID,
        verify_receipt(f"{w}/uncosigned.tlog-proof", f"{w}/reading.cose") == EXIT_INVALID,
    ]
    elapsed = time.perf_counter() - started
    console.rule()
    if all(checks):
        return report.ok(
            f"demo complete in {elapsed:.1f} s: every check behaved as expected",
            readings=len(envelopes),
            blocks=len(chain),
            log_size=tree.size,
            seconds=round(elapsed, 1),
        )
    return report.invalid(f"demo: {checks.count(False)} check(s) did not behave as expected")
