"""`make bench` (EPCIS on the log): capture sustained into the log, and a verified backward trace.

1. Capture: sign N EPCIS events (default 20,000, in documents of 500; not timed), then POST them to a
   root node (`edgeroot root run`, its own process, SQLite) from two concurrent clients and time until
   every event is sequenced and published: events/s, the median of RUNS runs.
2. Trace: capture a 1,021-event genealogy (a pallet of 20 cases of 10 finished goods, each made from an
   intermediate made from two raw batches, each raw batch commissioned and each finished good inspected)
   and trace the pallet back to every raw batch with `--verify`'s checks (every event's inclusion,
   signature and hash ID, every identifier's completeness proof): cold once, then warm (pin and signer
   keys known; every event and proof checked again), median of RUNS runs.

Targets (issue 15): capture >= 2,000 events/s sustained (batched, SQLite); backward trace of a 1,000-event
genealogy with every proof verified < 1 s from a warm client. Raw limits measured in the same run: P-256
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
from rootclient.epcis_trace import BACK, IdentifierEvents, TraceNode, Verifier, fetch_events_for, trace
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog

N = int(os.environ.get("BENCH_EVENTS", "20000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PER_DOCUMENT = 500
CLIENTS = 2
PREFIX = "88.123"


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
    text = httpx.get(url + routes.CHECKPOINT).text
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


def _count(node: TraceNode) -> tuple[int, set[int]]:
    assert node.events is not None
    assert node.events.complete_as_of is not None
    ids, events = 1, {e.index for e in node.events.events}
    for _, child in node.children:
        n, e = _count(child)
        ids += n
        events |= e
    return ids, events


async def trace_runs(url: str, root: Any, pins: Path) -> tuple[float, list[float], list[float], int, int]:
    """(cold wall s, warm wall s per run, warm client CPU s per run, identifiers, events)."""
    async with AsyncRootClient(url) as client:
        store = FilePinStore(root.origin, pins)
        pinned = await PinnedLog.open(root.policy(), root.origin, client, store)
        keys: dict[str, Any] = {}

        async def one() -> tuple[float, float, TraceNode]:
            verifier = Verifier(client, pinned, keys=keys)  # fresh: every event and proof checked again

            async def fetch(identifiers: list[str]) -> dict[str, IdentifierEvents]:
                return await fetch_events_for(client, identifiers, verifier)

            start, cpu = time.perf_counter(), time.process_time()
            tree = await trace(f"{PREFIX}/pallet-0", fetch, direction=BACK, depth=10)
            return time.perf_counter() - start, time.process_time() - cpu, tree

        cold, _, tree = await one()
        runs = [await one() for _ in range(RUNS)]
    ids, events = _count(tree)
    return cold, [r[0] for r in runs], [r[1] for r in runs], ids, len(events)


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
            rates = []
            for run in range(RUNS):
                rates.append(capture_run(root.url, signer, origin, run))
                p256, hashes_per_s = raw_limits()
                print(f"  run {run}: {rates[-1]:,.0f} events/s   (raw: P-256 verify {p256:,.0f}/s, "
                      f"event hash ID {hashes_per_s:,.0f}/s)")  # fmt: skip
            median = statistics.median(rates)
            figure = (f"median {median:,.0f} events/s over {RUNS} runs of {N:,} (min {min(rates):,.0f}, "
                      f"max {max(rates):,.0f}); raw P-256 verify {p256:,.0f}/s, "
                      f"hash ID {hashes_per_s:,.0f}/s")  # fmt: skip
            print(f"  capture sustained into the log: {figure}   target >= 2,000/s   "
                  f"{'OK' if median >= 2000 else 'MISS'}")  # fmt: skip
            what = (
                f"EPCIS capture sustained into the log (HTTP, {CLIENTS} clients, "
                f"documents of {PER_DOCUMENT}, SQLite)"
            )
            record("epcis_log", what, figure, ">= 2,000 events/s", median >= 2000)
            before = _published(root.url)
            documents = genealogy(signer, origin)
            asyncio.run(_post_all(root.url, documents))
            total = sum(len(doc["epcisBody"]["eventList"]) for doc in documents)
            while _published(root.url) < before + total:
                time.sleep(0.05)
            cold, warm, cpu, ids, events = asyncio.run(trace_runs(root.url, root, tmp / "pins"))
            median_warm = statistics.median(warm)
            client_cpu = statistics.median(cpu) * 1000
            figure = (f"median {median_warm * 1000:,.0f} ms warm, of it {client_cpu:,.0f} ms client CPU "
                      f"(cold {cold * 1000:,.0f} ms; "
                      f"{events} events, "
                      f"{ids} identifiers, every event and completeness proof verified); raw P-256 verify "
                      f"{p256:,.0f}/s, hash ID {hashes_per_s:,.0f}/s")  # fmt: skip
            verdict = "OK" if median_warm < 1 else "MISS"
            print(f"  backward trace: {figure}   target < 1,000 ms   {verdict}")
            what = f"backward trace of a {total:,}-event genealogy, --verify"
            record("epcis_log", what, figure, "< 1 s warm", median_warm < 1)


if __name__ == "__main__":
    main()
