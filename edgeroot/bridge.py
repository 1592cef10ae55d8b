"""``edgeroot bridge run --port /dev/ttyUSB0``: one serial port's bridge to the gateway."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG

DEFAULT_GATEWAY = "coap://127.0.0.1:5683/readings"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bridge", help="bridge a serial line (framed firmware) to the gateway")
    bsub = p.add_subparsers(dest="what", required=True, metavar="{run}")
    run = bsub.add_parser("run", help="run the bridge for one port", parents=[JSON_FLAG])
    run.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0 (or a pyserial URL)")
    run.add_argument("--config", type=Path, help="TOML with gateway = URL, baud = N, state = DIR")
    run.add_argument(
        "--gateway", help=f"coap://HOST:PORT/readings or mqtt://HOST:PORT/TOPIC (default {DEFAULT_GATEWAY})"
    )
    run.add_argument("--baud", type=int, help="baud rate (default 115200)")
    run.add_argument("--state", type=Path, help="where HELLO frames are recorded (hello.jsonl)")
    run.set_defaults(run=lazy("edgeroot.bridge_commands", "run_bridge"))
