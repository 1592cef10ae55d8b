"""``edgeroot root init|run``: create and run a resolution-root node."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite.errors import ChainError
from chain_lite.identifier import normalize_prefix
from chain_lite.note import check_key_name
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from resolver.config import ConfigError, load
from resolver.errors import ResolverError
from runtime.keyfiles import load_vkey
from runtime.statelock import initialising

DEFAULT_LISTEN = "127.0.0.1:8470"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("root", help="create and run a resolution-root node")
    rsub = p.add_subparsers(dest="what", required=True, metavar="{init,run}")
    init = rsub.add_parser("init", help="create keys, database, root prefix and policy", parents=[JSON_FLAG])
    init.add_argument("--state", type=Path, required=True, help="state directory (created)")
    init.add_argument("--origin", required=True, help="the log's name (checkpoint origin), e.g. root.example")
    init.add_argument("--prefix", required=True, help="the root prefix this node serves, e.g. 88.123")
    init.add_argument("--database", help="postgresql://... instead of the default SQLite file in --state")
    init.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="URL=VKEY",
        help="a witness to ask for cosignatures: its URL and verifier key (inline or file); repeatable",
    )
    init.add_argument("--quorum", type=int, help="cosignatures a checkpoint needs (default: all witnesses)")
    init.set_defaults(run=run_init)
    run = rsub.add_parser("run", help="serve the HTTP API and run the sequencer", parents=[JSON_FLAG])
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    run.add_argument("--config", type=Path, help="root.toml to use (default STATE/root.toml)")
    run.set_defaults(run=run_serve)


def run_init(args: argparse.Namespace, report: Reporter) -> int:
    from resolver.assembly import init_root  # noqa: PLC0415 (FastAPI loads only for commands that use it)

    try:
        check_key_name(args.origin)
        prefix = normalize_prefix(args.prefix)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    witnesses = []
    for item in args.witness:
        url, eq, vkey = item.partition("=")
        if not eq or not url.startswith(("http://", "https://")):
            raise CommandFailed(f"--witness {item}: want URL=VKEY")
        witnesses.append((url.rstrip("/"), load_vkey(vkey)))
    try:
        with initialising(args.state):  # a refusal half-way leaves no half-made state directory
            result = init_root(
                args.state, args.origin, prefix, database=args.database, witnesses=witnesses,
                quorum=args.quorum,
            )  # fmt: skip
    except (FileExistsError, ValueError, ConfigError, ResolverError) as exc:
        raise CommandFailed(" ".join(str(exc).split())) from exc  # one line (libpq's messages have two)
    return report.ok(
        f"root node {result.origin} initialised in {result.state}",
        prefix=result.prefix,
        log_vkey=result.log_vkey,
        admin_key=str(result.admin_key),
        admin=result.admin_kid,
        policy=str(result.policy),
        database=result.database,
    )


def run_serve(args: argparse.Namespace, report: Reporter) -> int:
    from resolver.assembly import build_root_app  # noqa: PLC0415 (FastAPI loads only here)
    from resolver.http_service import serve  # noqa: PLC0415 (FastAPI loads only for commands that use it)

    try:
        cfg = load(args.state, args.config)
        app, _ = build_root_app(cfg)
    except (ConfigError, ResolverError) as exc:
        raise CommandFailed(str(exc)) from exc
    # 0 after a clean stop, non-zero after a failure
    return serve(app, "root", args.listen, app.state.hooks, cfg.http_limits)
