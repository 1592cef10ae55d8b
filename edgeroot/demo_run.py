"""The implementation of ``edgeroot demo`` (:mod:`edgeroot.demo`), loaded only when it runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
from rich.console import Console

from chain_lite.block import parse_block, reading_proof, verify_reading
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from chain_lite.epcis_identifiers import identifier_uri
from chain_lite.keys import algorithm_of, load_public_pem
from chain_lite.log_leaf import block_leaf
from chain_lite.note import SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE
from edge import store
from edgeroot.cli import main
from edgeroot.device import reading
from edgeroot.mqtt_broker import EmbeddedBroker
from edgeroot.output import EXIT_INVALID, EXIT_OK, Reporter
from edgeroot.system import GatewayNode, HarnessError, RootNode, System, wait_until
from firmware_bridge.forward import CoapForwarder
from rootclient import routes
from rootclient.epcis_trace import EDGEROOT_NS
from runtime.clock import now_ms
from runtime.keyfiles import file_stem

ORIGIN = "root.demo.edgeroot.example"
WITNESS = "witness.demo.edgeroot.example"
PLANT_ORIGIN = "plant.demo.edgeroot.example"
PREFIX = "88.123"
PLANT = "88.123.99"
# The gateway anchors its blocks in the root's log and trusts only the root's policy, so it is registered
# at the root (a node logs the blocks of the gateways it registers); the plant's devices and products are
# registered at the plant's own node, which the root delegated 88.123.99 to.
GATEWAY = f"{PREFIX}/GW-LINE-1"
OVEN = f"{PLANT}/OVEN-0001"
# (identifier, transport): one device per way in; the oven's readings back the curing event (step 10).
DEVICES = [(OVEN, "mqtt"), (f"{PLANT}/VALVE-0002", "coap"), (f"{PLANT}/METER-0003", "serial")]
LINE = f"{PLANT}/LINE-1"
"""The curing line's capture key: it signs the line's EPCIS events."""
# ``--suite``: the ``root init --suite`` of the log, and the ``--alg`` of the gateway's and devices' keys.
SUITE_KEYS = {"default": "p256", "sm": "sm2"}


@dataclass
class Demo:
    """The system (:mod:`edgeroot.system`) and what the demo shows and finds about it."""

    system: System
    console: Console
    facts: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.system.path(*parts)

    def say(self, text: str) -> None:
        self.console.print(text)

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def shell(self, *args: str | Path) -> tuple[int, str]:
        """Run an ``edgeroot`` command as a user would type it; show it and its output; its exit code and
        stdout. It runs in this process (the same ``main``, the same output and exit code as a child
        process): a child's start-up, Python and the imports, costs more than most commands' own work."""
        self.say(f"[bold]$ edgeroot {self.system.shown(args)}[/bold]")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*map(str, args)])
            except SystemExit as exc:  # a usage error (argparse)
                code = exc.code if isinstance(exc.code, int) else 2
        for line in (out.getvalue() + err.getvalue()).strip().splitlines():
            self.console.print(f"    {line}", markup=False, highlight=False)
        return code, out.getvalue()


def run(args: argparse.Namespace, report: Reporter) -> int:
    if args.readings < 1 or args.rate <= 0:
        return report.failed("--readings must be at least 1 and --rate above 0")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="edgeroot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = report.err if report.as_json else report.out
    demo = Demo(System(workdir, echo=lambda line: console.print(f"[dim]{line}[/dim]")), console)
    started = time.monotonic()
    try:
        code = _run(args, demo)
    except HarnessError as exc:
        return report.failed(f"demo failed: {exc}")
    finally:
        demo.system.stop_all()
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    demo.facts["seconds"] = round(time.monotonic() - started, 1)
    demo.say(f"all processes stopped; {demo.facts['seconds']} s in all")
    if code != EXIT_OK:
        return report.invalid("the demo did not prove what it should", **demo.facts)
    suite = "国密 SM2/SM3" if args.suite == "sm" else "default"
    done = f"demo complete ({suite} suite): readings signed, verified, chained, anchored and proven"
    return report.ok(done, **demo.facts)


def _run(args: argparse.Namespace, demo: Demo) -> int:
    demo.facts["suite"] = args.suite
    root, plant = _nodes(demo, args.suite)
    broker = _broker(args, demo)
    gateway = _gateway(demo, broker, SUITE_KEYS[args.suite], root, plant)
    serial_path = _bridge(demo, gateway)
    window_start = now_ms()
    _devices(args, demo, broker, gateway, serial_path)
    _algorithms(demo, root, gateway)
    verdicts = [
        _progress(args, demo, root, gateway),
        _resolve(demo, root, plant),
        _receipt(demo, root, gateway),
        _tampered(demo, gateway),
        _trace(demo, root, plant, gateway, (window_start, now_ms())),
    ]
    return EXIT_OK if all(verdicts) else EXIT_INVALID


def _nodes(demo: Demo, suite: str) -> tuple[RootNode, RootNode]:
    demo.step("1. a root node, its witness, and the plant's node under it")
    system = demo.system
    root = system.init_root(ORIGIN, PREFIX, witness=WITNESS, suite=suite)
    plant = system.init_child_root("plant", PLANT_ORIGIN, PLANT, parent=root, suite=suite)
    system.start_together("witness", "root", "plant")  # their start-ups overlap
    system.delegate(root, plant)
    demo.say(f"root node {ORIGIN} serving {PREFIX} at {root.url}, cosigned by {WITNESS}")
    demo.say(
        f"enterprise node {PLANT_ORIGIN} serving {PLANT} at {plant.url}: delegated by the root (a signed, "
        f"logged HS_SITE record), cosigned by its parent, which anchors its checkpoints in its own log"
    )
    if suite == "sm":
        demo.say(
            "suite sm (国密): SM2 signatures and SM3 hashing throughout (root init --suite sm), the "
            "parent's cosignature on the plant node's checkpoints included"
        )
    return root, plant


def _broker(args: argparse.Namespace, demo: Demo) -> tuple[str, int]:
    demo.step("2. an MQTT broker")
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        demo.say(f"using the broker at {args.mqtt}")
        return host or "127.0.0.1", int(port)
    broker = demo.system.start_broker(embedded=args.embedded_broker)
    if not isinstance(broker, EmbeddedBroker):
        kind = "mosquitto"
    elif args.embedded_broker:
        kind = "embedded amqtt broker (--embedded-broker)"
    else:
        kind = "embedded amqtt broker (no mosquitto here)"
    demo.facts["broker"] = kind
    demo.say(f"{kind} on 127.0.0.1:{broker.port}")
    return broker.host, broker.port


def _gateway(demo: Demo, broker: tuple[str, int], alg: str, root: RootNode, plant: RootNode) -> GatewayNode:
    demo.step("3. a gateway at the root; devices at the plant's node")
    token = secrets.token_hex(16)
    gateway = demo.system.init_gateway(
        GATEWAY,
        admin_key=root.admin_key,
        mqtt=broker,
        devices=[ident for ident, _ in DEVICES],
        settings={
            "mode": "anchor",
            "block": {"max_seconds": 1.0, "max_readings": 50},
            "sync": {"interval_s": 0.2},
            "http": {"token": token},
        },
        device_alg=alg,
        gateway_alg=alg,
        devices_at=(plant, plant.admin_key),
    )
    gateway.state.joinpath(TOKEN_FILE).write_text(token + "\n")
    port = gateway.coap_port
    demo.say(
        f"[dim]gateway.toml: anchor mode (readings stay here, block headers go to the root), blocks every "
        f"1 s or 50 readings, CoAP ingest on udp/{port}, a readings token (http.token)[/dim]"
    )
    demo.say(f"gateway {GATEWAY}: MQTT {broker[0]}:{broker[1]}, CoAP udp/{port}, local API {gateway.http}")
    demo.say(
        f"its policy.txt is the root's only: the devices' keys, registered at {PLANT_ORIGIN}, are found by "
        "referral from the root, proven at each hop"
    )
    return gateway


TOKEN_FILE = "readings.token"  # noqa: S105 (a file name; the token is random per run)


def _bridge(demo: Demo, gateway: GatewayNode) -> str:
    demo.step("4. a serial bridge on a pseudo-terminal pair")
    bridge_end, device_end = demo.system.null_modem()
    demo.system.start_bridge(bridge_end, state=demo.path("bridge"), start=False)
    demo.system.start_together("gateway", "bridge")  # the bridge needs only its port open to be ready
    demo.say(f"gateway {GATEWAY} and bridge running")
    demo.say(f"bridge on {bridge_end} → gateway CoAP; the device's end of the cable is {device_end}")
    return device_end


def _devices(
    args: argparse.Namespace, demo: Demo, broker: tuple[str, int], gateway: GatewayNode, serial: str
) -> None:
    demo.step("5. devices sign readings and send them")
    for n, (ident, transport) in enumerate(DEVICES):
        where = {
            "mqtt": ["--mqtt", f"mqtt://{broker[0]}:{broker[1]}/edgeroot/readings/{ident.split('/')[1]}"],
            "coap": ["--coap", gateway.coap_url],
            "serial": ["--serial", serial],
        }[transport]
        demo.system.simulate(f"device-{n}", ident, where,
                             "--rate", str(args.rate), "--count", str(args.readings), "--json")  # fmt: skip
        demo.say(f"{ident}: {args.readings} readings over {transport} at {args.rate:g}/s")


def _note_alg(sigtype: int) -> str:
    return "sm2" if sigtype in (SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE) else "ed25519"


def _algorithms(demo: Demo, root: RootNode, gateway: GatewayNode) -> None:
    """What each part actually signs and hashes with, read back from its keys and the served checkpoint
    (not from ``--suite``): the log's hash and key, the witness's key, the gateway's and devices' keys."""
    policy = root.policy()
    served = SignedCheckpoint.parse(httpx.get(f"{root.url}/log/checkpoint", timeout=5).content)
    found = {
        "log_hash": served.checkpoint.suite.name,
        "log_key": _note_alg(policy.logs[0].verifier.sigtype),
        "witness": sorted({_note_alg(w.verifier.sigtype) for w in policy.witnesses.values()}),
        "gateway": algorithm_of(load_public_pem(gateway.public_key.read_bytes())),
        "devices": sorted({algorithm_of(gateway.device_key(ident)) for ident, _ in DEVICES}),
    }
    demo.facts["algorithms"] = found
    demo.say(
        f"log hash {found['log_hash']}, log key {found['log_key']}, witness {', '.join(found['witness'])}, "
        f"gateway {found['gateway']}, devices {', '.join(found['devices'])}"
    )


def _checkpoint(root_url: str) -> tuple[int, list[str]]:
    text = httpx.get(f"{root_url}/log/checkpoint", timeout=2).text
    body, _, sigs = text.partition("\n\n")
    size = int(body.split("\n")[1])
    names = [line.split(" ")[1] for line in sigs.splitlines() if line.startswith("\u2014 ")]
    return size, [n for n in names if n != ORIGIN]


def _progress(args: argparse.Namespace, demo: Demo, root: RootNode, gateway: GatewayNode) -> bool:
    """Live figures until every device is done and everything the gateway stored is anchored; then each
    device's acknowledged readings against what the gateway stored (none may be missing)."""
    demo.step("6. live: readings in, blocks closed, blocks anchored, checkpoints cosigned")
    sent = args.readings * len(DEVICES)
    devices = [d for name, d in demo.system.daemons.items() if name.startswith("device")]
    seen: dict[str, Any] = {}

    def all_anchored() -> bool:
        st = gateway.status()
        blocks = st["blocks"]
        size, cosigners = _checkpoint(root.url)
        seen.update(st=st, closed=sum(blocks.values()), size=size, cosigners=cosigners)
        demo.say(
            f"readings in {st['readings']:>4}/{sent} · blocks closed {seen['closed']:>3} · anchored "
            f"{blocks['anchored']:>3} · log size {size:>3}, cosigned by {', '.join(cosigners) or 'nobody'}"
        )
        devices_done = not any(d.running for d in devices)
        return devices_done and st["unanchored_blocks"] == 0 and not st["unchained_readings"]

    try:
        wait_until(
            "everything anchored", all_anchored, timeout=30 + args.readings / args.rate, interval=1.0,
            check=demo.system.alive,
        )  # fmt: skip
    except HarnessError:
        raise HarnessError(f"not everything anchored in time: {seen.get('st')}") from None
    demo.facts.update(
        readings=seen["st"]["readings"],
        blocks=seen["closed"],
        log_size=seen["size"],
        cosigned_by=seen["cosigners"],
    )
    with store.reader(gateway.db) as conn:
        stored = store.count_readings_by_signer(conn)
    whole = True
    for n, (ident, transport) in enumerate(DEVICES):
        lines = demo.path("logs", f"device-{n}.log").read_text().strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise HarnessError(f"device {ident} printed no result: {lines[-5:]}") from None
        acked, kept = int(result.get("ack", 0)), int(stored.get(ident, 0))
        whole = whole and kept >= acked
        refused = f", {result['nack']} refused" if result.get("nack") else ""
        demo.say(
            f"{ident} over {transport}: {result.get('sent')} sent, {acked} acknowledged{refused}; "
            f"{kept} stored and anchored"
        )
    demo.facts["acknowledged_all_stored"] = whole
    if not whole:
        demo.say("[red]an acknowledged reading is missing from the gateway[/red]")
    return whole


def _cosigned_by_parent(plant: RootNode) -> SignedCheckpoint:
    """The plant's latest checkpoint once its parent has cosigned it. The plant's policy (the one its
    delegation commits to) requires that cosignature, and a node publishes a checkpoint with the
    cosignatures that came back in time: on a busy machine the parent's may come a retry later."""
    name = plant.witness_name

    def cosigned() -> SignedCheckpoint | None:
        signed = SignedCheckpoint.parse(httpx.get(plant.url + routes.CHECKPOINT, timeout=5).content)
        return signed if name in {sig.name for sig in signed.note.signatures} else None

    found = wait_until(f"{PLANT_ORIGIN}'s latest checkpoint cosigned by {name}", cosigned, timeout=30)
    assert found is not None  # wait_until returns only a true value
    return found


def _resolve(demo: Demo, root: RootNode, plant: RootNode) -> bool:
    demo.step("7. resolve a device from the root, proven at each hop")
    ident = DEVICES[0][0]
    signed = _cosigned_by_parent(plant)
    code, out = demo.shell("resolve", ident, "--root", root.url, "--verify", "--policy", root.policy_path,
                           "--config-dir", demo.path("client"))  # fmt: skip
    hops = f"PROVEN via {PREFIX} → {PLANT}: {ident}" in out
    demo.facts["resolve_verified"] = code == 0
    demo.facts["hop_chain_proven"] = code == 0 and hops
    demo.say("the plant's node is anchored in the root's log: the root cosigned its checkpoint and logged it")
    # The plant's checkpoint that its parent cosigned, once the anchor leaf is in the parent's published log.
    size = signed.checkpoint.size

    def anchored() -> bool:
        answer = httpx.get(root.url + routes.anchors(PLANT_ORIGIN), timeout=5).json()
        return int((answer.get("anchor") or {}).get("size", -1)) >= size

    wait_until(f"{PLANT_ORIGIN} size {size} anchored in {ORIGIN}'s log", anchored, timeout=30, interval=0.2)
    path = demo.path("client", "plant-checkpoint.txt")
    path.write_bytes(signed.to_bytes())
    code, _ = demo.shell("verify", "anchor", path, "--policy", root.policy_path, "--root", root.url)
    demo.facts["plant_anchored"] = code == 0
    return bool(demo.facts["hop_chain_proven"] and code == 0)


def _receipt(demo: Demo, root: RootNode, gateway: GatewayNode) -> bool:
    demo.step("8. one reading: in its block, and the block in the log (receipt)")
    serial_id = DEVICES[2][0]
    with store.reader(gateway.db) as conn:
        found = store.anchored_reading(conn, serial_id)
    if found is None:
        demo.say("[red]no anchored reading from the serial device[/red]")
        return False
    height, raw_block, index = found.block.height, found.block.raw, found.index
    bodies = list(found.block_readings)
    header = parse_block(raw_block).header
    verify_reading(header, bodies[index], index, reading_proof(bodies, index, suite=header.suite))
    demo.facts.setdefault("algorithms", {})["block_hash"] = header.suite.name
    demo.say(
        f"reading {index} of block {height} ({serial_id}, via the serial bridge) is in the block's "
        f"readings root ({len(bodies)} readings; RFC 6962 inclusion proof checked)"
    )
    out = demo.path("proof")
    out.mkdir(exist_ok=True)
    (out / "block.leaf").write_bytes(block_leaf(raw_block))
    (out / "receipt.txt").write_text(str(found.block.receipt))
    code, _ = demo.shell(
        "verify", "receipt", out / "receipt.txt", "--leaf", out / "block.leaf", "--policy", root.policy_path
    )
    demo.say(f"block {height} is log entry {found.block.log_index} of {ORIGIN}")
    demo.facts["receipt_verified"] = code == 0
    return code == 0


def _tamper(raw: bytes) -> tuple[bytes, float, float]:
    """The same signed reading with its value changed (signature untouched)."""
    tag = cbor2.loads(raw)
    protected, unprotected, payload, signature = tag.value
    pack = cbor2.loads(payload)
    old = float(pack[0][2])
    pack[0][2] = old + 10.0
    tampered = cbor2.CBORTag(tag.tag, [protected, unprotected, cbor2.dumps(pack), signature])
    return cbor2.dumps(tampered), old, old + 10.0


def _tampered(demo: Demo, gateway: GatewayNode) -> bool:
    demo.step("9. a tampered reading is refused")
    ident = DEVICES[1][0]
    genuine = reading(CoseSigner(ident, gateway.device_key(ident)), now_ms() + 10**9)
    raw, old, new = _tamper(genuine)
    before = gateway.status()["rejects"].get("bad-signature", 0)

    async def send() -> Any:
        fwd = CoapForwarder(gateway.coap_url)
        await fwd.start()
        try:
            return await fwd.send(raw)
        finally:
            await fwd.stop()

    verdict = asyncio.run(send())
    after = gateway.status()["rejects"].get("bad-signature", 0)
    demo.say(f"{ident}'s reading {old:g} °C changed to {new:g} °C after signing, sent over CoAP:")
    demo.say(f"    gateway answered [bold]{verdict.kind.upper()}[/bold] ({verdict.reason}); quarantined "
             f"as bad-signature: {before} → {after}")  # fmt: skip
    refused = bool(verdict.kind == "nack" and after == before + 1)
    demo.facts["tampered_refused"] = refused
    return refused


# --- step 10: a product traced back to the oven readings that cured it (issue 15) ---------------------------


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _genealogy(window: tuple[int, int]) -> tuple[str, dict[str, Any]]:
    """A raw batch made, cured in the oven over ``window`` (the oven's readings through the gateway, named
    in ``sensorElementList``), the cured batch turned into a product: the product and the EPCIS document."""
    start, end = window
    day = time.strftime("%Y%m%d", time.gmtime(start // 1000))
    raw, cured, product = f"{PLANT}/RAW-{day}-01", f"{PLANT}/CURED-{day}-01", f"{PLANT}/PART-{day}-0001"

    def uri(ident: str) -> str:
        return identifier_uri(ident, DEFAULT_IDENTIFIER_BASE)

    def at(ms: int) -> dict[str, str]:
        return {"eventTime": _iso(ms), "eventTimeZoneOffset": "+00:00"}

    events = [
        {"type": "ObjectEvent", **at(start - 60_000), "epcList": [uri(raw)], "action": "ADD",
         "bizStep": "commissioning", "disposition": "active", "readPoint": {"id": uri(f"{PLANT}/MIXER-1")}},
        {"type": "TransformationEvent", **at(end), "inputEPCList": [uri(raw)], "outputEPCList": [uri(cured)],
         "bizStep": "commissioning", "disposition": "active", "readPoint": {"id": uri(f"{PLANT}/OVEN-LINE")},
         "sensorElementList": [{
             "sensorMetadata": {"deviceID": uri(OVEN), "edgeroot:gateway": uri(GATEWAY),
                                "startTime": _iso(start), "endTime": _iso(end)},
             "sensorReport": [{"type": "Temperature", "uom": "CEL"}],
         }]},
        {"type": "TransformationEvent", **at(end + 1000), "inputEPCList": [uri(cured)],
         "outputEPCList": [uri(product)], "bizStep": "commissioning", "disposition": "active",
         "readPoint": {"id": uri(f"{PLANT}/LABELLER")}},
    ]  # fmt: skip
    document = {
        "@context": [
            "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
            {"edgeroot": EDGEROOT_NS},
        ],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _iso(end + 2000),
        "epcisBody": {"eventList": events},
    }
    return product, document


FETCHED = re.compile(r"fetched from the gateway \S+ \(token\): (\d+) of (\d+) reading")


def _trace(
    demo: Demo, root: RootNode, plant: RootNode, gateway: GatewayNode, window: tuple[int, int]
) -> bool:
    demo.step("10. a product traced back to the oven readings")
    system = demo.system
    keys = demo.path("keys")
    alg = algorithm_of(load_public_pem(gateway.public_key.read_bytes()))
    system.cli("keygen", "--kind", "device", "--name", LINE, "--alg", alg, "--out", keys)
    system.cli("register", "capture-key", LINE, "--root", plant.url, "--key", plant.admin_key,
               "--pub", keys / f"{file_stem(LINE)}.pub")  # fmt: skip
    product, document = _genealogy(window)
    events = demo.path("events.json")
    events.write_text(json.dumps(document, indent=1))
    demo.say(
        f"the curing line's capture key {LINE} signs three EPCIS 2.0 events: a raw batch made, cured in the "
        f"oven (the oven's readings through {GATEWAY} named in sensorElementList), labelled as {product}"
    )
    key = keys / f"{file_stem(LINE)}.key"
    code, _ = demo.shell(
        "event", "capture", events, "--root", plant.url, "--key", key, "--signer", LINE, "--wait"
    )
    if code != 0:
        demo.facts["trace_verified"] = demo.facts["trace_reaches_oven_readings"] = False
        return False
    _cosigned_by_parent(plant)
    code, out = demo.shell(
        "trace", identifier_uri(product, DEFAULT_IDENTIFIER_BASE), "--root", root.url, "--verify",
        "--policy", root.policy_path, "--config-dir", demo.path("client"),
        "--gateway", gateway.http, "--token-file", gateway.state / TOKEN_FILE,
    )  # fmt: skip
    fetched = FETCHED.search(out)
    oven = f"readings of {OVEN.lower()} via {GATEWAY.lower()}" in out.lower()
    whole = fetched is not None and int(fetched.group(1)) == int(fetched.group(2)) > 0
    demo.facts["trace_verified"] = code == 0
    demo.facts["trace_reaches_oven_readings"] = code == 0 and oven and whole
    if fetched is not None:
        demo.facts["oven_readings_verified"] = int(fetched.group(1))
    demo.say(
        "traced from the root: the events at the plant's node (found by referral), each signature and "
        "inclusion proof checked and the list proven complete; the oven's blocks in the root's log with "
        "their receipts; the oven's readings fetched from the gateway with its token, each checked against "
        "its block"
    )
    return bool(demo.facts["trace_reaches_oven_readings"])
