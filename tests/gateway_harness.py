"""A plant for tests on the whole-system harness (:mod:`edgeroot.system`): a root node with a witness, a
registered gateway and device, the gateway as a real `edgeroot gateway run` process (started by the
test) on the session's broker, with CoAP too; every part in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chain_lite import envelope
from chain_lite.block import SignedBlock, check_body, verify_chain
from chain_lite.cose import CoseSigner
from chain_lite.keys import PublicKey, load_private_pem
from chain_lite.suite import SHA256, HashSuite
from edge import store
from edgeroot.system import EDGEROOT, GatewayNode, RootNode, System

GATEWAY = "88.123.99/GW-1"
DEVICE = "88.123.99/PUMP-0042"
EVERY_SUITE = pytest.mark.parametrize("plant", ["default", "sm"], indirect=True)
"""An end-to-end or fault test once per suite, through the ``plant`` fixture: ``default`` (P-256 device
and gateway, Ed25519 log and witness, SHA-256) and ``sm``, the all-SM deployment (SM2 device, gateway,
log and witness keys, SM3 log and blocks): issue 16's "the same end-to-end and fault tests"."""
ORIGIN = "root.test"
WITNESS = "witness.test"

__all__ = ["DEVICE", "EDGEROOT", "GATEWAY", "Plant", "cli", "gateway_key", "running_plant", "verified_chain"]


def cli(*args: str | Path) -> dict[str, object]:
    """An ``edgeroot`` command as its own process, as the operator runs it; its JSON answer."""
    out = subprocess.run(
        [*EDGEROOT, *map(str, args), "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@dataclass
class Plant:
    system: System
    root: RootNode
    gateway: GatewayNode
    device: CoseSigner
    counter: int = 0

    @property
    def state(self) -> Path:
        return self.gateway.state

    @property
    def http(self) -> str:
        return self.gateway.http

    @property
    def coap_port(self) -> int:
        return self.gateway.coap_port

    @property
    def broker(self) -> tuple[str, int]:
        return self.gateway.mqtt

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.system.daemons["gateway"].proc

    @property
    def device_key(self) -> Path:
        return self.gateway.device_keys[DEVICE]

    @property
    def suite(self) -> HashSuite:
        """The root log's hash (its policy's), which the gateway's blocks use."""
        return self.root.policy().logs[0].suite

    def start(self, env: dict[str, str] | None = None) -> None:
        self.system.start("gateway", env=env)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.system.stop("gateway", sig)

    def log(self) -> str:
        return self.system.daemons["gateway"].log_text()

    def reading(self) -> bytes:
        self.counter += 1
        return envelope.encode_envelope(
            self.device, [{envelope.N: "flow", envelope.V: float(self.counter)}], self.counter
        )

    def wait_anchored(self, readings: int, timeout: float = 60) -> None:
        self.gateway.wait_anchored(readings, timeout)


@contextlib.contextmanager
def running_plant(
    tmp_path: Path,
    mqtt_broker: tuple[str, int],
    suite: str = "default",
    device_alg: str = "p256",
    gateway_alg: str = "p256",
) -> Iterator[Plant]:
    """The plant with a root of ``suite`` (``root init --suite``); the gateway learns its hash from its
    policy. ``device_alg`` and ``gateway_alg`` are the device's and the gateway's key algorithms
    (``sm2``: 国密 keys)."""
    with System(tmp_path) as system:
        system.init_root(ORIGIN, "88.123", witness=WITNESS, interval_ms=50, suite=suite)
        root = system.start_root()
        admin = system.register_prefix("88.123.99")
        client_id = f"gw-{os.getpid()}-{random.randrange(1 << 30)}"  # a fresh MQTT session per test
        gateway = system.init_gateway(
            GATEWAY,
            admin_key=admin,
            mqtt=mqtt_broker,
            devices=[DEVICE],
            provision_locally=True,
            device_alg=device_alg,
            gateway_alg=gateway_alg,
            settings={
                "block": {"max_seconds": 0.3, "max_readings": 40},
                "sync": {"interval_s": 0.1, "max_request_kb": 8},
                "connector": [{"client_id": client_id}],
            },
        )
        yield Plant(system, root, gateway, gateway.device_signer(DEVICE))


def verified_chain(db: Path, gateway: str, key: PublicKey, suite: HashSuite = SHA256) -> list[SignedBlock]:
    """The store's blocks in order, each one's signature, link to the previous one and body checked;
    every block hashed with ``suite`` (the root log's)."""
    with store.reader(db) as conn:
        raws = [b.raw for b in store.blocks(conn)]
        chain = verify_chain(raws, lambda kid: key if kid == gateway else None, suite=suite)
        for block in chain:
            check_body(block.header, store.block_readings(conn, block.header.height))
    return chain


def gateway_key(plant: Plant) -> PublicKey:
    return load_private_pem((plant.state / "gateway.key").read_bytes()).public_key()
