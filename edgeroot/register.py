"""``edgeroot register prefix|id|device|gateway|capture-key``: signed registry writes to a root node.

Every write is signed with a prefix admin's key (``--key``, a PEM file) under its Handle-style admin
name (``--admin 300:0.na/88.123``; by default the admin of the target's own prefix, or for a prefix
the admin of its parent). ``--update`` replaces a record's values, ``--delete`` removes it.

``register prefix P --node URL --node-policy FILE`` delegates ``P`` to another node (D-075): the
prefix record gets an ``HS_SITE`` value naming the node's URL(s), its log key (the one ``log`` line of
FILE, the child's ``policy.txt``) and FILE's policy itself, which the child's answers must satisfy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from rootclient.client import RootClient
from rootclient.errors import ClientError, ProtocolError
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key, load_public_key

KINDS = ("prefix", "id", "device", "gateway", "capture-key")
KEY_INDEX = 300


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("register", help="create, update or delete registry records", description=__doc__)
    rsub = p.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(KINDS) + "}")
    helps = {
        "prefix": "a child prefix with its admin key (--pub: the new admin's public key)",
        "id": "an identifier with typed values (--value TYPE=VALUE)",
        "device": "a device and its public key (--pub)",
        "gateway": "a gateway and its public key (--pub)",
        "capture-key": "a station's or line's key that may sign EPCIS events for its prefix (--pub)",
    }
    for kind in KINDS:
        k = rsub.add_parser(kind, help=helps[kind], parents=[JSON_FLAG])
        k.add_argument("name", help="the prefix (88.123.99) or identifier (88.123.99/PUMP-0042)")
        k.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
        k.add_argument("--key", type=Path, required=True, help="the signing admin's private key (PEM)")
        k.add_argument("--admin", help="admin key name INDEX:0.na/PREFIX (default: the responsible prefix)")
        k.add_argument("--pub", type=Path, help="public key file (PEM) to register")
        k.add_argument(
            "--value", action="append", default=[], metavar="TYPE=VALUE", help="a string value; repeatable"
        )
        k.add_argument("--ttl", type=int, default=86400)
        if kind == "prefix":
            k.add_argument(
                "--node", action="append", default=[], metavar="URL",
                help="delegate the prefix to the node at URL (repeatable, at most 4); needs --node-policy",
            )  # fmt: skip
            k.add_argument(
                "--node-policy", type=Path, metavar="FILE",
                help="the delegated node's tlog-policy (its STATE/policy.txt): its answers must satisfy it",
            )  # fmt: skip
        op = k.add_mutually_exclusive_group()
        op.add_argument("--update", action="store_true", help="replace the record's values")
        op.add_argument("--delete", action="store_true", help="delete the record")
        k.set_defaults(run=run)


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
