"""The gateway as a real process, with a real broker, a real root node and real SQLite files.

Devices publish signed readings over MQTT (QoS 1) and CoAP; the gateway verifies, stores, chains and
syncs them; receipts verify with `edgeroot verify receipt`; kill -9 loses no acknowledged reading.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiocoap
import httpx
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from chain_lite.log_leaf import block_leaf
from chain_lite.note import SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE
from chain_lite.policy import Policy
from chain_lite.suite import SM3
from edge import store
from edgeroot.system import configure, wait_until
from tests.gateway_harness import (
    DEVICE,
    EDGEROOT,
    EVERY_SUITE,
    GATEWAY,
    Plant,
    cli,
    gateway_key,
    verified_chain,
)
from tests.mqtt_harness import Publisher, require_mosquitto
from tests.notify_harness import NotifySocket


def test_mqtt_readings_are_anchored_with_receipts_that_verify(any_suite_plant: Plant, tmp_path: Path) -> None:
    """MQTT readings end up in anchored blocks whose receipts `edgeroot verify receipt` accepts; with an
    SHA-256 root and with an all-SM one (the gateway builds its blocks with the hash its policy names and
    signs them with SM2; the root accepts them with the key from the registry); from an SM2 device on a
    default-suite gateway and log; and from P-256 keys on an SM3 log."""
    plant = any_suite_plant
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for _ in range(100):
            pub.publish("edgeroot/readings/pump", plant.reading())
        pub.publish("edgeroot/readings/pump", b"not an envelope")
    finally:
        pub.close()
    plant.wait_anchored(100)
    policy = Policy.parse(plant.root.policy_path.read_bytes())
    suite = policy.logs[0].suite
    if suite is SM3:  # an SM3 log is SM2 + SM3 throughout: its own key and its witness's are SM2 (D-084)
        assert policy.logs[0].verifier.sigtype == SIGTYPE_SM2
        assert {w.verifier.sigtype for w in policy.witnesses.values()} == {SIGTYPE_SM2_COSIGNATURE}
    chain = verified_chain(plant.state / "gateway.db", GATEWAY, gateway_key(plant), suite)
    assert {block.header.suite for block in chain} == {suite}
    with store.reader(plant.gateway.db) as conn:
        counters = sorted(r.counter for r in store.readings(conn))
        assert counters == list(range(1, 101))
        assert store.count_rejects_by_reason(conn) == {"malformed": 1}
        last = store.blocks(conn)[-1]
    assert last.receipt is not None
    (tmp_path / "receipt.txt").write_text(last.receipt)
    (tmp_path / "leaf.bin").write_bytes(block_leaf(last.raw))
    verdict = cli(
        "verify",
        "receipt",
        tmp_path / "receipt.txt",
        "--policy",
        plant.root.policy_path,
        "--leaf",
        tmp_path / "leaf.bin",
    )
    assert verdict["ok"] is True
    status = cli("gateway", "status", "--state", plant.state)
    assert status["ok"] is True and status["running"] is True and status["unanchored_blocks"] == 0
    assert status["rejects"] == {"malformed": 1}
    metrics = httpx.get(f"{plant.http}/metrics").text
    assert "edgeroot_gateway_readings_accepted_total 100.0" in metrics
    assert 'edgeroot_gateway_readings_rejected_total{reason="malformed"} 1.0' in metrics
    assert plant.stop() == 0


@EVERY_SUITE
def test_coap_post_is_answered_after_durability_with_reasons(plant: Plant) -> None:
    """CoAP: 2.04 for a stored reading; 4.00 with the reason for a replay or garbage; 4.15 wrong format."""
    plant.start()

    async def exchange() -> list[tuple[str, bytes]]:
        ctx = await aiocoap.Context.create_client_context()
        uri = f"coap://127.0.0.1:{plant.coap_port}/readings"
        first = plant.reading()
        out = []
        # A different reading under counter 1 is a replay (the same one again would be a duplicate: 2.04).
        replay = envelope.encode_envelope(plant.device, [{envelope.N: "flow", envelope.V: -1.0}], 1)
        for payload, fmt in ((first, 18), (replay, 18), (b"\x00junk", None), (plant.reading(), 50)):
            msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
            if fmt is not None:
                msg.opt.content_format = fmt
            resp = await ctx.request(msg).response
            out.append((str(resp.code), resp.payload))
        await ctx.shutdown()
        return out

    answers = asyncio.run(exchange())
    assert answers[0][0].startswith("2.04")
    assert answers[1][0].startswith("4.00") and answers[1][1].startswith(b"replay")
    assert answers[2][0].startswith("4.00") and answers[2][1].startswith(b"malformed")
    assert answers[3][0].startswith("4.15")
    with store.reader(plant.gateway.db) as conn:
        assert store.count_rejects_by_reason(conn) == {"malformed": 1, "replay": 1, "wrong-content-format": 1}


@EVERY_SUITE
def test_kill_9_under_load_loses_no_acknowledged_reading(plant: Plant) -> None:
    """SIGKILL the gateway at random moments while devices publish; after a restart every reading the
    broker accepted is in the chain exactly once, and the chain verifies."""
    require_mosquitto()
    plant.start()
    pub = Publisher(*plant.broker)
    rng = random.Random(7)
    sent = 0
    try:
        for round_ in range(3):
            burst = rng.randrange(150, 300)
            kill_at = rng.randrange(20, burst)
            for i in range(burst):
                pub.publish("edgeroot/readings/pump", plant.reading())
                sent += 1
                if i == kill_at:
                    assert plant.stop(signal.SIGKILL) == -signal.SIGKILL
                    plant.start()
            del round_
    finally:
        pub.close()
    plant.wait_anchored(sent, timeout=90)
    with store.reader(plant.gateway.db) as conn:
        counters = [r.counter for r in store.readings(conn)]
    assert sorted(counters) == list(range(1, sent + 1)), "a reading is missing or stored twice"
    chain = verified_chain(plant.state / "gateway.db", GATEWAY, gateway_key(plant), plant.suite)
    assert sum(b.header.reading_count for b in chain) == sent
    assert chain[-1].header.height == len(chain) - 1


@EVERY_SUITE
def test_root_outage_then_recovery_loses_nothing_and_keeps_order(plant: Plant) -> None:
    """Root down: the gateway keeps ingesting and chaining; when it returns, every block anchors, in order."""
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for _ in range(30):
            pub.publish("edgeroot/readings/pump", plant.reading())
        plant.wait_anchored(30)
        plant.system.stop("root")
        for _ in range(120):
            pub.publish("edgeroot/readings/pump", plant.reading())

        # Wait for the condition, not for a time: every reading stored and chained, sync backing off.
        def stored_chained_and_backing_off() -> bool:
            st = store.status(plant.state / "gateway.db")
            sync = httpx.get(f"{plant.http}/healthz").json()["sync"]
            return bool(st["readings"] == 150 and st["blocks"]["chained"] >= 3 and sync == "backing off")

        wait_until("150 readings stored, 3 blocks chained, sync backing off", stored_chained_and_backing_off)
        plant.system.start("root")
        plant.wait_anchored(150, timeout=90)
    finally:
        pub.close()
    with store.reader(plant.gateway.db) as conn:
        indexes = [b.log_index for b in store.blocks(conn)]
    assert all(i is not None for i in indexes) and indexes == sorted(indexes), "anchored out of order"


def test_systemd_notify_reload_and_clean_stop(plant: Plant, tmp_path: Path) -> None:
    """READY=1 once up, WATCHDOG=1 and STATUS= while running, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on
    SIGTERM, over a real notify socket; the process exits 0 with the open block closed."""
    notify = NotifySocket(tmp_path)
    plant.start(env=notify.env(watchdog_s=1.0))
    assert plant.proc is not None
    notify.collect(1.5)
    pub = Publisher(*plant.broker)
    pub.publish("edgeroot/readings/pump", plant.reading())
    pub.close()
    plant.proc.send_signal(signal.SIGHUP)
    notify.collect(1.5)
    code = plant.stop()
    notify.collect(0.5)
    notify.close()
    text = notify.text
    assert "READY=1" in text and "WATCHDOG=1" in text and "STATUS=running" in text
    assert "RELOADING=1" in text and "STOPPING=1" in text
    assert text.index("READY=1") < text.index("WATCHDOG=1") < text.index("STOPPING=1")
    assert code == 0
    st = store.status(plant.state / "gateway.db")
    assert st["readings"] == 1 and st["unchained_readings"] == 0


def test_broker_restart_reconnects_within_five_seconds(plant: Plant, tmp_path: Path) -> None:
    """A broker restart: the gateway reconnects by itself within 5 s and keeps receiving."""
    from tests.mqtt_harness import Broker

    broker = Broker(tmp_path)
    broker.start()
    configure(plant.gateway.config, {"connector": [{"port": broker.port}]})
    try:
        plant.start()
        broker.stop()
        time.sleep(0.5)
        broker.start()
        restarted = time.monotonic()
        while httpx.get(f"{plant.http}/healthz").json()["connectors"].get("MqttConnector[0]") != "connected":
            assert time.monotonic() - restarted < 5, "did not reconnect within 5 s"
            time.sleep(0.05)
        pub = Publisher("127.0.0.1", broker.port)
        pub.publish("edgeroot/readings/pump", plant.reading())
        pub.close()
        wait_until("the reading stored", lambda: plant.gateway.status()["readings"] >= 1, timeout=10)
    finally:
        if plant.proc is not None:
            plant.stop()
        broker.stop()


@pytest.mark.parametrize("plant", ["p256", "sm2"], indirect=True)
def test_unprovisioned_device_key_comes_from_the_registry_with_proofs(plant: Plant, tmp_path: Path) -> None:
    """A device known only to the root's registry: its key (P-256 or SM2) is fetched and verified, its
    readings are stored (the first included), and the cached resolution with proofs is served while the
    root is down."""
    configure(plant.gateway.config, {"devices": {DEVICE: None}})
    stranger = CoseSigner("88.123.99/UNREGISTERED", generate_p256())
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for _ in range(20):
            pub.publish("edgeroot/readings/pump", plant.reading())
        pub.publish(
            "edgeroot/readings/pump",
            envelope.encode_envelope(stranger, [{envelope.N: "x", envelope.V: 1}], 1),
        )
    finally:
        pub.close()
    plant.wait_anchored(20)
    with store.reader(plant.gateway.db) as conn:
        assert [r.counter for r in store.readings(conn)] == list(range(1, 21))
        assert store.device_key_origin(conn, DEVICE) == "registry"
        wait_until(
            "the unknown signer looked up",
            lambda: "88.123.99/UNREGISTERED" in store.cached_resolutions(conn),
            timeout=10,
            interval=0.1,
        )
        reasons = store.count_rejects_by_reason(conn)
    plant.system.stop("root")  # the root goes away; the cached proof is still served
    cached = httpx.get(f"{plant.http}/v1/resolve/{DEVICE}").json()
    assert cached["cached"] is True and cached["found"] is True
    from chain_lite.resolution import verify_resolution
    from rootclient.codecs import proof_from_json

    proof = proof_from_json(DEVICE, cached["proof"])
    verified = plant.root.policy().verify_checkpoint(proof.receipt.checkpoint)
    assert verify_resolution(proof, verified).record is not None
    # The stranger only: the pump's first readings were held during its lookup, not rejected (issue 12).
    assert reasons.get("unknown-device", 0) == 1


@EVERY_SUITE
def test_a_rewritten_anchored_block_is_refused_and_kept_as_evidence(plant: Plant) -> None:
    """If the gateway's own chain is rewritten after anchoring (a tampered or restored-from-old-backup
    state), the root refuses the new block at a known height and the gateway stores evidence, stops
    syncing and reports it in status, health and metrics. Here the operator restores a backup taken
    before block 0: the next block 0 the gateway signs is not the one the root logged."""
    plant.start()
    plant.stop()
    backup = plant.state.parent / "backup"
    backup.mkdir()
    for part in plant.state.glob("gateway.db*"):  # the file and its WAL, as a file-level backup takes them
        shutil.copy2(part, backup / part.name)
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for _ in range(10):
            pub.publish("edgeroot/readings/pump", plant.reading())
        plant.wait_anchored(10)
        plant.stop()
        for part in plant.state.glob("gateway.db*"):
            part.unlink()
        for part in backup.iterdir():
            shutil.copy2(part, plant.state / part.name)
        plant.start()
        for _ in range(10):
            pub.publish("edgeroot/readings/pump", plant.reading())
        wait_until("evidence recorded", lambda: plant.gateway.status()["evidence"], timeout=30, interval=0.2)
    finally:
        pub.close()
    health = httpx.get(f"{plant.http}/healthz")
    assert health.status_code == 503 and "equivocation" in " ".join(health.json()["problems"])
    assert "edgeroot_gateway_equivocation_evidence 1.0" in httpx.get(f"{plant.http}/metrics").text
    status = subprocess.run(
        [*EDGEROOT, "gateway", "status", "--state", str(plant.state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 1 and "PROBLEMS" in status.stderr


def test_gateway_config_errors_name_the_key(tmp_path: Path) -> None:
    """A bad gateway.toml fails at start with the key path and the reason."""
    from edge.config import load
    from edge.errors import ConfigError

    (tmp_path / "policy.txt").write_text("x")
    base = 'gateway = "88.1/GW"\nroot = "http://r"\n'
    cases = {
        'gateway = "88..1/GW"\nroot = "http://r"\n': "gateway",
        'gateway = "88.1/GW"\nroot = "ftp://r"\n': "root",
        base + 'mode = "mirror"\n': "mode",
        base + "[block]\nmax_readings = 0\n": "block.max_readings",
        base + '[block]\nmax_seconds = "5"\n': "block.max_seconds",
        base + '[[connector]]\ntype = "amqp"\n': "connector[0].type",
        base + '[[connector]]\ntype = "mqtt"\nport = 70000\n': "connector[0].port",
        base + '[[connector]]\ntype = "mqtt"\nqos = 2\n': "connector[0].qos",
        base + "colour = 1\n": "colour",
        base + '[devices]\n"not an id" = "k.pub"\n': "devices.not an id",
    }
    for text, key in cases.items():
        (tmp_path / "gateway.toml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load(tmp_path)
        assert info.value.key == key, (text, str(info.value))
    (tmp_path / "policy.txt").unlink()
    (tmp_path / "gateway.toml").write_text(base)
    with pytest.raises(ConfigError, match="policy"):
        load(tmp_path)
