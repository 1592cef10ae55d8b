"""``edgeroot keygen``: device and gateway keys, admin keys too (P-256 or SM2 PEM), log and witness keys
(Ed25519 or SM2 note keys). ``--alg sm2`` makes every kind an SM2 key (国密, D-060)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import keys
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    check_key_name,
)
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.keyfiles import file_stem, write_private, write_public
from runtime.statelock import initialising

KINDS = ("device", "gateway", "log", "witness")
PEM_KINDS = ("device", "gateway")
"""PEM key pairs; an admin key is made as ``--kind device --name <prefix>/admin`` (README tour)."""
_NOTE_TYPES = {
    ("log", "p256"): SIGTYPE_ED25519,  # note keys of the default suite are Ed25519 (C2SP)
    ("witness", "p256"): SIGTYPE_COSIGNATURE_V1,
    ("log", "sm2"): SIGTYPE_SM2,
    ("witness", "sm2"): SIGTYPE_SM2_COSIGNATURE,
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="create a key pair", description=__doc__, parents=[JSON_FLAG])
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--name", required=True, help="identifier (device, gateway) or key name (log, witness)")
    p.add_argument(
        "--alg", choices=keys.ALGORITHMS, default="p256",
        help="p256 (default): P-256 PEM keys, Ed25519 log and witness keys; sm2: SM2 for every kind (国密)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="directory for the key files")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(run=run)


def generate(kind: str, name: str, out: Path, *, force: bool = False, alg: str = "p256") -> dict[str, str]:
    """Write the key files; returns what was written (paths, and the vkey for note keys). On a failure
    nothing new is left in ``out`` (a private half without its public half would block the next try)."""
    try:
        if kind in PEM_KINDS:
            name = normalize(name)
        else:
            check_key_name(name)
        with initialising(out):
            if kind in PEM_KINDS:
                key = keys.generate(alg)
                private, public = out / f"{file_stem(name)}.key", out / f"{file_stem(name)}.pub"
                write_private(private, keys.private_pem(key), force=force)
                write_public(public, keys.public_pem(key.public_key()), force=force)
                return {"name": name, "alg": alg, "private": str(private), "public": str(public)}
            note_key = keys.NoteKey.generate(name, _NOTE_TYPES[kind, alg])
            private, public = out / f"{file_stem(name)}.skey", out / f"{file_stem(name)}.vkey"
            write_private(private, (note_key.skey() + "\n").encode(), force=force)
            write_public(public, (note_key.vkey() + "\n").encode(), force=force)
            vkey = note_key.vkey()
            return {"name": name, "alg": alg, "private": str(private), "public": str(public), "vkey": vkey}
    except ChainError as exc:  # e.g. SM2 asked for on a machine without OpenSSL 3's libcrypto
        raise CommandFailed(str(exc)) from exc


def run(args: argparse.Namespace, report: Reporter) -> int:
    written = generate(args.kind, args.name, args.out, force=args.force, alg=args.alg)
    return report.ok(f"{args.kind} key for {written['name']}", kind=args.kind, **written)
