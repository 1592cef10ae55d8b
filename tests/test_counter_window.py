"""A device cannot lock itself out: counter jumps beyond `counters.max_jump` are refused as
`counter-jump`, and an operator resets a device's counter with `edgeroot gateway device reset-counter`
(audited in `gateway status`, safe whether the gateway runs or not: docs/decisions.md D-053)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiocoap
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.envelope import MAX_COUNTER
from chain_lite.keys import generate_p256, public_der
from edge import config as gateway_config
from edge import store
from edge.admission import COUNTER_WINDOW_DEFAULT
from edge.connectors.mqtt import DeviceAck, device_acks
from edge.errors import ConfigError
from edge.intake import Outcome, Submission
from edge.writer import Writer
from edgeroot.cli import main
from runtime.clock import now_ms
from tests.gateway_harness import EDGEROOT, Plant, cli

GATEWAY = "88.123.99/GW-1"
PUMP = "88.123.99/PUMP-1"


def reading(device: CoseSigner, counter: int) -> bytes:
    return envelope.encode_envelope(
        device, [{envelope.N: "temp", envelope.V: float(counter % 1000)}], counter
    )


def sub(raw: bytes) -> Submission:
    return Submission(raw, "test", now_ms())


@pytest.fixture
def desk(tmp_path: Path) -> tuple[Path, CoseSigner, Callable[..., Writer]]:
    """A store with one provisioned device, and a way to open a writer on it (with a window of choice)."""
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    gateway = CoseSigner(GATEWAY, generate_p256())
    device = CoseSigner(PUMP, generate_p256())
    store.replace_local_devices(path, {PUMP: public_der(device.public_key)})  # as from [devices]

    def open_writer(**window: int) -> Writer:
        w = Writer(
            path,
            gateway,
            max_readings=10,
            max_seconds=3600,
            disk_budget_bytes=1 << 30,
            retention_days=30,
            **window,
        )
        w.open()
        return w

    return path, device, open_writer


def reasons(writer: Writer, device: CoseSigner, *counters: int) -> list[str | None]:
    return [o.reason for o in writer.process([sub(reading(device, c)) for c in counters])]


def test_a_counter_of_2_pow_63_minus_1_is_refused_and_the_device_goes_on(
    desk: tuple[Path, CoseSigner, Callable[..., Writer]],
) -> None:
    """With the default window, one reading at the largest counter is quarantined as counter-jump instead
    of locking the device out: its next readings are stored."""
    path, device, open_writer = desk
    writer = open_writer()
    assert reasons(writer, device, 1, MAX_COUNTER, 2, 3) == [None, "counter-jump", None, None]
    assert writer.verifier.counters[PUMP] == 3
    with store.reader(path) as conn:
        assert store.count_rejects_by_reason(conn) == {"counter-jump": 1}
        assert [r.counter for r in store.readings(conn)] == [1, 2, 3]


def test_the_window_bounds_each_jump_and_a_first_reading_counts_from_zero(
    desk: tuple[Path, CoseSigner, Callable[..., Writer]],
) -> None:
    """A first reading may be at most `max_jump` above 0; later ones at most `max_jump` above the last
    accepted. A jump inside the window is stored and recorded as a gap, as before."""
    path, device, open_writer = desk
    writer = open_writer(counter_window=100)
    assert reasons(writer, device, 101, 100, 201, 200, 301) == [
        "counter-jump", None, "counter-jump", None, "counter-jump",
    ]  # fmt: skip
    with store.reader(path) as conn:
        assert store.gaps(conn) == [(101, 200)]
    outcome = writer.process([sub(reading(device, 1000))])[0]
    assert (outcome.accepted, outcome.durable) == (False, True)
    assert outcome.detail == f"{PUMP} counter 1000 is 800 above the last accepted 200 (counters.max_jump 100)"


def test_the_default_window_admits_a_modbus_bridge_counter() -> None:
    """Bridge-attested Modbus counters are microseconds since the epoch (D-034): a bridge's first reading
    must fit in the default window for the next two centuries."""
    year_2200_us = 7_258_118_400 * 1_000_000
    assert year_2200_us < COUNTER_WINDOW_DEFAULT < MAX_COUNTER // 100


def test_counters_max_jump_is_a_declared_key_with_bounds(tmp_path: Path) -> None:
    """`[counters] max_jump` loads from gateway.toml, defaults to the declared window, refuses 0."""
    (tmp_path / "policy.txt").write_text("x")
    base = {"gateway": GATEWAY, "root": "http://127.0.0.1:8470"}
    (tmp_path / "gateway.toml").write_text(gateway_config.render(base))
    assert gateway_config.load(tmp_path).counter_window == COUNTER_WINDOW_DEFAULT
    (tmp_path / "gateway.toml").write_text(gateway_config.render({**base, "counters": {"max_jump": 1000}}))
    assert gateway_config.load(tmp_path).counter_window == 1000
    (tmp_path / "gateway.toml").write_text(gateway_config.render(base).replace(
        f"max_jump = {COUNTER_WINDOW_DEFAULT}", "max_jump = 0"
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=r"counters\.max_jump"):
        gateway_config.load(tmp_path)


def test_reset_requested_while_the_writer_runs_applies_before_the_next_reading(
    desk: tuple[Path, CoseSigner, Callable[..., Writer]], caplog: pytest.LogCaptureFixture
) -> None:
    """A device locked out by a huge (in-window) counter: the reset, requested through the file while the
    writer holds its counters in memory, is applied and logged before the next reading is judged, and
    the audit trail records who asked, why, and what the counter was."""
    path, device, open_writer = desk
    writer = open_writer()
    assert reasons(writer, device, 1, 10**15, 2) == [None, None, "replay"]
    request = store.request_counter_reset(
        path, PUMP, None, by="alice", reason="firmware bug FW-12", at_ms=now_ms()
    )
    assert (request.signer, request.to, request.applied_ms, request.previous) == (PUMP, None, None, 10**15)
    assert store.read_status(path).counter_resets[0].applied_ms is None  # pending
    with caplog.at_level(logging.WARNING, logger="edge.writer"):
        assert reasons(writer, device, 2, 3) == [None, None]
    assert f"counter of {PUMP} reset from 1000000000000000 (forgotten)" in caplog.text
    [done] = store.read_status(path).counter_resets
    assert (done.signer, done.to, done.previous, done.requested_by, done.reason) == (
        PUMP, None, 10**15, "alice", "firmware bug FW-12",
    )  # fmt: skip
    assert done.applied_ms is not None and done.applied_ms >= done.requested_ms
    with store.reader(path) as conn:
        assert store.last_counter(conn, PUMP) == 3


def test_reset_requested_while_the_gateway_is_stopped_applies_at_start(
    desk: tuple[Path, CoseSigner, Callable[..., Writer]],
) -> None:
    """Requested with no writer running: applied when the next writer opens; `--to N` keeps replay
    protection up to N."""
    path, device, open_writer = desk
    writer = open_writer()
    reasons(writer, device, 1, 10**15)
    writer.close()
    store.request_counter_reset(path, PUMP, 5, by="bob", reason="", at_ms=now_ms())
    writer = open_writer()
    assert writer.verifier.counters[PUMP] == 5
    assert store.read_status(path).counter_resets[0].applied_ms is not None
    assert reasons(writer, device, 5, 6) == ["replay", None]


def test_a_failed_commit_leaves_the_reset_pending(
    desk: tuple[Path, CoseSigner, Callable[..., Writer]],
) -> None:
    """The reset is applied in the batch's transaction: if that fails, the reset waits for the next one."""
    path, device, open_writer = desk
    writer = open_writer()
    reasons(writer, device, 1, 10**15)
    store.request_counter_reset(path, PUMP, None, by="carol", reason="", at_ms=now_ms())
    conn = store.connect(path)
    conn.execute("DROP TABLE gaps")  # the next batch has a gap, so its transaction fails
    with pytest.raises(sqlite3.OperationalError, match="gaps"):
        writer.process([sub(reading(device, 2)), sub(reading(device, 9))])
    assert writer.verifier.counters[PUMP] == 10**15
    assert [r.applied_ms for r in store.recent_counter_resets(conn)] == [None]


def test_reset_counter_command_with_the_gateway_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway device reset-counter` records the request, shows it in `gateway status` (JSON too), and
    refuses an identifier without a stored counter unless given --to."""
    state = tmp_path / "gw"
    assert (
        main(["gateway", "init", "--state", str(state), "--root", "http://127.0.0.1:1", "--id", GATEWAY]) == 0
    )
    (state / "policy.txt").write_text("not read here\n")
    toml = state / "gateway.toml"
    toml.write_text(toml.read_text().replace('listen = "127.0.0.1:8480"', 'listen = "127.0.0.1:9"'))
    store.create_schema(state / "gateway.db")
    conn = store.connect(state / "gateway.db")
    conn.execute("INSERT INTO counters (signer, last) VALUES (?, ?)", (PUMP, MAX_COUNTER))
    conn.close()
    capsys.readouterr()

    argv = ["gateway", "device", "reset-counter", PUMP, "--state", str(state)]
    assert main([*argv, "--reason", "bad firmware", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["signer"] == PUMP and out["previous"] == MAX_COUNTER and out["to"] is None
    assert out["applied"] is False

    # A stopped gateway is reported as such (exit 1, the exit-code rule), with what its store says.
    assert main(["gateway", "status", "--state", str(state), "--json"]) == 1
    [reset] = json.loads(capsys.readouterr().out)["counter_resets"]
    assert {k: reset[k] for k in ("signer", "to", "previous", "reason", "applied_ms")} == {
        "signer": PUMP, "to": None, "previous": MAX_COUNTER, "reason": "bad firmware", "applied_ms": None,
    }  # fmt: skip
    assert reset["requested_by"]

    assert (
        main(["gateway", "device", "reset-counter", "88.123.99/OTHER", "--state", str(state), "--json"]) == 2
    )
    assert "no counter is stored for 88.123.99/OTHER" in capsys.readouterr().out
    assert (
        main(["gateway", "device", "reset-counter", "88.123.99/OTHER", "--to", "7", "--state", str(state)])
        == 0
    )


def test_running_gateway_refuses_a_jump_and_picks_up_a_reset(plant: Plant) -> None:
    """End to end over CoAP: 2^63-1 gets 4.00 counter-jump; a device locked out by an in-window jump is
    let back in by `edgeroot gateway device reset-counter` while the gateway runs, and status shows it."""
    plant.start()

    async def post(payloads: list[bytes]) -> list[str]:
        ctx = await aiocoap.Context.create_client_context()
        out = []
        for payload in payloads:
            msg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{plant.coap_port}/readings")
            msg.opt.content_format = 18
            msg.payload = payload
            resp = await ctx.request(msg).response
            out.append(f"{str(resp.code)[:4]} {resp.payload.decode()}".strip())
        await ctx.shutdown()
        return out

    answers = asyncio.run(post([reading(plant.device, 1), reading(plant.device, MAX_COUNTER)]))
    assert answers[0] == "2.04" and answers[1].startswith("4.00 counter-jump"), answers
    answers = asyncio.run(post([reading(plant.device, 10**15), reading(plant.device, 2)]))
    assert answers[0] == "2.04" and answers[1].startswith("4.00 replay"), answers

    done = subprocess.run(
        [*EDGEROOT, "gateway", "device", "reset-counter", plant.device.kid, "--to", "1",
         "--reason", "firmware bug", "--state", str(plant.state), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["previous"] == 10**15
    assert asyncio.run(post([reading(plant.device, 2)])) == ["2.04"]
    status = cli("gateway", "status", "--state", plant.state)
    assert status["rejects"] == {"counter-jump": 1, "replay": 1}
    [reset] = status["counter_resets"]  # type: ignore[misc]
    assert reset["to"] == 1 and reset["previous"] == 10**15 and reset["applied_ms"] is not None
    assert "counter of " + plant.device.kid + " reset from 1000000000000000 to 1" in plant.log()


def test_a_counter_jump_is_a_rejection_the_mqtt_end_to_end_ack_lists() -> None:
    """counter-jump is decided after the signature check, so a device on MQTT end-to-end acks is told to
    drop that reading (docs/formats.md §19) instead of resending it for ever."""
    device = CoseSigner(PUMP, generate_p256())
    burst = [reading(device, 1), reading(device, MAX_COUNTER)]
    outcomes = [Outcome(True, True), Outcome(False, True, "counter-jump", "too far")]
    assert device_acks(burst, outcomes) == [DeviceAck(PUMP, (1,), ((MAX_COUNTER, "counter-jump"),))]
