"""`make bench` runs every benchmark that records a figure, and each of them still imports.

bench/flood.py (issue 12 item 9's target) had been left out of the Makefile, and so had not followed a
change of bench/gateway.py's set-up it imports, and nobody noticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _recording_scripts() -> list[str]:
    """The bench scripts that record figures into bench/results.md (they call ``record(``)."""
    return sorted(
        p.name
        for p in BENCH.glob("*.py")
        if p.name != "results.py" and re.search(r"^\s+record\(", p.read_text(), re.MULTILINE)
    )


def _make_bench_scripts() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert target, "no bench target in the Makefile"
    return re.findall(r"bench/(\w+\.py)", target.group(1))


def test_every_recording_benchmark_runs_in_make_bench_and_has_a_section() -> None:
    recording = _recording_scripts()
    assert "flood.py" in recording and "gateway.py" in recording, recording  # the search finds them
    missing = sorted(set(recording) - set(_make_bench_scripts()))
    assert missing == [], f"benchmarks that record figures but `make bench` never runs: {missing}"
    report = (BENCH / "report.py").read_text()
    for script in recording:
        benches = set(re.findall(r'^\s+record\(\s*"(\w+)"', (BENCH / script).read_text(), re.MULTILINE))
        for bench in benches:
            assert f'"{bench}":' in report, f"bench/report.py has no section for {bench!r} ({script})"


@pytest.mark.parametrize("script", _recording_scripts())
def test_each_benchmark_imports_as_make_bench_runs_it(script: str) -> None:
    """Imported in a fresh interpreter with bench/ first on sys.path, as `python bench/X.py` has it."""
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import {script.removesuffix('.py')}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
