"""``edgeroot trace ID --root URL [--verify --policy P] [--back|--forward] [--depth N]``: a genealogy.

The events of identifiers whose prefix is delegated to another node are asked of that node, found from
``--root`` by referral with proofs (D-100). ``--gateway URL --token-file F`` also fetches the readings
that stay at that gateway (anchor mode) behind the events' windows, each checked against its block
(D-101)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "trace",
        help="trace an identifier back (where it came from) or forward (where it went) through EPCIS events",
        parents=[JSON_FLAG],
    )
    p.add_argument("identifier", help="an identifier as EPCIS events write it (URI form, or a GS1 URI)")
    p.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    p.add_argument("--verify", action="store_true", help="verify every event and each completeness proof")
    p.add_argument("--policy", type=Path, help="C2SP tlog-policy file (required with --verify)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--back", action="store_const", const="back", dest="direction", help="(default)")
    direction.add_argument("--forward", action="store_const", const="forward", dest="direction")
    p.add_argument("--depth", type=int, default=10, help="at most this many hops (default 10)")
    p.add_argument("--base", default=DEFAULT_IDENTIFIER_BASE, help="the network's identifier base (D-068)")
    p.add_argument("--config-dir", type=Path, help="where pins are kept")
    p.add_argument(
        "--gateway", metavar="URL",
        help="a gateway's local API: the readings its blocks keep at the gateway (anchor mode) are fetched "
        "from it with --token-file and checked against the blocks the trace verified",
    )  # fmt: skip
    p.add_argument("--token-file", type=Path, help="the gateway's readings token (http.token), for --gateway")
    p.set_defaults(run=lazy("edgeroot.trace_commands", "run"), direction="back")
