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
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG

KINDS = ("prefix", "id", "device", "gateway", "capture-key")


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
        k.set_defaults(run=lazy("edgeroot.register_commands", "run"))
