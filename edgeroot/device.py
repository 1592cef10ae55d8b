"""``edgeroot device simulate``: play a device that signs readings, over serial, MQTT or CoAP.

It speaks exactly the documented formats (docs/formats.md §8 envelopes, §18 serial frames), for
demos, tests and benchmarks. Counters start at the current time in milliseconds (``--counter`` to
choose), so they keep increasing across runs, as a device's persistent counter would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_lite import cbor, envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import ALGORITHMS, PrivateKey, public_point
from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG

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
        "--alg", choices=ALGORITHMS,
        help="the algorithm the device signs with (p256: ES256, sm2: SM2 with SM3); the key file must be of "
        "it. Default: whatever the key file is",
    )  # fmt: skip
    sim.add_argument(
        "--rate", type=float, default=1.0, help="readings per second (0: as fast as acknowledged)"
    )
    sim.add_argument("--count", type=int, default=10, help="how many readings (default 10)")
    sim.add_argument("--counter", type=int, help="first counter (default: now in milliseconds)")
    sim.add_argument("--baud", type=int, default=115200)
    sim.add_argument(
        "--batch", type=int, default=1,
        help="with --mqtt or --coap: this many readings per message, a batch of envelopes "
        "(docs/formats.md §19); --rate stays in readings per second",
    )  # fmt: skip
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
    sim.set_defaults(run=lazy("edgeroot.device_simulation", "run_simulate"))


def reading(signer: CoseSigner, counter: int) -> bytes:
    value = 20.0 + (counter % 1000) / 100
    return envelope.encode_envelope(
        signer,
        [{envelope.BN: f"{signer.kid}/", envelope.N: "temperature", envelope.U: "Cel", envelope.V: value}],
        counter,
    )


def hello_body(identifier: str, key: PrivateKey) -> bytes:
    return cbor.encode([identifier, public_point(key.public_key())])
