"""`--help` and the human output are plain text for a pipe: no rich markup, no Python reprs, no ANSI
escapes when stdout is not a terminal, and text from the network or the user shown as it is."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeroot.cli import build_parser
from edgeroot.output import Reporter
from tests.test_cli_exit_codes import _subcommands

EDGEROOT = [sys.executable, "-m", "edgeroot"]
DOWN = "http://127.0.0.1:1"  # nothing listens on port 1
ESC = "\x1b"
RICH_MARKUP = re.compile(
    r"\[/[\w ]*\]|\[(?:bold|dim|italic|underline|reverse|strike|link|red|green|yellow|blue)\b"
)
PYTHON_REPRS = re.compile(
    r"<[\w.]+ object at 0x|<(?:function|class|module) |\b(?:PosixPath|Namespace|Path)\(|%\(\w+\)"
    r"|default: (?:None|True|False)\b"
)


def _plain_env() -> dict[str, str]:
    """The environment without the variables that force or forbid colour, so the stream decides."""
    return {k: v for k, v in os.environ.items() if k not in {"FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE"}}


def _leaks(text: str) -> list[str]:
    found = [m.group() for pattern in (RICH_MARKUP, PYTHON_REPRS) for m in pattern.finditer(text)]
    return found + (["ESC"] if ESC in text else [])


def test_the_leak_patterns_catch_markup_reprs_and_escapes() -> None:
    """The patterns below find what they look for, and pass argparse's own brackets ([-h], [origin])."""
    assert _leaks("usage: edgeroot pin forget [-h] [--all] [origin] {a,b}") == []
    assert _leaks("[green]OK[/green]") == ["[green", "[/green]"]
    assert _leaks("key PosixPath('/x') (default: None) <edgeroot.x object at 0x7f>") == [
        "PosixPath(", "default: None", "<edgeroot.x object at 0x"
    ]  # fmt: skip
    assert _leaks("\x1b[31merror:\x1b[0m") == ["ESC"]


def test_every_command_help_is_plain_text() -> None:
    """`edgeroot --help` and every subcommand's help have no rich markup, Python repr or ANSI escape."""
    helps = _subcommands(build_parser())
    assert len(helps) > 20
    leaking = {path: _leaks(text) for path, text in helps if _leaks(text)}
    assert leaking == {}


@pytest.mark.parametrize("command", [["--help"], ["gateway", "run", "--help"], ["resolve", "--help"]])
def test_help_piped_is_plain_text_named_edgeroot(command: list[str]) -> None:
    """`python -m edgeroot ... --help | less`: plain text, the program named `edgeroot`, not `__main__.py`."""
    done = subprocess.run(
        [*EDGEROOT, *command], capture_output=True, text=True, env=_plain_env(), check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: edgeroot"), done.stdout[:200]
    assert _leaks(done.stdout) == []


def _on_a_terminal(args: list[str]) -> str:
    """What ``edgeroot ARGS`` writes (stdout and stderr) when both are a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*EDGEROOT, *args], stdout=follower, stderr=follower, env={**_plain_env(), "TERM": "xterm"}
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


def test_human_output_is_coloured_on_a_terminal_and_plain_through_a_pipe(tmp_path: Path) -> None:
    """rich colours OK / error: for a terminal only: piped, stdout and stderr carry no ANSI escape."""
    keys = ["keygen", "--kind", "device", "--name", "88.123/admin", "--out", str(tmp_path)]
    ok = subprocess.run(
        [*EDGEROOT, *keys], capture_output=True, text=True, env=_plain_env(), check=False, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK device key for 88.123/admin\n") and _leaks(ok.stdout + ok.stderr) == []
    refused = ["resolve", "garbage", "--root", DOWN]
    failed = subprocess.run(
        [*EDGEROOT, *refused], capture_output=True, text=True, env=_plain_env(), check=False, timeout=60
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and _leaks(failed.stdout + failed.stderr) == []
    # The same command on a terminal is coloured: the pipe, not the command, took the colour away.
    assert f"{ESC}[" in _on_a_terminal(refused)


def test_human_output_shows_text_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets, `:name:` emoji codes and backslashes in messages and facts are printed unchanged; control
    characters (a hostile record's ESC or CR) are shown as \\xNN, never sent to the terminal."""
    report = Reporter(as_json=False)
    report.ok(
        "registered 88.123/A:cross_mark: [b]x[/b]",
        values=[{"data": ":smile: [red]z"}],
        path="C:\\dir\\",
        data="\x1b]0;owned\x07\x1b[31mred\rover",
    )
    report.failed("cannot read [x]\\")
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "OK registered 88.123/A:cross_mark: [b]x[/b]",
        "  values:",
        "    data=:smile: [red]z",
        "  path: C:\\dir\\",
        "  data: \\x1b]0;owned\\x07\\x1b[31mred\\x0dover",
    ]
    assert err == "error: cannot read [x]\\\n"
