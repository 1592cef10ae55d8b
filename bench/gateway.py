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

import contextlib
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from results import record  # bench/ is on sys.path when run as a script

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, load_private_pem, private_pem, public_pem
from chain_lite.registry import Value, build_write, pubkey_value, sign_write
from resolver.assembly import init_root
from rootclient.client import RootClient

N = int(os.environ.get("BENCH_READINGS", "60000"))
PUBLISHERS = int(os.environ.get("BENCH_PUBLISHERS", "2"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "60000"))
EDGEROOT = [sys.executable, "-m", "edgeroot"]
GATEWAY = "88.123/GW-BENCH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
        else:
            return
    raise TimeoutError(url)


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
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def anchored_readings(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(
            conn.execute("SELECT COALESCE(SUM(count), 0) FROM blocks WHERE state = 'anchored'").fetchone()[0]
        )
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class System:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.broker_port, self.root_port, self.http_port = free_port(), free_port(), free_port()
        self.coap_port = free_port()
        (tmp / "mq").mkdir()
        (tmp / "mosquitto.conf").write_text(
            f"listener {self.broker_port} 127.0.0.1\nallow_anonymous true\n"
            "max_inflight_messages 1000\nmax_queued_messages 10000000\n"
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.devices: list[tuple[str, bytes]] = []

    def start_broker(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.procs["broker"] = subprocess.Popen(
            [mosquitto, "-c", str(self.tmp / "mosquitto.conf")], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)

    def start_root(self) -> None:
        log = (self.tmp / "root.log").open("ab")
        self.procs["root"] = subprocess.Popen(
            [
                *EDGEROOT,
                "root",
                "run",
                "--state",
                str(self.tmp / "root"),
                "--listen",
                f"127.0.0.1:{self.root_port}",
            ],
            stdout=log,
            stderr=log,
        )
        wait_http(f"http://127.0.0.1:{self.root_port}/healthz")

    def start_gateway(self) -> None:
        log = (self.tmp / "gateway.log").open("ab")
        self.procs["gateway"] = subprocess.Popen(
            [*EDGEROOT, "gateway", "run", "--state", str(self.tmp / "gw")], stdout=log, stderr=log
        )
        wait_http(f"http://127.0.0.1:{self.http_port}/healthz")

    def stop_all(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    def setup(self) -> None:
        init_root(self.tmp / "root", "bench.root", "88.123")
        self.start_root()
        admin = CoseSigner(
            "300:0.na/88.123", load_private_pem((self.tmp / "root" / "admin.pem").read_bytes())
        )
        subprocess.run(
            [*EDGEROOT, "gateway", "init", "--state", str(self.tmp / "gw"), "--root", f"http://127.0.0.1:{self.root_port}",
             "--id", GATEWAY, "--policy", str(self.tmp / "root" / "policy.txt"),
             "--mqtt", f"127.0.0.1:{self.broker_port}"],
            check=True, capture_output=True,
        )  # fmt: skip
        gw_key = load_private_pem((self.tmp / "gw" / "gateway.key").read_bytes())
        devices_toml = []
        with RootClient(f"http://127.0.0.1:{self.root_port}") as c:
            c.write(
                _write(
                    c,
                    admin,
                    GATEWAY,
                    [pubkey_value(300, gw_key.public_key()), Value(1, "GATEWAY", "string", GATEWAY)],
                )
            )
            for i in range(PUBLISHERS + 3):
                device = f"88.123/DEV-{i}"
                key = generate_p256()
                (self.tmp / "gw" / f"dev{i}.pub").write_bytes(public_pem(key.public_key()))
                c.write(
                    _write(
                        c,
                        admin,
                        device,
                        [pubkey_value(300, key.public_key()), Value(1, "DEVICE", "string", device)],
                    )
                )
                self.devices.append((device, private_pem(key)))
                devices_toml.append(f'"{device}" = "dev{i}.pub"')
        text = (self.tmp / "gw" / "gateway.toml").read_text()
        text = text.replace('listen = "127.0.0.1:8480"', f'listen = "127.0.0.1:{self.http_port}"')
        text = text.replace(
            '# "88.123.99/PUMP-0042" = "keys/88.123.99_PUMP-0042.pub"', "\n".join(devices_toml)
        )
        text = text.replace("max_blocks_per_s = 200", "max_blocks_per_s = 1000")
        text += f'\n[[connector]]\ntype = "coap"\nhost = "127.0.0.1"\nport = {self.coap_port}\n'
        (self.tmp / "gw" / "gateway.toml").write_text(text)
        self.start_broker()
        self.start_gateway()

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


def _write(c: RootClient, admin: CoseSigner, ident: str, values: list[Value]) -> bytes:
    req = build_write(c.origin(), "create", ident, values, timestamp_ms=time.time_ns() // 1_000_000,
        nonce=os.urandom(16))
    return sign_write(req, admin).raw


def phase_ingest(system: System, db: Path) -> int:
    per = N // PUBLISHERS
    start = time.perf_counter()
    procs = system.publish(per, rate=0)
    while durable(db) < per * PUBLISHERS:
        time.sleep(0.05)
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


def _probe(system: System, client_id: str) -> tuple[str, CoseSigner, paho.Client]:
    """The probe device (its identifier and signer) and a connected MQTT client publishing for it."""
    ident, key = system.devices[PUBLISHERS]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", system.broker_port)
    client.loop_start()
    return ident, CoseSigner(ident, load_private_pem(key)), client


def phase_latency(system: System, db: Path, first: int) -> None:
    """A probe publishes one reading at a time under 1,000/s of background load."""
    background = system.publish(30_000, rate=1000, first=first, devices=slice(0, 1))
    time.sleep(2)
    probe_dev, signer, client = _probe(system, "probe")
    conn = sqlite3.connect(db, timeout=30)
    lat = []
    query = "SELECT 1 FROM readings WHERE signer = ? AND counter = ?"
    for c in range(1, 301):
        payload = envelope.encode_envelope(signer, [{envelope.N: "p", envelope.V: 1.0}], c)
        t0 = time.perf_counter()
        client.publish("edgeroot/readings/probe", payload, qos=1)
        while conn.execute(query, (probe_dev, c)).fetchone() is None:
            time.sleep(0.001)
        lat.append(time.perf_counter() - t0)
        time.sleep(0.02)
    client.loop_stop()
    rss = rss_mb(system.procs["gateway"].pid)
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


def phase_coap(system: System, db: Path) -> None:
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


def phase_receipt(system: System, db: Path) -> None:
    """Reading published -> its block anchored at the gateway (receipt fetched and verified as a light
    client), with the default block policy (1,000 readings or 5 s) and 250 ms root batches."""
    ident, signer, client = _probe(system, "receipt-probe")
    conn = sqlite3.connect(db, timeout=30)
    query = (
        "SELECT b.state FROM readings r JOIN blocks b ON b.height = r.block "
        "WHERE r.signer = ? AND r.counter = ?"
    )
    times = []
    for c in range(5_000_000, 5_000_012):
        payload = envelope.encode_envelope(signer, [{envelope.N: "p", envelope.V: 2.0}], c)
        t0 = time.perf_counter()
        client.publish("edgeroot/readings/probe", payload, qos=1)
        while (row := conn.execute(query, (ident, c)).fetchone()) is None or row[0] != "anchored":
            time.sleep(0.01)
        times.append(time.perf_counter() - t0)
        time.sleep(0.37)  # land at different points of the block cycle
    client.loop_stop()
    conn.close()
    med = statistics.median(times)
    print(f"  reading -> verified receipt at the gateway: median {med:.2f} s, max {max(times):.2f} s")
    record(
        "gateway",
        "reading published -> verified receipt at the gateway (blocks close at 5 s or 1,000 readings)",
        f"median {med:.2f} s, max {max(times):.2f} s",
    )


def phase_backlog(system: System, db: Path) -> None:
    while durable(db) - anchored_readings(db) > 0:
        time.sleep(0.2)
    system.stop("root")
    before = anchored_readings(db)
    base = durable(db)
    procs = system.publish(BACKLOG, rate=0, first=10_000_000, devices=slice(PUBLISHERS + 1, PUBLISHERS + 2))
    while durable(db) < base + BACKLOG:
        time.sleep(0.2)
    for p in procs:
        p.join()
    time.sleep(1.0)  # let the last block close
    system.start_root()
    start = time.perf_counter()
    while anchored_readings(db) < before + BACKLOG:
        time.sleep(0.1)
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
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        system = System(tmp)
        db = tmp / "gw" / "gateway.db"
        try:
            system.setup()
            per = phase_ingest(system, db)
            phase_latency(system, db, first=per + 1)
            phase_coap(system, db)
            phase_receipt(system, db)
            phase_backlog(system, db)
        finally:
            system.stop_all()


if __name__ == "__main__":
    main()
