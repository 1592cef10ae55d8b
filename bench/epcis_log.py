"""`make bench` (EPCIS on the log): capture sustained into the log, and a verified backward trace.

1. Capture: sign N EPCIS events (default 20,000, in documents of 500; not timed), then POST them to a
   root node (`edgeroot root run`, its own process, SQLite) from two concurrent clients and time until
   every event is sequenced and published: events/s, the median of RUNS runs.
2. Trace: capture a 1,021-event genealogy (a pallet of 20 cases of 10 finished goods, each made from an
   intermediate made from two raw batches, each raw batch commissioned and each finished good inspected)
   and trace the pallet back to every raw batch with `--verify`'s checks (every event's inclusion,
   signature and hash ID, every identifier's completeness proof): cold once, then warm (pin and signer
   keys known; every event and proof checked again), median of RUNS runs.
3. Forward trace (a recall): capture supplier lots until the log holds FORWARD_LOG events (each lot: the
   supplier's batch in 100 mixes, each mix in 10 finished goods, inspected, packed 10 to a case, 20 cases
   to a pallet, pallets shipped: 1,311 events), then trace lot 0 forward to every affected product with
   `--verify`'s checks, warm, median of RUNS runs; the same without verification beside it.

Targets (issue 15): capture >= 2,000 events/s sustained (batched, SQLite); backward trace of a 1,000-event
genealogy with every proof verified < 1 s from a warm client; a forward trace over 100k events finds all
affected products in < 1 s. Raw limits measured in the same run: P-256
verify and the CBV event hash ID per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from results import record  # bench/ is on sys.path when run as a script

from chain_lite import b64
from chain_lite.cose import CoseSigner
from chain_lite.epcis import event_hash_id
from chain_lite.epcis_capture import Capture, sign_capture
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from chain_lite.epcis_identifiers import identifier_uri
from chain_lite.keys import generate_p256
from edgeroot.system import System
from rootclient import routes
from rootclient.client import AsyncRootClient
from rootclient.epcis_trace import (
    BACK,
    FORWARD,
    IdentifierEvents,
    TraceNode,
    Verifier,
    fetch_events_for,
    trace,
)
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog

N = int(os.environ.get("BENCH_EVENTS", "20000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PER_DOCUMENT = 500
CLIENTS = 2
PREFIX = "88.123"
FORWARD_LOG = int(os.environ.get("BENCH_FORWARD_LOG", "100000"))
MIXES, GOODS_PER_MIX, GOODS_PER_CASE, CASES_PER_PALLET = 100, 10, 10, 20


def _event(kind: str, seq: int, **lists: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "eventTime": f"2026-11-30T{(seq // 3600) % 24:02d}:{(seq // 60) % 60:02d}:{seq % 60:02d}.000Z",
        "eventTimeZoneOffset": "+00:00",
        "bizStep": lists.pop("step", "commissioning"),
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
    }
    if kind in ("ObjectEvent", "AggregationEvent"):
        event["action"] = "ADD"
    event.update(lists)
    return event


def _sign(events: list[dict[str, Any]], signer: CoseSigner, origin: str) -> dict[str, Any]:
    signed = []
    for event in events:
        capture = Capture(origin, event_hash_id(event), json.dumps(event).encode())
        signed.append({**event, "edgeroot:signedCapture": b64.encode(sign_capture(capture, signer).raw)})
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T12:00:00.000Z",
        "epcisBody": {"eventList": signed},
    }


def _uri(name: str) -> str:
    return identifier_uri(f"{PREFIX}/{name}", DEFAULT_IDENTIFIER_BASE)


def _published(url: str) -> int:
    text = httpx.get(url + routes.CHECKPOINT, timeout=60).text  # a loaded machine answers late
    return int(text.splitlines()[1])


async def _post_all(url: str, documents: list[dict[str, Any]]) -> None:
    queue = list(documents)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while queue:
                doc = queue.pop()
                response = await http.post(routes.EPCIS_CAPTURE, json=doc)
                if response.status_code != 202:
                    raise RuntimeError(f"capture refused: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capture_run(url: str, signer: CoseSigner, origin: str, run: int) -> float:
    events = [
        _event("ObjectEvent", i, epcList=[_uri(f"R{run}-ITEM-{i}")], step="commissioning") for i in range(N)
    ]
    documents = [_sign(events[i : i + PER_DOCUMENT], signer, origin) for i in range(0, N, PER_DOCUMENT)]
    before = _published(url)
    start = time.perf_counter()
    asyncio.run(_post_all(url, documents))
    # Every event is a leaf; batches add one map head each: done when the published log holds them all.
    while _published(url) < before + N:
        time.sleep(0.05)
    return N / (time.perf_counter() - start)


def genealogy(signer: CoseSigner, origin: str) -> list[dict[str, Any]]:
    """1,021 events: pallet ← 20 cases ← 200 finished goods ← 200 intermediates ← 400 raw batches."""
    events: list[dict[str, Any]] = []
    seq = 0

    def add(kind: str, **lists: Any) -> None:
        nonlocal seq
        events.append(_event(kind, seq, **lists))
        seq += 1

    for r in range(400):
        add("ObjectEvent", epcList=[_uri(f"RAW-{r}")])
    for i in range(200):
        add("TransformationEvent", inputEPCList=[_uri(f"RAW-{2 * i}"), _uri(f"RAW-{2 * i + 1}")],
            outputEPCList=[_uri(f"INT-{i}")])  # fmt: skip
        add("TransformationEvent", inputEPCList=[_uri(f"INT-{i}")], outputEPCList=[_uri(f"FG-{i}")])
        add("ObjectEvent", epcList=[_uri(f"FG-{i}")], step="inspecting")
    for c in range(20):
        goods = [_uri(f"FG-{10 * c + k}") for k in range(10)]
        add("AggregationEvent", parentID=_uri(f"CASE-{c}"), childEPCs=goods, step="packing")
    add(
        "AggregationEvent",
        parentID=_uri("PALLET-0"),
        childEPCs=[_uri(f"CASE-{c}") for c in range(20)],
        step="packing",
    )
    return [_sign(events[i : i + PER_DOCUMENT], signer, origin) for i in range(0, len(events), PER_DOCUMENT)]


def recall_lot(lot: int) -> list[dict[str, Any]]:
    """One supplier lot's events (1,311): the lot in 100 mixes (each with a second ingredient), each mix
    in 10 finished goods, each inspected, packed 10 to a case, 20 cases to a pallet, pallets shipped."""
    events: list[dict[str, Any]] = []

    def add(kind: str, **lists: Any) -> None:
        events.append(_event(kind, lot * 2000 + len(events), **lists))

    supplier = _uri(f"SUP-{lot}")
    add("ObjectEvent", epcList=[supplier])
    goods = []
    for m in range(MIXES):
        mix = _uri(f"MIX-{lot}-{m}")
        add("TransformationEvent", inputEPCList=[supplier, _uri(f"SALT-{lot}-{m}")], outputEPCList=[mix])
        made = [_uri(f"GOOD-{lot}-{m}-{g}") for g in range(GOODS_PER_MIX)]
        add("TransformationEvent", inputEPCList=[mix], outputEPCList=made)
        goods += made
    for good in goods:
        add("ObjectEvent", epcList=[good], step="inspecting")
    cases = []
    for c in range(0, len(goods), GOODS_PER_CASE):
        cases.append(_uri(f"BOX-{lot}-{c // GOODS_PER_CASE}"))
        add("AggregationEvent", parentID=cases[-1], childEPCs=goods[c : c + GOODS_PER_CASE], step="packing")
    for p in range(0, len(cases), CASES_PER_PALLET):
        pallet = _uri(f"PAL-{lot}-{p // CASES_PER_PALLET}")
        add("AggregationEvent", parentID=pallet, childEPCs=cases[p : p + CASES_PER_PALLET], step="packing")
        add("ObjectEvent", epcList=[pallet], step="shipping")
    return events


def _count(node: TraceNode) -> tuple[int, set[int]]:
    assert node.events is not None
    assert node.events.complete_as_of is not None
    ids, events = 1, {e.index for e in node.events.events}
    for _, child in node.children:
        n, e = _count(child)
        ids += n
        events |= e
    return ids, events


async def trace_runs(  # noqa: PLR0917 (where, from where, which way)
    url: str, root: Any, pins: Path, start: str, direction: str, pid: int, *, verify: bool = True
) -> tuple[float, list[float], list[float], list[float], TraceNode]:
    """(cold wall s, then per warm run: wall s, client CPU s, root CPU s; the last tree)."""
    async with AsyncRootClient(url) as client:
        store = FilePinStore(root.origin, pins)
        pinned = await PinnedLog.open(root.policy(), root.origin, client, store)
        keys: dict[str, Any] = {}

        async def one() -> tuple[float, float, float, TraceNode]:
            # Fresh: every event and proof checked again; the pin and the signer keys stay (warm).
            verifier = Verifier(client, pinned, keys=keys) if verify else None

            async def fetch(identifiers: list[str]) -> dict[str, IdentifierEvents]:
                return await fetch_events_for(client, identifiers, verifier)

            start_wall, cpu, server = time.perf_counter(), time.process_time(), cpu_s(pid)
            tree = await trace(start, fetch, direction=direction, depth=10)
            return time.perf_counter() - start_wall, time.process_time() - cpu, cpu_s(pid) - server, tree

        cold = (await one())[0]
        runs = [await one() for _ in range(RUNS)]
    return cold, [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs], runs[-1][3]


def _identifiers(node: TraceNode) -> set[str]:
    found, stack = set(), [node]
    while stack:
        here = stack.pop()
        found.add(here.identifier)
        stack.extend(child for _, child in here.children)
    return found


def _capture_all(url: str, documents: list[dict[str, Any]]) -> None:
    """Capture the documents and wait until every event is in the published log."""
    before = _published(url)
    asyncio.run(_post_all(url, documents))
    total = sum(len(doc["epcisBody"]["eventList"]) for doc in documents)
    while _published(url) < before + total:
        time.sleep(0.05)


def forward_trace(  # noqa: PLR0917
    url: str, root: Any, pins: Path, signer: CoseSigner, origin: str, pid: int, *, limits: str
) -> None:
    """Fill the log to FORWARD_LOG events with recall lots, then trace lot 0 forward (module docstring)."""
    per_lot = len(recall_lot(0))
    in_log = _published(url)
    lots = max(1, -(-(FORWARD_LOG - in_log) // per_lot))
    for lot in range(lots):
        events = recall_lot(lot)
        _capture_all(
            url,
            [
                _sign(events[i : i + PER_DOCUMENT], signer, origin)
                for i in range(0, len(events), PER_DOCUMENT)
            ],
        )
    size = _published(url)
    affected = {f"{PREFIX}/good-0-{m}-{g}" for m in range(MIXES) for g in range(GOODS_PER_MIX)}
    rows = []
    for verify in (True, False):
        cold, warm, cpu, server, tree = asyncio.run(
            trace_runs(url, root, pins, f"{PREFIX}/sup-0", FORWARD, pid, verify=verify)
        )
        found = _identifiers(tree)
        assert affected <= found, f"forward trace missed {len(affected - found)} affected products"
        ids, events = _count(tree) if verify else (len(found), set())
        medians = statistics.median(warm), statistics.median(cpu), statistics.median(server)
        rows.append((verify, *medians, cold, len(found), events))
    for verify, wall, client_s, server_s, cold, ids, events in rows:
        checks = (
            f"{len(events):,} events, every event and completeness proof verified" if verify else "no checks"
        )
        figure = (f"median {wall * 1000:,.0f} ms warm, {client_s * 1000:,.0f} ms client CPU, "
                  f"{server_s * 1000:,.0f} ms root CPU (cold "
                  f"{cold * 1000:,.0f} ms; log of {size:,} leaves, {ids:,} identifiers reached, all "
                  f"{len(affected):,} affected products found; {checks}); {limits}")  # fmt: skip
        print(f"  forward trace{' --verify' if verify else ''}: {figure}   target < 1,000 ms   "
              f"{'OK' if wall < 1 else 'MISS'}")  # fmt: skip
        what = f"forward trace of a supplier lot, log of {size // 1000:,}k leaves{', --verify' * verify}"
        record("epcis_log", what, figure, "< 1 s", wall < 1)


def raw_limits() -> tuple[float, float]:
    key = generate_p256()
    sig = key.sign(b"m" * 300, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    start = time.perf_counter()
    for _ in range(2000):
        public.verify(sig, b"m" * 300, ec.ECDSA(hashes.SHA256()))
    p256 = 2000 / (time.perf_counter() - start)
    event = _event("TransformationEvent", 1, inputEPCList=[_uri("A"), _uri("B")], outputEPCList=[_uri("C")])
    start = time.perf_counter()
    for _ in range(2000):
        event_hash_id(event)
    return p256, 2000 / (time.perf_counter() - start)


def main() -> None:
    print(
        f"EPCIS benchmarks on {platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        system = System(tmp)
        root = system.init_root("bench.epcis", PREFIX)
        with system:
            system.start_root(timeout=60)
            with root.client() as c:
                origin = c.origin()
            signer = root.admin_signer()
            pid = system.daemons["root"].proc.pid  # the root's CPU: what one free core would give
            rates, cpu_per_event = [], []
            for run in range(RUNS):
                cpu = cpu_s(pid)
                rates.append(capture_run(root.url, signer, origin, run))
                cpu_per_event.append((cpu_s(pid) - cpu) / N)
                p256, hashes_per_s = raw_limits()
                print(f"  run {run}: {rates[-1]:,.0f} events/s, root CPU "
                      f"{cpu_per_event[-1] * 1e6:,.0f} us/event (raw: P-256 verify {p256:,.0f}/s, "
                      f"event hash ID {hashes_per_s:,.0f}/s)")  # fmt: skip
            median = statistics.median(rates)
            per_event = statistics.median(cpu_per_event)
            figure = (f"median {median:,.0f} events/s over {RUNS} runs of {N:,} (min {min(rates):,.0f}, "
                      f"max {max(rates):,.0f}); root CPU {per_event * 1e6:,.0f} us/event = "
                      f"{1 / per_event:,.0f} events per root CPU-second; raw P-256 verify {p256:,.0f}/s, "
                      f"hash ID {hashes_per_s:,.0f}/s")  # fmt: skip
            print(f"  capture sustained into the log: {figure}   target >= 2,000/s   "
                  f"{'OK' if median >= 2000 else 'MISS'}")  # fmt: skip
            what = (
                f"EPCIS capture sustained into the log (HTTP, {CLIENTS} clients, "
                f"documents of {PER_DOCUMENT}, SQLite)"
            )
            record("epcis_log", what, figure, ">= 2,000 events/s", median >= 2000)
            documents = genealogy(signer, origin)
            _capture_all(root.url, documents)
            total = sum(len(doc["epcisBody"]["eventList"]) for doc in documents)
            cold, warm, cpu, server, tree = asyncio.run(
                trace_runs(root.url, root, tmp / "pins", f"{PREFIX}/pallet-0", BACK, pid)
            )
            ids, events = _count(tree)
            median_warm = statistics.median(warm)
            client_cpu = statistics.median(cpu) * 1000
            root_cpu = statistics.median(server) * 1000
            limits = f"raw P-256 verify {p256:,.0f}/s, hash ID {hashes_per_s:,.0f}/s"
            figure = (f"median {median_warm * 1000:,.0f} ms warm, {client_cpu:,.0f} ms client CPU, "
                      f"{root_cpu:,.0f} ms root CPU "
                      f"(cold {cold * 1000:,.0f} ms; {len(events)} events, "
                      f"{ids} identifiers, every event and completeness proof verified); "
                      f"{limits}")  # fmt: skip
            verdict = "OK" if median_warm < 1 else "MISS"
            print(f"  backward trace: {figure}   target < 1,000 ms   {verdict}")
            what = f"backward trace of a {total:,}-event genealogy, --verify"
            record("epcis_log", what, figure, "< 1 s warm", median_warm < 1)
            forward_trace(root.url, root, tmp / "pins", signer, origin, pid, limits=limits)


if __name__ == "__main__":
    main()
