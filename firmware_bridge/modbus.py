"""Modbus RTU polling: registers read with pymodbus become bridge-attested readings.

Each ``[[modbus.register]]`` names a unit id, a holding-register address, a type, a scale, a unit of
measure, the identifier of the measured device and a poll interval. A poll that answers becomes one
SenML record ``{n: name, u: unit, v: raw * scale, t: time}`` in an envelope **signed by the bridge's
own key**, with the measured device as the envelope's subject (header -70002, docs/formats.md §8):
a verifier can tell a bridge-attested reading from a device-signed one.

The RTU bus is half-duplex, so polls run one at a time; a unit that times out or answers with an
exception costs its own timeout, is counted and logged (rate-limited), and never stops the others.
Counters are the bridge's: microseconds since the Unix epoch, forced strictly increasing, so they stay
monotonic across restarts without a counter file (as long as the clock does not step back).

:func:`run_modbus` is the daemon, on :class:`runtime.service.Service`: READY=1 once polling starts,
WATCHDOG=1 and STATUS= from its loop, SIGHUP closes and reopens the port; stop, under one deadline
(:data:`STOP_DEADLINE_S`): finish the poll and forward under way, close the port, stop forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from firmware_bridge.forward import Forwarder
from runtime.ratelimit import RateLimitedLog
from runtime.service import Service, Step
from runtime.tomlconfig import Table

log = logging.getLogger(__name__)
TYPES = {
    "uint16": (1, ">H"),
    "int16": (1, ">h"),
    "uint32": (2, ">I"),
    "int32": (2, ">i"),
    "float32": (2, ">f"),
}
MAX_RETRY_QUEUE = 10_000
STOP_DEADLINE_S = 10.0
"""The whole shutdown's deadline: below ``TimeoutStopSec=15`` of edgeroot-bridge@.service."""


@dataclass(frozen=True, slots=True)
class Register:
    unit: int
    address: int
    type: str
    scale: float
    unit_of_measure: str
    device: str
    name: str
    poll_s: float


def registers_from(table: Table) -> list[Register]:
    """Validate ``[[register]]`` tables of a ``[modbus]`` section."""
    out = []
    for t in table.tables("register"):
        t.check_known({"unit", "address", "type", "scale", "unit_of_measure", "device", "name", "poll_s"})
        kind = t.get("type", str, "uint16")
        if kind not in TYPES:
            raise t.fail("type", f"must be one of {', '.join(TYPES)}")
        try:
            device = normalize(t.get("device", str, required=True))
        except ChainError as exc:
            raise t.fail("device", str(exc)) from exc
        out.append(
            Register(
                unit=t.number("unit", int, 1, 1, 247),
                address=t.number("address", int, 0, 0, 65535),
                type=kind,
                scale=t.get("scale", float, 1.0),
                unit_of_measure=t.get("unit_of_measure", str, ""),
                device=device,
                name=t.get("name", str, "value"),
                poll_s=t.number("poll_s", float, 1.0, 0.05, 86400),
            )
        )
    return out


def decode_registers(kind: str, words: list[int]) -> float:
    count, fmt = TYPES[kind]
    raw = b"".join(struct.pack(">H", w) for w in words[:count])
    return float(struct.unpack(fmt, raw)[0])


@dataclass
class PollStats:
    polls: int = 0
    readings: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    """By unit id: timeouts and exception responses."""
    retry_queue: int = 0
    nacked: int = 0
    """Readings the gateway rejected for good."""
    dropped: int = 0
    """Readings dropped because the retry queue was full (the gateway refused input that long)."""


class ModbusPoller:
    def __init__(
        self,
        client: AsyncModbusSerialClient,
        registers: list[Register],
        signer: CoseSigner,
        forwarder: Forwarder,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.registers = registers
        self.signer = signer
        self.forwarder = forwarder
        self.clock = clock
        self.stats = PollStats()
        self._counter = 0
        self._retry: list[bytes] = []
        self._warn = RateLimitedLog(log, 30.0)

    def next_counter(self) -> int:
        self._counter = max(self._counter + 1, time.time_ns() // 1000)
        return self._counter

    async def poll_once(self, reg: Register) -> bytes | None:
        """Read one register set; the signed envelope, or None when the unit did not answer."""
        count = TYPES[reg.type][0]
        self.stats.polls += 1
        try:
            response: Any = await self.client.read_holding_registers(
                reg.address, count=count, device_id=reg.unit
            )
        except (ModbusException, OSError, TimeoutError) as exc:
            self._failed(reg, str(exc))
            return None
        if response.isError():
            self._failed(reg, str(response))
            return None
        value = decode_registers(reg.type, list(response.registers)) * reg.scale
        record: dict[int, Any] = {envelope.N: reg.name, envelope.V: value, envelope.T: self.clock()}
        if reg.unit_of_measure:
            record[envelope.U] = reg.unit_of_measure
        self.stats.readings += 1
        return envelope.encode_envelope(self.signer, [record], self.next_counter(), subject=reg.device)

    def _failed(self, reg: Register, reason: str) -> None:
        self.stats.failures[reg.unit] = self.stats.failures.get(reg.unit, 0) + 1
        self._warn.warning(
            f"unit {reg.unit}", "Modbus unit %d register %d: %s", reg.unit, reg.address, reason
        )

    async def forward(self, raw: bytes) -> None:
        """Send a reading (and any that waited); readings the gateway cannot take now wait, bounded."""
        queue = [*self._retry, raw]
        self._retry = []
        for i, item in enumerate(queue):
            verdict = await self.forwarder.send(item)
            if verdict.kind == "busy":
                waiting = queue[i:]
                overflow = max(0, len(waiting) - MAX_RETRY_QUEUE)
                if overflow:
                    self.stats.dropped += overflow
                    self._warn.warning(
                        "dropped", "retry queue full: dropped the %d oldest readings (%d in all)", overflow,
                        self.stats.dropped,
                    )  # fmt: skip
                self._retry = waiting[overflow:]
                break
            if verdict.kind == "nack":
                self.stats.nacked += 1
                self._warn.warning("nack", "gateway rejected a bridge-attested reading: %s", verdict.reason)
        self.stats.retry_queue = len(self._retry)

    async def run(self, stop: asyncio.Event) -> None:
        due = dict.fromkeys(range(len(self.registers)), 0.0)
        while not stop.is_set():
            now = time.monotonic()
            for i, reg in enumerate(self.registers):
                if due[i] <= now:
                    due[i] = now + reg.poll_s
                    raw = await self.poll_once(reg)
                    if raw is not None:
                        await self.forward(raw)
            wait = max(0.0, min(due.values()) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def run_modbus(
    port: str,
    registers: list[Register],
    signer: CoseSigner,
    forwarder: Forwarder,
    *,
    baudrate: int = 9600,
    timeout_s: float = 0.5,
) -> None:
    """The bridge in Modbus mode, until SIGTERM: poll, sign, forward; reconnect when the port goes.
    Run it with :func:`runtime.service.run_service` (the exit code)."""
    cycle = asyncio.Event()  # ends one polling round: the stop, or SIGHUP (reopen the port)
    client = AsyncModbusSerialClient(
        port, baudrate=baudrate, timeout=timeout_s, retries=0, reconnect_delay=1, reconnect_delay_max=30
    )
    poller = ModbusPoller(client, registers, signer, forwarder)
    status = f"polling {len(registers)} register set(s) on {port}"

    def reopen() -> str:
        cycle.set()
        return f"reopening Modbus port {port}"

    async def poll(stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not client.connected and not await client.connect():
                log.warning("Modbus port %s not available; retrying", port)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                continue
            await poller.run(cycle)
            if not stop.is_set():  # SIGHUP: close the port; the next round opens it again
                cycle.clear()
                client.close()

    async def stop_polling(task: asyncio.Task[None]) -> None:
        cycle.set()  # the round under way ends after its current poll and forward
        await asyncio.wait({task})

    async def close_port() -> None:
        client.close()

    service = Service("bridge", status=lambda: status, reload=reopen, stop_deadline_s=STOP_DEADLINE_S)
    async with service:
        await forwarder.start()
        task = service.spawn("modbus", poll(service.stopping))
        service.shutdown_order(
            Step("finish the poll under way", lambda: stop_polling(task)),
            Step("close the port", close_port),
            Step("stop forwarding", forwarder.stop),
        )
        await service.serve()
