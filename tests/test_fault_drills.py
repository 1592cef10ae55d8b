"""Fault drills, each bounded in time: a witness down, the disk budget reached, clocks minutes apart,
the bridge and the root killed with SIGKILL under load. Every drill asserts that no acknowledged
reading (or write) is lost or duplicated, that the chains verify, and that the failure was visible in
status, logs and metrics while it lasted.

The other drills live beside the part they exercise: gateway SIGKILL under load, root outage, broker
restart and a rewritten anchored block in test_gateway_e2e.py; sd_notify in test_systemd_units.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import aiocoap
import httpx
import pytest

from chain_lite import envelope
from chain_lite.block import verify_chain
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.keys import generate_p256, generate_sm2
from chain_lite.registry import Value, build_write, pubkey_value, sign_write
from edge import store
from edgeroot.system import System, configure, wait_until
from resolver import config as root_config
from resolver.db import Database
from resolver.errors import ResolverError
from rootclient.client import RootClient
from rootclient.errors import ClientError
from runtime.clock import now_ms
from tests.gateway_harness import (
    DEVICE,
    EDGEROOT,
    EVERY_SUITE,
    GATEWAY,
    Plant,
    gateway_key,
    verified_chain,
)
from tests.test_root_cli import cli


def _coap_send(port: int, payloads: list[bytes]) -> list[str]:
    """POST each envelope in order (one in flight, as a device would); the response codes."""

    async def run() -> list[str]:
        ctx = await aiocoap.Context.create_client_context()
        codes = []
        try:
            for p in payloads:
                msg = aiocoap.Message(code=aiocoap.POST, payload=p, uri=f"coap://127.0.0.1:{port}/readings")
                msg.opt.content_format = 18
                codes.append(str((await ctx.request(msg).response).code))
        finally:
            await ctx.shutdown()
        return codes

    return asyncio.run(run())


def _anchored_chain(plant: Plant) -> int:
    """Headers verify (signature and linkage); the readings they commit to, in all."""
    with store.reader(plant.gateway.db) as conn:
        raws = [b.raw for b in store.blocks(conn)]
    key = gateway_key(plant)
    chain = verify_chain(raws, lambda kid: key if kid == GATEWAY else None, suite=plant.suite)
    return sum(b.header.reading_count for b in chain)


def _pages_used(db: Path) -> int:
    """The database's size with its WAL folded in: every page SQLite holds for it."""
    conn = store.connect(db)
    try:
        pages, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        return int(pages * size)
    finally:
        conn.close()


def _root_idle(state: Path) -> bool:
    """Nothing queued at the root and every checkpoint it signed published: each batch is cosigned
    (one try per witness, a miss counted) and then published, so the misses are all counted."""
    db = Database(root_config.load(state).database)
    try:
        with db.transaction(write=False) as tx:
            pending = tx.one("SELECT COUNT(*) FROM pending")
            unpublished = tx.one("SELECT COUNT(*) FROM checkpoints WHERE published = 0")
    finally:
        db.close()
    return pending is not None and unpublished is not None and pending[0] == 0 and unpublished[0] == 0


@EVERY_SUITE
def test_drill_witness_down(plant: Plant) -> None:
    """The witness stops: the root keeps integrating, says so in /healthz, /metrics and its log; the
    gateway keeps every reading but cannot anchor (the policy wants the witness's cosignature). When the
    witness returns, everything anchors and the chain verifies."""
    plant.start()
    first = [plant.reading() for _ in range(20)]
    assert set(_coap_send(plant.coap_port, first)) == {"2.04 Changed"}
    plant.wait_anchored(20)
    root_log = plant.system.daemons["root"].log_text
    plant.system.stop("witness")
    during = [plant.reading() for _ in range(40)]
    assert set(_coap_send(plant.coap_port, during)) == {"2.04 Changed"}
    deadline = time.monotonic() + 20
    while True:
        health = httpx.get(f"{plant.root.url}/healthz").json()
        if health["witnesses_failing"]:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert health["problems"] and "witness.test" in health["problems"][0]
    metrics = httpx.get(f"{plant.root.url}/metrics").text
    assert 'edgeroot_root_witness_failing_checkpoints{witness="witness.test"}' in metrics
    st = store.status(plant.state / "gateway.db")
    assert st["readings"] == 60
    # Every block handed to the root (a block still arriving makes a new checkpoint: a new miss, rightly).
    wait_until(
        "every reading in a block the root accepted",
        lambda: (
            (s := store.status(plant.state / "gateway.db"))["unchained_readings"] == 0
            and s["blocks"]["chained"] == 0
        ),
    )
    assert store.status(plant.state / "gateway.db")["unanchored_blocks"] > 0, "anchored without the witness"
    # The root re-asks the witness every 2 s; retries of the same checkpoint are not missed checkpoints.
    wait_until(
        "the root integrated, tried to cosign and published every block", lambda: _root_idle(plant.root.state)
    )
    missed = httpx.get(f"{plant.root.url}/healthz").json()["witnesses_failing"]
    warned = root_log().count("unreachable")
    assert warned >= 1, "the first missed checkpoint is logged"
    time.sleep(4.5)
    assert httpx.get(f"{plant.root.url}/healthz").json()["witnesses_failing"] == missed
    assert root_log().count("unreachable") == warned, "a retry logged again"
    plant.system.start("witness")
    plant.wait_anchored(60, timeout=60)
    health = httpx.get(f"{plant.root.url}/healthz").json()
    deadline = time.monotonic() + 10
    while health["witnesses_failing"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
        health = httpx.get(f"{plant.root.url}/healthz").json()
    chain = verified_chain(plant.state / "gateway.db", GATEWAY, gateway_key(plant), plant.suite)
    assert sum(b.header.reading_count for b in chain) == 60
    assert plant.stop() == 0


@EVERY_SUITE
def test_drill_disk_budget_reached(plant: Plant) -> None:
    """A 1 MB budget and the root away: the gateway acknowledges until the budget is reached, then
    refuses (CoAP 5.03, nothing acknowledged is dropped); status, /healthz, /metrics and the log say so.
    The root returns: blocks anchor, anchored readings are pruned, intake resumes."""
    configure(plant.gateway.config, {"store": {"disk_budget_mb": 1}})
    plant.start()
    plant.system.stop("root")
    acked, refused = 0, 0
    # What is checked is that the budget stops intake before the store outgrows it; how long filling 1 MB
    # takes depends on the machine (at load average 25 on 2 cores it took over 120 s), so the time limit
    # only ends a run that never gets there.
    deadline = time.monotonic() + 600
    while refused == 0:
        codes = _coap_send(plant.coap_port, [plant.reading() for _ in range(200)])
        acked += codes.count("2.04 Changed")
        refused += sum(1 for c in codes if c.startswith("5.03"))
        assert set(codes) <= {"2.04 Changed", "5.03 Service Unavailable"}, set(codes)
        assert refused or _pages_used(plant.state / "gateway.db") < 1.5 * 1024 * 1024, (
            "budget passed, no refusal"
        )
        assert time.monotonic() < deadline, "the budget was never reached"
        if refused:
            # Refused readings were never acknowledged: the device keeps them and their counters.
            plant.counter -= codes.count("5.03 Service Unavailable")
    assert acked > 1000
    # Checked after every batch: overshot by a batch at most (3.9 MB of the 1 MB when checked once a
    # minute, and then nearly all of it had to be anchored before intake could resume).
    assert _pages_used(plant.state / "gateway.db") < 1.5 * 1024 * 1024
    health = httpx.get(f"{plant.http}/healthz")
    assert health.status_code == 503 and "disk budget reached" in health.json()["problems"][0]
    assert "edgeroot_gateway_store_full 1.0" in httpx.get(f"{plant.http}/metrics").text
    status = cli_status(plant)
    assert status.returncode == 1 and "disk budget reached" in status.stdout + status.stderr
    assert "disk budget reached" in plant.log()
    plant.system.start("root")
    deadline = time.monotonic() + 90
    while httpx.get(f"{plant.http}/healthz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{plant.http}/healthz").json()
        time.sleep(0.5)
    codes = _coap_send(plant.coap_port, [plant.reading() for _ in range(50)])
    assert codes == ["2.04 Changed"] * 50, "intake did not resume"
    acked += 50
    deadline = time.monotonic() + 60
    while (
        store.status(plant.state / "gateway.db")["unanchored_blocks"]
        or store.status(plant.state / "gateway.db")["unchained_readings"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    # Pruned readings are gone from the gateway but every acknowledged one is committed by the chain
    # (and replicated to the root); none is there twice.
    assert _anchored_chain(plant) == acked
    with store.reader(plant.gateway.db) as conn:
        counters = [r.counter for r in store.readings(conn)]
    assert len(counters) == len(set(counters)) and len(counters) < acked, "nothing was pruned"
    assert "no longer reached" in plant.log()
    assert plant.stop() == 0


def cli_status(plant: Plant) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEROOT, "gateway", "status", "--state", str(plant.state)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@EVERY_SUITE
def test_drill_clock_skew(plant: Plant) -> None:
    """Clocks minutes apart. A device whose clock is 10 minutes ahead or a day behind: its readings are
    accepted (replay protection is the counter, not the clock) and keep their own timestamps. An admin
    box 10 minutes off: its registry write is refused with the skew named, and the log does not grow."""
    plant.start()
    now = time.time()
    payloads = []
    for skew in (600.0, -86_400.0, 0.0):
        plant.counter += 1
        payloads.append(
            envelope.encode_envelope(
                plant.device, [{envelope.BT: now + skew, envelope.N: "t", envelope.V: 1.0}], plant.counter
            )
        )
    assert _coap_send(plant.coap_port, payloads) == ["2.04 Changed"] * 3
    plant.wait_anchored(3)
    with store.reader(plant.gateway.db) as conn:
        stored = [envelope.decode_envelope(r.raw) for r in store.readings(conn)]
    assert [round(s.records[0][envelope.BT] - now) for s in stored] == [600, -86_400, 0]
    with RootClient(plant.root.url) as c:
        size = SignedCheckpoint.parse(c.checkpoint()).checkpoint.size
        for skew_ms in (10 * 60_000, -10 * 60_000):
            req = build_write(
                plant.root.origin, "create", "88.123.99/SKEWED", [Value(1, "DEVICE", "string", "x")],
                timestamp_ms=now_ms() + skew_ms, nonce=os.urandom(16))  # fmt: skip
            with pytest.raises((ResolverError, ClientError)) as refused:
                c.write(sign_write(req, plant.root.admin_signer()).raw)
            assert "window" in str(refused.value) and "600" in str(refused.value)
        time.sleep(0.5)
        assert SignedCheckpoint.parse(c.checkpoint()).checkpoint.size == size
    metrics = httpx.get(f"{plant.root.url}/metrics").text
    assert "edgeroot_root_refused_total{reason=" in metrics
    assert plant.stop() == 0


@EVERY_SUITE
def test_drill_bridge_kill_9_under_load(plant: Plant, tmp_path: Path) -> None:
    """SIGKILL the serial bridge at random moments while a device streams readings through it; systemd
    (here: the test) restarts it. Every reading the device got an ACK frame for is stored, none twice,
    and the chain verifies."""
    plant.start()
    bridge_port, device_port = plant.system.null_modem()
    bridge = plant.system.start_bridge(bridge_port)
    sim = subprocess.Popen(
        [*EDGEROOT, "device", "simulate", "--serial", device_port, "--id", DEVICE,
         "--key", str(plant.device_key),
         "--rate", "40", "--count", "300", "--counter", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    rng = random.Random(11)
    kills = 0
    try:
        while sim.poll() is None and kills < 3:
            time.sleep(rng.uniform(1.0, 2.5))
            bridge.stop(signal.SIGKILL, timeout=10)
            kills += 1
            bridge.start()
        out, _ = sim.communicate(timeout=120)
    finally:
        if sim.poll() is None:
            sim.kill()
        bridge.stop(timeout=20)
    assert kills >= 2, "the device finished before the drill could kill the bridge twice"
    result = json.loads(out)
    plant.wait_anchored(result["ack"], timeout=60)
    with store.reader(plant.gateway.db) as conn:
        counters = [r.counter for r in store.readings(conn, DEVICE)]
    assert len(counters) == len(set(counters)), "a reading was stored twice"
    assert len(counters) >= result["ack"], f"acknowledged {result['ack']}, stored {len(counters)}"
    assert len(counters) <= result["sent"]
    chain = verified_chain(plant.state / "gateway.db", GATEWAY, gateway_key(plant), plant.suite)
    assert sum(b.header.reading_count for b in chain) == len(counters)


@pytest.mark.parametrize("suite", ["default", "sm"])
def test_drill_root_kill_9_under_load(tmp_path: Path, suite: str) -> None:
    """SIGKILL the root node at random moments while an admin registers devices; restart it each time.
    Every write the root answered 2xx is in the log and resolvable afterwards, none twice, and every
    checkpoint published before a kill is consistent with the ones after (the light client's pin
    follows without complaint). On both suites: ``sm`` is an SM2 + SM3 log with an SM2 witness,
    registering SM2 device keys."""
    system = System(tmp_path)
    node = system.init_root("root.drill", "88.123", witness="w.drill", suite=suite)
    generate = generate_sm2 if suite == "sm" else generate_p256
    url, pin = node.url, tmp_path / "client"

    def resolve(ident: str) -> subprocess.CompletedProcess[str]:
        return cli("resolve", ident, "--root", url, "--verify", "--policy", node.policy_path,
                   "--config-dir", pin, "--json", check=False)  # fmt: skip

    admin = node.admin_signer()
    accepted: list[str] = []
    rng = random.Random(5)
    with system:
        system.start_root()
        for round_ in range(3):
            kill_at = time.monotonic() + rng.uniform(0.8, 2.0)
            n = 0
            with RootClient(url) as c:
                while time.monotonic() < kill_at:
                    ident = f"88.123/DRILL-{round_}-{n}"
                    n += 1
                    key = generate()
                    req = build_write(node.origin, "create", ident, [pubkey_value(300, key.public_key())],
                                      timestamp_ms=now_ms(), nonce=os.urandom(16))  # fmt: skip
                    c.write(sign_write(req, admin).raw)
                    accepted.append(ident)
            system.stop("root", signal.SIGKILL, timeout=10)
            system.start("root")
            resolved = resolve(accepted[-1])
            deadline = time.monotonic() + 15
            while resolved.returncode != 0 and time.monotonic() < deadline:  # integrated after the restart
                time.sleep(0.3)
                resolved = resolve(accepted[-1])
            assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        assert len(accepted) >= 3
        with RootClient(url) as c:
            for ident in accepted:  # in the log exactly once, and current
                changes = c.get_json(f"/v1/history/{ident}")["changes"]
                assert [ch["op"] for ch in changes] == ["set"], (ident, changes)
                assert c.resolve(ident)["values"], ident
        assert "sequencing" in system.daemons["root"].log_text()
