"""``edgeroot resolve ID --root URL [--verify --policy FILE]``: look up an identifier, with proof.

Without ``--verify`` it shows what the node says. With it, it checks the answer against the trust
policy and the pinned checkpoint (see :mod:`rootclient.pinned_log`; the pin is a file, see
:mod:`rootclient.pin_file`) and says exactly what was proven.

An answer whose checkpoint is older than the pin (a lagging replica, or a root rolled back) is first
checked for consistency with the pin: a fork is EQUIVOCATION (exit 1, naming the evidence file). A
consistent one is STALE for a current lookup (exit 1: this client has seen a newer log, so the record
may have changed since; retry), and is used as of its own size with ``--at`` (the user asked for a past
state). The pin never moves backwards.

Referrals (D-076): a current ``--verify`` lookup follows delegations from the node asked (the trust
anchor, under ``--policy``) down to the node that answers, verifying every hop with that log's own pin
under the policy its delegation commits to, and names each hop. A referral that fails exits with its
own code (:data:`REFERRAL_EXIT`, also in ``resolve --help``).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from chain_lite.errors import ChainError, StaleCheckpoint
from chain_lite.identifier import normalize
from chain_lite.policy import Policy
from chain_lite.resolution import ResolutionProof, referral_of
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from edgeroot.pin import forget_hint
from edgeroot.verify import read_policy
from rootclient.client import MAX_HOPS, Hop, NodeClients, RootClient, follow_hints
from rootclient.codecs import resolution_from_json
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError, ReferralError
from rootclient.pin_file import FilePinStore, config_dir
from rootclient.pinned_log import PinStore, Verified

REFERRAL_EXIT = {
    "loop": 3,
    "depth": 4,
    "dead-child": 5,
    "not-delegated": 6,
    "forged-delegation": 7,
    "forged-answer": 8,
    "delegation-changed": 9,
}
"""Exit codes of a failed referral (D-077), by :attr:`rootclient.errors.ReferralError.kind`."""
REFERRAL_EPILOG = (
    "referrals (--verify): 3 a delegation loop, 4 more referrals than --max-hops, 5 no URL of a delegated "
    "node answers, 6 a node does not hold the prefix delegated to it, 7 a delegation's proof does not "
    "verify, 8 a delegated node's answer does not verify under its delegation's policy, 9 a delegation "
    "changed after its log was pinned"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resolve", help="resolve an identifier, optionally verifying its proof", parents=[JSON_FLAG],
        epilog=REFERRAL_EPILOG,
    )  # fmt: skip
    p.add_argument("identifier", help="e.g. 88.123.99/PUMP-0042")
    p.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    p.add_argument("--verify", action="store_true", help="verify the answer against --policy and the pin")
    p.add_argument("--policy", type=Path, help="C2SP tlog-policy file (required with --verify)")
    p.add_argument(
        "--at", type=int, metavar="N",
        help="resolve as of log size N of the --root node's log (one node: an identifier that log proves "
        "delegated to another node is refused with exit 2; ask that node with its own policy and size)",
    )  # fmt: skip
    p.add_argument("--config-dir", type=Path, help=f"where pins are kept (default {config_dir()})")
    p.add_argument(
        "--max-hops", type=int, default=MAX_HOPS,
        help=f"nodes asked at most while following delegations (default {MAX_HOPS})",
    )  # fmt: skip
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
            answer, nodes = _follow_hints(client, answer, identifier, args.max_hops)
            via = {"nodes": nodes} if len(nodes) > 1 else {}
            if not answer.get("found"):
                message = f"{ident} is not registered (unverified answer)"
                return report.invalid(message, identifier=ident, **via)
            return report.ok(f"{ident} (unverified)", identifier=ident, values=_values(answer), **via)
        origin = proof.receipt.checkpoint.checkpoint.origin
        store = FilePinStore(origin, args.config_dir)
        hops: tuple[Hop, ...] = ()
        try:
            if args.at is None:
                hops = _follow(client, identifier, policy, args)
                result = hops[-1].verified
            else:
                result = _verify_as_of(client, proof, policy, store, ident)
        except ReferralError as exc:
            report.invalid(
                f"referral for {ident} failed: {exc.message}",
                identifier=ident,
                referral_error=exc.kind,
                hops=[h.as_json() for h in exc.hops if isinstance(h, Hop)],
            )
            return REFERRAL_EXIT[exc.kind]
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
    return _report_proven(report, args, ident, result, hops)


def _report_proven(
    report: Reporter, args: argparse.Namespace, ident: str, result: Verified, hops: tuple[Hop, ...]
) -> int:
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
    via = ""
    if len(hops) > 1:
        via = f" via {' → '.join(h.served or h.origin for h in hops)}"
        facts["node"] = hops[-1].url
    if hops and report.as_json:
        facts["hops"] = [h.as_json() for h in hops]
    if proven.record is None:
        code = report.ok(
            f"PROVEN ABSENT{via}: {proven.identifier} is not registered as of log size {proven.epoch} "
            f"(checkpoint signed by {cp.log}, cosigned by {', '.join(cp.cosigners) or 'no witness'})",
            **facts,
        )
    else:
        values = [
            {"index": v.index, "type": v.type, "format": v.format, "value": v.value, "ttl": v.ttl}
            for v in proven.record.values
        ]
        code = report.ok(
            f"PROVEN{via}: {proven.identifier} has this record as of log size {proven.epoch} "
            f"(checkpoint signed by {cp.log}, cosigned by {', '.join(cp.cosigners) or 'no witness'}; "
            f"consistent with the pinned checkpoint)",
            values=values,
            **facts,
        )
    if len(hops) > 1 and not report.as_json:
        report.line("  hops:")
        for number, hop in enumerate(hops, 1):
            report.line(f"    {_hop_line(number, hop)}")
    return code


def _follow(client: RootClient, identifier: str, policy: Policy, args: argparse.Namespace) -> tuple[Hop, ...]:
    """Follow delegations from ``--root``; every log's pin is a file of its own, locked while judged."""

    def pins(origin: str) -> PinStore:
        return FilePinStore(origin, args.config_dir)

    def hold(store: PinStore) -> contextlib.AbstractContextManager[object]:
        assert isinstance(store, FilePinStore)
        return store.locked()  # another edgeroot process judging this log waits for this one

    return client.resolve_referrals(identifier, policy, pins, hold=hold, max_hops=args.max_hops)


def _hop_line(number: int, hop: Hop) -> str:
    proven = hop.verified.proven
    what = (
        f"delegation of {hop.referral.prefix} to {hop.referral.origin}" if hop.referral is not None
        else "absence of the identifier" if proven.record is None else "the record"
    )  # fmt: skip
    reached = "trust anchor (--policy)" if hop.delegated is None else f"delegated {hop.delegated}"
    return (
        f"{number}. {hop.url} log {hop.origin} ({reached}): {what} proven as of log size {proven.epoch}, "
        f"cosigned by {', '.join(proven.checkpoint.cosigners) or 'no witness'}"
    )


def _follow_hints(
    client: RootClient, answer: dict[str, Any], identifier: str, max_hops: int
) -> tuple[dict[str, Any], list[str]]:
    """Without ``--verify``: follow the answers' unverified ``referral`` hints (first URL each) to the
    node that answers (:func:`rootclient.client.follow_hints`); the answer there and every URL asked,
    ``client``'s first."""

    async def follow() -> tuple[dict[str, Any], tuple[str, ...]]:
        nodes = NodeClients()
        try:
            _, last, asked = await follow_hints(
                client.aio, identifier, nodes, max_hops=max_hops, answer=answer
            )
        finally:
            await nodes.aclose()
        return last, asked

    try:
        last, asked = client.run(follow())
    except ProtocolError as exc:
        raise CommandFailed(f"cannot follow the referral of {identifier} (unverified): {exc.reason}") from exc
    except ClientError as exc:
        raise CommandFailed(exc.message) from exc
    return last, list(asked)


def _verify_as_of(
    client: RootClient, proof: ResolutionProof, policy: Policy, store: FilePinStore, ident: str
) -> Verified:
    """``--at N``: the one node's answer as of N, refused when it proves the identifier delegated."""
    with store.locked():  # another edgeroot process judging this log waits for this one
        result = client.verify_resolution(proof, policy, store, as_of=True)
    delegation = referral_of(result.proven, None)
    if delegation is not None:  # proven: this log's answer is not the record's (D-076)
        raise CommandFailed(
            f"{ident} is under {delegation.prefix}, delegated to {', '.join(delegation.urls)} (log "
            f"{delegation.origin}) as of log size {result.proven.epoch}: --at does not follow referrals; "
            "ask that node with its own policy and log size"
        )
    return result
