"""``edgeroot demo``: the whole system on this machine, in a temporary directory, in under a minute.

A witness and a root node serving 88.123 (SQLite); the plant's enterprise node, to which the root
delegates 88.123.99 and whose checkpoints it anchors; an MQTT broker (mosquitto when installed, else the
embedded amqtt broker; ``--mqtt HOST:PORT`` for one of your own); a gateway registered at the root, whose
policy is the root's only, with MQTT and CoAP ingest, in anchor mode with a readings token; a serial
bridge on a pseudo-terminal pair; and three simulated devices registered at the plant's node: the oven
on MQTT, one on CoAP, one on the serial line. Every part is the real ``edgeroot`` command in its own
process, configured the way an operator would. Progress is shown live; then a device is resolved from
the root with ``--verify`` (each hop of the referral proven) and the plant's checkpoint proven anchored,
one reading's place in a block and that block's receipt are verified, a tampered reading is refused,
and a product is traced back with ``--verify`` to the oven readings that cured it (fetched from the
gateway with its token). Everything is stopped and removed at the end (``--dir`` keeps the files).
``--suite sm`` runs it all on the 国密 algorithms: SM2 devices, gateway, log keys and witness, SM3 for
the logs, the maps and the blocks; the root cosigns the plant's checkpoints with SM2 too (D-105).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="run the whole system for a minute", description=__doc__, parents=[JSON_FLAG]
    )
    p.add_argument("--readings", type=int, default=60, help="readings per device (default 60)")
    p.add_argument("--rate", type=float, default=10.0, help="readings per second per device (default 10)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="use this MQTT broker instead of starting one")
    p.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even if mosquitto exists",
    )
    p.add_argument(
        "--suite", choices=("default", "sm"), default="default",
        help="default: P-256 devices and gateway, Ed25519 log and witness, SHA-256; sm: 国密, SM2 signatures "
        "(devices, gateway, log, witness) and SM3 hashing throughout",
    )  # fmt: skip
    p.add_argument("--dir", type=Path, help="keep the files here instead of a temporary directory")
    p.set_defaults(run=lazy("edgeroot.demo_run", "run"))
