"""``edgeroot pin list|forget``: the checkpoints ``resolve --verify`` has pinned, one file per log.

A pin is the last checkpoint of a log this machine verified (see :mod:`rootclient.pin_file`); every
later answer must be consistent with it. When a log is re-created on purpose (a new root with the same
origin, a test set-up), its old pin no longer verifies: ``edgeroot pin forget ORIGIN`` removes it, and
the next ``resolve --verify`` pins the new log afresh (trust on first use, under the policy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from rootclient.pin_file import config_dir, pin_file


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pin", help="list or forget pinned checkpoints", description=__doc__)
    psub = p.add_subparsers(dest="what", required=True, metavar="{list,forget}")
    listing = psub.add_parser("list", help="each pinned log: origin, size, file", parents=[JSON_FLAG])
    listing.add_argument("--config-dir", type=Path, help=f"where pins are kept (default {config_dir()})")
    listing.set_defaults(run=run_list)
    forget = psub.add_parser("forget", help="remove the pin of one log, or all pins", parents=[JSON_FLAG])
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("origin", nargs="?", help="the log's origin, e.g. root.example")
    which.add_argument("--all", action="store_true", help="forget every pin")
    forget.add_argument("--config-dir", type=Path, help=f"where pins are kept (default {config_dir()})")
    forget.set_defaults(run=run_forget)


def forget_hint(origin: str, directory: Path | None) -> str:
    """The command that forgets the pin of ``origin`` (said in every message about a bad pin)."""
    where = f" --config-dir {directory}" if directory is not None else ""
    return f"edgeroot pin forget {origin}{where}"


def _describe(path: Path) -> dict[str, Any]:
    """What a pin file holds, for people: origin and size of the pinned checkpoint (the note's first
    two lines, C2SP tlog-checkpoint). An unreadable file is listed as such, so it can be forgotten."""
    try:
        state = json.loads(path.read_text())
        origin = str(state["origin"])
        lines = str(state["pinned"] or "").splitlines()
        size = int(lines[1]) if len(lines) > 1 else 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"file": str(path), "origin": None, "size": None, "problem": f"unreadable: {exc}"}
    return {"file": str(path), "origin": origin, "size": size}


def run_list(args: argparse.Namespace, report: Reporter) -> int:
    directory = (args.config_dir or config_dir()) / "pinned"
    pins = [_describe(p) for p in sorted(directory.glob("*.json"))] if directory.is_dir() else []
    if report.as_json:
        return report.ok(f"{len(pins)} pinned log(s) in {directory}", pins=pins)
    report.ok(f"{len(pins)} pinned log(s) in {directory}")
    for pin in pins:
        what = pin.get("problem") or f"{pin['origin']} at size {pin['size']}"
        report.line(f"  {what}: {pin['file']}")
    return 0


def run_forget(args: argparse.Namespace, report: Reporter) -> int:
    directory = args.config_dir or config_dir()
    if args.all:
        files = sorted((directory / "pinned").glob("*.json")) if (directory / "pinned").is_dir() else []
    else:
        path = pin_file(args.origin, directory)
        if not path.exists():
            raise CommandFailed(f"no pin for {args.origin} in {path.parent} (see: edgeroot pin list)")
        files = [path]
    try:
        for path in files:
            path.unlink()
    except OSError as exc:
        raise CommandFailed(f"cannot remove {exc.filename}: {exc.strerror}") from exc
    what = "every pin" if args.all else f"the pin of {args.origin}"
    return report.ok(f"forgot {what} ({len(files)} file(s))", files=[str(f) for f in files])
