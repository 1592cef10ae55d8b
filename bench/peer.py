"""`make bench` (peer): the ThingsBoard IoT Gateway beside ours, same machine, same broker, same load.

The peer is the ThingsBoard IoT Gateway (PyPI ``thingsboard-gateway``, :data:`TB_VERSION`), the most used
open-source Python IoT gateway. It replaces paho with its own fork, so it lives in a virtualenv of its own
under ~/.cache/edgeroot-bench (``BENCH_PEER_VENV``), never in the project's: the bench makes it on first
use and says so, and skips with the install command where it cannot.

One run, every process on this machine:

- one mosquitto with our shipped configuration (edgeroot/mosquitto-edgeroot.conf) takes both gateways'
  input; PUBLISHERS publisher processes (bench/gateway.py) prepare their readings, then the clock starts
  and they publish them with QoS 1 as fast as the broker takes them, one reading per message;
- ours: a root, and our gateway (verification workers, SQLite) as bench/gateway.py sets them up; a
  reading counts when it is durable in the gateway's SQLite file (the moment its PUBACK is sent);
- theirs: the ThingsBoard gateway with its MQTT connector (JSON converter) subscribed to the same
  mosquitto, forwarding over MQTT QoS 1 to a stand-in for ThingsBoard: a second mosquitto and a client
  in this process that answers the gateway's ``getSessionLimits`` RPC (it forwards nothing before) with
  no rate limits and counts the points that arrive; a reading counts when it arrives there;
- the same raw limits: raw paho QoS 1 receive (a bare subscriber, same broker, publishers and message
  count), raw P-256 verify (one core), and publish -> received by a bare subscriber under the latency
  probe's load;
- runs alternate, ours then theirs, BENCH_INGEST_RUNS (3) each: throughput (medians) and their ratio;
  then latency under 1,000 readings/s of background load (a probe publishes one reading at a time:
  publish -> durable for ours, publish -> arrived upstream for theirs), p50/p99 and the p99 ratio;
  then resident memory (PSS of each gateway's process tree) and its ratio.

What each does per reading (the table says it too): ours decodes a COSE_Sign1 envelope, checks the
device's counter, verifies its P-256 signature, stores it in SQLite (WAL, batched commits) and only then
acknowledges it, and chains it into signed blocks synced to the root; theirs acknowledges on receipt
(paho's automatic PUBACK, before conversion), parses JSON, maps it to a telemetry point, queues it in
memory (its default storage) and publishes it upstream in packs. It verifies no signature and stores
nothing durably, so the comparison is of two different jobs on the same load, not of two equals.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from gateway import (  # bench/ is on sys.path when run as a script
    INGEST_RUNS,
    PATIENCE,
    PUBLISHERS,
    TS0_MS,
    Plant,
    family,
    ingest_once,
    json_reading,
    ms,
    probe_latencies,
    pss_mb,
    raw_latencies,
    raw_paho_receive,
    rss_mb,
    setup,
)
from limits import raw_p256_verify
from paho.mqtt.enums import CallbackAPIVersion
from results import record

from edge import store
from edgeroot.mqtt_broker import Mosquitto, shipped_config
from edgeroot.system import HarnessError, System, wait_until

TB_VERSION = "3.8.5"
TB_VENV = Path(os.environ.get("BENCH_PEER_VENV", Path.home() / ".cache" / "edgeroot-bench" / "tb-gateway"))
INSTALL = f"python3 -m venv {TB_VENV} && {TB_VENV}/bin/pip install thingsboard-gateway=={TB_VERSION}"
TB_TOPIC = "tb/readings"
TOKEN = "bench-gateway-token"  # the ThingsBoard gateway's access token: its MQTT user name upstream
N = int(os.environ.get("BENCH_READINGS", "60000"))

# The stand-in's ACL: the gateway publishes its own RPC requests but must not receive them back (it
# subscribes to requests from the server on the same topic filter, and would answer its own
# getSessionLimits with an error); ThingsBoard's MQTT transport keeps each session's topics apart.
UPSTREAM_ACL = f"""topic readwrite #
user {TOKEN}
topic write v1/devices/me/rpc/request/#
topic readwrite v1/devices/me/rpc/response/#
topic readwrite v1/devices/me/attributes/#
topic readwrite v1/devices/me/attributes
topic write v1/devices/me/telemetry
topic readwrite v1/gateway/#
"""


def tb_gateway() -> Path | None:
    """The ThingsBoard gateway's start script, installed into :data:`TB_VENV` on first use; None (and
    the command to run) when it cannot be installed here."""
    script = TB_VENV / "bin" / "thingsboard-gateway"
    if script.exists():
        return script
    print(f"  installing thingsboard-gateway=={TB_VERSION} into {TB_VENV} (first use; its own virtualenv)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(TB_VENV)], check=True)
        subprocess.run(
            [str(TB_VENV / "bin" / "pip"), "install", "--quiet", f"thingsboard-gateway=={TB_VERSION}"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  peer skipped: thingsboard-gateway could not be installed ({exc}); to install it: {INSTALL}")
        shutil.rmtree(TB_VENV, ignore_errors=True)
        return None
    return script if script.exists() else None


class StandIn:
    """ThingsBoard's side of the gateway's MQTT API, enough for the bench: answers ``getSessionLimits``
    with no limits, and notes when each telemetry point (device, ts) arrives. Its paho network thread
    does the work (a bench tool, not edgeroot code)."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[tuple[str, int], float] = {}  # written by paho's thread only
        self.limits_answered, subscribed = threading.Event(), threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="thingsboard-stand-in")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until("the stand-in subscribed upstream", subscribed.is_set, timeout=30)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([("v1/devices/me/rpc/request/+", 1), ("v1/gateway/telemetry", 1)])

    def _on_message(self, client: paho.Client, _: Any, message: paho.MQTTMessage) -> None:
        body = json.loads(message.payload)
        if message.topic.startswith("v1/devices/me/rpc/request/"):
            if body.get("method") == "getSessionLimits":
                # No rate limits; in-flight window and payload size as ThingsBoard's defaults would allow
                # (the client uses 80 % of each: 1,000 in flight, our broker's window).
                limits = {"rateLimits": {}, "gatewayRateLimits": {}, "maxInflightMessages": 1250,
                          "maxPayloadSize": 65536}  # fmt: skip
                request_id = message.topic.rsplit("/", 1)[1]
                client.publish(f"v1/devices/me/rpc/response/{request_id}", json.dumps(limits), qos=1)
                self.limits_answered.set()
            return
        now = time.perf_counter()
        for device, points in body.items():  # {"device": [{"ts": ..., "values": {...}}, ...]}
            for point in points:
                self.arrived.setdefault((device, point["ts"]), now)

    def count(self) -> int:
        return len(self.arrived)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # The callbacks are bound methods: a cycle through the client, whose sockets would then close in
        # the garbage collector's order (a ResourceWarning), not in the client's __del__.
        self.client.on_connect = self.client.on_subscribe = self.client.on_message = None


def tb_config(where: Path, broker_port: int, upstream_port: int) -> Path:
    """The ThingsBoard gateway's configuration directory: its shipped tb_gateway.json and logs.json with
    only what the bench needs changed, and one MQTT connector taking :data:`TB_TOPIC` as JSON."""
    shipped = next(TB_VENV.glob("lib/python3*/site-packages/thingsboard_gateway/config"))
    conf = where / "config"
    conf.mkdir(parents=True)
    shutil.copy(shipped / "logs.json", conf / "logs.json")
    gateway = json.loads((shipped / "tb_gateway.json").read_text())
    tb = gateway["thingsboard"]
    tb.update(host="127.0.0.1", port=upstream_port, remoteConfiguration=False, remoteShell=False,
              security={"type": "accessToken", "accessToken": TOKEN})  # fmt: skip
    tb["statistics"]["enable"] = False  # the stand-in does not take them
    tb["qos"] = 1
    # Its in-memory queue (the default storage) holds a whole run; beyond max_records_count it drops.
    gateway["storage"].update(type="memory", max_records_count=10 * N)
    gateway["connectors"] = [{"type": "mqtt", "name": "bench", "configuration": "mqtt.json"}]
    (conf / "tb_gateway.json").write_text(json.dumps(gateway, indent=2))
    connector = {
        "broker": {"host": "127.0.0.1", "port": broker_port, "clientId": "tb-gateway-bench", "version": 5,
                   "maxMessageNumberPerWorker": 10, "maxNumberOfWorkers": 100, "cleanSession": True,
                   "cleanStart": True, "sessionExpiryInterval": 0, "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": f"{TB_TOPIC}/#",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "message", "deviceNameExpression": "${device}",
                    "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "meter",
                },
                "sendDataOnlyOnChange": False,
                "timeout": 60000,
                "attributes": [],
                "timeseries": [{"type": "double", "key": "flow", "value": "${flow}"}],
            },
        }],
    }  # fmt: skip
    (conf / "mqtt.json").write_text(json.dumps(connector, indent=2))
    return conf


@contextlib.contextmanager
def upstream() -> Iterator[tuple[Mosquitto, StandIn]]:
    """The stand-in for ThingsBoard: its own mosquitto (our shipped configuration and
    :data:`UPSTREAM_ACL`) and a :class:`StandIn` connected to it."""
    # mosquitto started as root reads its ACL file after switching to its own user: the file must be
    # readable by that user, so it lives outside the bench's private (0700) temporary directory.
    where = Path(tempfile.mkdtemp(prefix="edgeroot-peer-upstream-"))
    try:
        where.chmod(0o755)
        acl = where / "acl"
        acl.write_text(UPSTREAM_ACL)
        acl.chmod(0o644)
        broker = Mosquitto(where, persistence=False, settings=shipped_config() + f"\nacl_file {acl}\n")
        broker.start()
        try:
            stand_in = StandIn(broker.port)
            try:
                yield broker, stand_in
            finally:
                stand_in.stop()
        finally:
            broker.stop()
    finally:
        shutil.rmtree(where, ignore_errors=True)


@contextlib.contextmanager
def thingsboard(
    script: Path, where: Path, broker_port: int
) -> Iterator[tuple[subprocess.Popen[bytes], StandIn]]:
    """The stand-in upstream and the ThingsBoard gateway, once it asked its session limits (the
    caller warms it up: :func:`warm_up`)."""
    with upstream() as (broker, stand_in):
        conf = tb_config(where, broker_port, broker.port)
        log = (where / "tb-gateway.log").open("ab")
        proc = subprocess.Popen(
            [str(script)], cwd=where, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, "TB_GW_CONFIG_DIR": str(conf)},
        )  # fmt: skip
        try:

            def exited() -> None:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the ThingsBoard gateway exited with {proc.returncode}; see {log.name}"
                    )

            wait_until("the ThingsBoard gateway asked its session limits", stand_in.limits_answered.is_set,
                       timeout=120, check=exited)  # fmt: skip
            yield proc, stand_in
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def wait_arrived(stand_in: StandIn, total: int, tb: subprocess.Popen[bytes], what: str) -> None:
    """Wait until ``total`` points have arrived upstream; fail when the gateway exited or nothing new
    arrived for a minute (it drops what it cannot queue: the count would never be reached)."""
    progress = [stand_in.count(), time.monotonic()]

    def stalled() -> None:
        if tb.poll() is not None:
            raise RuntimeError(f"the ThingsBoard gateway exited with {tb.returncode}")
        if stand_in.count() != progress[0]:
            progress[:] = [stand_in.count(), time.monotonic()]
        elif time.monotonic() - progress[1] > 60:
            raise RuntimeError(f"{what}: {stand_in.count():,} of {total:,} points upstream, none for 60 s")

    wait_until(what, lambda: stand_in.count() >= total, timeout=PATIENCE, interval=0.01, check=stalled)


def warm_up(plant: Plant, stand_in: StandIn, tb: subprocess.Popen[bytes]) -> None:
    """One reading (counter 0) of each publisher's device and the probe's, to the ThingsBoard gateway:
    its connector is subscribed and each device is known upstream once they have all arrived."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="tb-warm-up")
    client.connect("127.0.0.1", plant.broker_port)
    client.loop_start()
    devices = [device for device, _ in plant.devices[: PUBLISHERS + 1]]
    base = stand_in.count()

    def arrived() -> bool:
        return stand_in.count() >= base + len(devices)

    try:
        for _ in range(60):  # resent each second until they arrive: the connector may not be subscribed yet
            for device in devices:  # the same (device, ts) again: the stand-in counts it once
                client.publish(f"{TB_TOPIC}/warm-up", json_reading(device, 0), qos=1)
            with contextlib.suppress(HarnessError):
                wait_until("the warm-up readings upstream", arrived, timeout=1.0, interval=0.01)
                return
            if tb.poll() is not None:
                raise RuntimeError(f"the ThingsBoard gateway exited with {tb.returncode}")
        raise RuntimeError("the warm-up readings did not arrive upstream within 60 s")
    finally:
        client.disconnect()
        client.loop_stop()


def tb_ingest_once(plant: Plant, stand_in: StandIn, tb: subprocess.Popen[bytes], first: int) -> float:
    """One run through the ThingsBoard gateway: N JSON readings from PUBLISHERS publishers, prepared
    before the clock starts; readings/s arrived upstream."""
    per = N // PUBLISHERS
    base = stand_in.count()
    procs, start = plant.publish(per, rate=0, first=first, topic=f"{TB_TOPIC}/bench", form="json")
    wait_arrived(stand_in, base + per * PUBLISHERS, tb, "every reading upstream")
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return per * PUBLISHERS / elapsed


def memory(pid: int) -> tuple[float, float, int]:
    """PSS and RSS summed over ``pid``'s process tree (MB), and how many processes it has."""
    pids = family(pid)
    return sum(pss_mb(p) for p in pids), sum(rss_mb(p) for p in pids), len(pids)


# What each does per reading, in short (the section's note in bench/report.py says it in full, D-111).
OURS = (
    "ours (envelope decoded, counter checked, P-256 verified, durable in SQLite before its PUBACK, chained)"
)
THEIRS = (
    f"ThingsBoard IoT Gateway {TB_VERSION} (PUBACK on receipt, JSON to a point, queued in memory, forwarded)"
)


def run(script: Path, workdir: Path, system: System) -> None:
    plant = setup(system)
    gateway = system.daemons["gateway"].proc
    assert gateway is not None
    db = plant.gateway.db
    per = N // PUBLISHERS
    with thingsboard(script, workdir / "tb", plant.broker_port) as (tb, stand_in):
        warm_up(plant, stand_in, tb)
        ours, theirs, raw_paho, raw_p256 = [], [], [], []
        first = 1
        for _ in range(INGEST_RUNS):
            ours.append(ingest_once(plant, db, first, 1))
            theirs.append(tb_ingest_once(plant, stand_in, tb, first))
            first += per
            raw_paho.append(raw_paho_receive(plant))
            raw_p256.append(raw_p256_verify())
            print(f"  run: ours {ours[-1]:,.0f}/s, theirs {theirs[-1]:,.0f}/s, "
                  f"raw paho {raw_paho[-1]:,.0f}/s, raw P-256 {raw_p256[-1]:,.0f}/s")  # fmt: skip
        mem_ours, mem_theirs = memory(gateway.pid), memory(tb.pid)
        with store.reader(db) as conn:  # one connection: the probe looks every millisecond
            lat_ours, background = probe_latencies(plant, first, lambda d, c: store.has_reading(conn, d, c))
        for p in background:
            p.terminate()
        lat_theirs, background = probe_latencies(
            plant, first + per, lambda d, c: (d, TS0_MS + c) in stand_in.arrived,
            form="json", topic=f"{TB_TOPIC}/bench", probe_topic=f"{TB_TOPIC}/probe",
        )  # fmt: skip
        for p in background:
            p.terminate()
        lat_raw = raw_latencies(plant, first + 2 * per)
    raws = (statistics.median(raw_paho), statistics.median(raw_p256), ms(lat_raw))
    report(ours, theirs, raws, (lat_ours, lat_theirs), (mem_ours, mem_theirs))


def overload(ours: float, theirs: float) -> str:
    """What the latency row must say when the background load exceeds a gateway's throughput in the run:
    its queue grows for the whole probe, and the latency measures that queue."""
    over = [name for name, rate in (("ours", ours), ("theirs", theirs)) if rate < 1000]
    if not over:
        return ""
    return f"; the 1,000/s background exceeds the throughput of {' and '.join(over)} in this run"


def report(
    ours: list[float],
    theirs: list[float],
    raws: tuple[float, float, tuple[float, float]],
    lat: tuple[list[float], list[float]],
    mem: tuple[tuple[float, float, int], tuple[float, float, int]],
) -> None:
    """Record the run's figures: the raw limits, each gateway's, and ours / theirs."""
    o, t = statistics.median(ours), statistics.median(theirs)
    paho_raw, p256_raw, (r50, r99) = raws
    (o50, o99), (t50, t99) = ms(lat[0]), ms(lat[1])
    (opss, orss, on), (tpss, trss, tn) = mem
    runs = f"median of {INGEST_RUNS}"
    rows = [
        ("raw paho QoS 1 receive (bare subscriber, same mosquitto, publishers and message count), same run",
         f"{paho_raw:,.0f} messages/s ({runs})"),
        ("raw P-256 verify (cryptography, one core), same run", f"{p256_raw:,.0f}/s ({runs})"),
        ("raw paho QoS 1 publish -> received (bare subscriber), same probe and background load, same run",
         f"p50 {r50:.1f} ms, p99 {r99:.1f} ms"),
        (f"MQTT QoS 1 ingest, {THEIRS}, one reading per message, {N:,} readings, {PUBLISHERS} publishers",
         f"{t:,.0f} readings/s ({runs}: {', '.join(f'{r:,.0f}' for r in theirs)}) = {t / paho_raw:.2f}x "
         "raw paho receive"),
        (f"MQTT QoS 1 ingest, {OURS}, same load, runs alternating with theirs",
         f"{o:,.0f} readings/s ({runs}: {', '.join(f'{r:,.0f}' for r in ours)}) = {o / paho_raw:.2f}x raw "
         f"paho receive, {o / p256_raw:.2f}x raw one-core P-256 verify"),
        ("latency at 1,000 readings/s background, 300 probes: theirs publish -> arrived upstream; "
         "ours publish -> durable (its PUBACK follows)",
         f"theirs p50 {t50:.1f} ms, p99 {t99:.1f} ms ({t99 / r99:.1f}x the raw p99); ours p50 {o50:.1f} ms, "
         f"p99 {o99:.1f} ms ({o99 / r99:.1f}x the raw p99)" + overload(o, t)),
        ("resident memory after the runs, whole process tree (PSS summed; RSS summed)",
         f"theirs {tpss:.0f} MB ({trss:.0f} MB, {tn} process(es)); ours {opss:.0f} MB ({orss:.0f} MB, "
         f"{on} processes: gateway + verification workers)"),
        ("ours / theirs, same run (throughput: higher is better for ours; p99 and memory: lower is)",
         f"throughput {o / t:.2f}x, p99 latency {o99 / t99:.2f}x, memory (PSS) {opss / tpss:.2f}x"),
    ]  # fmt: skip
    for what, figure in rows:
        print(f"  {what}: {figure}")
        record("peer", what, figure)


def main() -> None:
    print(f"the peer gateway beside ours ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    script = tb_gateway()
    if script is None:
        record("peer", "ThingsBoard IoT Gateway beside ours", f"skipped: not installable here ({INSTALL})")
        return
    mp.set_start_method("fork")
    with tempfile.TemporaryDirectory() as d, System(Path(d)) as system:
        run(script, Path(d), system)


if __name__ == "__main__":
    main()
