"""``edgeroot witness init|run``: a C2SP tlog-witness that cosigns the logs it follows."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite.errors import ChainError
from chain_lite.note import check_key_name
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.keyfiles import load_vkey
from runtime.statelock import hold, initialising


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("witness", help="create and run a witness")
    wsub = p.add_subparsers(dest="what", required=True, metavar="{init,run}")
    init = wsub.add_parser("init", help="create the witness key and its list of logs", parents=[JSON_FLAG])
    init.add_argument("--state", type=Path, required=True)
    init.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example")
    init.add_argument(
        "--log",
        action="append",
        default=[],
        help="verifier key of a log to follow (inline or file); repeatable",
    )
    init.set_defaults(run=run_init)
    run = wsub.add_parser("run", help="serve POST /add-checkpoint", parents=[JSON_FLAG])
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--listen", default="127.0.0.1:8471", help="HOST:PORT (default 127.0.0.1:8471)")
    run.add_argument("--logs", type=Path, help="file of log verifier keys to follow (default STATE/logs.txt)")
    run.set_defaults(run=run_serve)


def run_init(args: argparse.Namespace, report: Reporter) -> int:
    from resolver.assembly import init_witness  # noqa: PLC0415 (FastAPI loads only for commands that use it)

    logs = [load_vkey(v) for v in args.log]
    try:
        check_key_name(args.name)  # before the directory is made: a refusal leaves nothing behind
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    with initialising(args.state):
        if (args.state / "witness.skey").exists():
            raise CommandFailed(f"{args.state / 'witness.skey'} exists: this witness is initialised")
        key = init_witness(args.state, args.name, logs)
    return report.ok(
        f"witness {args.name} initialised in {args.state}",
        vkey=key.vkey(),
        logs=str(args.state / "logs.txt"),
    )


def run_serve(args: argparse.Namespace, report: Reporter) -> int:
    from resolver.assembly import build_witness_app  # noqa: PLC0415 (FastAPI loads only here)
    from resolver.http_service import serve  # noqa: PLC0415 (FastAPI loads only for commands that use it)

    with hold(args.state, "witness"):  # one witness per state: before its database is opened
        try:
            app = build_witness_app(args.state, args.logs)
        except (OSError, ChainError) as exc:
            raise CommandFailed(f"cannot start the witness from {args.state}: {exc}") from exc
        return serve(app, "witness", args.listen, app.state.hooks)  # 0 after a clean stop, else non-zero
