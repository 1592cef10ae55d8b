"""``edgeroot device simulate``: play a device that signs readings, over serial, MQTT or CoAP.

It speaks exactly the documented formats (docs/formats.md §8 envelopes, §18 serial frames), for
demos, tests and benchmarks. Counters start at the current time in milliseconds (``--counter`` to
choose), so they keep increasing across runs, as a device's persistent counter would.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from chain_lite import cbor, envelope
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from chain_lite.keys import PrivateKey
from edgeroot.keyfiles import load_private_key
from edgeroot.output import JSON_FLAG, CommandFailed, Reporter

RESEND_AFTER_S = 5.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device", help="simulated devices")
    dsub = p.add_subparsers(dest="what", required=True, metavar="{simulate}")
    sim = dsub.add_parser("simulate", help="send signed readings like a device", parents=[JSON_FLAG])
    where = sim.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", help="serial port (framed protocol, waits for ACK frames)")
    where.add_argument("--mqtt", help="mqtt://HOST:PORT/TOPIC (QoS 1)")
    where.add_argument("--coap", help="coap://HOST:PORT/readings (waits for 2.04)")
    sim.add_argument("--id", required=True, help="the device identifier")
    sim.add_argument("--key", type=Path, required=True, help="the device's private key (PEM)")
    sim.add_argument(
        "--rate", type=float, default=1.0, help="readings per second (0: as fast as acknowledged)"
    )
    sim.add_argument("--count", type=int, default=10, help="how many readings (default 10)")
    sim.add_argument("--counter", type=int, help="first counter (default: now in milliseconds)")
    sim.add_argument("--baud", type=int, default=115200)
    sim.set_defaults(run=run_simulate)


def reading(signer: CoseSigner, counter: int) -> bytes:
    value = 20.0 + (counter % 1000) / 100
    return envelope.encode_envelope(
        signer,
        [{envelope.BN: f"{signer.kid}/", envelope.N: "temperature", envelope.U: "Cel", envelope.V: value}],
        counter,
    )


def hello_body(identifier: str, key: PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return cbor.encode([identifier, point])


async def simulate_serial(  # noqa: PLR0917 (the simulation's whole setting)
    port: str, baud: int, signer: CoseSigner, key: PrivateKey, counters: list[int], rate: float
) -> dict[str, Any]:
    from firmware_bridge.frames import (  # noqa: PLC0415
        FrameDecoder,
        FrameType,
        parse_counter_body,
    )
    from firmware_bridge.link import open_link  # noqa: PLC0415

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
    from firmware_bridge.forward import CoapForwarder  # noqa: PLC0415

    fwd = CoapForwarder(uri)
    await fwd.start()
    return await _send_all(fwd, signer, counters, rate)


async def simulate_mqtt(url: str, signer: CoseSigner, counters: list[int], rate: float) -> dict[str, Any]:
    from firmware_bridge.forward import MqttForwarder  # noqa: PLC0415

    fwd = MqttForwarder(url, client_id=f"sim-{signer.kid}")
    await fwd.start()
    return await _send_all(fwd, signer, counters, rate)


async def _send_all(fwd: Any, signer: CoseSigner, counters: list[int], rate: float) -> dict[str, Any]:
    verdicts = {"ack": 0, "nack": 0, "busy": 0}
    start = time.perf_counter()
    try:
        for i, c in enumerate(counters):
            verdict = await fwd.send(reading(signer, c))
            verdicts[verdict.kind] += 1
            if rate:
                await asyncio.sleep(max(0.0, (i + 1) / rate - (time.perf_counter() - start)))
    finally:
        await fwd.stop()
    return {"sent": len(counters), **verdicts, "seconds": round(time.perf_counter() - start, 3)}


def run_simulate(args: argparse.Namespace, report: Reporter) -> int:
    try:
        identifier = normalize(args.id)
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    key = load_private_key(args.key)
    signer = CoseSigner(identifier, key)
    first = args.counter if args.counter is not None else time.time_ns() // 1_000_000
    counters = list(range(first, first + args.count))
    if args.serial:
        result = asyncio.run(simulate_serial(args.serial, args.baud, signer, key, counters, args.rate))
    elif args.coap:
        result = asyncio.run(simulate_coap(args.coap, signer, counters, args.rate))
    else:
        result = asyncio.run(simulate_mqtt(args.mqtt, signer, counters, args.rate))
    message = f"{identifier}: {result['ack']} of {result['sent']} readings acknowledged"
    if result["ack"] + result["nack"] < result["sent"] or result.get("unacknowledged"):
        return report.invalid(message, **result)
    return report.ok(message, **result)
