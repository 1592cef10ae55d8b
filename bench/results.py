"""Each benchmark records its figures here; `bench/report.py` turns them into bench/results.md.

One JSON line per figure in bench/last-run.jsonl (rewritten by `make bench`, not committed): which bench,
what was measured, the figure as text, the target from the issues (or "-"), and whether it was met.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "last-run.jsonl"


def record(bench: str, what: str, figure: str, target: str = "-", met: bool | None = None) -> None:
    verdict = "-" if met is None else ("meets" if met else "MISSES")
    with RESULTS.open("a") as f:
        f.write(
            json.dumps({"bench": bench, "what": what, "figure": figure, "target": target, "verdict": verdict})
        )
        f.write("\n")
