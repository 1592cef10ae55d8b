"""Gateway block sync over real HTTP: linkage, idempotency, fork evidence, replicate checks, receipts.

Every test runs once per log suite (``root init --suite``): ``default`` (P-256 gateway and device, SHA-256
blocks, Ed25519 log) and ``sm``, an all-SM deployment (SM2 gateway and device, SM3 blocks, SM2 + SM3 log).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chain_lite import envelope
from chain_lite.block import GENESIS_PREV, SignedBlock, build_header, sign_block
from chain_lite.cose import CoseSigner
from chain_lite.keys import PrivateKey, generate
from chain_lite.log_leaf import block_leaf
from chain_lite.receipt import verify_receipt
from chain_lite.registry import Value, pubkey_value
from chain_lite.suite import SM3
from resolver.config import load
from resolver.db import Database
from rootclient.codecs import block_batch
from tests.root_harness import RootUnderTest

GATEWAY = "88.123.99/GW-1"
DEVICE = "88.123.99/PUMP-0042"


@pytest.fixture
def root(any_suite_root: RootUnderTest) -> RootUnderTest:
    """This module's root: one per log suite (conftest's ``any_suite_root``) and database."""
    return any_suite_root


class Plant:
    """A registered gateway and device that make signed blocks, with the keys and hash of the root's suite
    (SM2 keys and SM3 blocks for an SM3 log: the all-SM deployment of issue 16)."""

    def __init__(self, root: RootUnderTest) -> None:
        self.suite = root.policy.logs[0].suite
        self.alg = "sm2" if self.suite is SM3 else "p256"
        admin = root.add_prefix("88.123.99")
        self.gateway = CoseSigner(GATEWAY, self.new_key())
        self.device = CoseSigner(DEVICE, self.new_key())
        with root.client() as c:
            for ident, signer, kind in ((GATEWAY, self.gateway, "GATEWAY"), (DEVICE, self.device, "DEVICE")):
                values = [pubkey_value(300, signer.public_key), Value(1, kind, "string", ident)]
                c.write(root.write("create", ident, values, admin))
        self.counter = 0
        self.blocks: list[SignedBlock] = []
        self.bodies: list[list[bytes]] = []

    def new_key(self) -> PrivateKey:
        return generate(self.alg)

    def readings(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(
                envelope.encode_envelope(self.device, [{envelope.N: "temp", envelope.V: 20.5}], self.counter)
            )
        return out

    def next_block(self, n: int = 3) -> tuple[SignedBlock, list[bytes]]:
        body = self.readings(n)
        prev = self.blocks[-1].block_id if self.blocks else GENESIS_PREV
        envs = [envelope.decode_envelope(e) for e in body]
        time_ms = 1_700_000_000_000 + len(self.blocks)
        header = build_header(GATEWAY, len(self.blocks), prev, envs, time_ms, suite=self.suite)
        block = sign_block(header, self.gateway)
        self.blocks.append(block)
        self.bodies.append(body)
        return block, body


def _post(root: RootUnderTest, items: list[tuple[bytes, list[bytes] | None]]) -> httpx.Response:
    """The raw HTTP exchange (RootClient raises on refusals; these tests read the refusal bodies)."""
    return httpx.post(f"{root.url}/v1/gateways/blocks", json=block_batch(items))


def _receipt(root: RootUnderTest, block: SignedBlock, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    with root.client() as c:
        while True:
            info = c.block(block.block_id)
            if info.receipt_text is not None:
                return info.receipt_text
            assert time.monotonic() < deadline, "no receipt in time"
            time.sleep(0.02)


def test_blocks_replicated_in_order_get_receipts_that_verify(root: RootUnderTest, tmp_path: Path) -> None:
    """Replicated blocks are accepted in order; each receipt verifies, also with `edgeroot verify receipt`."""
    plant = Plant(root)
    items = [plant.next_block() for _ in range(3)]
    r = _post(root, [(b.raw, body) for b, body in items])
    assert r.status_code == 200, r.text
    assert [a["height"] for a in r.json()["accepted"]] == [0, 1, 2]
    for block, _ in items:
        receipt = _receipt(root, block)
        verified = verify_receipt(receipt.encode(), block_leaf(block.raw), root.policy, is_hash=False)
        assert verified.cosigners == ("witness.test",)
    last = items[-1][0]
    (tmp_path / "receipt.txt").write_text(_receipt(root, last))
    (tmp_path / "leaf.bin").write_bytes(block_leaf(last.raw))
    cli = subprocess.run(
        [sys.executable, "-m", "edgeroot", "verify", "receipt", str(tmp_path / "receipt.txt"),
         "--policy", str(root.policy_path), "--leaf", str(tmp_path / "leaf.bin")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    head = httpx.get(f"{root.url}/v1/gateways/{GATEWAY}/head").json()
    assert head == {"gateway": GATEWAY, "height": 2, "block_id": last.block_id.hex()}


def test_same_block_twice_is_idempotent(root: RootUnderTest) -> None:
    """Resubmitting an accepted block changes nothing and yields the same log index and receipt."""
    plant = Plant(root)
    block, body = plant.next_block()
    assert _post(root, [(block.raw, body)]).status_code == 200
    first = _receipt(root, block)
    again = _post(root, [(block.raw, body)])
    assert again.status_code == 200 and again.json()["accepted"][0]["duplicate"] is True
    root.settle()
    with root.client() as c:
        assert c.block(block.block_id).log_index == int(first.split("index ")[1].split("\n")[0])


def test_different_block_at_known_height_is_fork_evidence(root: RootUnderTest) -> None:
    """A rewritten block at an accepted height is refused (409) and kept as fork evidence."""
    plant = Plant(root)
    block, body = plant.next_block()
    assert _post(root, [(block.raw, body)]).status_code == 200
    rewrite_body = plant.readings(2)
    rewritten = [envelope.decode_envelope(e) for e in rewrite_body]
    header = build_header(GATEWAY, 0, GENESIS_PREV, rewritten, 1, suite=plant.suite)
    rewrite = sign_block(header, plant.gateway)
    r = _post(root, [(rewrite.raw, rewrite_body)])
    assert r.status_code == 409 and "fork evidence" in r.json()["message"]
    db = Database(load(root.state).database)
    try:
        with db.transaction(write=False) as tx:
            rows = tx.all("SELECT block_id, conflicts_with FROM fork_evidence")
    finally:
        db.close()
    assert [(bytes(a), bytes(b)) for a, b in rows] == [(rewrite.block_id, block.block_id)]


def test_batch_stops_at_first_bad_block_and_keeps_earlier_ones(root: RootUnderTest) -> None:
    """A gap refuses the batch from that block on; the blocks before it stay accepted."""
    plant = Plant(root)
    b0, body0 = plant.next_block()
    b1, body1 = plant.next_block()
    b2, body2 = plant.next_block()
    r = _post(root, [(b0.raw, body0), (b2.raw, body2)])
    assert r.status_code == 422 and [a["height"] for a in r.json()["accepted"]] == [0]
    assert "height" in r.json()["message"]
    assert _post(root, [(b1.raw, body1), (b2.raw, body2)]).status_code == 200


@pytest.mark.parametrize(
    "fault", ["tampered reading", "missing reading", "unknown device", "unregistered gateway"]
)
def test_replicate_mode_checks_readings_and_registration(root: RootUnderTest, fault: str) -> None:
    """Replicate mode verifies every device signature and the readings root; gateways must be registered."""
    plant = Plant(root)
    block, body = plant.next_block(4)
    if fault == "tampered reading":
        body[1] = body[1][:-1] + bytes([body[1][-1] ^ 1])
    elif fault == "missing reading":
        body = body[:-1]
    elif fault == "unknown device":
        stranger = CoseSigner("88.123.99/STRANGER", plant.new_key())
        body = [envelope.encode_envelope(stranger, [{envelope.N: "x", envelope.V: 1}], 1)]
        envs = [envelope.decode_envelope(body[0])]
        header = build_header(GATEWAY, 0, GENESIS_PREV, envs, 5, suite=plant.suite)
        block = sign_block(header, plant.gateway)
    else:
        rogue = CoseSigner("88.123.99/GW-ROGUE", plant.new_key())
        header = build_header("88.123.99/GW-ROGUE", 0, GENESIS_PREV, [], 1, suite=plant.suite)
        block = sign_block(header, rogue)
        body = []
    r = _post(root, [(block.raw, body)])
    assert r.status_code == 422, r.text
    assert r.json()["accepted"] == []


@pytest.mark.parametrize(
    ("faults", "named"),
    [({1: "signature"}, "reading 1: "), ({1: "signature", 3: "stranger"}, "reading 3: ")],
    ids=["bad signature", "bad signature then unknown signer"],
)
def test_a_forged_reading_in_a_block_its_gateway_signed_is_refused_by_index(
    root: RootUnderTest, faults: dict[int, str], named: str
) -> None:
    """The gateway's signature and the readings root cover a reading whose own signature is bad: the
    device signatures are what refuse it, naming the reading. Every reading is decoded and its signer
    found before any signature is checked (D-153), so an unknown signer is named before a bad signature."""
    plant = Plant(root)
    body = plant.readings(4)
    for i, fault in faults.items():
        if fault == "signature":
            body[i] = body[i][:-1] + bytes([body[i][-1] ^ 1])
        else:
            stranger = CoseSigner("88.123.99/STRANGER", plant.new_key())
            body[i] = envelope.encode_envelope(stranger, [{envelope.N: "x", envelope.V: 1}], 1)
    envs = [envelope.decode_envelope(e) for e in body]
    header = build_header(GATEWAY, 0, GENESIS_PREV, envs, 1_700_000_000_000, suite=plant.suite)
    r = _post(root, [(sign_block(header, plant.gateway).raw, body)])
    assert r.status_code == 422, r.text
    assert r.json()["accepted"] == [] and named in r.json()["message"], r.text


def test_block_signed_by_another_key_is_refused(root: RootUnderTest) -> None:
    """A block claiming a registered gateway but signed by another key is refused."""
    plant = Plant(root)
    impostor = CoseSigner(GATEWAY, plant.new_key())
    block = sign_block(build_header(GATEWAY, 0, GENESIS_PREV, [], 1, suite=plant.suite), impostor)
    r = _post(root, [(block.raw, None)])
    assert r.status_code == 422 and "signature" in r.json()["message"]
    del plant


def test_anchor_mode_accepts_headers_only(root: RootUnderTest) -> None:
    """In anchor mode only headers travel; readings stay in the factory."""
    plant = Plant(root)
    block, _ = plant.next_block(5)
    assert _post(root, [(block.raw, None)]).status_code == 200
    _receipt(root, block)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"mode": "mirror", "blocks": [{"block": "AA=="}]},
        {"blocks": []},
        {"blocks": [{"block": "not base64!"}]},
        {"blocks": [{"block": "AAAA"}]},
        {"mode": "replicate", "blocks": [{"block": "AAAA"}]},
    ],
)
def test_malformed_sync_requests_get_json_errors(root: RootUnderTest, payload: object) -> None:
    """Malformed batches are refused with a JSON reason, never a crash."""
    r = httpx.post(f"{root.url}/v1/gateways/blocks", json=payload)
    assert r.status_code in (400, 422)
    assert r.json()["message"]
