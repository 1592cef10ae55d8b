"""``edgeroot witness init|run``: a C2SP tlog-witness that cosigns the logs it follows."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("witness", help="create and run a witness")
    wsub = p.add_subparsers(dest="what", required=True, metavar="{init,run}")
    init = wsub.add_parser("init", help="create the witness key and its list of logs", parents=[JSON_FLAG])
    init.add_argument("--state", type=Path, required=True)
    init.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example")
    init.add_argument(
        "--alg", choices=("p256", "sm2"), default="p256",
        help="sm2: cosign with an SM2 key (国密, docs/formats.md §20); default an Ed25519 key (C2SP 0x04)",
    )  # fmt: skip
    init.add_argument(
        "--log",
        action="append",
        default=[],
        help="verifier key of a log to follow (inline or file); repeatable",
    )
    init.set_defaults(run=lazy("edgeroot.witness_commands", "run_init"))
    run = wsub.add_parser("run", help="serve POST /add-checkpoint", parents=[JSON_FLAG])
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--listen", default="127.0.0.1:8471", help="HOST:PORT (default 127.0.0.1:8471)")
    run.add_argument("--logs", type=Path, help="file of log verifier keys to follow (default STATE/logs.txt)")
    run.set_defaults(run=lazy("edgeroot.witness_commands", "run_serve"))
