"""How commands report: human lines through rich by default, one JSON object with ``--json``.

Exit codes: 0 verified / done, 1 verification failed (one line says why), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


JSON_FLAG = argparse.ArgumentParser(add_help=False)
# SUPPRESS, so ``--json`` works before or after the subcommand without one resetting the other.
JSON_FLAG.add_argument(
    "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout, for scripts"
)


class CommandFailed(Exception):
    """A command cannot run: bad arguments, unreadable files. Exit code 2."""


class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def ok(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": True, "message": message, **facts}, sort_keys=True))
        else:
            self.out.print(f"[green]OK[/green] {message}")
            for key, value in facts.items():
                self.out.print(f"  {key}: {value}")
        return EXIT_OK

    def invalid(self, message: str, **facts: Any) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, **facts}, sort_keys=True))
        else:
            self.err.print(f"[red]INVALID[/red] {message}")
        return EXIT_INVALID

    def failed(self, message: str) -> int:
        if self.as_json:
            print(json.dumps({"ok": False, "error": message, "usage_error": True}, sort_keys=True))
        else:
            self.err.print(f"[red]error:[/red] {message}")
        return EXIT_USAGE
