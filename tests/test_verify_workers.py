"""Signature verification in worker processes (edge.verify_pool, D-081): the same verdicts, counters and
stored rows as the in-process path, in order; a worker killed mid-batch costs a retry, never an
acknowledgement of something unverified; workers that keep dying stop the ingest loop loudly."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiocoap
import cbor2
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, generate_sm2, public_der
from edge import config as gateway_config
from edge import store
from edge.errors import IngestStopped
from edge.ingest import Ingest
from edge.intake import WRONG_CONTENT_FORMAT, Outcome, encode_batch
from edge.verify_pool import (
    AUTO,
    VerificationUnavailable,
    VerifyItem,
    VerifyPool,
    WireItem,
    pool_size,
    verify_wire,
)
from edge.writer import Writer
from edgeroot.system import wait_until
from tests.gateway_harness import Plant

GATEWAY = "88.123.99/GW-1"
DEVICES = [f"88.123.99/PUMP-{i}" for i in range(4)]
STRANGER = "88.123.99/NOBODY"


def verify_at_gate(gate: Path, items: list[WireItem]) -> list[str | None]:
    """A worker task: say it holds a chunk (``gate/busy-PID``), wait until ``gate/open`` exists, then
    verify as usual. A worker is then certainly mid-chunk when the test kills it, however fast it verifies
    (a kill timed by the worker's CPU ticks came after its chunk was done 13 times in 20 on a fast host)."""
    (gate / f"busy-{os.getpid()}").touch()
    while not (gate / "open").exists():
        time.sleep(0.005)
    return verify_wire(items)


def die(items: list[WireItem]) -> list[str | None]:
    """A worker task that kills its worker (an input that crashes every worker)."""
    os._exit(3)


@pytest.fixture(scope="module")
def signers() -> dict[str, CoseSigner]:
    return {d: CoseSigner(d, generate_p256()) for d in [*DEVICES, STRANGER]}


@pytest.fixture
def pool() -> Iterator[VerifyPool]:
    p = VerifyPool(2, inline_below=1)
    p.start()
    yield p
    p.stop()


def make_writer(path: Path, signers: dict[str, CoseSigner], pool: VerifyPool | None) -> Writer:
    store.create_schema(path)
    conn = store.connect(path)
    for d in DEVICES:
        conn.execute(
            "INSERT INTO devices (identifier, key, origin) VALUES (?, ?, 'local')",
            (d, public_der(signers[d].public_key)),
        )
    conn.close()
    writer = Writer(
        path, CoseSigner(GATEWAY, generate_p256()), max_readings=100, max_seconds=3600,
        disk_budget_bytes=1 << 30, retention_days=30, pool=pool,
    )  # fmt: skip
    writer.open()
    return writer


def reading(signer: CoseSigner, counter: int, value: float = 1.0) -> bytes:
    return envelope.encode_envelope(signer, [{envelope.N: "flow", envelope.V: value}], counter)


def bad_signature(raw: bytes) -> bytes:
    """The same envelope with one bit of its signature (the last bytes) flipped."""
    return raw[:-1] + bytes([raw[-1] ^ 1])


def mixed_inputs(signers: dict[str, CoseSigner], seed: int) -> list[tuple[bytes, str | None]]:
    """Every kind of verdict, shuffled within a realistic order: valid readings with gaps, resends
    (duplicates), replays, bad signatures, unknown devices, malformed and oversize input, a connector's
    own rejection; (raw, reject) pairs."""
    rng = random.Random(seed)
    counters = dict.fromkeys(DEVICES, 0)
    sent: list[bytes] = []
    out: list[tuple[bytes, str | None]] = []
    for _ in range(400):
        device = rng.choice(DEVICES)
        kind = rng.choices(
            [
                "valid",
                "gap",
                "resend",
                "replay",
                "badsig",
                "unknown",
                "malformed",
                "oversize",
                "reject",
                "jump",
            ],
            weights=[50, 5, 5, 5, 8, 5, 5, 2, 2, 2],
        )[0]
        if kind in ("valid", "gap", "badsig"):
            counters[device] += 1 if kind != "gap" else rng.randint(2, 5)
            raw = reading(signers[device], counters[device], rng.random())
            if kind == "badsig":
                raw = bad_signature(raw)
            else:
                sent.append(raw)
            out.append((raw, None))
        elif kind == "resend" and sent:
            out.append((rng.choice(sent), None))
        elif kind == "replay" and counters[device]:
            out.append((reading(signers[device], rng.randint(1, counters[device]), -5.0), None))
        elif kind == "unknown":
            out.append((reading(signers[STRANGER], rng.randint(1, 9)), None))
        elif kind == "malformed":
            good = reading(signers[device], 99)
            out.append((good[: rng.randint(1, len(good) - 1)], None))
        elif kind == "oversize":
            out.append((b"\xd2" + bytes(envelope.MAX_ENVELOPE_SIZE), None))
        elif kind == "reject":
            out.append((b"not cose", WRONG_CONTENT_FORMAT))
        elif kind == "jump":
            out.append((reading(signers[device], envelope.MAX_COUNTER), None))
    return out


async def ingest_all(
    writer: Writer, inputs: list[tuple[bytes, str | None]], max_batch: int
) -> tuple[list[Outcome], Ingest]:
    ingest = Ingest(writer, max_batch=max_batch)
    runner = asyncio.create_task(ingest.run())
    outcomes: list[Outcome] = []
    # In submission-sized slices, as connectors submit bursts; a reject= slice on its own.
    at = 0
    while at < len(inputs):
        reject = inputs[at][1]
        end = at + 1
        while end < len(inputs) and end - at < 7 and inputs[end][1] == reject:
            end += 1
        outcomes += await ingest.submit_many([(raw, "test") for raw, _ in inputs[at:end]], reject=reject)
        at = end
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    return outcomes, ingest


def stored_rows(path: Path) -> tuple[list[tuple[object, ...]], ...]:
    conn = store.connect(path)
    try:
        return (
            conn.execute("SELECT signer, subject, counter, raw FROM readings ORDER BY id").fetchall(),
            conn.execute("SELECT source, reason, raw FROM quarantine ORDER BY id").fetchall(),
            conn.execute("SELECT signer, expected, got FROM gaps ORDER BY rowid").fetchall(),
            conn.execute("SELECT signer, last FROM counters ORDER BY signer").fetchall(),
        )
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_workers_and_in_process_give_identical_verdicts_counters_and_rows(
    tmp_path: Path, signers: dict[str, CoseSigner], pool: VerifyPool, seed: int
) -> None:
    inputs = mixed_inputs(signers, seed)
    here = make_writer(tmp_path / "here.db", signers, None)
    there = make_writer(tmp_path / "workers.db", signers, pool)
    out_here, ingest_here = asyncio.run(ingest_all(here, inputs, max_batch=64))
    out_there, ingest_there = asyncio.run(ingest_all(there, inputs, max_batch=64))
    assert out_there == out_here
    assert ingest_there.stats == ingest_here.stats
    assert there.verifier.counters == here.verifier.counters
    assert stored_rows(tmp_path / "workers.db") == stored_rows(tmp_path / "here.db")
    # The mix really holds every verdict (so the comparison covers them), and the workers did the checks.
    reasons = {o.reason for o in out_here}
    assert {None, "duplicate", "replay", "bad-signature", "unknown-device", "malformed", "oversize",
            "counter-jump", WRONG_CONTENT_FORMAT} <= reasons  # fmt: skip
    assert ingest_there.stats.batches > 10 and pool.restarts == 0
    here.close()
    there.close()


def test_sm2_and_p256_envelopes_verify_in_the_workers(pool: VerifyPool) -> None:
    """Every suite a device may sign with is checked in a worker as on the writer thread (keys go over as
    DER and are loaded there); a forged SM2 signature is refused."""
    sm2 = CoseSigner("88.123.99/SM2-1", generate_sm2())
    p256 = CoseSigner("88.123.99/P256-1", generate_p256())
    items: list[VerifyItem] = []
    for c in range(1, 41):
        signer = sm2 if c % 2 else p256
        raw = reading(signer, c)
        if c == 7:
            raw = bad_signature(raw)
        items.append((envelope.decode_envelope(raw).sign1, public_der(signer.public_key)))
    results = pool.verify(items)
    assert [i for i, r in enumerate(results) if r is not None] == [6]


def test_pool_results_are_in_order_across_chunks(signers: dict[str, CoseSigner], pool: VerifyPool) -> None:
    """Chunks come back in submission order: one bad signature at a known place in a large batch."""
    device = signers[DEVICES[0]]
    der = public_der(device.public_key)
    msgs = [envelope.decode_envelope(reading(device, c)).sign1 for c in range(1, 301)]
    bad = 217
    msgs[bad] = envelope.decode_envelope(bad_signature(reading(device, bad + 1))).sign1
    results = pool.verify([(m, der) for m in msgs])
    assert [i for i, r in enumerate(results) if r is not None] == [bad]
    assert "signature" in str(results[bad])


def test_a_worker_killed_mid_batch_costs_a_retry_not_an_acknowledgement(
    tmp_path: Path, signers: dict[str, CoseSigner], pool: VerifyPool
) -> None:
    """A worker killed while it verifies: no submitter is answered before the batch is verified again by
    the restarted pool and committed; every reading is stored once, in order."""
    writer = make_writer(tmp_path / "gateway.db", signers, pool)
    raws = [reading(signers[DEVICES[c % 4]], c // 4 + 1) for c in range(2000)]
    victim = pool.pids()[0]
    gate = tmp_path / "gate"
    gate.mkdir()
    pool.task = functools.partial(verify_at_gate, gate)
    answered: list[list[Outcome]] = []

    async def main() -> None:
        ingest = Ingest(writer, max_batch=2000)
        runner = asyncio.create_task(ingest.run())
        answered.append(await ingest.submit_many([(r, "test") for r in raws]))
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    # The worker holds its chunk of this batch: kill it now, then let the others (and its successor) go.
    wait_until("the worker holds its chunk", (gate / f"busy-{victim}").exists)
    assert not answered, "answered before the batch was verified"
    os.kill(victim, signal.SIGKILL)
    (gate / "open").touch()
    thread.join(120)
    assert not thread.is_alive()
    assert pool.restarts == 1 and victim not in pool.pids() and len(pool.pids()) == 2
    assert [o.accepted for o in answered[0]] == [True] * len(raws)
    readings, quarantine, _, _ = stored_rows(tmp_path / "gateway.db")
    assert [row[3] for row in readings] == raws and quarantine == []
    writer.close()


def test_workers_that_keep_dying_stop_the_ingest_loop_with_a_clear_error(
    tmp_path: Path, signers: dict[str, CoseSigner]
) -> None:
    """Every worker dies on the batch: after the retries the loop stops with VerificationUnavailable (the
    gateway's Service exits non-zero with it), the submitter gets IngestStopped, nothing is stored."""
    pool = VerifyPool(2, inline_below=1, max_restarts=2)
    pool.start()
    pool.task = die
    writer = make_writer(tmp_path / "gateway.db", signers, pool)

    async def main() -> None:
        ingest = Ingest(writer)
        runner = asyncio.create_task(ingest.run())
        with pytest.raises(IngestStopped):
            await ingest.submit_many([(reading(signers[DEVICES[0]], c), "t") for c in range(1, 9)])
        with pytest.raises(VerificationUnavailable, match="died 3 times in a row"):
            await runner

    try:
        asyncio.run(main())
        assert pool.restarts == 2
        assert stored_rows(tmp_path / "gateway.db")[:2] == ([], [])
        assert writer.verifier.counters == {}
    finally:
        pool.stop()
        writer.close()


def test_pool_size_follows_the_cores_and_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert pool_size(AUTO) == 0  # one core: the in-process path
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert pool_size(AUTO) == 3
    assert pool_size(0) == 0 and pool_size(2) == 2
    with pytest.raises(ValueError, match="at least one worker"):
        VerifyPool(0)


def test_a_batch_in_process_verifies_small_batches_without_crossing(signers: dict[str, CoseSigner]) -> None:
    """Below ``inline_below`` the writer thread verifies (a stopped pool would refuse a crossing)."""
    pool = VerifyPool(2, inline_below=4)  # never started
    device = signers[DEVICES[1]]
    msg = envelope.decode_envelope(reading(device, 1)).sign1
    assert pool.verify([(msg, public_der(device.public_key))] * 3) == [None] * 3
    with pytest.raises(VerificationUnavailable, match="stopped"):
        pool.verify([(msg, public_der(device.public_key))] * 4)


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its parent counts)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" in status.read_text()
    except OSError:
        return True


def test_gateway_replaces_a_killed_worker_and_stops_cleanly_on_systemds_stop(plant: Plant) -> None:
    """The real gateway: its workers are its children; one SIGKILLed, the next batch is verified by the
    restarted pool and answered after durability; then SIGTERM to the gateway *and* its workers at once
    (systemd's stop of the control group) is one stop signal, a clean exit 0, nothing lost."""
    gateway_config.update(plant.state / "gateway.toml", {"verify": {"workers": 2}})  # the default is 0
    plant.start()
    assert plant.proc is not None
    gateway = plant.proc.pid
    workers = wait_until("the verification workers", lambda: children(gateway))
    os.kill(workers[0], signal.SIGKILL)
    # Idle, the pool notices nothing; the next batch finds the worker's pipe closed.
    wait_until("the worker dead", lambda: gone(workers[0]))
    readings = [plant.reading() for _ in range(20)]

    async def post() -> tuple[str, bytes]:
        ctx = await aiocoap.Context.create_client_context()
        try:
            uri = f"coap://127.0.0.1:{plant.coap_port}/readings"
            msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=encode_batch(readings))
            resp = await ctx.request(msg).response
            return str(resp.code), resp.payload
        finally:
            await ctx.shutdown()

    code, payload = asyncio.run(post())
    assert code == "2.04 Changed" and cbor2.loads(payload) == [None] * 20
    assert "starting the pool again" in plant.log()
    alive = children(gateway)
    assert len(alive) == len(workers) and workers[0] not in alive
    for pid in [gateway, *alive]:
        os.kill(pid, signal.SIGTERM)
    started = time.monotonic()
    assert plant.proc.wait(30) == 0, plant.log()
    assert time.monotonic() - started < 30
    log = plant.log()
    assert "second stop signal" not in log and "stopped, shutdown incomplete" not in log
    for pid in alive:
        assert gone(pid)
    with store.reader(plant.gateway.db) as conn:
        assert store.count_readings(conn) == 20


def test_workers_die_with_a_gateway_killed_outside_systemd(tmp_path: Path) -> None:
    """SIGKILL to the process that forked the pool (no systemd to kill its control group): its workers
    follow at once, so none keeps the state directory's lock (a copy of the flock descriptor) held."""
    script = (
        "import os, sys\n"
        "from edge.verify_pool import VerifyPool\n"
        "pool = VerifyPool(2)\n"
        "pool.start()\n"
        "print(*pool.pids(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(Path(f"/proc/{p}").exists() for p in workers)
        proc.kill()
        proc.wait(10)

    wait_until("the orphaned workers gone", lambda: all(gone(p) for p in workers))
