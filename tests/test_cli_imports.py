"""The CLI stays light: ``edgeroot --help`` and the light commands load no daemon libraries (the heavy
implementations load through :func:`edgeroot.lazy_command.lazy`), and every local import left in product
code says why it is local."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from edgeroot.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("chain_lite", "runtime", "rootclient", "resolver", "edge", "firmware_bridge", "edgeroot")
HEAVY = ("fastapi", "uvicorn", "paho", "aiocoap", "pymodbus", "sqlite_utils", "serial")
NOQA = re.compile(r"noqa: PLC0415(?P<why>\s*\([^)]+\))?")


def test_every_local_import_in_product_code_says_why() -> None:
    seen, bare = 0, []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for match in NOQA.finditer(line):
                    seen += 1
                    if match["why"] is None:
                        bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert seen > 0, "the scan found no noqa at all: has the layout moved?"  # else this test checks nothing
    assert bare == [], "a `noqa: PLC0415` without a (why) comment:\n" + "\n".join(bare)


def test_importing_the_cli_loads_no_daemon_library() -> None:
    code = (
        "import json, sys\nimport edgeroot.cli\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def test_the_heavy_commands_are_lazy() -> None:
    """Their ``run`` is the lazy loader, and each names a function that exists."""
    lazy = []
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        run = parser.get_default("run")
        if run is not None and run.__qualname__.startswith("lazy("):
            lazy.append(run.__qualname__)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    expected = {
        "edgeroot.root_commands.run_init", "edgeroot.root_commands.run_add_prefix",
        "edgeroot.root_commands.run_serve",
        "edgeroot.witness_commands.run_init", "edgeroot.witness_commands.run_serve",
        "edgeroot.gateway_commands.run_init", "edgeroot.gateway_commands.run_daemon",
        "edgeroot.gateway_commands.run_status", "edgeroot.gateway_commands.run_reset_counter",
        "edgeroot.bridge_commands.run_bridge", "edgeroot.device_simulation.run_simulate",
        "edgeroot.demo_run.run",
        "edgeroot.event_commands.run_capture", "edgeroot.trace_commands.run",
        "edgeroot.anchor_commands.run_anchor",
        "edgeroot.evidence_commands.run_export", "edgeroot.evidence_commands.run_verify_bundle",
        "edgeroot.proof_commands.run_checkpoint", "edgeroot.proof_commands.run_receipt",
        "edgeroot.proof_commands.run_consistency", "edgeroot.register_commands.run",
    }  # fmt: skip
    assert {name.removeprefix("lazy(").removesuffix(")") for name in lazy} == expected
    for name in expected:
        module, _, function = name.rpartition(".")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
