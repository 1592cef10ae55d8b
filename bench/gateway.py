"""`make bench` (gateway): MQTT ingest rate, publish-to-durable latency, backlog drain, memory.

Everything runs as separate processes on this machine: mosquitto, a root node (`edgeroot root run`),
the gateway (`edgeroot gateway run`), and publisher processes with pre-signed envelopes.

1. sustained ingest: publishers send N signed readings over QoS 1 as fast as the broker takes them;
   the rate is readings durable in the gateway's SQLite file (verified, stored, chained) per second;
2. latency: while a background publisher sends 1,000 readings/s, a probe publishes one reading at a
   time and polls the store until it is durable: publish → durable, which bounds the PUBACK the gateway
   sends (it acknowledges right after that commit);
3. backlog: with the root stopped, the gateway takes a backlog; the root returns and the drain rate
   (readings anchored per second) is compared with the live rate of 1,000/s;
4. resident memory of the gateway at steady state.

Targets (issue 4): >= 5,000 readings/s; p99 < 100 ms at 1,000/s; drain >= 3x live; RSS < 80 MB.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from results import record  # bench/ is on sys.path when run as a script

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import load_private_pem
from edge import store
from edgeroot.system import GatewayNode, System, wait_until

N = int(os.environ.get("BENCH_READINGS", "60000"))
PUBLISHERS = int(os.environ.get("BENCH_PUBLISHERS", "2"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "60000"))
GATEWAY = "88.123/GW-BENCH"
PATIENCE = 600.0  # seconds any one phase may wait for the gateway before the bench gives up


def publisher(  # noqa: PLR0917 (a process target takes positional arguments)
    port: int,
    key_pem: bytes,
    device: str,
    first: int,
    count: int,
    rate: float,
    done: mp.Queue,  # type: ignore[type-arg]
) -> None:
    """A publisher process: signs its envelopes up front, then publishes them with QoS 1."""
    signer = CoseSigner(device, load_private_pem(key_pem))
    payloads = [
        envelope.encode_envelope(signer, [{envelope.N: "flow", envelope.V: float(c)}], c)
        for c in range(first, first + count)
    ]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{device}-{first}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    infos = []
    for i, payload in enumerate(payloads):
        infos.append(client.publish("edgeroot/readings/bench", payload, qos=1))
        if rate:
            ahead = (i + 1) / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()
    done.put(count)


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
        self, per_publisher: int, rate: float, first: int = 1, devices: slice = slice(0, PUBLISHERS)
    ) -> list[mp.Process]:
        done: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        procs = []
        for device, key in self.devices[devices]:
            p = mp.Process(
                target=publisher, args=(self.broker_port, key, device, first, per_publisher, rate, done)
            )
            p.start()
            procs.append(p)
        return procs


def setup(system: System) -> Plant:
    root = system.init_root("bench.root", "88.123")
    system.start_root()
    broker = system.start_broker(persistence=False, mosquitto_only=True)
    idents = [f"88.123/DEV-{i}" for i in range(PUBLISHERS + 3)]
    gateway = system.init_gateway(
        GATEWAY,
        admin_key=root.admin_key,
        mqtt=(broker.host, broker.port),
        devices=idents,
        provision_locally=True,
        settings={"sync": {"max_blocks_per_s": 1000.0}},
    )
    system.start("gateway", timeout=60)
    devices = [(ident, gateway.device_keys[ident].read_bytes()) for ident in idents]
    return Plant(system, gateway, devices)


def phase_ingest(system: Plant, db: Path) -> int:
    per = N // PUBLISHERS
    start = time.perf_counter()
    procs = system.publish(per, rate=0)
    wait_until("every reading durable", lambda: durable(db) >= per * PUBLISHERS, timeout=PATIENCE)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    rate = per * PUBLISHERS / elapsed
    print(
        f"  MQTT QoS 1 ingest, {PUBLISHERS} publisher processes, {per * PUBLISHERS:,} readings: "
        f"{rate:,.0f} readings/s durable   target >= 5,000   {'OK' if rate >= 5000 else 'MISS'}"
    )
    record(
        "gateway",
        f"MQTT QoS 1 ingest, verified + durable ({PUBLISHERS} publishers, {per * PUBLISHERS:,} readings)",
        f"{rate:,.0f} readings/s",
        ">= 5,000 readings/s",
        rate >= 5000,
    )
    return per


def _probe(system: Plant, client_id: str) -> tuple[str, CoseSigner, paho.Client]:
    """The probe device (its identifier and signer) and a connected MQTT client publishing for it."""
    ident, key = system.devices[PUBLISHERS]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", system.broker_port)
    client.loop_start()
    return ident, CoseSigner(ident, load_private_pem(key)), client


def phase_latency(system: Plant, db: Path, first: int) -> None:
    """A probe publishes one reading at a time under 1,000/s of background load."""
    background = system.publish(30_000, rate=1000, first=first, devices=slice(0, 1))
    time.sleep(2)
    probe_dev, signer, client = _probe(system, "probe")
    lat = []
    with store.reader(db) as conn:  # one connection: the probe looks every millisecond
        for c in range(1, 301):
            payload = envelope.encode_envelope(signer, [{envelope.N: "p", envelope.V: 1.0}], c)
            t0 = time.perf_counter()
            client.publish("edgeroot/readings/probe", payload, qos=1)
            wait_until(
                f"probe reading {c} durable",
                lambda c=c: store.has_reading(conn, probe_dev, c),
                timeout=PATIENCE,
                interval=0.001,
            )
            lat.append(time.perf_counter() - t0)
            time.sleep(0.02)
    client.loop_stop()
    gateway = system.system.daemons["gateway"].proc
    assert gateway is not None
    rss = rss_mb(gateway.pid)
    for p in background:
        p.terminate()
    q = statistics.quantiles(lat, n=100)
    print(
        f"  publish -> durable at 1,000 readings/s background: p50 {q[49] * 1000:.1f} ms, "
        f"p99 {q[98] * 1000:.1f} ms   target p99 < 100 ms   {'OK' if q[98] < 0.1 else 'MISS'}"
    )
    record(
        "gateway",
        "MQTT publish -> durable (bounds the PUBACK), 1,000 readings/s background",
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms",
        "p99 < 100 ms",
        q[98] < 0.1,
    )
    record("gateway", "gateway resident memory at steady state", f"{rss:.0f} MB", "< 80 MB", rss < 80)
    print(
        f"  gateway resident memory at steady state: {rss:.0f} MB   "
        f"target < 80 MB   {'OK' if rss < 80 else 'MISS'}"
    )


def phase_coap(system: Plant, db: Path) -> None:
    """One CoAP device, one confirmable POST in flight: each 2.04 means durable at the gateway."""
    import asyncio  # noqa: PLC0415

    import aiocoap  # noqa: PLC0415

    ident, key = system.devices[PUBLISHERS + 2]
    signer = CoseSigner(ident, load_private_pem(key))
    count = int(os.environ.get("BENCH_COAP_READINGS", "2000"))
    payloads = [
        envelope.encode_envelope(signer, [{envelope.N: "c", envelope.V: 1.0}], c) for c in range(1, count + 1)
    ]

    async def run() -> list[float]:
        ctx = await aiocoap.Context.create_client_context()
        lat = []
        try:
            for p in payloads:
                t0 = time.perf_counter()
                msg = aiocoap.Message(
                    code=aiocoap.POST, payload=p, uri=f"coap://127.0.0.1:{system.coap_port}/readings"
                )
                msg.opt.content_format = 18
                response = await ctx.request(msg).response
                assert response.code == aiocoap.CHANGED, response
                lat.append(time.perf_counter() - t0)
        finally:
            await ctx.shutdown()
        return lat

    start = time.perf_counter()
    lat = asyncio.run(run())
    rate = count / (time.perf_counter() - start)
    q = statistics.quantiles(lat, n=100)
    print(f"  CoAP, one request in flight: {rate:,.0f} readings/s, 2.04 after p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms")  # fmt: skip
    record(
        "gateway",
        f"CoAP POST -> 2.04 (durable), one device, one request in flight, {count:,} readings",
        f"{rate:,.0f} readings/s; p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms",
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
        "reading published -> verified receipt at the gateway (blocks close at 5 s or 1,000 readings)",
        f"median {med:.2f} s, max {max(times):.2f} s",
    )


def phase_backlog(system: Plant, db: Path) -> None:
    wait_until(
        "everything anchored",
        lambda: durable(db) - anchored_readings(db) <= 0,
        timeout=PATIENCE,
        interval=0.2,
    )
    system.system.stop("root")
    before = anchored_readings(db)
    base = durable(db)
    procs = system.publish(BACKLOG, rate=0, first=10_000_000, devices=slice(PUBLISHERS + 1, PUBLISHERS + 2))
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
    print(
        f"  backlog of {BACKLOG:,} readings with the root down, then drained: {drain:,.0f} readings/s "
        f"= {drain / 1000:.1f}x the 1,000/s live rate   target >= 3x   {'OK' if drain >= 3000 else 'MISS'}"
    )
    record(
        "gateway",
        f"catch-up after a root outage ({BACKLOG:,} readings backlog)",
        f"{drain:,.0f} readings/s = {drain / 1000:.1f}x the 1,000/s live rate",
        ">= 3x",
        drain >= 3000,
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
        per = phase_ingest(plant, db)
        phase_latency(plant, db, first=per + 1)
        phase_coap(plant, db)
        phase_receipt(plant, db)
        phase_backlog(plant, db)


if __name__ == "__main__":
    main()
