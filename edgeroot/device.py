"""``edgeroot device simulate``: play a device that signs readings, over serial, MQTT or CoAP.

It speaks exactly the documented formats (docs/formats.md §8 envelopes, §18 serial frames), for
demos, tests and benchmarks. Counters start at the current time in milliseconds (``--counter`` to
choose), so they keep increasing across runs, as a device's persistent counter would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from chain_lite import cbor, envelope
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from chain_lite.keys import PrivateKey
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key

RESEND_AFTER_S = 5.0
BUSY_RETRIES = 10  # MQTT/CoAP: a reading answered BUSY is sent again up to this often...
BUSY_PAUSE_S = 0.5  # ...this long apart


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device", help="simulated devices")
    dsub = p.add_subparsers(dest="what", required=True, metavar="{simulate}")
    sim = dsub.add_parser("simulate", help="send signed readings like a device", parents=[JSON_FLAG])
    where = sim.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", help="serial port (framed protocol, waits for ACK frames)")
    where.add_argument("--mqtt", help="mqtt://HOST:PORT/TOPIC (QoS 1)")
    where.add_argument("--coap", help="coap://HOST:PORT/readings (waits for 2.04)")
    where.add_argument("--modbus-slave", help="serial port: answer Modbus RTU as a slave (for bridge tests)")
    sim.add_argument("--unit", type=int, default=1, help="Modbus unit id (with --modbus-slave)")
    sim.add_argument(
        "--registers", default="215,0,16712,0", help="holding registers from address 0 (with --modbus-slave)"
    )
    sim.add_argument("--seconds", type=float, default=0, help="with --modbus-slave: stop after this long")
    sim.add_argument("--id", help="the device identifier (not for --modbus-slave)")
    sim.add_argument("--key", type=Path, help="the device's private key, PEM (not for --modbus-slave)")
    sim.add_argument(
        "--rate", type=float, default=1.0, help="readings per second (0: as fast as acknowledged)"
    )
    sim.add_argument("--count", type=int, default=10, help="how many readings (default 10)")
    sim.add_argument("--counter", type=int, help="first counter (default: now in milliseconds)")
    sim.add_argument("--baud", type=int, default=115200)
    sim.add_argument(
        "--ack-topic",
        help="with --mqtt: keep each reading until the gateway's end-to-end ack on ACK_TOPIC/<id> (the "
        "connector's ack_topic, docs/formats.md §19), resending after --resend-after; the broker's "
        "PUBACK alone frees nothing",
    )
    sim.add_argument(
        "--resend-after", type=float, default=RESEND_AFTER_S, help="with --ack-topic: resend unacked after"
    )
    sim.add_argument(
        "--wait", type=float, default=30.0,
        help="with --ack-topic: how long to keep resending after the last new reading before giving up",
    )  # fmt: skip
    sim.set_defaults(run=run_simulate)


def reading(signer: CoseSigner, counter: int) -> bytes:
    value = 20.0 + (counter % 1000) / 100
    return envelope.encode_envelope(
        signer,
        [{envelope.BN: f"{signer.kid}/", envelope.N: "temperature", envelope.U: "Cel", envelope.V: value}],
        counter,
    )


def hello_body(identifier: str, key: PrivateKey) -> bytes:

    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return cbor.encode([identifier, point])


async def simulate_serial(  # noqa: PLR0917 (the simulation's whole setting)
    port: str, baud: int, signer: CoseSigner, key: PrivateKey, counters: list[int], rate: float
) -> dict[str, Any]:
    from firmware_bridge.frames import (  # noqa: PLC0415 (pyserial loads only for --serial)
        FrameDecoder,
        FrameType,
        parse_counter_body,
    )
    from firmware_bridge.link import open_link  # noqa: PLC0415 (pyserial loads only for --serial)

    link = await open_link(port, baud, FrameDecoder())
    assert link.transport is not None
    link.transport.write(b"\x00")  # discard any half frame after our reset
    link.send(FrameType.HELLO, hello_body(signer.kid, key))
    link.send(FrameType.TIME_REQUEST)
    verdicts = {"ack": 0, "nack": 0, "busy": 0}
    pending = {c: reading(signer, c) for c in counters}
    start = time.perf_counter()
    for i, c in enumerate(counters):
        link.send(FrameType.READING, pending[c])
        if rate:
            await asyncio.sleep(max(0.0, (i + 1) / rate - (time.perf_counter() - start)))
        while link.frames.qsize():
            _settle(link.frames.get_nowait(), pending, verdicts, parse_counter_body, FrameType)
    deadline = time.monotonic() + RESEND_AFTER_S * 3
    last_send = time.monotonic()
    while pending and time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(link.frames.get(), 0.5)
        except TimeoutError:
            frame = None
        if frame is not None:
            _settle(frame, pending, verdicts, parse_counter_body, FrameType)
        if pending and time.monotonic() - last_send > RESEND_AFTER_S:  # resend what got BUSY or nothing
            for _, raw in sorted(pending.items()):
                link.send(FrameType.READING, raw)
            last_send = time.monotonic()
    if link.transport is not None:
        link.transport.close()
    return {
        "sent": len(counters),
        "unacknowledged": len(pending),
        **verdicts,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _settle(frame: Any, pending: dict[int, bytes], verdicts: dict[str, int], parse: Any, types: Any) -> None:
    kind = {types.ACK: "ack", types.NACK: "nack", types.BUSY: "busy"}.get(frame.type)
    if kind is None:
        return
    counter, _ = parse(frame.body)
    verdicts[kind] += 1
    if kind in ("ack", "nack"):
        pending.pop(counter, None)


async def simulate_coap(uri: str, signer: CoseSigner, counters: list[int], rate: float) -> dict[str, Any]:
    from firmware_bridge.forward import CoapForwarder  # noqa: PLC0415 (aiocoap loads only for --coap)

    fwd = CoapForwarder(uri)
    await fwd.start()
    return await _send_all(fwd, signer, counters, rate)


async def simulate_mqtt(url: str, signer: CoseSigner, counters: list[int], rate: float) -> dict[str, Any]:
    from firmware_bridge.forward import MqttForwarder  # noqa: PLC0415 (paho loads only for --mqtt)

    fwd = MqttForwarder(url, client_id=f"sim-{signer.kid}")
    await fwd.start()
    return await _send_all(fwd, signer, counters, rate)


async def simulate_mqtt_end_to_end(  # noqa: PLR0917 (the simulation's whole setting)
    url: str, signer: CoseSigner, counters: list[int], rate: float, ack_topic: str, resend_after: float,
    wait: float,
) -> dict[str, Any]:  # fmt: skip
    """A device that frees a reading only on the gateway's end-to-end ack (docs/formats.md §19): the
    broker's PUBACK means only that the broker took it. Unacked readings are resent, same bytes, in
    counter order, every ``resend_after`` seconds, for up to ``wait`` seconds after the last new one."""
    from edge.connectors.mqtt import (  # noqa: PLC0415 (paho loads only for --mqtt --ack-topic)
        DeviceAckError,
        decode_device_ack,
        device_ack_topic,
    )
    from firmware_bridge.forward import MqttForwarder, SubscribeFailed  # noqa: PLC0415 (as above)

    fwd = MqttForwarder(url, client_id=f"sim-{signer.kid}")
    await fwd.start()
    pending = {c: reading(signer, c) for c in counters}  # the device's buffer: kept until acked
    counts = {"ack": 0, "nack": 0, "busy": 0, "broker_acks": 0, "resent": 0, "bad_acks": 0}
    all_acked = asyncio.Event()

    async def take_acks(inbox: asyncio.Queue[bytes]) -> None:
        while True:
            try:
                ack = decode_device_ack(await inbox.get())
            except DeviceAckError:
                counts["bad_acks"] += 1
                continue
            if ack.device == signer.kid:
                _free(pending, counts, ack.stored, ack.rejected)
            if not pending:
                all_acked.set()

    async def publish(raw: bytes) -> None:
        verdict = await fwd.send(raw)
        counts["broker_acks" if verdict.kind == "ack" else "busy"] += 1

    start = time.perf_counter()
    try:
        # Subscribe before the first publish, or an ack could pass before anyone listens.
        try:
            inbox = await fwd.listen(device_ack_topic(ack_topic, signer.kid))
        except SubscribeFailed as exc:
            raise CommandFailed(f"cannot listen for end-to-end acks: {exc}") from exc
        async with asyncio.TaskGroup() as tasks:
            taker = tasks.create_task(take_acks(inbox), name="device-acks")
            last_send = time.monotonic()
            for i, c in enumerate(counters):
                if c in pending:
                    await publish(pending[c])
                    last_send = time.monotonic()
                if rate:
                    await asyncio.sleep(max(0.0, (i + 1) / rate - (time.perf_counter() - start)))
            deadline = time.monotonic() + wait
            while pending and time.monotonic() < deadline:
                due = min(last_send + resend_after, deadline) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_acked.wait(), max(0.0, due))
                if pending and time.monotonic() >= last_send + resend_after:
                    for c in sorted(pending):
                        if c in pending:  # not acked while the ones before it were resent
                            await publish(pending[c])
                            counts["resent"] += 1
                    last_send = time.monotonic()
            taker.cancel()
    finally:
        await fwd.stop()
    return {
        "sent": len(counters),
        "unacknowledged": len(pending),
        **counts,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _free(
    pending: dict[int, bytes],
    counts: dict[str, int],
    stored: Sequence[int],
    rejected: Sequence[tuple[int, str]],
) -> None:
    """Drop the acknowledged readings from the device's buffer; a repeated ack frees nothing twice."""
    for verdict, freed in (("ack", stored), ("nack", [c for c, _ in rejected])):
        for counter in freed:
            if pending.pop(counter, None) is not None:
                counts[verdict] += 1


async def _send_all(fwd: Any, signer: CoseSigner, counters: list[int], rate: float) -> dict[str, Any]:
    verdicts = {"ack": 0, "nack": 0, "busy": 0}
    start = time.perf_counter()
    try:
        for i, c in enumerate(counters):
            raw = reading(signer, c)
            verdict = await fwd.send(raw)
            for _ in range(BUSY_RETRIES):  # like a device: the same reading again, after a pause
                if verdict.kind != "busy":
                    break
                verdicts["busy"] += 1
                await asyncio.sleep(BUSY_PAUSE_S)
                verdict = await fwd.send(raw)
            verdicts[verdict.kind] += 1
            if rate:
                await asyncio.sleep(max(0.0, (i + 1) / rate - (time.perf_counter() - start)))
    finally:
        await fwd.stop()
    return {"sent": len(counters), **verdicts, "seconds": round(time.perf_counter() - start, 3)}


async def modbus_slave(port: str, baud: int, unit: int, registers: list[int], seconds: float) -> None:
    """pymodbus's RTU server on ``port``: holding registers from address 0; stops after ``seconds``."""
    from pymodbus import FramerType  # noqa: PLC0415 (pymodbus, a large import, loads only for --modbus-slave)
    from pymodbus.datastore import (  # noqa: PLC0415 (as above)
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import StartAsyncSerialServer  # noqa: PLC0415 (as above)

    # pymodbus's sequential blocks start one above the protocol address.
    block = ModbusSequentialDataBlock(1, registers)  # type: ignore[no-untyped-call]
    context = ModbusServerContext(devices={unit: ModbusDeviceContext(hr=block)}, single=False)
    server = StartAsyncSerialServer(context=context, port=port, baudrate=baud, framer=FramerType.RTU)
    if seconds:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server, seconds)
    else:
        await server


def run_simulate(args: argparse.Namespace, report: Reporter) -> int:
    if args.modbus_slave:
        try:
            registers = [int(r) for r in args.registers.split(",")]
        except ValueError as exc:
            raise CommandFailed(f"--registers: {exc}") from exc
        asyncio.run(modbus_slave(args.modbus_slave, args.baud, args.unit, registers, args.seconds))
        return report.ok(f"Modbus slave {args.unit} on {args.modbus_slave} stopped")
    if args.id is None or args.key is None:
        raise CommandFailed("--id and --key are required to simulate a device")
    # Without its scheme a URL parses as no host and no port: the readings would go to 127.0.0.1:1883.
    if args.mqtt and not args.mqtt.startswith("mqtt://"):
        raise CommandFailed(f"--mqtt {args.mqtt}: want mqtt://HOST:PORT/TOPIC")
    if args.coap and not args.coap.startswith(("coap://", "coaps://")):
        raise CommandFailed(f"--coap {args.coap}: want coap://HOST:PORT/readings")
    if args.ack_topic is not None and not args.mqtt:
        raise CommandFailed("--ack-topic is for --mqtt (serial and CoAP acks are end to end already)")
    if args.ack_topic is not None and (not args.ack_topic or set(args.ack_topic) & {"+", "#"}):
        raise CommandFailed("--ack-topic: a topic name without wildcards, as the gateway's ack_topic")
    try:
        identifier = normalize(args.id)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    key = load_private_key(args.key)
    signer = CoseSigner(identifier, key)
    first = args.counter if args.counter is not None else now_ms()
    counters = list(range(first, first + args.count))
    if args.serial:
        try:
            result = asyncio.run(simulate_serial(args.serial, args.baud, signer, key, counters, args.rate))
        except OSError as exc:  # pyserial's SerialException is one: the port cannot be opened
            raise CommandFailed(f"serial port {args.serial}: {exc.strerror or exc}") from exc
    elif args.coap:
        result = asyncio.run(simulate_coap(args.coap, signer, counters, args.rate))
    elif args.ack_topic is not None:
        result = asyncio.run(
            simulate_mqtt_end_to_end(
                args.mqtt, signer, counters, args.rate, args.ack_topic, args.resend_after, args.wait
            )
        )
    else:
        result = asyncio.run(simulate_mqtt(args.mqtt, signer, counters, args.rate))
    how = " end to end (durable at the gateway)" if args.ack_topic is not None else ""
    message = f"{identifier}: {result['ack']} of {result['sent']} readings acknowledged{how}"
    if result["ack"] < result["sent"] or result.get("unacknowledged"):
        # Refused (NACK) or never answered: a device would not have delivered these readings (exit 1).
        return report.invalid(message, **result)
    return report.ok(message, **result)
