"""What ``edgeroot register`` runs (:mod:`edgeroot.register` has the parser and says what each kind
writes); loaded only when it runs, so other commands never import the root client and httpx."""

from __future__ import annotations

import argparse
import os

from chain_lite.cose import CoseSigner
from chain_lite.epcis_capture import CAPTURE_KEY_TYPE
from chain_lite.errors import ChainError
from chain_lite.policy import Policy
from chain_lite.registry import (
    DELEGATION_INDEX,
    Delegation,
    Value,
    admin_kid,
    build_write,
    canonical_identifier,
    governed_prefix,
    parent_prefix,
    prefix_handle,
    pubkey_value,
    sign_write,
)
from edgeroot.output import CommandFailed, Reporter
from rootclient.client import RootClient
from rootclient.errors import ClientError, ProtocolError
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key, load_public_key

KEY_INDEX = 300


def _delegation(args: argparse.Namespace) -> Delegation | None:
    nodes = getattr(args, "node", [])
    policy_file = getattr(args, "node_policy", None)
    if not nodes and policy_file is None:
        return None
    if not nodes or policy_file is None:
        raise CommandFailed("delegating a prefix needs both --node URL and --node-policy FILE")
    try:
        text = policy_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandFailed(f"cannot read --node-policy {policy_file}: {exc}") from exc
    try:
        logs = Policy.parse(text.encode()).logs
        if len(logs) != 1:
            raise CommandFailed(f"--node-policy {policy_file} lists {len(logs)} logs, not 1")
        prefix = governed_prefix(prefix_handle(args.name))
        assert prefix is not None
        urls = tuple(url.rstrip("/") for url in nodes)
        return Delegation(prefix, urls, str(logs[0].verifier.vkey()), text)
    except ChainError as exc:
        raise CommandFailed(f"cannot delegate {args.name}: {exc}") from exc


def _values(args: argparse.Namespace) -> list[Value]:
    values: list[Value] = []
    delegation = _delegation(args) if args.kind == "prefix" else None
    if delegation is not None:
        values.append(delegation.value(DELEGATION_INDEX, args.ttl))
    keyed = args.kind in ("prefix", "device", "gateway", "capture-key")
    if keyed and (args.pub is not None or delegation is None):
        if args.pub is None:
            raise CommandFailed(f"register {args.kind} needs --pub (the public key to register)")
        values.append(pubkey_value(KEY_INDEX, load_public_key(args.pub), args.ttl))
    if args.kind in ("device", "gateway"):
        values.append(Value(1, args.kind.upper(), "string", args.name, args.ttl))
    if args.kind == "capture-key":
        values.append(Value(1, CAPTURE_KEY_TYPE, "string", args.name, args.ttl))
    next_index = 2 if args.kind in ("device", "gateway", "capture-key") or delegation is not None else 1
    for item in args.value:
        type_, eq, text = item.partition("=")
        if not eq:
            raise CommandFailed(f"--value {item}: want TYPE=VALUE")
        values.append(Value(next_index, type_, "string", text, args.ttl))
        next_index += 1
    if not values:
        raise CommandFailed("nothing to register: give --value TYPE=VALUE")
    return values


def run(args: argparse.Namespace, report: Reporter) -> int:
    try:
        if args.kind == "prefix":
            target = prefix_handle(args.name)
            governed = governed_prefix(target)
            assert governed is not None
            responsible = parent_prefix(governed) or governed
        else:
            target = canonical_identifier(args.name)
            responsible = target.partition("/")[0]
        kid = args.admin or admin_kid(responsible)
        op = "delete" if args.delete else "update" if args.update else "create"
        values = None if op == "delete" else _values(args)
        signer = CoseSigner(kid, load_private_key(args.key))
        with RootClient(args.root) as client:
            request = build_write(
                client.origin(),
                op,
                target,
                values,
                timestamp_ms=now_ms(),
                nonce=os.urandom(16),
            )
            signed = sign_write(request, signer)
            answer = client.write(signed.raw)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    except ClientError as exc:
        if not 400 <= exc.status < 500:  # unreachable (no status) or the node's own failure: not judged
            raise CommandFailed(f"{op} {args.name}: {exc.message}") from exc
        return report.invalid(f"{op} {args.name} refused: {exc.message}", responseCode=exc.handle_code)
    except ProtocolError as exc:
        raise CommandFailed(f"{args.root} answered out of protocol: {exc}") from exc
    return report.ok(f"{op} {answer.handle} accepted", request_id=answer.request_id, admin=kid)
