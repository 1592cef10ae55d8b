"""``edgeroot trace``: walk EPCIS events from an identifier, verifying each event and each completeness
proof with the pinned light client (:mod:`rootclient.epcis_trace`)."""

from __future__ import annotations

import argparse
from typing import Any

from chain_lite.epcis_facts import identifier_key
from chain_lite.errors import ChainError
from edgeroot.output import CommandFailed, Reporter
from edgeroot.pin import forget_hint
from edgeroot.verify import read_policy
from rootclient.client import AsyncRootClient, RootClient
from rootclient.epcis_trace import IdentifierEvents, TraceNode, Verifier, fetch_events_for, trace
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog


def node_json(node: TraceNode) -> dict[str, Any]:
    found = node.events
    assert found is not None  # trace() fetched every node it returns
    return {
        "identifier": node.identifier,
        "complete_as_of": found.complete_as_of,
        "events": [
            {
                "log_index": e.index,
                "type": e.facts.event_type,
                "hash_id": e.facts.hash_id,
                "event_time": e.facts.event_time,
                "biz_step": e.facts.biz_step,
                "signer": e.signer,
                "attribution": e.attributions.get(node.identifier),
                "verified": e.verified,
                "signer_key_as_of": e.key_as_of,
            }
            for e in found.events
        ],
        "from": [{"via_log_index": via, **node_json(child)} for via, child in node.children],
    }


def _lines(node: TraceNode, indent: str = "") -> list[str]:
    found = node.events
    assert found is not None  # trace() fetched every node it returns
    complete = (
        f"all {len(found.events)} event(s) PROVEN COMPLETE as of log size {found.complete_as_of}"
        if found.complete_as_of is not None
        else f"{len(found.events)} event(s), completeness not verified"
    )
    out = [f"{indent}{node.identifier}  [{complete}]"]
    for e in found.events:
        mark = "verified" if e.verified else "unverified"
        step = e.facts.biz_step or "-"
        out.append(
            f"{indent}  · #{e.index} {e.facts.event_type} {step} {e.facts.event_time} "
            f"signed by {e.signer} ({e.attributions.get(node.identifier, '?')}, {mark})"
        )
    for via, child in node.children:
        out.append(f"{indent}  └─ via #{via}:")
        out.extend(_lines(child, indent + "     "))
    return out


def run(args: argparse.Namespace, report: Reporter) -> int:
    if args.verify and args.policy is None:
        raise CommandFailed("--verify needs --policy FILE (the trust policy of the node)")
    if args.depth < 0:
        raise CommandFailed("--depth must be 0 or more")
    policy = read_policy(args.policy) if args.verify else None
    try:
        start = identifier_key(args.identifier, [args.base])
    except ChainError as exc:
        raise CommandFailed(f"cannot trace {args.identifier}: {exc}") from exc
    with RootClient(args.root) as client:
        origin = client.origin() if policy is not None else ""
        store = FilePinStore(origin, args.config_dir) if policy is not None else None

        async def walk(aio: AsyncRootClient) -> TraceNode:
            verifier = None
            if policy is not None and store is not None:
                pinned = await PinnedLog.open(policy, origin, aio, store)
                verifier = Verifier(aio, pinned, bases=[args.base])

            async def fetch(identifiers: list[str]) -> dict[str, IdentifierEvents]:
                # One root today; a federated hop picks the node for each identifier here.
                return await fetch_events_for(aio, identifiers, verifier, [args.base])

            return await trace(start, fetch, direction=args.direction, depth=args.depth)

        try:
            if store is not None:
                with store.locked():
                    tree = client.run(walk(client.aio))
            else:
                tree = client.run(walk(client.aio))
        except EquivocationDetected as exc:
            return report.invalid(f"EQUIVOCATION: {exc.message}", evidence=exc.evidence)
        except PinError as exc:
            raise CommandFailed(
                f"the pinned checkpoint cannot be used: {exc} ({forget_hint(origin, args.config_dir)})"
            ) from exc
        except ChainError as exc:
            return report.invalid(f"trace of {args.identifier} does NOT verify: {exc}")
        except ClientError as exc:
            if 400 <= exc.status < 500:
                return report.invalid(f"trace of {args.identifier} refused: {exc.message}")
            raise CommandFailed(exc.message) from exc
        except ProtocolError as exc:
            raise CommandFailed(f"{args.root} answered out of protocol: {exc}") from exc
    if report.as_json:
        return report.ok(
            f"trace {args.direction} of {args.identifier}", direction=args.direction, tree=node_json(tree)
        )
    verdict = "every event and completeness proof VERIFIED" if policy is not None else "UNVERIFIED"
    report.ok(f"trace {args.direction} of {args.identifier}: {verdict}")
    for line in _lines(tree):
        report.line(line)
    return 0
