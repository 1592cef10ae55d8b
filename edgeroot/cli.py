"""The one command: ``edgeroot <subcommand>``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from edgeroot import (
    __version__,
    bridge,
    demo,
    device,
    gateway,
    keygen,
    register,
    resolve,
    root,
    verify,
    witness,
)
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.keyfiles import KeyFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeroot",
        description="Trusted telemetry and identifier resolution for the industrial internet.",
        parents=[JSON_FLAG],
    )
    parser.add_argument("--version", action="version", version=f"edgeroot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (keygen, verify, root, witness, register, resolve, gateway, bridge, device, demo):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = Reporter(as_json=getattr(args, "json", False))
    try:
        result: int = args.run(args, report)
    except (CommandFailed, KeyFileError) as exc:
        return report.failed(str(exc))
    except KeyboardInterrupt:
        return 130
    return result
