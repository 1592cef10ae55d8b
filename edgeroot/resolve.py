"""``edgeroot resolve ID --root URL [--verify --policy FILE]``: look up an identifier, with proof.

Without ``--verify`` it shows what the node says. With it, it checks the answer against the trust
policy and the pinned checkpoint (see :mod:`rootclient.pinned_log`; the pin is a file, see
:mod:`rootclient.pin_file`) and says exactly what was proven.

An answer whose checkpoint is older than the pin (a lagging replica, or a root rolled back) is first
checked for consistency with the pin: a fork is EQUIVOCATION (exit 1, naming the evidence file). A
consistent one is STALE for a current lookup (exit 1: this client has seen a newer log, so the record
may have changed since; retry), and is used as of its own size with ``--at`` (the user asked for a past
state). The pin never moves backwards.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chain_lite.errors import ChainError, StaleCheckpoint
from chain_lite.identifier import normalize
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from edgeroot.pin import forget_hint
from edgeroot.verify import read_policy
from rootclient.client import RootClient
from rootclient.codecs import resolution_from_json
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError
from rootclient.pin_file import FilePinStore, config_dir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resolve", help="resolve an identifier, optionally verifying its proof", parents=[JSON_FLAG]
    )
    p.add_argument("identifier", help="e.g. 88.123.99/PUMP-0042")
    p.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    p.add_argument("--verify", action="store_true", help="verify the answer against --policy and the pin")
    p.add_argument("--policy", type=Path, help="C2SP tlog-policy file (required with --verify)")
    p.add_argument("--at", type=int, help="resolve as of this log size")
    p.add_argument("--config-dir", type=Path, help=f"where pins are kept (default {config_dir()})")
    p.set_defaults(run=run)


def _values(answer: dict[str, Any]) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = answer.get("values", [])
    return values


def run(args: argparse.Namespace, report: Reporter) -> int:  # noqa: PLR0911 (one exit per verdict)
    if args.verify and args.policy is None:
        raise CommandFailed("--verify needs --policy FILE (the trust policy of the node)")
    if args.at is not None and args.at < 1:
        raise CommandFailed(f"--at {args.at}: a log size is at least 1")
    try:
        # Spelled as asked (the node echoes it); undecodable bytes or a refused character are a usage error.
        identifier = normalize(args.identifier)
    except ChainError as exc:
        raise CommandFailed(f"cannot resolve: {exc}") from exc
    policy = read_policy(args.policy) if args.verify else None
    with RootClient(args.root) as client:
        try:
            answer = client.resolve(identifier, args.at)
            proof = resolution_from_json(answer)
        except ClientError as exc:
            if exc.status == 404:
                return report.invalid(exc.message, responseCode=exc.handle_code)
            raise CommandFailed(exc.message) from exc
        except ProtocolError as exc:
            raise CommandFailed(f"{args.root} answered out of protocol: {exc}") from exc
        size = proof.receipt.checkpoint.checkpoint.size
        if args.at is not None and args.at > size:
            # The node answers as of its latest size instead; saying so is the only honest answer.
            raise CommandFailed(f"--at {args.at} is beyond the log's size {size}")
        ident = answer.get("identifier", identifier)
        if policy is None:
            if not answer.get("found"):
                return report.invalid(f"{ident} is not registered (unverified answer)", identifier=ident)
            return report.ok(f"{ident} (unverified)", identifier=ident, values=_values(answer))
        origin = proof.receipt.checkpoint.checkpoint.origin
        store = FilePinStore(origin, args.config_dir)
        try:
            with store.locked():  # another edgeroot process judging this log waits for this one
                result = client.verify_resolution(proof, policy, store, as_of=args.at is not None)
        except EquivocationDetected as exc:
            return report.invalid(f"EQUIVOCATION: {exc.message}", evidence=exc.evidence)
        except PinError as exc:
            raise CommandFailed(
                f"the pinned checkpoint in {store.path} cannot be used: {exc}. If {origin} was re-created "
                f"on purpose, forget the old pin ({forget_hint(origin, args.config_dir)}); otherwise "
                "this node is not the log you pinned"
            ) from exc
        except StaleCheckpoint as exc:
            return report.invalid(
                f"answer for {ident} is STALE: its checkpoint (log size {exc.got_size}) is consistent with "
                f"but older than the pinned one (log size {exc.pinned_size}); retry, or ask --at "
                f"{exc.got_size} for that past state",
                identifier=ident,
                checkpoint_size=exc.got_size,
                pinned_size=exc.pinned_size,
            )
        except (ChainError, ProtocolError) as exc:
            return report.invalid(f"answer for {ident} does NOT verify: {exc}", identifier=ident)
        except ClientError as exc:
            raise CommandFailed(exc.message) from exc
        except OSError as exc:  # the pin (or evidence) cannot be kept: --config-dir is a file, unwritable
            raise CommandFailed(f"cannot keep the pin in {store.path.parent}: {exc.strerror or exc}") from exc
    proven = result.proven
    cp = proven.checkpoint
    if args.at is not None and proven.epoch > args.at:
        # The proof holds, but for a later state than the one asked for: not an answer to --at N.
        return report.invalid(
            f"answer for {ident} is for log size {proven.epoch}, after the --at {args.at} asked for",
            identifier=ident,
            as_of_log_size=proven.epoch,
        )
    facts: dict[str, Any] = {
        "identifier": proven.identifier,
        "log": cp.checkpoint.origin,
        "checkpoint_size": cp.checkpoint.size,
        "as_of_log_size": proven.epoch,
        "cosigned_by": list(cp.cosigners),
        "pinned_size": result.pinned_size,
    }
    if proven.record is None:
        return report.ok(
            f"PROVEN ABSENT: {proven.identifier} is not registered as of log size {proven.epoch} "
            f"(checkpoint signed by {cp.log}, cosigned by {', '.join(cp.cosigners) or 'no witness'})",
            **facts,
        )
    values = [
        {"index": v.index, "type": v.type, "format": v.format, "value": v.value, "ttl": v.ttl}
        for v in proven.record.values
    ]
    return report.ok(
        f"PROVEN: {proven.identifier} has this record as of log size {proven.epoch} "
        f"(checkpoint signed by {cp.log}, cosigned by {', '.join(cp.cosigners) or 'no witness'}; "
        f"consistent with the pinned checkpoint)",
        values=values,
        **facts,
    )
