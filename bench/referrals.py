"""`make bench` (referrals, issue 14): verified resolution through two referrals, from a warm client.

Three `edgeroot root run` processes on this machine: top `88.123` delegates `88.123.99` to a secondary
node, which delegates `88.123.99.7` to an enterprise node holding BENCH_IDS identifiers (default
100,000). One client process resolves random identifiers from the top with
:meth:`rootclient.client.NodeClients.resolve` (every hop's checkpoint, map proofs and prefix chain
verified, one pin per log, connections kept open: a *warm* client), BENCH_CONCURRENCY lookups at a
time for BENCH_SECONDS, BENCH_RUNS times (median): verified resolutions/s, p50/p99 latency. Beside
it, in the same runs, the raw limit of that client: the same verified resolution asked of the
enterprise node directly (one hop, no referral). And the answer bytes per hop.

The Handle API through the top, in the same runs: ``GET /api/handles/ID?proof=true`` asked of the top
node, which follows its own delegations for the client (every hop verified, its follower a warm client
for the node's life, D-130), BENCH_CONCURRENCY at a time from one warm HTTP client, each identifier
once; beside it the enterprise node's own Handle answer (no hop), and the top answering the same
identifiers again from its answer cache; the load average of the machine over the runs.

Targets (issue 14): >= 1,000 verified resolutions/s end to end, p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results import record  # bench/ is on sys.path when run as a script

from chain_lite.cose import CoseSigner
from chain_lite.keys import NoteKey, load_private_pem
from chain_lite.policy import Policy
from chain_lite.registry import Delegation, Value, admin_kid, build_write, prefix_handle, sign_write
from edgeroot.system import System, free_port, wait_http
from resolver.assembly import init_root
from resolver.config import load
from resolver.db import Database
from resolver.registry import check_and_apply
from resolver.sequencer import Sequencer
from rootclient import routes
from rootclient.client import AsyncRootClient, NodeClients
from rootclient.errors import ClientError
from rootclient.pinned_log import PinStore
from runtime.clock import now_ms

N = int(os.environ.get("BENCH_IDS", "100000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
NODES = (("top.bench", "88.123"), ("secondary.bench", "88.123.99"), ("enterprise.bench", "88.123.99.7"))


class Pins:
    """In-memory pins, one per log (the client is warm: nothing is read from disk per lookup)."""

    def __init__(self, origin: str) -> None:
        self.state: dict[str, Any] | None = None
        self.origin = origin

    async def load_pin(self) -> dict[str, Any] | None:
        return self.state

    async def save_pin(self, state: dict[str, Any]) -> None:
        self.state = state

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        raise SystemExit(f"equivocation evidence from {self.origin}: {evidence['reason']}")


def write_all(state: Path, writes: list[tuple[str, str, list[Value]]]) -> None:
    """Apply signed writes straight to a node's database (its own checks), then sequence them."""
    cfg = load(state)
    admin = load_private_pem(cfg.admin_key.read_bytes())
    db = Database(cfg.database)
    try:
        # Signed and applied a thousand at a time: signing all 100,000 first took over 5 minutes on a
        # busy machine, and the node refuses a write stamped more than 300 s from its clock.
        for start in range(0, len(writes), 1000):
            raws = [
                sign_write(
                    build_write(cfg.origin, op, ident, values, timestamp_ms=now_ms(), nonce=os.urandom(16)),
                    CoseSigner(admin_kid(cfg.prefixes[0]), admin),
                ).raw
                for op, ident, values in writes[start : start + 1000]
            ]
            with db.transaction() as tx:
                for raw in raws:
                    check_and_apply(tx, raw, origin=cfg.origin, now_ms=now_ms())
        seq = Sequencer(
            db, NoteKey.parse_skey(cfg.log_skey.read_text()).log_signer(), cfg.origin, publish=True
        )
        try:
            while seq.integrate(now_ms()) is not None:
                pass
        finally:
            seq.close()
    finally:
        db.close()


async def drive(
    top: str, policy: Policy, identifiers: list[str], *, direct: bool
) -> tuple[float, list[float], dict[str, int]]:
    """Resolve random ``identifiers`` for SECONDS with CONCURRENCY lookups in flight: (rate, latencies,
    answer bytes per hop of the last lookup)."""
    pins: dict[str, Pins] = {}

    def pin(origin: str) -> PinStore:
        return pins.setdefault(origin, Pins(origin))

    nodes = NodeClients(pins=pin)
    latencies: list[float] = []
    errors: list[str] = []
    sizes: dict[str, int] = {}
    async with AsyncRootClient(top) as client:
        await nodes.resolve(client, identifiers[0], policy)  # warm: pins, connections
        deadline = time.perf_counter() + SECONDS

        async def worker() -> None:
            while time.perf_counter() < deadline:
                ident = random.choice(identifiers)
                t = time.perf_counter()
                try:
                    hops = await nodes.resolve(client, ident, policy)
                except ClientError as exc:  # counted, not retried: a refused or dropped connection
                    errors.append(str(exc))
                    continue
                latencies.append(time.perf_counter() - t)
                assert hops[-1].verified.proven.record is not None, ident
                assert len(hops) == (1 if direct else 3)
                for hop in hops:
                    sizes[hop.origin] = len(json.dumps(hop.proof))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    await nodes.aclose()
    if errors:
        print(f"  {len(errors)} lookups failed to connect, e.g. {errors[0]}")
    return len(latencies) / elapsed, latencies, sizes


async def http_floor(url: str) -> float:
    """Requests/s of the same client fetching ``url``'s checkpoint, CONCURRENCY at a time, for SECONDS."""
    count = 0
    async with AsyncRootClient(url) as client:
        await client.checkpoint()
        deadline = time.perf_counter() + SECONDS

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await client.checkpoint()
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - start)


async def drive_handles(url: str, identifiers: list[str]) -> tuple[float, list[float], list[str]]:
    """``GET /api/handles/ID?proof=true`` at ``url`` for ``identifiers`` in order, each once,
    CONCURRENCY in flight from one warm HTTP client, until they are all asked or SECONDS pass: (rate,
    latencies, the identifiers asked). Each answer must be the identifier's record."""
    latencies: list[float] = []
    asked: list[str] = []
    queue = iter(identifiers)
    async with AsyncRootClient(url) as client:
        await client.checkpoint()  # a connection opened before the clock starts
        deadline = time.perf_counter() + SECONDS

        async def worker() -> None:
            for ident in queue:
                if time.perf_counter() >= deadline:
                    return
                t = time.perf_counter()
                answer = await client.get_json(routes.handle(ident), proof="true")
                latencies.append(time.perf_counter() - t)
                asked.append(ident)
                assert answer["handle"] == ident, answer
                assert [v["type"] for v in answer["values"]] == ["URL"], answer

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(latencies) / (time.perf_counter() - start), latencies, asked


def handle_shares(identifiers: list[str]) -> list[tuple[list[str], list[str]]]:
    """For each run, the identifiers the leaf and the top are asked through the Handle API: each once
    in the whole benchmark, since the top caches what it followed (a repeated identifier would measure
    that cache instead)."""
    share = len(identifiers) // (2 * RUNS)
    order = random.sample(identifiers, 2 * RUNS * share)
    return [(order[2 * r * share :][:share], order[(2 * r + 1) * share :][:share]) for r in range(RUNS)]


HandleFigures = dict[str, list[tuple[float, float, float]]]
"""Per Handle API figure (``leaf``, ``top``, ``cached``): (rate, p50 ms, p99 ms) of each run."""


def measure_handles(
    top: str, leaf: str, at_leaf: list[str], via_top: list[str], figures: HandleFigures
) -> None:
    """One run of the Handle API figures: the leaf's own answers for ``at_leaf``; the top's for
    ``via_top``, none asked of it before (it follows its delegation to the leaf for each); the top's
    again for the ones it answered (from its follower's answer cache)."""

    def keep(name: str, rate: float, latencies: list[float]) -> None:
        figures[name].append((rate, _pct(latencies, 0.5), _pct(latencies, 0.99)))

    rate, latencies, _ = asyncio.run(drive_handles(leaf, at_leaf))
    keep("leaf", rate, latencies)
    rate, latencies, answered = asyncio.run(drive_handles(top, via_top))
    keep("top", rate, latencies)
    rate, latencies, _ = asyncio.run(drive_handles(top, answered))
    keep("cached", rate, latencies)


def report_handles(figures: HandleFigures, floor: float, loads: list[float]) -> None:
    top, leaf, cached = (
        [statistics.median(run[i] for run in figures[name]) for i in range(3)]
        for name in ("top", "leaf", "cached")
    )
    runs = ", ".join(f"{run[0]:,.0f}" for run in figures["top"])
    line = (
        f"median of {RUNS} runs: {top[0]:,.0f} answers/s (runs: {runs}), p50 {top[1]:.1f} ms, p99 "
        f"{top[2]:.1f} ms; in the same runs, same client: the leaf's own Handle answer (no hop) "
        f"{leaf[0]:,.0f}/s, p99 {leaf[2]:.1f} ms (ratio {top[0] / leaf[0]:.2f}); the top answering the "
        f"same ids again from its answer cache {cached[0]:,.0f}/s, p99 {cached[2]:.1f} ms (ratio "
        f"{top[0] / cached[0]:.2f}); the leaf's cached checkpoint {floor:,.0f} req/s; load average "
        f"{min(loads):.1f}-{max(loads):.1f}"
    )
    print(
        "  Handle API through the top (GET /api/handles/ID?proof=true, each id once: the top follows its "
        f"delegations, every hop verified), {CONCURRENCY} in flight: {line}"
    )
    what = f"Handle API through the top following its delegations, ?proof=true, {N:,} ids at the leaf"
    record("referrals", f"{what}, {CONCURRENCY} in flight, each id asked once", line)


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    print(
        f"referral benchmarks on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    with tempfile.TemporaryDirectory() as d, System(Path(d)) as system:
        tmp = Path(d)
        urls: list[str] = []
        states: list[Path] = []
        for origin, prefix in NODES:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            state = tmp / origin
            init_root(state, origin, prefix, parent=urls[-1] if urls else "")
            system.daemon(origin, "root", "run", "--state", state, "--listen", f"127.0.0.1:{port}")
            urls.append(url)
            states.append(state)
        for parent, child, (_, prefix), url in zip(states[:-1], states[1:], NODES[1:], urls[1:], strict=True):
            text = (child / "policy.txt").read_text()
            vkey = str(Policy.parse(text.encode()).logs[0].verifier.vkey())
            write_all(
                parent, [("create", prefix_handle(prefix), [Delegation(prefix, (url,), vkey, text).value()])]
            )
        print(f"populating {N:,} identifiers at the enterprise node ...")
        t = time.perf_counter()
        identifiers = [f"88.123.99.7/DEV-{i:06d}" for i in range(N)]
        write_all(
            states[2],
            [("create", i, [Value(1, "URL", "string", f"https://p.example/{i}")]) for i in identifiers],
        )
        print(f"  done in {time.perf_counter() - t:.0f} s")
        for (origin, _), url in zip(NODES, urls, strict=True):
            system.start(origin, timeout=120)
            wait_http(url + routes.CHECKPOINT, timeout=120)
        top_policy = Policy.parse((states[0] / "policy.txt").read_bytes())
        leaf_policy = Policy.parse((states[2] / "policy.txt").read_bytes())
        raws, runs, floors = [], [], []
        handles: HandleFigures = {"leaf": [], "top": [], "cached": []}
        sizes: dict[str, int] = {}
        loads = [os.getloadavg()[0]]
        for at_leaf, via_top in handle_shares(identifiers):  # RUNS runs, alternated: the same machine
            floors.append(asyncio.run(http_floor(urls[2])))
            raw_rate, raw_lat, _ = asyncio.run(drive(urls[2], leaf_policy, identifiers, direct=True))
            raws.append((raw_rate, _pct(raw_lat, 0.99)))
            rate, lat, sizes = asyncio.run(drive(urls[0], top_policy, identifiers, direct=False))
            runs.append((rate, _pct(lat, 0.5), _pct(lat, 0.99)))
            measure_handles(urls[0], urls[2], at_leaf, via_top, handles)
            loads.append(os.getloadavg()[0])
        rate = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        raw_rate = statistics.median(r[0] for r in raws)
        floor = statistics.median(floors)
        met = rate >= 1000 and p99 < 50
        line = (
            f"median of {RUNS} runs: {rate:,.0f} verified/s "
            f"(runs: {', '.join(f'{r[0]:,.0f}' for r in runs)}), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; raw limits in the same runs, same client: one hop at the "
            f"leaf {raw_rate:,.0f}/s, p99 {statistics.median(r[1] for r in raws):.1f} ms (ratio "
            f"{rate / raw_rate:.2f}); the leaf's cached checkpoint, nothing verified, {floor:,.0f} req/s "
            f"(ratio {rate / floor:.2f})"
        )
        print(f"  resolution through two referrals, {N:,} ids at the leaf, {CONCURRENCY} in flight: {line}")
        record(
            "referrals",
            f"verified resolution through two referrals, warm client, {N:,} ids at the leaf, "
            f"{CONCURRENCY} in flight",
            line, ">= 1,000/s, p99 < 50 ms", met,
        )  # fmt: skip
        report_handles(handles, floor, loads)
        per_hop = ", ".join(f"{origin} {size:,} B" for origin, size in sizes.items())
        print(f"  answer (proof object) bytes per hop: {per_hop}")
        record("referrals", "proof bytes per hop (JSON proof object incl. prefix chain)", per_hop)
    sys.exit(0)


if __name__ == "__main__":
    main()
