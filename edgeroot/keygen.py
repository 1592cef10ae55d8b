"""``edgeroot keygen``: device and gateway keys (P-256 PEM), log and witness keys (Ed25519 note keys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import keys
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, check_key_name
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.keyfiles import file_stem, write_private, write_public
from runtime.statelock import initialising

KINDS = ("device", "gateway", "log", "witness")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="create a key pair", description=__doc__, parents=[JSON_FLAG])
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--name", required=True, help="identifier (device, gateway) or key name (log, witness)")
    p.add_argument("--out", type=Path, required=True, help="directory for the key files")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(run=run)


def generate(kind: str, name: str, out: Path, *, force: bool = False) -> dict[str, str]:
    """Write the key files; returns what was written (paths, and the vkey for note keys). On a failure
    nothing new is left in ``out`` (a private half without its public half would block the next try)."""
    try:
        if kind in ("device", "gateway"):
            name = normalize(name)
        else:
            check_key_name(name)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    with initialising(out):
        if kind in ("device", "gateway"):
            key = keys.generate_p256()
            private, public = out / f"{file_stem(name)}.key", out / f"{file_stem(name)}.pub"
            write_private(private, keys.private_pem(key), force=force)
            write_public(public, keys.public_pem(key.public_key()), force=force)
            return {"name": name, "private": str(private), "public": str(public)}
        sigtype = SIGTYPE_ED25519 if kind == "log" else SIGTYPE_COSIGNATURE_V1
        note_key = keys.NoteKey.generate(name, sigtype)
        private, public = out / f"{file_stem(name)}.skey", out / f"{file_stem(name)}.vkey"
        write_private(private, (note_key.skey() + "\n").encode(), force=force)
        write_public(public, (note_key.vkey() + "\n").encode(), force=force)
        return {"name": name, "private": str(private), "public": str(public), "vkey": note_key.vkey()}


def run(args: argparse.Namespace, report: Reporter) -> int:
    written = generate(args.kind, args.name, args.out, force=args.force)
    return report.ok(f"{args.kind} key for {written['name']}", kind=args.kind, **written)
