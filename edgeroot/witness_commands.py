"""The implementation of ``edgeroot witness init|run`` (loaded only when one of them runs: FastAPI)."""

from __future__ import annotations

import argparse

from chain_lite.errors import ChainError
from chain_lite.note import check_key_name
from edgeroot.output import CommandFailed, Reporter
from resolver.assembly import build_witness_app, init_witness
from resolver.http_service import serve
from runtime.keyfiles import load_vkey
from runtime.statelock import hold, initialising


def run_init(args: argparse.Namespace, report: Reporter) -> int:

    logs = [load_vkey(v) for v in args.log]
    try:
        check_key_name(args.name)  # before the directory is made: a refusal leaves nothing behind
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    with initialising(args.state):
        if (args.state / "witness.skey").exists():
            raise CommandFailed(f"{args.state / 'witness.skey'} exists: this witness is initialised")
        key = init_witness(args.state, args.name, logs, alg=args.alg)
    return report.ok(
        f"witness {args.name} initialised in {args.state}",
        vkey=key.vkey(),
        logs=str(args.state / "logs.txt"),
    )


def run_serve(args: argparse.Namespace, report: Reporter) -> int:

    with hold(args.state, "witness"):  # one witness per state: before its database is opened
        try:
            app = build_witness_app(args.state, args.logs)
        except (OSError, ChainError) as exc:
            raise CommandFailed(f"cannot start the witness from {args.state}: {exc}") from exc
        return serve(app, "witness", args.listen, app.state.hooks)  # 0 after a clean stop, else non-zero
