"""The implementation of ``edgeroot gateway init|run|status|device`` (loaded only when one of them runs:
the connectors' paho and aiocoap, the daemon)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from chain_lite import keys
from chain_lite.envelope import MAX_COUNTER
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from edge import config, store
from edge.errors import ConfigError
from edge.gateway_service import run
from edgeroot.output import CommandFailed, Reporter
from runtime.clock import now_ms
from runtime.keyfiles import read_bytes, write_private
from runtime.logsetup import configure_logging
from runtime.statelock import hold, initialising


def run_init(args: argparse.Namespace, report: Reporter) -> int:

    try:
        gateway = normalize(args.id)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    if not args.root.startswith(("http://", "https://")):  # else `run` and `status` refuse what init wrote
        raise CommandFailed(f"--root {args.root}: must be an http:// or https:// URL")
    # A client id of its own: the broker keeps this gateway's session (and unacked messages) under it.
    mqtt: dict[str, object] = {"type": "mqtt", "client_id": f"edgeroot-{gateway.replace('/', '_')}"}
    if args.mqtt is not None:  # else the connector's declared defaults
        host, _, port = args.mqtt.rpartition(":")
        if not port.isdigit():
            raise CommandFailed(f"--mqtt {args.mqtt}: want HOST:PORT")
        mqtt |= {"host": host, "port": int(port)} if host else {"port": int(port)}
    try:
        text = config.render({"gateway": gateway, "root": args.root.rstrip("/"), "connector": [mqtt]})
    except (ValueError, TypeError) as exc:
        raise CommandFailed(f"cannot write gateway.toml: {exc}") from exc
    # Everything read before anything is written: a refusal leaves no half-made state behind.
    policy = None if args.policy is None else read_bytes(args.policy, "policy")
    state: Path = args.state
    with initialising(state):
        if (state / "gateway.toml").exists():
            raise CommandFailed(f"{state / 'gateway.toml'} exists: this gateway is initialised")
        key = keys.generate(args.alg)
        write_private(state / "gateway.key", keys.private_pem(key))
        (state / "gateway.pub").write_bytes(keys.public_pem(key.public_key()))
        (state / "gateway.toml").write_text(text)
        if policy is not None:
            (state / "policy.txt").write_bytes(policy)
        registration = {"identifier": gateway, "public_key_pem": keys.public_pem(key.public_key()).decode()}
        (state / "registration.json").write_text(json.dumps(registration, indent=1) + "\n")
    command = (
        f"edgeroot register gateway {gateway} --root {args.root} "
        f"--pub {state / 'gateway.pub'} --key ADMIN_KEY.pem"
    )
    return report.ok(
        f"gateway {gateway} initialised in {state}",
        register_with=command,
        policy=str(state / "policy.txt")
        if args.policy
        else "copy the root's policy.txt into the state directory",
    )


def run_daemon(args: argparse.Namespace, report: Reporter) -> int:

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per sync request is noise in the journal
    configure_logging()
    # The state's lock before anything else: a second gateway on it must not touch the store, nor take
    # the broker session of the running one (same MQTT client id) before it fails.
    with hold(args.state, "gateway"):
        try:
            return run(args.state, args.config)  # 0 after a clean stop, non-zero after a failure
        except ConfigError as exc:
            raise CommandFailed(str(exc)) from exc
        except sqlite3.DatabaseError as exc:  # raised while the gateway is built; run_service keeps the rest
            raise CommandFailed(f"cannot open {args.state / 'gateway.db'}: {exc}") from exc


def run_status(args: argparse.Namespace, report: Reporter) -> int:
    """The stored facts from the file (so this works while the gateway is stopped), and while it runs the
    live ones (connectors, sync, problems) from its own snapshot as ``/healthz`` renders it."""

    try:
        cfg = config.load(args.state, args.config)
    except ConfigError as exc:
        raise CommandFailed(str(exc)) from exc
    try:
        stored = store.read_status_if_present(cfg.db)
    except sqlite3.DatabaseError as exc:
        raise CommandFailed(f"cannot read {cfg.db}: {exc}") from exc
    if stored is None:  # never run: the store is the gateway's to create, never this command's
        return report.invalid(
            f"{cfg.gateway} is STOPPED: it has never run (no {cfg.db} yet); start it with "
            f"`edgeroot gateway run --state {args.state}`",
            gateway=cfg.gateway, root=cfg.root, running=False, never_run=True,
        )  # fmt: skip
    facts: dict[str, Any] = {"gateway": cfg.gateway, "root": cfg.root, **stored.as_json()}
    try:
        live = httpx.get(f"http://{cfg.http_listen}/healthz", timeout=2).json()
        facts["running"] = True
        facts["connectors"] = live.get("connectors", {})
        facts["sync"] = live.get("sync")
        facts["problems"] = live.get("problems", [])
    except (httpx.HTTPError, ValueError):
        facts["running"] = False
    summary = (
        f"{cfg.gateway}: {stored.unanchored_blocks} block(s) not anchored, "
        f"{stored.unchained_readings} reading(s) not chained, "
        f"last anchored {facts['last_anchored'] if facts['last_anchored'] is not None else 'never'}"
    )
    problems = list(facts.get("problems") or (["equivocation evidence"] if stored.evidence else []))
    if not facts["running"]:
        # A stopped gateway takes no readings: the thing status checks is false (exit 1, the one rule);
        # the stored facts still come from the file.
        return report.invalid(
            f"{cfg.gateway} is STOPPED (nothing answers on {cfg.http_listen}); "
            + summary
            + ("; PROBLEMS: " + "; ".join(problems) if problems else ""),
            **facts,
        )
    if problems:
        return report.invalid(summary + "; PROBLEMS: " + "; ".join(problems), **facts)
    return report.ok(summary, **facts)


def run_reset_counter(args: argparse.Namespace, report: Reporter) -> int:
    """Record the request in the store, where the gateway's writer (the one owner of counters) applies
    it: at its next batch while it runs, when it starts otherwise (docs/decisions.md D-053)."""

    try:
        cfg = config.load(args.state, args.config)
        signer = normalize(args.identifier)
    except (ConfigError, ChainError) as exc:
        raise CommandFailed(str(exc)) from exc
    if args.to is not None and not 0 <= args.to <= MAX_COUNTER:
        raise CommandFailed(f"--to {args.to}: a counter is 0 to {MAX_COUNTER}")
    if not cfg.db.is_file():
        raise CommandFailed(f"{cfg.db} does not exist: the gateway has not run, no counter to reset")
    if cfg.db.stat().st_uid != os.geteuid():
        # SQLite would create its -wal/-shm files as this user, and the gateway could not open them.
        raise CommandFailed(f"run this as the owner of {cfg.db} (the gateway's user, e.g. sudo -u edgeroot)")
    try:
        store.create_schema(cfg.db)  # a store written before counter resets existed gains their table
        conn = store.connect(cfg.db)
        try:
            stored = store.last_counter(conn, signer)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise CommandFailed(f"cannot read {cfg.db}: {exc}") from exc
    if stored is None and args.to is None:
        raise CommandFailed(f"no counter is stored for {signer}: nothing to reset (--to N sets one)")
    reset = store.request_counter_reset(
        cfg.db, signer, args.to, by=_operator(), reason=args.reason, at_ms=now_ms()
    )
    new = "forgotten (its next reading counts as a first one)" if args.to is None else f"set to {args.to}"
    return report.ok(
        f"{signer}: last counter {reset.previous} {new}; the gateway applies this before it judges its "
        "next reading (or when it starts) and logs it; `gateway status` shows it",
        **reset.as_json(),
        applied=False,
    )


def _operator() -> str:
    """Who asked, for the audit trail: the login behind sudo if any, else the user running this."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return f"uid {os.getuid()}"
