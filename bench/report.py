"""Write bench/results.md from the figures the benchmarks recorded (bench/last-run.jsonl)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from results import RESULTS

OUT = Path(__file__).resolve().parent / "results.md"
TITLES = {
    "chain_lite": "chain_lite hot paths (bench/run.py)",
    "root": "root node (bench/root.py)",
    "gateway": "gateway (bench/gateway.py)",
    "flood": "a known device beside a flood of made-up signers (bench/flood.py)",
    "peer": "the ThingsBoard IoT Gateway beside ours, same machine, broker and load (bench/peer.py)",
    "bridge": "firmware bridge (bench/bridge.py)",
    "demo": "the whole system (bench/demo.py)",
    "anchor": "anchoring a child log in its parent (bench/anchor.py)",
    "evidence": "evidence bundles (bench/evidence.py)",
    "epcis": "EPCIS 2.0 event core (bench/epcis.py)",
    "epcis_log": "EPCIS events on the log: capture and trace (bench/epcis_log.py)",
    "sm2": "SM2 signatures, 国密 (bench/sm2.py)",
    "referrals": "referrals across three nodes (bench/referrals.py)",
    "console": "the console verifying in Chromium, all-SM beside default (bench/console.py)",
}
# What a section's table cannot say in its rows: printed under the section's title.
NOTES = {
    "peer": (
        "Both gateways take the same load from the same mosquitto (our shipped configuration) on the same "
        "two cores, runs alternating: the same publisher processes and message counts, one reading per QoS 1 "
        "message, prepared before the clock starts. They do different jobs with it (D-111). **Ours** holds "
        "the PUBACK, decodes the COSE_Sign1 envelope, checks the device's counter, verifies its P-256 "
        "signature (worker processes), stores it in SQLite (WAL, batched commits), then acknowledges it, "
        "and chains it into signed blocks synced to a root; a reading counts when it is durable. **The "
        "ThingsBoard IoT Gateway** (its own virtualenv, D-110) has paho acknowledge each message on "
        "receipt, before any processing, parses the JSON form of the same reading, maps it to a telemetry "
        "point, queues it in memory (its default storage) and publishes it upstream over MQTT QoS 1 in "
        "packs; it verifies no signature and keeps nothing across a crash. Its upstream is a stand-in for "
        "ThingsBoard (a second mosquitto and a client that answers its `getSessionLimits` RPC with no rate "
        "limits); a reading counts when it arrives there. The ratios show what ours costs for its "
        "guarantees on this load, not which gateway is better."
    ),
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    missed = [r for r in rows if r["verdict"] == "MISSES"]
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {today}.",
        "",
        f"Machine: {machine()}. Every process of a benchmark (broker, root, gateway, load generators) shares "
        "these cores, as it would on a gateway box; figures are medians where a benchmark repeats.",
        "",
        f"**{len(rows) - len(missed)} figures meet or have no target; {len(missed)} miss their target**"
        + (": " + "; ".join(r["what"] for r in missed) + "." if missed else "."),
        "The targets are the issues' own; a miss is reported, never tuned away.",
    ]
    for bench, title in TITLES.items():
        section = [r for r in rows if r["bench"] == bench]
        if not section:
            continue
        lines += ["", f"## {title}", ""]
        if bench in NOTES:
            lines += [NOTES[bench], ""]
        lines += ["| what | result | target | verdict |", "|---|---|---|---|"]
        lines += [f"| {r['what']} | {r['figure']} | {r['target']} | {r['verdict']} |" for r in section]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({len(rows)} figures, {len(missed)} missing their target)")


if __name__ == "__main__":
    main()
