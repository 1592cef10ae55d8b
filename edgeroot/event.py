"""``edgeroot event capture FILE --root URL --key KEY --signer KID``: sign and capture EPCIS events."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("event", help="capture EPCIS 2.0 events on a root's log")
    esub = p.add_subparsers(dest="what", required=True, metavar="{capture}")
    c = esub.add_parser(
        "capture",
        help="sign every event of an EPCISDocument and capture them",
        parents=[JSON_FLAG],
        description="Each event is signed (COSE_Sign1 over its JSON and CBV hash ID) by --key as --signer: "
        "a prefix admin (INDEX:0.na/PREFIX) or a capture key registered with `register capture-key`.",
    )
    c.add_argument("file", type=Path, help="an EPCIS 2.0 EPCISDocument (JSON or JSON-LD)")
    c.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    c.add_argument("--key", type=Path, required=True, help="the signer's private key (PEM)")
    c.add_argument(
        "--signer", required=True, help="the key's name: INDEX:0.na/PREFIX or a capture key's identifier"
    )
    c.add_argument("--base", default=DEFAULT_IDENTIFIER_BASE, help="the network's identifier base (D-068)")
    c.add_argument("--wait", action="store_true", help="wait until every event is sequenced and published")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits (default 30)")
    c.set_defaults(run=lazy("edgeroot.event_commands", "run_capture"))
