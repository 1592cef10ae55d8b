"""Modbus RTU polling through a real bridge process, against pymodbus's own server on a pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncSerialServer

from chain_lite.cose import ALG_ES256, ALG_SM2
from chain_lite.envelope import decode_envelope, resolve
from chain_lite.keys import generate, generate_p256, private_pem, public_pem
from chain_lite.registry import Value, pubkey_value
from edge import store
from edge.store import StoredReading
from edgeroot.system import configure, wait_until
from firmware_bridge.modbus import decode_registers
from tests.gateway_harness import EDGEROOT, Plant
from tests.serial_harness import null_modem

BRIDGE = "88.123.99/BRIDGE-1"
FLOW_METER = "88.123.99/FLOW-7"
BOILER = "88.123.99/BOILER-2"


@contextlib.contextmanager
def modbus_slave_on_a_serial_line() -> Iterator[str]:
    """pymodbus's RTU server (unit 1 only) on one pty, a null-modem relay to another; yields the
    path the bridge opens."""

    def serve(server_path: str) -> None:
        # Holding registers from address 0: 215 (uint16), then 0x4148 0x0000 = 12.5 as float32.
        block = ModbusSequentialDataBlock(1, [215, 0, 0x4148, 0x0000])
        context = ModbusServerContext(devices={1: ModbusDeviceContext(hr=block)}, single=False)
        with contextlib.suppress(Exception):
            asyncio.run(
                StartAsyncSerialServer(
                    context=context, port=server_path, baudrate=19200, framer=FramerType.RTU
                )
            )

    with null_modem() as (server_path, bridge_path):
        threading.Thread(target=serve, args=(server_path,), daemon=True).start()
        time.sleep(0.5)
        yield bridge_path


def test_register_decoding() -> None:
    """Register words decode by type, big-endian word order."""
    assert decode_registers("uint16", [215]) == 215
    assert decode_registers("int16", [0xFFFF]) == -1
    assert decode_registers("float32", [0x4148, 0x0000]) == 12.5
    assert decode_registers("int32", [0xFFFF, 0xFFFE]) == -2


@pytest.mark.parametrize("alg", ["p256", "sm2"])
def test_modbus_polls_become_bridge_attested_readings_and_a_dead_unit_stops_nothing(
    plant: Plant, tmp_path: Path, alg: str
) -> None:
    """Unit 1 answers, unit 2 never does: unit 1's readings keep arriving at the gateway, signed by the
    bridge (a P-256 or an SM2 key) with the measured device as subject; unit 2's failures are only
    counted and logged."""
    bridge_key = generate(alg)
    (tmp_path / "bridge.key").write_bytes(private_pem(bridge_key))
    (plant.state / "bridge.pub").write_bytes(public_pem(bridge_key.public_key()))
    configure(plant.gateway.config, {"devices": {BRIDGE: "bridge.pub"}})
    with plant.root.client() as c:
        admin = plant.root.admin_signer()
        values = [pubkey_value(300, bridge_key.public_key()), Value(1, "BRIDGE", "string", BRIDGE)]
        c.write(plant.root.write("create", BRIDGE, values, admin))
    plant.start()
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'mode = "modbus"\ngateway = "coap://127.0.0.1:{plant.coap_port}/readings"\nbaud = 19200\n'
        f'bridge_id = "{BRIDGE}"\nkey = "bridge.key"\ntimeout_s = 0.3\n'
        f'[[register]]\nunit = 1\naddress = 0\ntype = "uint16"\nscale = 0.1\nunit_of_measure = "Cel"\n'
        f'device = "{BOILER}"\nname = "temperature"\npoll_s = 0.2\n'
        f'[[register]]\nunit = 1\naddress = 2\ntype = "float32"\nunit_of_measure = "m3/h"\n'
        f'device = "{FLOW_METER}"\nname = "flow"\npoll_s = 0.2\n'
        f'[[register]]\nunit = 2\naddress = 0\ndevice = "{FLOW_METER}"\nname = "dead"\npoll_s = 0.2\n'
    )
    with modbus_slave_on_a_serial_line() as port:
        bridge = plant.system.daemon("bridge", "bridge", "run", "--port", port, "--config", config)
        bridge.start()
        try:

            def both_devices_read() -> list[StoredReading] | None:
                with store.reader(plant.gateway.db) as conn:
                    rows = store.readings(conn, BRIDGE)
                return rows if {BOILER, FLOW_METER} <= {r.subject for r in rows} and len(rows) >= 10 else None

            rows = wait_until("10 readings of the boiler and the flow meter", both_devices_read, interval=0.2)
        finally:
            bridge.stop(timeout=20)
    values = {}
    for row in rows:
        env = decode_envelope(row.raw)
        assert env.bridge_attested and env.signer == BRIDGE
        assert env.sign1.alg == {"p256": ALG_ES256, "sm2": ALG_SM2}[alg]
        rec = resolve(env.records)[0]
        values[rec["name"]] = (rec["value"], rec.get("unit"))
    assert values["temperature"] == (pytest.approx(21.5), "Cel")
    assert values["flow"] == (12.5, "m3/h")
    assert "dead" not in values
    assert "Modbus unit 2" in bridge.log_text()


def test_device_simulate_plays_a_modbus_slave(tmp_path: Path) -> None:
    """`edgeroot device simulate --modbus-slave` answers RTU reads with the given registers."""
    from pymodbus.client import AsyncModbusSerialClient

    cable = contextlib.ExitStack()
    slave_path, client_path = cable.enter_context(null_modem())
    proc = subprocess.Popen(
        [*EDGEROOT, "device", "simulate", "--modbus-slave", slave_path, "--unit", "3", "--registers", "7,8,9",
         "--seconds", "20", "--baud", "19200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    async def read() -> list[int]:
        client = AsyncModbusSerialClient(client_path, baudrate=19200, timeout=1, retries=0)
        await client.connect()
        try:
            for _ in range(20):
                try:
                    response = await client.read_holding_registers(0, count=3, device_id=3)
                except Exception:  # noqa: BLE001 (the slave may not listen yet)
                    await asyncio.sleep(0.3)
                    continue
                if not response.isError():
                    return list(response.registers)
            return []
        finally:
            client.close()

    try:
        assert asyncio.run(read()) == [7, 8, 9]
    finally:
        cable.close()
        proc.terminate()
        proc.wait(timeout=20)


def test_a_full_retry_queue_drops_the_oldest_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the gateway answers BUSY, readings wait; past the bound the oldest go, each one counted."""
    from chain_lite.cose import CoseSigner
    from firmware_bridge import modbus
    from firmware_bridge.forward import Verdict

    class Busy:
        async def send(self, envelope: bytes) -> Verdict:
            return Verdict("busy", "gateway away")

    monkeypatch.setattr(modbus, "MAX_RETRY_QUEUE", 3)
    poller = modbus.ModbusPoller(None, [], CoseSigner(BRIDGE, generate_p256()), Busy())  # type: ignore[arg-type]

    async def feed() -> None:
        for i in range(5):
            await poller.forward(bytes([i]))

    asyncio.run(feed())
    assert poller.stats.retry_queue == 3 and poller.stats.dropped == 2
    assert poller._retry == [b"\x02", b"\x03", b"\x04"]
