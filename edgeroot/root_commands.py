"""The implementation of ``edgeroot root init|add-prefix|run`` (loaded only when one runs: FastAPI)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi import FastAPI

from chain_lite.errors import ChainError
from chain_lite.note import check_key_name
from chain_lite.suite import LOG_PROFILES
from edgeroot.output import CommandFailed, Reporter
from resolver.assembly import add_root_prefix, build_root_app, init_root
from resolver.config import ConfigError, load
from resolver.errors import ResolverError
from resolver.http_service import serve, serve_workers
from resolver.published_marker import PublishedMarker
from runtime.keyfiles import KeyFileError, load_vkey
from runtime.statelock import initialising
from runtime.worker_pool import CannotStart


def run_init(args: argparse.Namespace, report: Reporter) -> int:

    try:
        check_key_name(args.origin)
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
                args.state, args.origin, *args.prefix, database=args.database, witnesses=witnesses,
                quorum=args.quorum, profile=LOG_PROFILES[args.suite], parent=args.parent,
            )  # fmt: skip
    except (FileExistsError, ValueError, ConfigError, ResolverError) as exc:
        raise CommandFailed(" ".join(str(exc).split())) from exc  # one line (libpq's messages have two)
    facts: dict[str, object] = {}
    if args.parent:
        facts["parent"] = args.parent
        facts["next"] = " ".join(_delegation_step(p, args.parent, result.policy) for p in result.prefixes)
    return report.ok(
        f"root node {result.origin} initialised in {result.state}",
        prefixes=list(result.prefixes),
        log_vkey=result.log_vkey,
        witness_vkey=result.witness_vkey,
        admin_key=str(result.admin_key),
        admins=list(result.admin_kids),
        policy=str(result.policy),
        database=result.database,
        suite=args.suite,
        **facts,
    )


def _delegation_step(prefix: str, parent: str, policy: Path) -> str:
    """What the admin of the prefix above ``prefix`` runs to delegate it here (``--root``: ``parent``, or
    the node below it that holds that prefix)."""
    return (
        f"the parent's admin delegates {prefix} here: edgeroot register prefix {prefix} --root {parent} "
        f"--key PARENT_ADMIN_KEY --node THIS_NODE_URL --node-policy {policy}."
    )


def run_add_prefix(args: argparse.Namespace, report: Reporter) -> int:
    try:
        added = add_root_prefix(args.state, args.prefix, config=args.config, key=args.key)
    except (ValueError, ConfigError, ResolverError, KeyFileError, OSError) as exc:
        raise CommandFailed(" ".join(str(exc).split())) from exc
    cfg = load(args.state, args.config)
    facts: dict[str, object] = {}
    if cfg.parent:
        facts["next"] = _delegation_step(added.prefix, cfg.parent, cfg.policy)
    logged = "logged" if added.sequenced else "queued for the running node's next batch"
    return report.ok(
        f"root prefix {added.prefix} added ({logged}); {added.config} now lists {', '.join(added.prefixes)}; "
        "reload a running node (SIGHUP) for its delegation check",
        prefix=added.prefix,
        prefixes=list(added.prefixes),
        admin=added.admin_kid,
        config=str(added.config),
        sequenced=added.sequenced,
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
