"""``edgeroot trace``: walk EPCIS events from an identifier, verifying each event and each completeness
proof with the pinned light client (:mod:`rootclient.epcis_trace`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from chain_lite.block import parse_block
from chain_lite.coverage import height_ranges
from chain_lite.epcis_facts import identifier_key
from chain_lite.errors import ChainError
from chain_lite.registry import canonical_identifier
from edgeroot.gateway_readings import fetch_readings, read_token
from edgeroot.output import CommandFailed, Reporter
from edgeroot.pin import forget_hint
from edgeroot.resolve import REFERRAL_EXIT
from edgeroot.verify import read_policy
from rootclient.client import AsyncRootClient, HoldPin, PinStoreFor, RootClient
from rootclient.epcis_trace import (
    Nodes,
    ReadingsEvidence,
    TraceNode,
    Verifier,
    check_fetched_readings,
    device_key,
    evidence_of,
    fetch_across,
    trace,
)
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError, ReferralError
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog, PinStore

Evidence = dict[int, list[ReadingsEvidence]]
"""Log index of an event → the readings it points at, with the blocks that commit to them."""


def readings_json(found: ReadingsEvidence) -> dict[str, Any]:
    ref = found.ref
    got = found.fetched
    fetched = None
    if got is not None:
        fetched = {
            "gateway_url": got.gateway_url,
            "readings": got.fetched,
            "included": got.included,
            "verified": got.verified,
            "in_other_blocks": got.elsewhere,
            "complete_blocks": list(got.complete_blocks),
            "min": min(got.values, default=None),
            "max": max(got.values, default=None),
            "unit": got.unit,
        }
    return {
        "device": ref.device,
        "gateway": ref.gateway,
        "from_ms": ref.from_ms,
        "to_ms": ref.to_ms,
        "note": found.note,
        "fetched": fetched,
        "blocks": [
            {
                "height": b.height,
                "time_ms": b.time_ms,
                "block_id": b.block_id,
                "log_index": b.log_index,
                "readings": "at-root" if b.at_root else "at-gateway",
                "device_readings": b.device_readings,
                "receipt": b.receipt,
                "verified": b.verified,
            }
            for b in found.blocks
        ],
    }


def node_json(node: TraceNode, evidence: Evidence | None = None) -> dict[str, Any]:
    evidence = {} if evidence is None else evidence
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
                **(
                    {"sensor_readings": [readings_json(r) for r in evidence[e.index]]}
                    if e.index in evidence
                    else {}
                ),
            }
            for e in found.events
        ],
        "from": [{"via_log_index": via, **node_json(child, evidence)} for via, child in node.children],
    }


def _readings_lines(found: ReadingsEvidence, indent: str) -> list[str]:
    ref = found.ref
    window = f"[{ref.from_ms}, {ref.to_ms}) ms" if ref.from_ms is not None else "(no window)"
    out = [f"{indent}readings of {ref.device} via {ref.gateway or '?'} in {window}:"]
    if found.note is not None:
        out.append(f"{indent}  {found.note}")
    for b in found.blocks:
        where = "readings at the root" if b.at_root else "readings stay at the gateway"
        mark = "receipt verified" if b.verified else "unverified"
        logged = f"log #{b.log_index}" if b.log_index is not None else "not yet logged"
        count = f"{b.device_readings} reading(s) of the device"
        out.append(f"{indent}  block {b.height} ({logged}, {count}, {where}, {mark})")
    got = found.fetched
    if got is not None:
        span = f": {min(got.values):g} to {max(got.values):g} {got.unit or ''}".rstrip() if got.values else ""
        other = f"; {got.elsewhere} in blocks outside the window, not judged" if got.elsewhere else ""
        fetched = f"{indent}  fetched from the gateway {got.gateway_url} (token): "
        proven = all(b.verified for b in found.blocks)
        if proven:
            out.append(
                f"{fetched}{got.verified} of {got.fetched} reading(s) each signed by the device (key proven) "
                f"and in its logged block{span}{other}"
            )
        else:  # an unverified trace: the headers and the signatures are the nodes' and the gateway's word
            out.append(
                f"{fetched}{got.fetched} reading(s), not verified ({got.included} placed in the block "
                f"headers the root showed; no signature or receipt checked: an unverified trace){span}{other}"
            )
        whole = height_ranges(got.complete_blocks) or "none"
        out.append(
            f"{indent}  complete: block(s) {whole} hold no other reading of {ref.device} than these"
            + ("" if proven else " (as the unverified headers say)")
        )
    return out


def _lines(
    node: TraceNode, indent: str = "", evidence: Evidence | None = None, shown: set[int] | None = None
) -> list[str]:
    """The tree as text; an event's readings are listed under its first appearance (``shown``)."""
    evidence = {} if evidence is None else evidence
    shown = set() if shown is None else shown
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
        if e.index in evidence and e.index in shown:
            out.append(f"{indent}      (its readings: as above)")
            continue
        shown.add(e.index)
        for found_readings in evidence.get(e.index, []):
            out.extend(_readings_lines(found_readings, indent + "      "))
    for via, child in node.children:
        out.append(f"{indent}  └─ via #{via}:")
        out.extend(_lines(child, indent + "     ", evidence, shown))
    return out


def _pin_files(origin: str, args: argparse.Namespace) -> tuple[PinStoreFor, HoldPin]:
    """One pin file per log; the trust anchor's is held for the whole trace (``run``), each other
    log's while it is judged."""

    def pins(log: str) -> PinStore:
        return FilePinStore(log, args.config_dir)

    def hold(pin: PinStore) -> contextlib.AbstractContextManager[object]:
        assert isinstance(pin, FilePinStore)
        return contextlib.nullcontext() if pin.origin == origin else pin.locked()

    return pins, hold


async def _fetch_readings(args: argparse.Namespace, token: str, nodes: Nodes, evidence: Evidence) -> Evidence:
    """Each window with blocks that keep their readings at the gateway, fetched from ``--gateway`` and
    judged against the blocks the trace verified (:func:`check_fetched_readings`)."""
    out: Evidence = {}
    for index, found in evidence.items():
        out[index] = []
        for item in found:
            ref = item.ref
            if ref.from_ms is None or ref.to_ms is None or all(b.at_root for b in item.blocks):
                out[index].append(item)
                continue
            # The gateway finds a device's readings by the identifier as the device signs it (the
            # blocks' counter ranges spell it so); the event's reference is case-folded.
            signed = {r.signer for b in item.blocks for r in parse_block(b.header).header.counters}
            device = next((d for d in sorted(signed) if canonical_identifier(d) == ref.device), ref.device)
            got = await asyncio.to_thread(  # a blocking HTTP client, off the loop
                fetch_readings, args.gateway, token, device, ref.from_ms, ref.to_ms,
                token_file=args.token_file,
            )  # fmt: skip
            key = await device_key(nodes, ref.device)
            out[index].append(
                replace(item, fetched=check_fetched_readings(item, args.gateway, got.readings, key))
            )
    return out


def run(args: argparse.Namespace, report: Reporter) -> int:  # noqa: PLR0915 (one exit per verdict)
    if args.verify and args.policy is None:
        raise CommandFailed("--verify needs --policy FILE (the trust policy of the node)")
    if args.depth < 0:
        raise CommandFailed("--depth must be 0 or more")
    if (args.gateway is None) != (args.token_file is None):
        raise CommandFailed("--gateway URL and --token-file FILE go together")
    token = read_token(args.token_file) if args.token_file is not None else None
    policy = read_policy(args.policy) if args.verify else None
    try:
        start = identifier_key(args.identifier, [args.base])
    except ChainError as exc:
        raise CommandFailed(f"cannot trace {args.identifier}: {exc}") from exc
    with RootClient(args.root) as client:
        origin = client.origin() if policy is not None else ""
        store = FilePinStore(origin, args.config_dir) if policy is not None else None

        async def walk(aio: AsyncRootClient) -> tuple[TraceNode, Evidence]:
            verifier = None
            if policy is not None and store is not None:
                pinned = await PinnedLog.open(policy, origin, aio, store)
                verifier = Verifier(aio, pinned, bases=[args.base])
            pins, hold = _pin_files(origin, args)
            nodes = Nodes(aio, verifier, pins=pins, hold=hold, bases=[args.base])
            try:
                tree = await trace(start, fetch_across(nodes), direction=args.direction, depth=args.depth)
                # The readings behind the events (sensorElementList): their blocks checked under the
                # policy of the node that logged them, and with --gateway the readings themselves.
                evidence = await evidence_of(tree, nodes)
                if token is not None:
                    evidence = await _fetch_readings(args, token, nodes, evidence)
                return tree, evidence
            finally:
                await nodes.aclose()

        try:
            if store is not None:
                with store.locked():
                    tree, evidence = client.run(walk(client.aio))
            else:
                tree, evidence = client.run(walk(client.aio))
        except ReferralError as exc:
            # A node on the way proved no delegation, answered for a prefix it does not hold, or is dead:
            # the same verdicts and exit codes as `resolve` (D-077).
            message = f"trace of {args.identifier}: referral failed: {exc.message}"
            report.invalid(message, referral_error=exc.kind)
            return REFERRAL_EXIT[exc.kind]
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
            f"trace {args.direction} of {args.identifier}",
            direction=args.direction,
            tree=node_json(tree, evidence),
        )
    verdict = "every event and completeness proof VERIFIED" if policy is not None else "UNVERIFIED"
    report.ok(f"trace {args.direction} of {args.identifier}: {verdict}")
    for line in _lines(tree, evidence=evidence):
        report.line(line)
    return 0
