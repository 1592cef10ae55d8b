"""How commands report: human lines through rich by default, one JSON object with ``--json``.

Every command follows one exit-code rule (:data:`EXIT_RULE`, shown in ``edgeroot --help`` and in each
subcommand's help): 0 proven or done, 1 the thing checked is false (or refused), 2 the command could
not judge (usage, configuration, unreadable input, unreachable service).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters other than newline and tab shown as ``\\xNN``.

    Messages carry what came from the network or a file (a record's data, a root's error): an ESC or a
    CR in them must not recolour, retitle or overwrite the terminal, nor put escapes into a piped log.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Reporter:
    """Human lines, or one JSON object with ``--json``.

    Human lines are rich :class:`~rich.text.Text`, never markup strings: text is shown as it is (rich
    markup escaping doubles a trailing backslash, and ``:name:`` emoji codes would turn ``88.123/A:x:``
    into a picture). Colour comes from rich, which writes none when the stream is not a terminal
    (``FORCE_COLOR`` and ``NO_COLOR`` are honoured).
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True, emoji=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

    def line(self, text: str) -> None:
        """One more human line on stdout (after :meth:`ok`), shown as it is."""
        self.out.print(Text(printable(text)))

    def _facts(self, facts: Mapping[str, Any]) -> None:
        for key, value in facts.items():
            # A list of records (a resolution's values) reads best one record a line.
            if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                self.line(f"  {key}:")
                for item in value:
                    self.line(f"    {human(item)}")
            else:
                self.line(f"  {key}: {human(value)}")

    def ok(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": True, "message": message, **facts}, sort_keys=True))
        else:
            self.out.print(Text.assemble(("OK", "green"), " ", printable(message)))
            self._facts(facts)
        return EXIT_OK

    def invalid(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, **facts}, sort_keys=True))
        else:
            self.err.print(Text.assemble(("INVALID", "red"), " ", printable(message)))
        return EXIT_INVALID

    def pending(self, message: str, exit_code: int, **facts: Any) -> int:
        """Neither proven nor false yet (e.g. not anchored yet): its own exit code, facts as for ok."""
        if self.as_json:
            print(json.dumps({"ok": False, "pending": True, "message": message, **facts}, sort_keys=True))
        else:
            self.out.print(Text.assemble(("NOT YET", "yellow"), " ", printable(message)))
            self._facts(facts)
        return exit_code

    def failed(self, message: str) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, "usage_error": True}, sort_keys=True))
        else:
            self.err.print(Text.assemble(("error:", "red"), " ", printable(message)))
        return EXIT_USAGE
