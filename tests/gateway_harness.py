"""A plant for tests: a root node with a witness, a registered gateway and device, and the gateway
as a real `edgeroot gateway run` process on a real broker, with CoAP too."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from chain_lite import envelope
from chain_lite.block import SignedBlock, check_body, verify_chain
from chain_lite.cose import CoseSigner
from chain_lite.keys import PublicKey, generate_p256, load_private_pem, private_pem, public_pem
from chain_lite.registry import Value, pubkey_value
from edge import store
from tests.root_harness import RootUnderTest, free_port, running_root

EDGEROOT = [sys.executable, "-m", "edgeroot"]
GATEWAY = "88.123.99/GW-1"
DEVICE = "88.123.99/PUMP-0042"


def cli(*args: str | Path) -> dict[str, object]:
    out = subprocess.run(
        [*EDGEROOT, *map(str, args), "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@dataclass
class Plant:
    root: RootUnderTest
    state: Path
    device: CoseSigner
    http: str
    coap_port: int
    broker: tuple[str, int]
    proc: subprocess.Popen[bytes] | None = None
    counter: int = 0

    def start(self, env: dict[str, str] | None = None) -> None:
        with (self.state / "gateway.log").open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [*EDGEROOT, "gateway", "run", "--state", str(self.state)], stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, (self.state / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.http}/healthz", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def reading(self) -> bytes:
        self.counter += 1
        return envelope.encode_envelope(
            self.device, [{envelope.N: "flow", envelope.V: float(self.counter)}], self.counter
        )

    def db(self) -> object:
        return store.connect(self.state / "gateway.db")

    def wait_anchored(self, readings: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = store.status(self.state / "gateway.db")
            if st["readings"] >= readings and st["unchained_readings"] == 0 and st["unanchored_blocks"] == 0:
                return
            assert time.monotonic() < deadline, f"not anchored in time: {st}"
            time.sleep(0.2)


@contextlib.contextmanager
def running_plant(tmp_path: Path, mqtt_broker: tuple[str, int]) -> Iterator[Plant]:
    with running_root(tmp_path / "r", f"sqlite:///{tmp_path / 'root.db'}") as root:
        admin = root.add_prefix("88.123.99")
        device_key = generate_p256()
        device = CoseSigner(DEVICE, device_key)
        (tmp_path / "device.key").write_bytes(private_pem(device_key))
        state = tmp_path / "gw"
        broker = f"{mqtt_broker[0]}:{mqtt_broker[1]}"
        cli("gateway", "init", "--state", state, "--root", root.url, "--id", GATEWAY,
            "--policy", root.policy_path, "--mqtt", broker)  # fmt: skip
        gw_key = load_private_pem((state / "gateway.key").read_bytes())
        with root.client() as c:
            values = [pubkey_value(300, gw_key.public_key()), Value(1, "GATEWAY", "string", GATEWAY)]
            c.write(root.write("create", GATEWAY, values, admin))
            values = [pubkey_value(300, device.public_key), Value(1, "DEVICE", "string", DEVICE)]
            c.write(root.write("create", DEVICE, values, admin))
        (state / "device.pub").write_bytes(public_pem(device.public_key))
        http_port, coap_port = free_port(), free_port()
        topic_client = f"gw-{os.getpid()}-{random.randrange(1 << 30)}"
        text = (state / "gateway.toml").read_text()
        text = text.replace("max_seconds = 5.0", "max_seconds = 0.3").replace(
            "max_readings = 1000", "max_readings = 40"
        )
        text = text.replace('listen = "127.0.0.1:8480"', f'listen = "127.0.0.1:{http_port}"')
        text = text.replace("interval_s = 0.5", "interval_s = 0.1")
        text = text.replace("max_request_kb = 900", "max_request_kb = 8")
        text = text.replace(
            '# "88.123.99/PUMP-0042" = "keys/88.123.99_PUMP-0042.pub"', f'"{DEVICE}" = "device.pub"'
        )
        text = text.replace('client_id = "edgeroot-88.123.99_GW-1"', f'client_id = "{topic_client}"')
        text += f'\n[[connector]]\ntype = "coap"\nhost = "127.0.0.1"\nport = {coap_port}\n'
        (state / "gateway.toml").write_text(text)
        p = Plant(root, state, device, f"http://127.0.0.1:{http_port}", coap_port, mqtt_broker)
        try:
            yield p
        finally:
            if p.proc is not None:
                p.stop(signal.SIGKILL)


def verified_chain(db: Path, gateway: str, key: PublicKey) -> list[SignedBlock]:
    """The store's blocks in order, each one's signature, link to the previous one and body checked."""
    conn = store.connect(db)
    try:
        raws = [bytes(r[0]) for r in conn.execute("SELECT raw FROM blocks ORDER BY height")]
        chain = verify_chain(raws, lambda kid: key if kid == gateway else None)
        query = "SELECT raw FROM readings WHERE block = ? ORDER BY id"
        for block in chain:
            check_body(block.header, [bytes(r[0]) for r in conn.execute(query, (block.header.height,))])
    finally:
        conn.close()
    return chain


def gateway_key(plant: Plant) -> PublicKey:
    return load_private_pem((plant.state / "gateway.key").read_bytes()).public_key()
