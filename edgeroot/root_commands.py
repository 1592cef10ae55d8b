"""The implementation of ``edgeroot root init|run`` (loaded only when one of them runs: FastAPI)."""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from chain_lite.errors import ChainError
from chain_lite.identifier import normalize_prefix
from chain_lite.note import check_key_name
from chain_lite.suite import LOG_PROFILES
from edgeroot.output import CommandFailed, Reporter
from resolver.assembly import build_root_app, init_root
from resolver.config import ConfigError, load
from resolver.errors import ResolverError
from resolver.http_service import serve, serve_workers
from resolver.published_marker import PublishedMarker
from runtime.keyfiles import load_vkey
from runtime.statelock import initialising
from runtime.worker_pool import CannotStart


def run_init(args: argparse.Namespace, report: Reporter) -> int:

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
                quorum=args.quorum, profile=LOG_PROFILES[args.suite], parent=args.parent,
            )  # fmt: skip
    except (FileExistsError, ValueError, ConfigError, ResolverError) as exc:
        raise CommandFailed(" ".join(str(exc).split())) from exc  # one line (libpq's messages have two)
    facts = {}
    if args.parent:
        facts["parent"] = args.parent
        facts["next"] = (
            f"the parent's admin delegates {result.prefix} here: edgeroot register prefix {result.prefix} "
            f"--root {args.parent} --key PARENT_ADMIN_KEY --node THIS_NODE_URL --node-policy {result.policy}"
        )
    return report.ok(
        f"root node {result.origin} initialised in {result.state}",
        prefix=result.prefix,
        log_vkey=result.log_vkey,
        witness_vkey=result.witness_vkey,
        admin_key=str(result.admin_key),
        admin=result.admin_kid,
        policy=str(result.policy),
        database=result.database,
        suite=args.suite,
        **facts,
    )


def run_serve(args: argparse.Namespace, report: Reporter) -> int:

    try:
        cfg = load(args.state, args.config)
        if args.workers == 1:
            app, _ = build_root_app(cfg)
    except (ConfigError, ResolverError) as exc:
        raise CommandFailed(str(exc)) from exc
    # 0 after a clean stop, non-zero after a failure
    if args.workers == 1:
        return serve(app, "root", args.listen, app.state.hooks, cfg.http_limits)
    # Made before the workers are forked: they share it (resolver.published_marker).
    marker = PublishedMarker()

    def build(worker: int) -> FastAPI:
        # In the worker, after the fork: its own database connections, map and sequencer attempt. What
        # refuses the configuration here is said by the supervisor as above, not as a traceback (D-124).
        try:
            return build_root_app(load(args.state, args.config), worker=worker, marker=marker)[0]
        except (ConfigError, ResolverError) as exc:
            raise CannotStart(str(exc)) from exc

    try:
        return serve_workers(build, "root", args.listen, args.workers, cfg.http_limits)
    except CannotStart as exc:
        raise CommandFailed(str(exc)) from exc
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {args.listen}: {exc}") from exc
