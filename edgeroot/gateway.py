"""``edgeroot gateway init|run|status|device``: the edge gateway daemon and its state directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gateway", help="the edge gateway daemon")
    gsub = p.add_subparsers(dest="what", required=True, metavar="{init,run,status,device}")
    init = gsub.add_parser(
        "init", help="create keys, gateway.toml and a registration request", parents=[JSON_FLAG]
    )
    init.add_argument("--state", type=Path, required=True)
    init.add_argument("--root", required=True, help="root node URL")
    init.add_argument("--id", required=True, help="the gateway's identifier, e.g. 88.123.99/GW-1")
    init.add_argument("--policy", type=Path, help="the root's policy.txt (else copy it into --state later)")
    init.add_argument(
        "--mqtt", help="broker HOST:PORT (default: the mqtt connector's host and port, 127.0.0.1:1883)"
    )
    init.add_argument(
        "--alg", choices=("p256", "sm2"), default="p256",
        help="the gateway key that signs its blocks: p256 (default) or sm2 (国密, docs/formats.md §20)",
    )  # fmt: skip
    init.set_defaults(run=lazy("edgeroot.gateway_commands", "run_init"))
    run = gsub.add_parser("run", help="run the daemon (systemd Type=notify)", parents=[JSON_FLAG])
    run.add_argument("--state", type=Path, required=True)
    run.add_argument("--config", type=Path, help="gateway.toml to use (default STATE/gateway.toml)")
    run.set_defaults(run=lazy("edgeroot.gateway_commands", "run_daemon"))
    status = gsub.add_parser("status", help="backlog, last anchor, connectors, rejects", parents=[JSON_FLAG])
    status.add_argument("--state", type=Path, required=True)
    status.add_argument("--config", type=Path, help="gateway.toml to use (default STATE/gateway.toml)")
    status.set_defaults(run=lazy("edgeroot.gateway_commands", "run_status"))
    device = gsub.add_parser("device", help="operator actions on one device")
    dsub = device.add_subparsers(dest="action", required=True, metavar="{reset-counter}")
    reset = dsub.add_parser(
        "reset-counter",
        parents=[JSON_FLAG],
        help="let a device locked out by a wrong counter back in (audited in `gateway status`)",
        description="Set the last counter accepted from a device (or forget it: its next reading is then "
        "judged as a first one, at most counters.max_jump above 0). Works whether the gateway runs or not: "
        "the gateway applies the request before it judges its next reading, and logs it. Readings with "
        "counters above the new value are accepted again, so give --to the device's true last counter "
        "when you know it.",
    )
    reset.add_argument("identifier", help="the device (or bridge) that signs the readings")
    reset.add_argument("--to", type=int, metavar="N", help="the new last counter (default: forget it)")
    reset.add_argument("--reason", default="", help="why, for the audit trail")
    reset.add_argument("--state", type=Path, required=True)
    reset.add_argument("--config", type=Path, help="gateway.toml to use (default STATE/gateway.toml)")
    reset.set_defaults(run=lazy("edgeroot.gateway_commands", "run_reset_counter"))
