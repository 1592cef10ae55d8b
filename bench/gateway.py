"""`make bench` (gateway): MQTT ingest rate, publish-to-durable latency, backlog drain, memory.

Everything runs as separate processes on this machine: mosquitto, a root node (`edgeroot root run`),
the gateway (`edgeroot gateway run`), and publisher processes with pre-signed envelopes.

1. sustained ingest: publishers sign N readings, *then* the clock starts and they send them over QoS 1
   as fast as the broker takes them, one reading per message and then BENCH_BATCH (20) per message
   (a batch of envelopes, docs/formats.md §19); the rate is readings durable in the gateway's SQLite
   file (verified, stored, chained) per second, the median of BENCH_INGEST_RUNS (3) runs of each,
   beside raw P-256 verification measured in the same run (one core, ``cryptography`` directly);
2. latency: while a background publisher sends 1,000 readings/s, a probe publishes one reading at a
   time and polls the store until it is durable: publish → durable, which bounds the PUBACK the gateway
   sends (it acknowledges right after that commit);
3. backlog: first the live rate is measured (one publisher offering BENCH_LIVE_RATE, 1,000 readings/s, for
   BENCH_LIVE_SECONDS, 10 s, with the root up: readings durable at the gateway per second); then, with the
   root stopped, the gateway takes a backlog; the root returns and the drain rate (readings anchored per
   second) is compared with that live rate;
4. resident memory of the gateway *and its verification workers* together (the forkserver and the
   workers are its children): the sum of their proportional set sizes (PSS: a page shared by n of them
   counts 1/n to each, so shared library pages are counted once), beside the plain sum of RSS.

Raw limits in the same run (bench/limits.py, D-112): raw P-256 verify and raw paho QoS 1 receive (a bare
subscriber taking the same publishers' messages through the same mosquitto) beside the ingest; publish ->
received by a bare subscriber beside the latency; a bare aiocoap server beside the CoAP figure.

What shares the two cores: the publishers (BENCH_PUBLISHERS processes), mosquitto and the root run on
the same machine as the gateway and its workers, so the ingest figures include their CPU.

Targets (issue 13): >= 10,000 readings/s one per message, >= 20,000 readings/s 20 per message;
p99 < 30 ms at 1,000/s; drain >= 5x the live rate measured in the run; gateway + workers < 80 MB.

Then (issue 16; BENCH_GATEWAY_SM2=0 skips it) a second, all-SM plant (SM2 devices and gateway, a root
made with ``--suite sm``: SM2 + SM3) ingests one SM2 reading per message, its runs alternating with the
P-256 plant's, BENCH_INGEST_RUNS each, beside raw `openssl speed sm2` in the same run. Target >= 2,500/s.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from limits import raw_p256_verify  # bench/ is on sys.path when run as a script
from paho.mqtt.enums import CallbackAPIVersion
from results import record
from sm2 import openssl_speed

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import load_private_pem
from edge import store
from edge.intake import encode_batch
from edgeroot.system import GatewayNode, System, free_port, wait_until

N = int(os.environ.get("BENCH_READINGS", "60000"))
PUBLISHERS = int(os.environ.get("BENCH_PUBLISHERS", "2"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "60000"))
LIVE_RATE = float(os.environ.get("BENCH_LIVE_RATE", "1000"))
LIVE_SECONDS = float(os.environ.get("BENCH_LIVE_SECONDS", "10"))
GATEWAY = "88.123/GW-BENCH"
BATCH = int(os.environ.get("BENCH_BATCH", "20"))
INGEST_RUNS = int(os.environ.get("BENCH_INGEST_RUNS", "3"))
PATIENCE = 600.0  # seconds any one phase may wait for the gateway before the bench gives up
READINGS_TOPIC = "edgeroot/readings/bench"
RAW_TOPIC = "bench/raw"  # no gateway subscribes to it: raw_paho_receive's subscriber alone
TS0_MS = 1_764_460_800_000  # the JSON readings' timestamps: this plus the counter (one ms apart)


def json_reading(device: str, counter: int) -> bytes:
    """One reading as a plain JSON object for a gateway that takes JSON (the ThingsBoard gateway in
    bench/peer.py): the device and the value our envelopes carry, and a timestamp one millisecond after
    the previous counter's (that gateway merges the points of one device that share a millisecond)."""
    return json.dumps({"device": device, "ts": TS0_MS + counter, "flow": float(counter)}).encode()


def publisher(  # noqa: PLR0917 (a process target takes positional arguments)
    port: int,
    key_pem: bytes,
    device: str,
    first: int,
    count: int,
    rate: float,
    ready: mp.Queue,  # type: ignore[type-arg]
    go: mp.Event,  # type: ignore[valid-type]
    batch: int = 1,
    topic: str = READINGS_TOPIC,
    form: str = "cose",
) -> None:
    """A publisher process: signs its envelopes (and groups them ``batch`` per message) and connects,
    says it is ready, waits for ``go`` (the clock starts there), then publishes them with QoS 1 to
    ``topic``. ``form="json"``: the same readings unsigned, one JSON object per message (the peer gateway's
    load in bench/peer.py: see :func:`json_reading`)."""
    if form == "json":
        payloads = [json_reading(device, c) for c in range(first, first + count)]
    else:
        signer = CoseSigner(device, load_private_pem(key_pem))
        envelopes = [
            envelope.encode_envelope(signer, [{envelope.N: "flow", envelope.V: float(c)}], c)
            for c in range(first, first + count)
        ]
        payloads = (
            envelopes
            if batch == 1
            else [encode_batch(envelopes[i : i + batch]) for i in range(0, count, batch)]
        )
    rate /= batch  # messages per second
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{device}-{first}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.put(device)
    go.wait()
    start = time.perf_counter()
    infos = []
    for i, payload in enumerate(payloads):
        infos.append(client.publish(topic, payload, qos=1))
        if rate:
            ahead = (i + 1) / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def raw_subscriber(port: int, topic: str, received: Any, ready: mp.Queue) -> None:  # type: ignore[type-arg]
    """A bare paho subscriber process: QoS 1, paho's loop in this process's only thread, each message
    acknowledged by paho as it arrives, counted into ``received`` (a shared ``mp.Value``) and dropped.
    What one Python MQTT client can take in through this broker: the raw limit under any ingest here."""

    def on_subscribe(*_: object) -> None:
        ready.put("subscribed")

    def on_message(*_: object) -> None:
        received.value += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-subscriber-{os.getpid()}")
    client.on_subscribe, client.on_message = on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_forever()


def raw_paho_receive(plant: Plant) -> float:
    """Raw paho QoS 1 receive, messages per second: the ingest's load (N envelopes, one per message,
    PUBLISHERS publishers that sign before the clock starts) through the same mosquitto to
    :func:`raw_subscriber` instead of a gateway."""
    ready: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    received = mp.Value("q", 0, lock=False)
    sub = mp.Process(target=raw_subscriber, args=(plant.broker_port, RAW_TOPIC, received, ready))
    sub.start()
    try:
        ready.get(timeout=30)
        per = N // PUBLISHERS
        procs, start = plant.publish(per, rate=0, topic=RAW_TOPIC)
        total = per * PUBLISHERS
        wait_until("every raw message received", lambda: received.value >= total, timeout=PATIENCE,
                   interval=0.005)  # fmt: skip
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join()
    finally:
        sub.terminate()
        sub.join()
    return total / elapsed


def durable(db: Path) -> int:
    with store.reader(db) as conn:
        return store.count_readings(conn)


def anchored_readings(db: Path) -> int:
    with store.reader(db) as conn:
        return store.count_anchored_readings(conn)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: each page shared by n processes counts 1/n (Linux /proc/PID/smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants (the gateway, its forkserver and verification workers)."""
    pids = [pid]
    for p in pids:
        for task in Path(f"/proc/{p}/task").iterdir():
            children = (task / "children").read_text().split()
            pids += [int(c) for c in children if int(c) not in pids]
    return pids


@dataclass
class Plant:
    """The benchmark's system (edgeroot.system): a root without witnesses, mosquitto, the gateway with
    PUBLISHERS + 3 locally provisioned devices; every part its own process."""

    system: System
    gateway: GatewayNode
    devices: list[tuple[str, bytes]]  # identifier, private key (PEM)

    @property
    def broker_port(self) -> int:
        return self.gateway.mqtt[1]

    @property
    def coap_port(self) -> int:
        return self.gateway.coap_port

    @property
    def tmp(self) -> Path:
        return self.system.workdir

    def publish(
        self,
        per_publisher: int,
        rate: float,
        first: int = 1,
        *,
        devices: slice = slice(0, PUBLISHERS),
        batch: int = 1,
        topic: str = READINGS_TOPIC,
        form: str = "cose",
    ) -> tuple[list[mp.Process], float]:
        """Start publishers, wait until each has signed its readings and connected, then let them go:
        the processes, and the moment they were let go (the clock of a throughput figure)."""
        ready: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        go = mp.Event()
        procs = []
        for device, key in self.devices[devices]:
            args = (self.broker_port, key, device, first, per_publisher, rate, ready, go, batch, topic, form)
            p = mp.Process(target=publisher, args=args)
            p.start()
            procs.append(p)
        for _ in procs:
            while True:
                try:
                    ready.get(timeout=1)
                    break
                except queue.Empty:
                    if not any(q.is_alive() for q in procs):
                        raise RuntimeError("the publishers died before they were ready") from None
        start = time.perf_counter()
        go.set()
        return procs, start


def setup(system: System, alg: str = "p256") -> Plant:
    """``alg`` (``p256``, ``sm2``): the devices' and the gateway's keys; ``sm2`` makes the whole plant SM,
    its root made with ``--suite sm`` (SM2 + SM3)."""
    root = system.init_root("bench.root", "88.123", suite="sm" if alg == "sm2" else "default")
    system.start_root()
    broker = system.start_broker(persistence=False, mosquitto_only=True)
    idents = [f"88.123/DEV-{i}" for i in range(PUBLISHERS + 3)]
    gateway = system.init_gateway(
        GATEWAY,
        admin_key=root.admin_key,
        mqtt=(broker.host, broker.port),
        devices=idents,
        provision_locally=True,
        settings={
            "sync": {"max_blocks_per_s": 1000.0},
            "verify": {"workers": int(os.environ.get("BENCH_VERIFY_WORKERS", "-1"))},
        },
        device_alg=alg,
        gateway_alg=alg,
    )
    system.start("gateway", timeout=60)
    devices = [(ident, gateway.device_keys[ident].read_bytes()) for ident in idents]
    return Plant(system, gateway, devices)


def ingest_once(system: Plant, db: Path, first: int, batch: int) -> float:
    """One run: N readings from PUBLISHERS publishers, signed before the clock starts; readings/s."""
    per = N // PUBLISHERS
    total = per * PUBLISHERS
    # One connection and an O(log n) look every 10 ms: a fresh connection and COUNT(*) per look cost this
    # process ~50 us of CPU per reading, taken from the two cores the gateway is measured on.
    with store.reader(db) as conn:
        count, last = store.count_readings(conn), store.last_reading_id(conn)
        procs, start = system.publish(per, rate=0, first=first, batch=batch)
        wait_until("every reading durable", lambda: store.last_reading_id(conn) >= last + total,
                   timeout=PATIENCE, interval=0.01)  # fmt: skip
        elapsed = time.perf_counter() - start
        stored = store.count_readings(conn) - count
    assert stored == total, f"{stored} readings stored, {total} published (ids no longer count them)"
    for p in procs:
        p.join()
    return total / elapsed


def phase_ingest(system: Plant, db: Path) -> int:
    """Ingest with one reading per message and BATCH per message, INGEST_RUNS runs each, interleaved so
    both see the same machine; raw P-256 verification measured between them. The next free counter."""
    per = N // PUBLISHERS
    first = 1
    rates: dict[int, list[float]] = {1: [], BATCH: []}
    raws, raws_paho = [], []
    for _ in range(INGEST_RUNS):
        for batch, runs in rates.items():
            runs.append(ingest_once(system, db, first, batch))
            first += per
        raws.append(raw_p256_verify())
        raws_paho.append(raw_paho_receive(system))
    raw, paho_raw = statistics.median(raws), statistics.median(raws_paho)
    gateway = system.system.daemons["gateway"].proc
    assert gateway is not None
    pids = family(gateway.pid)
    print(f"  raw P-256 verify, one core, same run: {raw:,.0f}/s (two cores: {2 * raw:,.0f}/s at most)")
    print(f"  raw paho QoS 1 receive, same broker and publishers, same run: {paho_raw:,.0f} messages/s")
    record("gateway", "raw P-256 verify (cryptography, one core), same run", f"{raw:,.0f}/s")
    record(
        "gateway",
        "raw paho QoS 1 receive (bare subscriber, same mosquitto, publishers and envelopes), same run",
        f"{paho_raw:,.0f} messages/s (median of {INGEST_RUNS})",
    )
    for batch, target in ((1, 10_000), (BATCH, 20_000)):
        med = statistics.median(rates[batch])
        runs = ", ".join(f"{r:,.0f}" for r in rates[batch])
        what = "one reading per message" if batch == 1 else f"{batch} readings per message"
        limits = (f"{med / raw:.2f}x raw one-core P-256 verify; {med / batch:,.0f} messages/s = "
                  f"{med / batch / paho_raw:.2f}x raw paho receive")  # fmt: skip
        print(
            f"  MQTT QoS 1 ingest, {what}, {PUBLISHERS} publishers, {per * PUBLISHERS:,} readings: median "
            f"{med:,.0f} readings/s of {INGEST_RUNS} runs ({runs}) = {limits}; "
            f"{len(pids) - 1} worker process(es)   target >= {target:,}   {'OK' if med >= target else 'MISS'}"
        )
        record(
            "gateway",
            f"MQTT QoS 1 ingest, verified + durable + chained, {what} "
            f"({PUBLISHERS} publishers, {per * PUBLISHERS:,} readings, median of {INGEST_RUNS})",
            f"{med:,.0f} readings/s ({limits})",
            f">= {target:,} readings/s",
            med >= target,
        )
    pss = sum(pss_mb(p) for p in pids)
    rss = sum(rss_mb(p) for p in pids)
    each = ", ".join(f"{pss_mb(p):.0f}/{rss_mb(p):.0f}" for p in pids)
    print(f"  PSS/RSS MB per process, gateway first: {each}")
    print(
        f"  gateway + {len(pids) - 1} child process(es) after ingest: PSS {pss:.0f} MB "
        f"(RSS summed {rss:.0f} MB)   target < 80 MB   {'OK' if pss < 80 else 'MISS'}"
    )
    record(
        "gateway",
        "gateway + verification workers resident memory after ingest (PSS summed)",
        f"{pss:.0f} MB (RSS summed {rss:.0f} MB, {len(pids)} processes)",
        "< 80 MB",
        pss < 80,
    )
    return first


def phase_sm2_ingest(sm: Plant, p256: Plant, first: int) -> int:
    """The all-SM plant's ingest (one SM2 reading per message) beside the P-256 plant's, runs alternating,
    INGEST_RUNS each; raw `openssl speed sm2` in the same run. The P-256 plant's next free counter."""
    per = N // PUBLISHERS
    rates: dict[str, list[float]] = {"sm2": [], "p256": []}
    for run in range(INGEST_RUNS):
        rates["sm2"].append(ingest_once(sm, sm.gateway.db, 1 + run * per, 1))
        rates["p256"].append(ingest_once(p256, p256.gateway.db, first, 1))
        first += per
    raw = openssl_speed(None)
    limit = "openssl missing" if raw is None else f"{raw[0]:,.0f}/s CPU, {raw[1]:,.0f}/s elapsed (one core)"
    print(f"  raw `openssl speed sm2` verify, same run: {limit}")
    record("gateway", "raw `openssl speed sm2` verify, same run as the SM2 ingest", limit)
    for alg, target in (("sm2", 2_500), ("p256", None)):
        med = statistics.median(rates[alg])
        runs = ", ".join(f"{r:,.0f}" for r in rates[alg])
        plant = "all-SM plant (SM2 devices and gateway, SM2 + SM3 log)" if alg == "sm2" else "P-256 plant"
        verdict = "" if target is None else f"   target >= {target:,}   {'OK' if med >= target else 'MISS'}"
        print(f"  MQTT QoS 1 ingest, {plant}, one reading per message: median {med:,.0f} readings/s of "
              f"{INGEST_RUNS} runs ({runs}){verdict}")  # fmt: skip
        record(
            "gateway",
            f"MQTT QoS 1 ingest, {plant}, one reading per message, alternating runs "
            f"({PUBLISHERS} publishers, {per * PUBLISHERS:,} readings, median of {INGEST_RUNS}: {runs})",
            f"{med:,.0f} readings/s",
            "-" if target is None else f">= {target:,} readings/s",
            None if target is None else med >= target,
        )
    return first


def _probe(system: Plant, client_id: str) -> tuple[str, CoseSigner, paho.Client]:
    """The probe device (its identifier and signer) and a connected MQTT client publishing for it."""
    ident, key = system.devices[PUBLISHERS]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", system.broker_port)
    client.loop_start()
    return ident, CoseSigner(ident, load_private_pem(key)), client


def probe_latencies(
    system: Plant,
    first: int,
    arrived: Callable[[str, int], bool],
    *,
    form: str = "cose",
    topic: str = READINGS_TOPIC,
    probe_topic: str = "edgeroot/readings/probe",
) -> tuple[list[float], list[mp.Process]]:
    """While one publisher sends 1,000 readings/s to ``topic`` (counters from ``first``), a probe device
    publishes 300 readings to ``probe_topic``, one at a time: the seconds from each publish until
    ``arrived(probe device, counter)``, and the background publishers (still running: the caller ends
    them). ``form``: the payloads, as for :func:`publisher`."""
    background, _ = system.publish(
        30_000, rate=1000, first=first, devices=slice(0, 1), topic=topic, form=form
    )
    time.sleep(2)
    probe_dev, signer, client = _probe(system, f"probe-{form}")
    lat = []
    for c in range(1, 301):
        payload = (
            json_reading(probe_dev, c)
            if form == "json"
            else envelope.encode_envelope(signer, [{envelope.N: "p", envelope.V: 1.0}], c)
        )
        t0 = time.perf_counter()
        client.publish(probe_topic, payload, qos=1)
        wait_until(
            f"probe reading {c} arrived",
            lambda c=c: arrived(probe_dev, c),
            timeout=PATIENCE,
            interval=0.001,
        )
        lat.append(time.perf_counter() - t0)
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return lat, background


def raw_latencies(system: Plant, first: int) -> list[float]:
    """The raw limit under a publish -> durable latency: the same probe and background load through the
    same mosquitto to a bare paho subscriber (in this process, paho's network thread), publish ->
    received."""
    probes = [0]  # the probe's messages received; written by paho's network thread only

    def on_message(_client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/probe"):
            probes[0] += 1

    subscribed = mp.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-latency-subscriber")
    client.on_message, client.on_subscribe = on_message, lambda *_: subscribed.set()
    client.connect("127.0.0.1", system.broker_port)
    client.loop_start()
    client.subscribe(f"{RAW_TOPIC}/#", qos=1)
    try:
        wait_until("the raw subscriber subscribed", subscribed.is_set, timeout=30)
        lat, background = probe_latencies(
            system, first, lambda _dev, c: probes[0] >= c, topic=RAW_TOPIC, probe_topic=f"{RAW_TOPIC}/probe"
        )
        for p in background:
            p.terminate()
    finally:
        client.disconnect()
        client.loop_stop()
    return lat


def ms(lat: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``lat`` (seconds), in milliseconds."""
    q = statistics.quantiles(lat, n=100)
    return q[49] * 1000, q[98] * 1000


def phase_latency(system: Plant, db: Path, first: int) -> None:
    """A probe publishes one reading at a time under 1,000/s of background load; then the same through
    the same broker to a bare subscriber (the raw limit)."""
    with store.reader(db) as conn:  # one connection: the probe looks every millisecond
        lat, background = probe_latencies(system, first, lambda dev, c: store.has_reading(conn, dev, c))
    gateway = system.system.daemons["gateway"].proc
    assert gateway is not None
    rss = rss_mb(gateway.pid)
    for p in background:
        p.terminate()
    (p50, p99), (raw50, raw99) = ms(lat), ms(raw_latencies(system, first + 30_000))
    raw = f"p50 {raw50:.1f} ms, p99 {raw99:.1f} ms"
    print(
        f"  publish -> durable at 1,000 readings/s background: p50 {p50:.1f} ms, p99 {p99:.1f} ms (raw paho "
        f"publish -> received, same load: {raw})   target p99 < 30 ms   {'OK' if p99 < 30 else 'MISS'}"
    )
    record("gateway", "raw paho QoS 1 publish -> received (bare subscriber), same probe and load", raw)
    record(
        "gateway",
        "MQTT publish -> durable (bounds the PUBACK), 1,000 readings/s background",
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms = {p99 / raw99:.1f}x the raw p99",
        "p99 < 30 ms",
        p99 < 30,
    )
    record("gateway", "gateway resident memory at steady state", f"{rss:.0f} MB", "< 80 MB", rss < 80)
    print(
        f"  gateway resident memory at steady state: {rss:.0f} MB   "
        f"target < 80 MB   {'OK' if rss < 80 else 'MISS'}"
    )


def trivial_coap_server(port: int, ready: mp.Queue) -> None:  # type: ignore[type-arg]
    """A bare aiocoap server process answering every POST to /readings with 2.04 at once: the raw limit
    under the gateway's CoAP ingest."""
    import asyncio  # noqa: PLC0415

    import aiocoap  # noqa: PLC0415
    import aiocoap.resource  # noqa: PLC0415

    class Changed(aiocoap.resource.Resource):
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def serve() -> None:
        site = aiocoap.resource.Site()
        site.add_resource(["readings"], Changed())
        await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        ready.put("serving")
        await asyncio.Event().wait()

    asyncio.run(serve())


def coap_latencies(port: int, payloads: list[bytes]) -> tuple[float, list[float]]:
    """Confirmable POSTs of ``payloads`` to coap://127.0.0.1:PORT/readings, one in flight: requests/s
    and each one's seconds to its 2.04."""
    import asyncio  # noqa: PLC0415

    import aiocoap  # noqa: PLC0415

    async def run() -> list[float]:
        ctx = await aiocoap.Context.create_client_context()
        lat = []
        try:
            for p in payloads:
                t0 = time.perf_counter()
                msg = aiocoap.Message(code=aiocoap.POST, payload=p, uri=f"coap://127.0.0.1:{port}/readings")
                msg.opt.content_format = 18
                response = await ctx.request(msg).response
                assert response.code == aiocoap.CHANGED, response
                lat.append(time.perf_counter() - t0)
        finally:
            await ctx.shutdown()
        return lat

    start = time.perf_counter()
    lat = asyncio.run(run())
    return len(payloads) / (time.perf_counter() - start), lat


def phase_coap(system: Plant, db: Path) -> None:
    """One CoAP device, one confirmable POST in flight: each 2.04 means durable at the gateway; then the
    same requests to a bare aiocoap server (the raw limit)."""
    ident, key = system.devices[PUBLISHERS + 2]
    signer = CoseSigner(ident, load_private_pem(key))
    count = int(os.environ.get("BENCH_COAP_READINGS", "2000"))
    payloads = [
        envelope.encode_envelope(signer, [{envelope.N: "c", envelope.V: 1.0}], c) for c in range(1, count + 1)
    ]
    rate, lat = coap_latencies(system.coap_port, payloads)
    ready: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    port = free_port()
    server = mp.Process(target=trivial_coap_server, args=(port, ready))
    server.start()
    try:
        ready.get(timeout=30)
        raw_rate, raw_lat = coap_latencies(port, payloads)
    finally:
        server.terminate()
        server.join()
    (p50, p99), (raw50, raw99) = ms(lat), ms(raw_lat)
    raw = f"{raw_rate:,.0f} requests/s; p50 {raw50:.1f} ms, p99 {raw99:.1f} ms"
    print(f"  CoAP, one request in flight: {rate:,.0f} readings/s, 2.04 after p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms (a bare aiocoap server, same requests: {raw})")  # fmt: skip
    record("gateway", "raw CoAP POST -> 2.04 from a bare aiocoap server, same requests, same run", raw)
    record(
        "gateway",
        f"CoAP POST -> 2.04 (durable), one device, one request in flight, {count:,} readings",
        f"{rate:,.0f} readings/s; p50 {p50:.1f} ms, p99 {p99:.1f} ms = {rate / raw_rate:.2f}x the bare "
        "server's rate",
    )


def phase_receipt(system: Plant, db: Path) -> None:
    """Reading published -> its block anchored at the gateway (receipt fetched and verified as a light
    client), with the default block policy (1,000 readings or 5 s) and 250 ms root batches."""
    ident, signer, client = _probe(system, "receipt-probe")
    times = []
    with store.reader(db) as conn:
        for c in range(5_000_000, 5_000_012):
            payload = envelope.encode_envelope(signer, [{envelope.N: "p", envelope.V: 2.0}], c)
            t0 = time.perf_counter()
            client.publish("edgeroot/readings/probe", payload, qos=1)
            wait_until(
                f"probe reading {c} anchored",
                lambda c=c: store.block_state_of(conn, ident, c) == "anchored",
                timeout=PATIENCE,
                interval=0.01,
            )
            times.append(time.perf_counter() - t0)
            time.sleep(0.37)  # land at different points of the block cycle
    client.loop_stop()
    med = statistics.median(times)
    print(f"  reading -> verified receipt at the gateway: median {med:.2f} s, max {max(times):.2f} s")
    record(
        "gateway",
        "reading published -> verified receipt at the gateway (blocks close at 5 s or 1,000 readings: the "
        "block policy bounds it, not a machine limit)",
        f"median {med:.2f} s, max {max(times):.2f} s",
    )


def live_rate(system: Plant, db: Path) -> float:
    """The plant's live rate in this run: one publisher offering LIVE_RATE readings/s for LIVE_SECONDS
    with the root up; readings durable at the gateway per second, from the first publish until the last
    is durable (what the plant takes in live on this run's machine, which the catch-up must outrun)."""
    wait_until("everything anchored", lambda: durable(db) - anchored_readings(db) <= 0, timeout=PATIENCE)
    count = int(LIVE_RATE * LIVE_SECONDS)
    assert count < 1_000_000, "the live window's counters stay below the backlog's (10,000,000 on)"
    base = durable(db)
    procs, start = system.publish(
        count, rate=LIVE_RATE, first=9_000_000, devices=slice(PUBLISHERS + 1, PUBLISHERS + 2)
    )
    wait_until(
        "the live window durable", lambda: durable(db) >= base + count, timeout=PATIENCE, interval=0.02
    )
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return count / elapsed


def phase_backlog(system: Plant, db: Path) -> None:
    live = live_rate(system, db)
    print(
        f"  live rate, {LIVE_RATE:,.0f}/s offered for {LIVE_SECONDS:g} s with the root up: "
        f"{live:,.0f} readings/s durable"
    )
    record(
        "gateway",
        f"live rate: {LIVE_RATE:,.0f} readings/s offered for {LIVE_SECONDS:g} s, root up "
        "(published -> durable at the gateway)",
        f"{live:,.0f} readings/s durable",
    )
    wait_until(
        "everything anchored",
        lambda: durable(db) - anchored_readings(db) <= 0,
        timeout=PATIENCE,
        interval=0.2,
    )
    system.system.stop("root")
    before = anchored_readings(db)
    base = durable(db)
    procs, _ = system.publish(
        BACKLOG, rate=0, first=10_000_000, devices=slice(PUBLISHERS + 1, PUBLISHERS + 2)
    )
    wait_until("the backlog durable", lambda: durable(db) >= base + BACKLOG, timeout=PATIENCE, interval=0.2)
    for p in procs:
        p.join()
    time.sleep(1.0)  # let the last block close
    system.system.start("root", timeout=60)
    start = time.perf_counter()
    wait_until(
        "the backlog anchored",
        lambda: anchored_readings(db) >= before + BACKLOG,
        timeout=PATIENCE,
        interval=0.1,
    )
    drain = BACKLOG / (time.perf_counter() - start)
    ratio = drain / live
    print(
        f"  backlog of {BACKLOG:,} readings with the root down, then drained: {drain:,.0f} readings/s "
        f"= {ratio:.1f}x the live rate measured above   target >= 5x   {'OK' if ratio >= 5 else 'MISS'}"
    )
    record(
        "gateway",
        f"catch-up after a root outage ({BACKLOG:,} readings backlog)",
        f"{drain:,.0f} readings/s = {ratio:.1f}x the live rate of {live:,.0f}/s measured in the same run",
        ">= 5x the live rate",
        ratio >= 5,
    )


def main() -> None:
    print(
        f"gateway benchmarks on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    mp.set_start_method("fork")
    with tempfile.TemporaryDirectory() as d, System(Path(d)) as system:
        plant = setup(system)
        db = plant.gateway.db
        first = phase_ingest(plant, db)
        if os.environ.get("BENCH_GATEWAY_SM2", "1") != "0":
            Path(d, "sm").mkdir()
            with System(Path(d, "sm")) as sm_system:  # stopped before the P-256 plant's other phases
                first = phase_sm2_ingest(setup(sm_system, "sm2"), plant, first)
        if os.environ.get("BENCH_GATEWAY_ONLY_INGEST"):
            return
        phase_latency(plant, db, first=first)
        phase_coap(plant, db)
        phase_receipt(plant, db)
        phase_backlog(plant, db)


if __name__ == "__main__":
    main()
