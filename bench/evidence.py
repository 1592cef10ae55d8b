"""`make bench` (evidence): export and offline verification of an evidence bundle (issue 15, D-073).

A root node, mosquitto and a gateway run as processes; one device's N readings are published over MQTT
QoS 1 and anchored; then

1. `edgeroot proof export` (a process: gateway pages, root key proofs, files, its own verification)
   is timed end to end: readings exported per second;
2. `chain_lite.evidence.verify_bundle` on the files already read (the pure verification, one core) and
   `edgeroot verify bundle` as a process (reading the files, start-up included): readings per second,
   medians of several runs;
3. beside them, in the same run, the raw limit: P-256 verifies per second (`cryptography`), since every
   reading costs one signature check plus an RFC 6962 proof and a SHA-256 of its files.

No target in the issue; the figures tell an operator how long a long window takes.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from limits import raw_p256_verify  # bench/ is on sys.path when run as a script
from paho.mqtt.enums import CallbackAPIVersion
from results import record

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.evidence import MANIFEST, parse_manifest, verify_bundle
from chain_lite.keys import load_private_pem
from chain_lite.policy import Policy
from edgeroot.system import EDGEROOT, System

N = int(os.environ.get("BENCH_EVIDENCE_READINGS", "10000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
GATEWAY = "88.123/GW-EVIDENCE"
DEVICE = "88.123/OVEN-1"
TOKEN = "bench-evidence-token"
PATIENCE = 600.0


def publish(port: int, key_pem: bytes) -> None:
    signer = CoseSigner(DEVICE, load_private_pem(key_pem))
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-evidence")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(
            "edgeroot/readings/oven",
            envelope.encode_envelope(signer, [{envelope.N: "temp", envelope.V: 180.0 + c % 7}], c),
            qos=1,
        )
        for c in range(1, N + 1)
    ]
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    raw = raw_p256_verify()
    with tempfile.TemporaryDirectory() as tmp, System(Path(tmp)) as system:
        root = system.init_root("bench.root", "88.123")
        system.start_root()
        broker = system.start_broker(persistence=False, mosquitto_only=True)
        gateway = system.init_gateway(
            GATEWAY,
            admin_key=root.admin_key,
            mqtt=(broker.host, broker.port),
            devices=[DEVICE],
            provision_locally=True,
            settings={"sync": {"max_blocks_per_s": 1000.0}, "http": {"token": TOKEN}},
        )
        system.start("gateway", timeout=60)
        publish(broker.port, gateway.device_keys[DEVICE].read_bytes())
        gateway.wait_anchored(N, timeout=PATIENCE, check=system.alive)
        token = Path(tmp, "token")
        token.write_text(TOKEN)
        out = Path(tmp, "bundle")
        start = time.perf_counter()
        subprocess.run(
            [*EDGEROOT, "proof", "export", "--gateway", gateway.http, "--token-file", str(token),
             "--root", root.url, "--device", DEVICE, "--from", "0", "--to", str(1 << 62),
             "--out", str(out), "--json"],
            check=True, capture_output=True, timeout=PATIENCE,
        )  # fmt: skip
        export_s = time.perf_counter() - start
        policy_file = root.policy_path
        system.stop_all()  # verification is offline
        pure, process = verify_rates(out, policy_file)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"raw P-256 verify: {raw:,.0f}/s; bundle {size:,} bytes = {size / N:,.0f} bytes/reading")
    print(f"export: {N} readings in {export_s:.2f} s = {N / export_s:,.0f} readings/s")
    print(f"verify (pure): {pure:,.0f} readings/s; verify bundle (process): {process:,.0f} readings/s")
    record("evidence", "raw P-256 verify (cryptography), same run", f"{raw:,.0f}/s")
    record(
        "evidence", f"proof export of {N} readings (process, end to end)", f"{N / export_s:,.0f} readings/s"
    )
    # Each reading's signature is verified once (plus a proof per block): raw P-256 verify bounds both.
    record(
        "evidence",
        "verify_bundle (pure, files in memory)",
        f"{pure:,.0f} readings/s = {pure / raw:.2f}x raw P-256",
    )
    record(
        "evidence",
        "edgeroot verify bundle (process, reads the files)",
        f"{process:,.0f} readings/s = {process / raw:.2f}x raw P-256",
    )
    record("evidence", "bundle size (files' bytes)", f"{size / N:,.0f} bytes/reading")


def verify_rates(out: Path, policy_file: Path) -> tuple[float, float]:
    """Readings verified per second: the pure verifier on files already read, and the CLI as a process;
    medians of ``RUNS`` and of 3 runs."""
    policy = Policy.parse(policy_file.read_bytes())
    manifest = parse_manifest((out / MANIFEST).read_bytes())
    files: dict[str, bytes | None] = {name: (out / name).read_bytes() for name in manifest.paths}
    pure = []
    for _ in range(RUNS):
        start = time.perf_counter()
        verify_bundle(manifest, files, policy)
        pure.append(len(manifest.readings) / (time.perf_counter() - start))
    process = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [*EDGEROOT, "verify", "bundle", str(out), "--policy", str(policy_file), "--json"],
            check=True, capture_output=True, timeout=PATIENCE,
        )  # fmt: skip
        process.append(len(manifest.readings) / (time.perf_counter() - start))
    return statistics.median(pure), statistics.median(process)


if __name__ == "__main__":
    print(f"evidence bench on {platform.node()}, {N} readings")
    main()
