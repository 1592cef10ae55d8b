"""``edgeroot root init|add-prefix|run``: create, extend and run a resolution-root node."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG

DEFAULT_LISTEN = "127.0.0.1:8470"


def _workers(text: str) -> int:
    """``--workers``: a whole number of processes, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"want a whole number of processes, at least 1, not {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("root", help="create and run a resolution-root node")
    rsub = p.add_subparsers(dest="what", required=True, metavar="{init,add-prefix,run}")
    init = rsub.add_parser(
        "init", help="create keys, database, root prefixes and policy", parents=[JSON_FLAG],
        description="Create a root node's state directory. It writes root.toml (every key with its help; "
        'the served prefixes as prefixes = ["P", ...], an older file\'s prefix = "P" still loads), log and '
        "admin keys, the database with a self-signed record of each root prefix, and policy.txt. One admin "
        "key, admin.pem, administers every prefix given (its name under each: 300:0.na/PREFIX).",
    )  # fmt: skip
    init.add_argument("--state", type=Path, required=True, help="state directory (created)")
    init.add_argument("--origin", required=True, help="the log's name (checkpoint origin), e.g. root.example")
    init.add_argument(
        "--prefix", action="append", required=True, metavar="PREFIX",
        help="a root prefix this node serves, e.g. 88.123; repeatable (a secondary node serving several "
        "enterprise prefixes: --prefix 88.123.99 --prefix 88.200.5), none under another",
    )  # fmt: skip
    init.add_argument("--database", help="postgresql://... instead of the default SQLite file in --state")
    init.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="URL=VKEY",
        help="a witness to ask for cosignatures: its URL and verifier key (inline or file); repeatable",
    )
    init.add_argument("--quorum", type=int, help="cosignatures a checkpoint needs (default: all witnesses)")
    init.add_argument(
        "--suite",
        choices=("default", "sm"),  # chain_lite.suite.LOG_PROFILES (not imported here: the CLI starts fast)
        default="default",
        help="the log's cryptographic suite, fixed for its lifetime: default (SHA-256) or sm (国密: SM3 "
        "tree, map and blocks)",
    )
    init.add_argument(
        "--parent", default="", metavar="URL",
        help="the parent node that delegates the prefixes to this one (a secondary or enterprise node), or "
        "a node above all the parents that do; the node checks each delegation from there (/healthz)",
    )  # fmt: skip
    init.set_defaults(run=lazy("edgeroot.root_commands", "run_init"))
    add = rsub.add_parser(
        "add-prefix", help="add a root prefix to an initialised node", parents=[JSON_FLAG],
        description="Register one more root prefix at the node in --state: the same self-signed write as "
        "init makes (logged like every write), and the prefix added to prefixes in root.toml. A running "
        "node accepts writes under it at once and logs the write with its next batch; reload it (SIGHUP, "
        "systemctl reload edgeroot-root) so that its delegation check and /healthz include the prefix.",
    )  # fmt: skip
    add.add_argument("prefix", help="the root prefix, e.g. 88.200.5 (not under nor above a served one)")
    add.add_argument("--state", type=Path, required=True, help="the node's state directory")
    add.add_argument("--config", type=Path, help="root.toml to update (default STATE/root.toml)")
    add.add_argument(
        "--key", type=Path, metavar="PEM",
        help="the prefix's admin key, which signs its creation (default: the node's STATE/admin.pem)",
    )  # fmt: skip
    add.set_defaults(run=lazy("edgeroot.root_commands", "run_add_prefix"))
    run = rsub.add_parser("run", help="serve the HTTP API and run the sequencer", parents=[JSON_FLAG])
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    run.add_argument("--config", type=Path, help="root.toml to use (default STATE/root.toml)")
    run.add_argument(
        "--workers", type=_workers, default=1, metavar="N",
        help="serve from N processes sharing the listening socket (default 1); one of them sequences, "
        "and no answer is older than one already given (docs/operations.md)",
    )  # fmt: skip
    run.set_defaults(run=lazy("edgeroot.root_commands", "run_serve"))
