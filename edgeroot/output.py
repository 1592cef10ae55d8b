"""How commands report: human lines through rich by default, one JSON object with ``--json``.

Every command follows one exit-code rule (:data:`EXIT_RULE`, shown in ``edgeroot --help`` and in each
subcommand's help): 0 proven or done, 1 the thing checked is false (or refused), 2 the command could
not judge (usage, configuration, unreadable input, unreachable service).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

EXIT_RULE = (
    "exit status: 0 proven / done; 1 the thing checked is false or was refused (one line says why); "
    "2 usage, configuration, unreadable input or an unreachable service (nothing was judged)"
)


def with_exit_rule(parser: argparse.ArgumentParser) -> None:
    """End the help of ``parser`` and of every subcommand under it with :data:`EXIT_RULE`.

    Done once over the finished tree (argparse keeps subcommands in ``_SubParsersAction.choices``), so
    a command added later gets the rule without remembering to ask for it.
    """
    parser.epilog = f"{parser.epilog}\n\n{EXIT_RULE}" if parser.epilog else EXIT_RULE
    for action in parser._actions:  # argparse has no public walk over subcommands
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                with_exit_rule(child)


JSON_FLAG = argparse.ArgumentParser(add_help=False)
# SUPPRESS, so ``--json`` works before or after the subcommand without one resetting the other.
JSON_FLAG.add_argument(
    "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout, for scripts"
)


class CommandFailed(Exception):
    """A command cannot run: bad arguments, unreadable files, a service that cannot be reached. Exit 2."""


def human(value: object) -> str:
    """A fact as a person reads it: lists joined by commas, mappings as ``k=v``, yes/no, never a repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={human(v)}" for k, v in value.items()) or "none"
    if isinstance(value, Sequence | set | frozenset):
        return ", ".join(human(v) for v in value) or "none"
    if value is None:
        return "none"
    return str(value)


class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def _facts(self, facts: Mapping[str, Any]) -> None:
        for key, value in facts.items():
            # A list of records (a resolution's values) reads best one record a line.
            if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                self.out.print(f"  {key}:")
                for item in value:
                    self.out.print(f"    {escape(human(item))}")
            else:
                self.out.print(f"  {key}: {escape(human(value))}")

    def ok(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": True, "message": message, **facts}, sort_keys=True))
        else:
            self.out.print(f"[green]OK[/green] {escape(message)}")
            self._facts(facts)
        return EXIT_OK

    def invalid(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, **facts}, sort_keys=True))
        else:
            self.err.print(f"[red]INVALID[/red] {escape(message)}")
        return EXIT_INVALID

    def failed(self, message: str) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, "usage_error": True}, sort_keys=True))
        else:
            self.err.print(f"[red]error:[/red] {escape(message)}")
        return EXIT_USAGE
