"""Gateway ingest A/B (not part of `make bench`): two or more gateways on this machine, their runs
interleaved, CPU time per reading of every process beside the rate, memory at the end.

On a machine shared with other work, a rate alone means little: the same code moves 2x between runs a
minute apart. This compares variants run by run (each run of A right beside the same run of B) and reports
what the load moves least, CPU seconds per reading from /proc (the gateway, its verification workers,
mosquitto, the root, and the publishers from this process's rusage), with the gateway family's idle CPU
(measured just before each run) taken out.

    AB_VARIANTS="inline=0,workers=-1" python bench/gateway_ab.py
    AB_VARIANTS="before=-1@/tmp/main-copy,after=-1@." python bench/gateway_ab.py

A variant is NAME=WORKERS (the gateway's ``verify.workers``), optionally @DIR: the gateway (and its root)
run the code checked out in DIR, since ``python -m edgeroot`` puts the working directory first on
sys.path. AB_RUNS (3) rounds of AB_BATCHES (1,20) readings per message, BENCH_READINGS per run.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gateway as g  # bench/ is on sys.path when run as a script
from limits import raw_p256_verify

from edgeroot.system import System

TICK = os.sysconf("SC_CLK_TCK")
IDLE_S = 4.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def uss_mb(pid: int) -> float:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def start_plant(workdir: Path, workers: str, code: Path) -> tuple[System, g.Plant]:
    system = System(workdir)
    system.__enter__()
    here = Path.cwd()
    os.environ["BENCH_VERIFY_WORKERS"] = workers
    os.chdir(code)  # the daemons inherit it: `python -m edgeroot` runs the code found there first
    try:
        plant = g.setup(system)
    finally:
        os.chdir(here)
    return system, plant


def one_run(plant: g.Plant, first: int, batch: int) -> dict[str, Any]:
    """One ingest run of ``plant``: its rate and CPU microseconds per reading of each process."""
    gateway = plant.system.daemons["gateway"].proc
    root = plant.system.daemons["root"].proc
    broker = plant.system.broker
    assert gateway is not None
    assert root is not None
    family = g.family(gateway.pid)
    others = {"mosquitto": broker.proc.pid, "root": root.pid}  # type: ignore[union-attr]  # mosquitto
    idle0 = sum(cpu_s(p) for p in family)
    time.sleep(IDLE_S)
    idle = (sum(cpu_s(p) for p in family) - idle0) / IDLE_S
    before = {str(p): cpu_s(p) for p in family} | {k: cpu_s(p) for k, p in others.items()}
    pubs0, wall0 = children_cpu_s(), time.perf_counter()
    rate = g.ingest_once(plant, plant.gateway.db, first, batch)
    wall = time.perf_counter() - wall0
    after = {str(p): cpu_s(p) for p in family} | {k: cpu_s(p) for k, p in others.items()}
    n = (g.N // g.PUBLISHERS) * g.PUBLISHERS

    def us(key: str) -> float:
        return round((after[key] - before[key]) / n * 1e6, 1)

    busy = sum(after[str(p)] - before[str(p)] for p in family) - idle * wall
    return {
        "rate": round(rate),
        "gateway_us": us(str(gateway.pid)),
        "workers_us": [us(str(p)) for p in family[1:]],
        "gateway_and_workers_us": round(busy / n * 1e6, 1),
        "mosquitto_us": us("mosquitto"),
        "root_us": us("root"),
        "publishers_us": round((children_cpu_s() - pubs0) / n * 1e6, 1),
    }


def main() -> None:
    import multiprocessing as mp  # noqa: PLC0415

    mp.set_start_method("fork")
    variants = []
    for spec in os.environ.get("AB_VARIANTS", "inline=0,workers=-1").split(","):
        name, _, rest = spec.partition("=")
        workers, _, where = rest.partition("@")
        variants.append((name, workers, Path(where or ".").resolve()))
    runs = int(os.environ.get("AB_RUNS", "3"))
    batches = [int(b) for b in os.environ.get("AB_BATCHES", "1,20").split(",")]
    print(f"gateway A/B, {g.N:,} readings per run, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        plants: dict[str, tuple[System, g.Plant]] = {}
        try:
            for name, workers, code in variants:
                Path(d, name).mkdir()
                plants[name] = start_plant(Path(d, name), workers, code)
            first = dict.fromkeys(plants, 1)
            rates: dict[tuple[str, int], list[float]] = {}
            for run in range(runs):
                for batch in batches:
                    for name, (_, plant) in plants.items():
                        row = one_run(plant, first[name], batch)
                        first[name] += g.N // g.PUBLISHERS
                        rates.setdefault((name, batch), []).append(row["rate"])
                        print(json.dumps({"run": run, "batch": batch, "variant": name, **row}), flush=True)
                raw = {"raw_p256_verify": round(raw_p256_verify())}
                raw["raw_paho_receive"] = round(g.raw_paho_receive(next(iter(plants.values()))[1]))
                print(json.dumps({"run": run, **raw}), flush=True)
            for batch in batches:
                base = next(iter(plants))
                for name in plants:
                    ratios = [a / b for a, b in zip(rates[(name, batch)], rates[(base, batch)], strict=True)]
                    listed = ", ".join(f"{r:.2f}" for r in ratios)
                    print(f"  {batch}/message {name}: rates {rates[(name, batch)]}, run by run vs {base}: "
                          f"{listed} (median {statistics.median(ratios):.2f})")  # fmt: skip
            for name, (_, plant) in plants.items():
                gateway = plant.system.daemons["gateway"].proc
                assert gateway is not None
                family = g.family(gateway.pid)
                each = [(round(g.pss_mb(p), 1), round(uss_mb(p), 1)) for p in family]
                print(f"  {name}: PSS, USS MB per process, gateway first: {each}; PSS together "
                      f"{sum(pss for pss, _ in each):.1f} MB")  # fmt: skip
        finally:
            for system, _ in reversed(plants.values()):
                system.__exit__(None, None, None)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
