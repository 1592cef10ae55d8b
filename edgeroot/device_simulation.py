"""The implementation of ``edgeroot device simulate`` (:mod:`edgeroot.device`), loaded only when it runs:
pyserial, paho, aiocoap and pymodbus."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import aiocoap
import cbor2
from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncSerialServer

from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from chain_lite.keys import PrivateKey, algorithm_of
from edge.connectors.mqtt import DeviceAckError, decode_device_ack, device_ack_topic
from edge.intake import MAX_BATCH_ENVELOPES, encode_batch
from edgeroot.device import BUSY_PAUSE_S, BUSY_RETRIES, RESEND_AFTER_S, hello_body, reading
from edgeroot.output import CommandFailed, Reporter
from firmware_bridge.forward import CoapForwarder, MqttForwarder, SubscribeFailed
from firmware_bridge.frames import FrameDecoder, FrameType, parse_counter_body
from firmware_bridge.link import open_link
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key


async def simulate_serial(  # noqa: PLR0917 (the simulation's whole setting)
    port: str, baud: int, signer: CoseSigner, key: PrivateKey, counters: list[int], rate: float
) -> dict[str, Any]:
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
    # The frames above may still be on a slow line (1,000 readings take 13 s at 115,200 baud): the device
    # waits while verdicts keep coming, resends only after RESEND_AFTER_S without one, and gives up after
    # three such quiet spells in a row (not after a fixed time from the last write).
    last_send = last_verdict = time.monotonic()
    while pending and time.monotonic() - last_verdict < RESEND_AFTER_S * 3:
        try:
            frame = await asyncio.wait_for(link.frames.get(), 0.5)
        except TimeoutError:
            frame = None
        if frame is not None and _settle(frame, pending, verdicts, parse_counter_body, FrameType):
            last_verdict = time.monotonic()
        if pending and time.monotonic() - max(last_send, last_verdict) > RESEND_AFTER_S:
            for _, raw in sorted(pending.items()):  # resend what got BUSY or nothing
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


def _settle(frame: Any, pending: dict[int, bytes], verdicts: dict[str, int], parse: Any, types: Any) -> bool:
    """Count one answer frame; whether it freed a pending reading (an ACK or NACK not seen before)."""
    kind = {types.ACK: "ack", types.NACK: "nack", types.BUSY: "busy"}.get(frame.type)
    if kind is None:
        return False
    counter, _ = parse(frame.body)
    if kind == "busy":
        verdicts[kind] += 1
        return False
    if pending.pop(counter, None) is None:
        return False  # a reading's verdict counts once (a resend's second ACK frees nothing)
    verdicts[kind] += 1
    return True


async def simulate_coap(
    uri: str, signer: CoseSigner, counters: list[int], rate: float, batch: int = 1
) -> dict[str, Any]:
    if batch > 1:
        return await _send_coap_batches(uri, signer, counters, rate, batch)
    fwd = CoapForwarder(uri)
    await fwd.start()
    return await _send_all(fwd, signer, counters, rate)


async def simulate_mqtt(
    url: str, signer: CoseSigner, counters: list[int], rate: float, batch: int = 1
) -> dict[str, Any]:
    fwd = MqttForwarder(url, client_id=f"sim-{signer.kid}")
    await fwd.start()
    if batch > 1:
        return await _send_all_batched(fwd, signer, counters, rate, batch)
    return await _send_all(fwd, signer, counters, rate)


def _chunks(counters: list[int], batch: int) -> list[list[int]]:
    return [counters[i : i + batch] for i in range(0, len(counters), batch)]


async def _pace(sent: int, rate: float, start: float) -> None:
    if rate:
        await asyncio.sleep(max(0.0, sent / rate - (time.perf_counter() - start)))


async def _send_all_batched(
    fwd: Any, signer: CoseSigner, counters: list[int], rate: float, batch: int
) -> dict[str, Any]:
    """MQTT with ``batch`` readings per message: the broker's PUBACK answers the message, so each of
    its readings counts as acknowledged by the broker (as for one reading per message)."""
    verdicts = {"ack": 0, "nack": 0, "busy": 0, "messages": 0}
    start = time.perf_counter()
    sent = 0
    try:
        for chunk in _chunks(counters, batch):
            raw = encode_batch([reading(signer, c) for c in chunk])
            verdict = await fwd.send(raw)
            for _ in range(BUSY_RETRIES):
                if verdict.kind != "busy":
                    break
                verdicts["busy"] += 1
                await asyncio.sleep(BUSY_PAUSE_S)
                verdict = await fwd.send(raw)
            verdicts[verdict.kind] += len(chunk)
            verdicts["messages"] += 1
            sent += len(chunk)
            await _pace(sent, rate, start)
    finally:
        await fwd.stop()
    return {"sent": len(counters), **verdicts, "seconds": round(time.perf_counter() - start, 3)}


async def _send_coap_batches(
    uri: str, signer: CoseSigner, counters: list[int], rate: float, batch: int
) -> dict[str, Any]:
    """CoAP with ``batch`` readings per request; the gateway's 2.04 answers each envelope (null: stored;
    ``held``: on its disk, judged later; else why it was quarantined)."""
    context = await aiocoap.Context.create_client_context()
    verdicts = {"ack": 0, "nack": 0, "busy": 0, "messages": 0}
    start = time.perf_counter()
    sent = 0
    try:
        for chunk in _chunks(counters, batch):
            payload = encode_batch([reading(signer, c) for c in chunk])
            for _ in range(BUSY_RETRIES + 1):
                request = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
                try:
                    response = await context.request(request).response
                except Exception:  # noqa: BLE001 (unreachable: like a busy answer, try again)
                    response = None
                if response is not None and response.code.is_successful():
                    answers = cbor2.loads(response.payload)
                    for answer in answers:
                        verdicts["ack" if answer in (None, "held") else "nack"] += 1
                    break
                if response is not None and response.code.class_ == 4:
                    verdicts["nack"] += len(chunk)
                    break
                verdicts["busy"] += 1
                await asyncio.sleep(BUSY_PAUSE_S)
            verdicts["messages"] += 1
            sent += len(chunk)
            await _pace(sent, rate, start)
    finally:
        await context.shutdown()
    return {"sent": len(counters), **verdicts, "seconds": round(time.perf_counter() - start, 3)}


async def simulate_mqtt_end_to_end(  # noqa: PLR0917 (the simulation's whole setting)
    url: str, signer: CoseSigner, counters: list[int], rate: float, ack_topic: str, resend_after: float,
    wait: float, batch: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """A device that frees a reading only on the gateway's end-to-end ack (docs/formats.md §19): the
    broker's PUBACK means only that the broker took it. Unacked readings are resent, same bytes, in
    counter order, every ``resend_after`` seconds, for up to ``wait`` seconds after the last new one."""
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

    async def publish(chunk: list[int]) -> None:
        """One message: one reading, or a batch of them (``batch`` > 1)."""
        raws = [pending[c] for c in chunk if c in pending]
        if not raws:
            return
        verdict = await fwd.send(raws[0] if batch == 1 else encode_batch(raws))
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
            sent = 0
            for chunk in _chunks(counters, batch):
                await publish(chunk)
                last_send = time.monotonic()
                sent += len(chunk)
                await _pace(sent, rate, start)
            deadline = time.monotonic() + wait
            while pending and time.monotonic() < deadline:
                due = min(last_send + resend_after, deadline) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_acked.wait(), max(0.0, due))
                if pending and time.monotonic() >= last_send + resend_after:
                    for chunk in _chunks(sorted(pending), batch):
                        # Those acked while the ones before them were resent are left out.
                        counts["resent"] += sum(c in pending for c in chunk)
                        await publish(chunk)
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
    if not 1 <= args.batch <= MAX_BATCH_ENVELOPES:
        raise CommandFailed(f"--batch {args.batch}: from 1 to {MAX_BATCH_ENVELOPES} readings per message")
    if args.batch > 1 and not (args.mqtt or args.coap):
        raise CommandFailed("--batch is for --mqtt and --coap (a serial frame carries one reading)")
    if args.ack_topic is not None and not args.mqtt:
        raise CommandFailed("--ack-topic is for --mqtt (serial and CoAP acks are end to end already)")
    if args.ack_topic is not None and (not args.ack_topic or set(args.ack_topic) & {"+", "#"}):
        raise CommandFailed("--ack-topic: a topic name without wildcards, as the gateway's ack_topic")
    try:
        identifier = normalize(args.id)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    key = load_private_key(args.key)
    if args.alg is not None and algorithm_of(key) != args.alg:
        raise CommandFailed(f"--alg {args.alg}: the key {args.key} is {algorithm_of(key)}")
    signer = CoseSigner(identifier, key)
    first = args.counter if args.counter is not None else now_ms()
    counters = list(range(first, first + args.count))
    if args.serial:
        try:
            result = asyncio.run(simulate_serial(args.serial, args.baud, signer, key, counters, args.rate))
        except OSError as exc:  # pyserial's SerialException is one: the port cannot be opened
            raise CommandFailed(f"serial port {args.serial}: {exc.strerror or exc}") from exc
    elif args.coap:
        result = asyncio.run(simulate_coap(args.coap, signer, counters, args.rate, args.batch))
    elif args.ack_topic is not None:
        result = asyncio.run(
            simulate_mqtt_end_to_end(
                args.mqtt,
                signer,
                counters,
                args.rate,
                args.ack_topic,
                args.resend_after,
                args.wait,
                args.batch,
            )
        )
    else:
        result = asyncio.run(simulate_mqtt(args.mqtt, signer, counters, args.rate, args.batch))
    how = " end to end (durable at the gateway)" if args.ack_topic is not None else ""
    result["alg"] = algorithm_of(key)
    message = f"{identifier}: {result['ack']} of {result['sent']} readings acknowledged{how}"
    if result["ack"] < result["sent"] or result.get("unacknowledged"):
        # Refused (NACK) or never answered: a device would not have delivered these readings (exit 1).
        return report.invalid(message, **result)
    return report.ok(message, **result)
