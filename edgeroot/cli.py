"""The one command: ``edgeroot <subcommand>``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from edgeroot import (
    __version__,
    bridge,
    demo,
    device,
    event,
    gateway,
    keygen,
    pin,
    proof,
    register,
    resolve,
    root,
    trace,
    verify,
    witness,
)
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter, with_exit_rule
from runtime.keyfiles import KeyFileError
from runtime.statelock import StateDirError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeroot",
        description="Trusted telemetry and identifier resolution for the industrial internet.",
        parents=[JSON_FLAG],
    )
    parser.add_argument("--version", action="version", version=f"edgeroot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = (keygen, verify, proof, root, witness, register, resolve, pin, gateway, bridge, device, demo)
    for module in (*commands, event, trace):
        module.add_parser(sub)
    with_exit_rule(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here (argparse), as the rule says
    report = Reporter(as_json=getattr(args, "json", False))
    try:
        result: int = args.run(args, report)
    except (CommandFailed, KeyFileError, StateDirError) as exc:
        return report.failed(str(exc))
    except KeyboardInterrupt:
        return 130
    return result
