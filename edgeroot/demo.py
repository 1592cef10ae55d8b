"""``edgeroot demo``: the whole system on this machine, in a temporary directory, in under a minute.

A witness and a root node (SQLite), an MQTT broker (mosquitto when installed, else the embedded amqtt
broker; ``--mqtt HOST:PORT`` for one of your own), a gateway with MQTT and CoAP ingest, a serial bridge
on a pseudo-terminal pair, and three simulated devices: one on MQTT, one on CoAP, one on the serial
line. Every part is the real ``edgeroot`` command in its own process, configured the way an operator
would. Progress is shown live; then a device is resolved with ``--verify``, one reading's place in a
block and that block's receipt are verified by the CLI, and a tampered reading is refused. Everything
is stopped and removed at the end (``--dir`` keeps the files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
from rich.console import Console

from chain_lite import keys
from chain_lite.block import parse_block, reading_proof, verify_reading
from chain_lite.log_leaf import block_leaf
from edgeroot.mqtt_broker import BrokerUnavailable, EmbeddedBroker, LocalBroker, free_port, local_broker
from edgeroot.output import EXIT_INVALID, EXIT_OK, JSON_FLAG, Reporter
from runtime.keyfiles import file_stem

ORIGIN = "root.demo.edgeroot.example"
WITNESS = "witness.demo.edgeroot.example"
PREFIX = "88.123"
PLANT = "88.123.99"
GATEWAY = f"{PLANT}/GW-LINE-1"
# (identifier, transport): one device per way in.
DEVICES = [(f"{PLANT}/PUMP-0001", "mqtt"), (f"{PLANT}/VALVE-0002", "coap"), (f"{PLANT}/METER-0003", "serial")]
EDGEROOT = [sys.executable, "-m", "edgeroot"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="run the whole system for a minute", description=__doc__, parents=[JSON_FLAG]
    )
    p.add_argument("--readings", type=int, default=60, help="readings per device (default 60)")
    p.add_argument("--rate", type=float, default=10.0, help="readings per second per device (default 10)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="use this MQTT broker instead of starting one")
    p.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even if mosquitto exists",
    )
    p.add_argument("--dir", type=Path, help="keep the files here instead of a temporary directory")
    p.set_defaults(run=run)


@dataclass
class Demo:
    workdir: Path
    console: Console
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    broker: LocalBroker | None = None
    cables: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    facts: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    def say(self, text: str) -> None:
        self.console.print(text)

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def cli(self, *args: str | Path) -> dict[str, Any]:
        """Run an ``edgeroot`` command in this process (setup steps: fast), show it, return its JSON."""
        from edgeroot.cli import main  # noqa: PLC0415 (cli imports this module)

        shown = " ".join(str(a) for a in args).replace(str(self.workdir) + "/", "")
        self.say(f"[dim]$ edgeroot {shown}[/dim]")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main([*map(str, args), "--json"])
        answer: dict[str, Any] = json.loads(out.getvalue() or "{}")
        if code != 0:
            raise DemoFailed(f"edgeroot {shown} exited {code}: {answer.get('error', answer)}")
        return answer

    def shell(self, *args: str | Path) -> tuple[int, str]:
        """Run an ``edgeroot`` command in a child process, as a user would; show it and its output."""
        shown = " ".join(str(a) for a in args).replace(str(self.workdir) + "/", "")
        self.say(f"[bold]$ edgeroot {shown}[/bold]")
        done = subprocess.run(  # noqa: S603 (our own CLI)
            [*EDGEROOT, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
        )
        for line in (done.stdout + done.stderr).strip().splitlines():
            self.console.print(f"    {line}", markup=False, highlight=False)
        return done.returncode, done.stdout

    def start(self, name: str, *args: str | Path) -> subprocess.Popen[bytes]:
        """A daemon in its own process, its log in ``logs/NAME.log``."""
        self.path("logs").mkdir(exist_ok=True)
        with self.path("logs", f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 (our own CLI)
                [*EDGEROOT, *map(str, args)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        self.procs.append((name, proc))
        return proc

    def alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None and not name.startswith("device"):
                tail = self.path("logs", f"{name}.log").read_text()[-1500:]
                raise DemoFailed(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.cables.close()


class DemoFailed(Exception):
    pass


def wait_http(url: str, demo: Demo, timeout: float = 30.0, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while True:
        demo.alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code in ok:
                return
        if time.monotonic() > deadline:
            raise DemoFailed(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def run(args: argparse.Namespace, report: Reporter) -> int:
    if args.readings < 1 or args.rate <= 0:
        return report.failed("--readings must be at least 1 and --rate above 0")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="edgeroot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(workdir, report.err if report.as_json else report.out)
    started = time.monotonic()
    try:
        code = _run(args, demo)
    except (DemoFailed, BrokerUnavailable) as exc:
        return report.failed(f"demo failed: {exc}")
    finally:
        demo.stop_all()
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    demo.facts["seconds"] = round(time.monotonic() - started, 1)
    demo.say(f"all processes stopped; {demo.facts['seconds']} s in all")
    if code != EXIT_OK:
        return report.invalid("the demo did not prove what it should", **demo.facts)
    return report.ok("demo complete: readings signed, verified, chained, anchored and proven", **demo.facts)


def _run(args: argparse.Namespace, demo: Demo) -> int:
    root_url, policy = _root_and_witness(demo)
    broker = _broker(args, demo)
    coap_port = _gateway(demo, root_url, policy, broker)
    serial_path = _bridge(demo, coap_port)
    _devices(args, demo, broker, coap_port, serial_path)
    verdicts = [
        _progress(args, demo, root_url),
        _resolve(demo, root_url, policy),
        _receipt(demo, policy),
        _tampered(demo, coap_port),
    ]
    return EXIT_OK if all(verdicts) else EXIT_INVALID


def _root_and_witness(demo: Demo) -> tuple[str, Path]:
    demo.step("1. a root node and its witness")
    wport, rport = free_port(), free_port()
    w = demo.cli("witness", "init", "--state", demo.path("witness"), "--name", WITNESS)
    r = demo.cli(
        "root", "init", "--state", demo.path("root"), "--origin", ORIGIN, "--prefix", PREFIX,
        "--witness", f"http://127.0.0.1:{wport}={w['vkey']}",
    )  # fmt: skip
    with demo.path("witness", "logs.txt").open("a") as f:  # the witness follows this log
        f.write(str(r["log_vkey"]) + "\n")
    demo.start("witness", "witness", "run", "--state", demo.path("witness"), "--listen", f"127.0.0.1:{wport}")
    demo.start("root", "root", "run", "--state", demo.path("root"), "--listen", f"127.0.0.1:{rport}")
    root_url = f"http://127.0.0.1:{rport}"
    wait_http(f"{root_url}/healthz", demo)
    demo.say(f"root node {ORIGIN} serving {PREFIX} at {root_url}, cosigned by {WITNESS}")
    return root_url, demo.path("root", "policy.txt")


def _broker(args: argparse.Namespace, demo: Demo) -> tuple[str, int]:
    demo.step("2. an MQTT broker")
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        demo.say(f"using the broker at {args.mqtt}")
        return host or "127.0.0.1", int(port)
    broker = local_broker(demo.workdir, embedded=args.embedded_broker)
    broker.start()
    demo.broker = broker
    if not isinstance(broker, EmbeddedBroker):
        kind = "mosquitto"
    elif args.embedded_broker:
        kind = "embedded amqtt broker (--embedded-broker)"
    else:
        kind = "embedded amqtt broker (no mosquitto here)"
    demo.facts["broker"] = kind
    demo.say(f"{kind} on 127.0.0.1:{broker.port}")
    return broker.host, broker.port


def _gateway(demo: Demo, root_url: str, policy: Path, broker: tuple[str, int]) -> int:
    demo.step("3. a gateway, registered at the root")
    admin = demo.path("keys", "plant-admin")
    demo.cli("keygen", "--kind", "device", "--name", f"{PLANT}/ADMIN", "--out", admin)
    admin_pub, admin_key = admin / f"{file_stem(PLANT)}_ADMIN.pub", admin / f"{file_stem(PLANT)}_ADMIN.key"
    demo.cli("register", "prefix", PLANT, "--root", root_url, "--key", demo.path("root", "admin.pem"),
             "--pub", admin_pub)  # fmt: skip
    state = demo.path("gateway")
    demo.cli("gateway", "init", "--state", state, "--root", root_url, "--id", GATEWAY, "--policy", policy,
             "--mqtt", f"{broker[0]}:{broker[1]}")  # fmt: skip
    demo.cli("register", "gateway", GATEWAY, "--root", root_url, "--key", admin_key, "--pub",
             state / "gateway.pub")  # fmt: skip
    for ident, _ in DEVICES:
        demo.cli("keygen", "--kind", "device", "--name", ident, "--out", demo.path("keys"))
        demo.cli("register", "device", ident, "--root", root_url, "--key", admin_key, "--pub",
                 demo.path("keys", f"{file_stem(ident)}.pub"))  # fmt: skip
    http_port, coap_port = free_port(), free_port()
    text = (state / "gateway.toml").read_text()
    text = text.replace("max_seconds = 5.0", "max_seconds = 1.0").replace(
        "max_readings = 1000", "max_readings = 50"
    )
    text = text.replace("interval_s = 0.5", "interval_s = 0.2")
    text = text.replace('listen = "127.0.0.1:8480"', f'listen = "127.0.0.1:{http_port}"')
    text += f'\n[[connector]]\ntype = "coap"\nhost = "127.0.0.1"\nport = {coap_port}\n'
    (state / "gateway.toml").write_text(text)
    demo.say(f"[dim]gateway.toml: blocks every 1 s or 50 readings, CoAP ingest on udp/{coap_port}[/dim]")
    demo.start("gateway", "gateway", "run", "--state", state)
    gw_http = f"http://127.0.0.1:{http_port}"
    wait_http(f"{gw_http}/healthz", demo, ok=(200, 503))
    demo.say(f"gateway {GATEWAY}: MQTT {broker[0]}:{broker[1]}, CoAP udp/{coap_port}, local API {gw_http}")
    return coap_port


def _bridge(demo: Demo, coap_port: int) -> str:
    demo.step("4. a serial bridge on a pseudo-terminal pair")
    from firmware_bridge.null_modem import null_modem  # noqa: PLC0415

    bridge_end, device_end = demo.cables.enter_context(null_modem())
    demo.start("bridge", "bridge", "run", "--port", bridge_end, "--gateway",
               f"coap://127.0.0.1:{coap_port}/readings", "--state", demo.path("bridge"))  # fmt: skip
    # A serial port flushes what arrived before it was opened (as a real UART would lose it): let the
    # bridge open its end before the device starts talking.
    deadline = time.monotonic() + 20
    while "open at" not in demo.path("logs", "bridge.log").read_text():
        demo.alive()
        if time.monotonic() > deadline:
            raise DemoFailed("the bridge did not open its serial port")
        time.sleep(0.1)
    demo.say(f"bridge on {bridge_end} → gateway CoAP; the device's end of the cable is {device_end}")
    return device_end


def _devices(
    args: argparse.Namespace, demo: Demo, broker: tuple[str, int], coap_port: int, serial: str
) -> None:
    demo.step("5. devices sign readings and send them")
    for n, (ident, transport) in enumerate(DEVICES):
        where = {
            "mqtt": ["--mqtt", f"mqtt://{broker[0]}:{broker[1]}/edgeroot/readings/{ident.split('/')[1]}"],
            "coap": ["--coap", f"coap://127.0.0.1:{coap_port}/readings"],
            "serial": ["--serial", serial],
        }[transport]
        key = demo.path("keys", f"{file_stem(ident)}.key")
        demo.start(f"device-{n}", "device", "simulate", *where, "--id", ident, "--key", key,
                   "--rate", str(args.rate), "--count", str(args.readings), "--json")  # fmt: skip
        demo.say(f"{ident}: {args.readings} readings over {transport} at {args.rate:g}/s")


def _checkpoint(root_url: str) -> tuple[int, list[str]]:
    text = httpx.get(f"{root_url}/log/checkpoint", timeout=2).text
    body, _, sigs = text.partition("\n\n")
    size = int(body.split("\n")[1])
    names = [line.split(" ")[1] for line in sigs.splitlines() if line.startswith("\u2014 ")]
    return size, [n for n in names if n != ORIGIN]


def _progress(args: argparse.Namespace, demo: Demo, root_url: str) -> bool:
    """Live figures until every device is done and everything the gateway stored is anchored; then each
    device's acknowledged readings against what the gateway stored (none may be missing)."""
    demo.step("6. live: readings in, blocks closed, blocks anchored, checkpoints cosigned")
    from edge import store  # noqa: PLC0415

    sent = args.readings * len(DEVICES)
    deadline = time.monotonic() + 30 + args.readings / args.rate
    db = demo.path("gateway", "gateway.db")
    while True:
        demo.alive()
        st = store.status(db)
        blocks = st["blocks"]
        closed = sum(blocks.values())
        size, cosigners = _checkpoint(root_url)
        demo.say(
            f"readings in {st['readings']:>4}/{sent} · blocks closed {closed:>3} · anchored "
            f"{blocks['anchored']:>3} · log size {size:>3}, cosigned by {', '.join(cosigners) or 'nobody'}"
        )
        devices_done = all(p.poll() is not None for name, p in demo.procs if name.startswith("device"))
        if devices_done and st["unanchored_blocks"] == 0 and not st["unchained_readings"]:
            break
        if time.monotonic() > deadline:
            raise DemoFailed(f"not everything anchored in time: {st}")
        time.sleep(1.0)
    demo.facts.update(readings=st["readings"], blocks=closed, log_size=size, cosigned_by=cosigners)
    conn = store.connect(db)
    try:
        stored = dict(conn.execute("SELECT signer, COUNT(*) FROM readings GROUP BY signer").fetchall())
    finally:
        conn.close()
    whole = True
    for n, (ident, transport) in enumerate(DEVICES):
        lines = demo.path("logs", f"device-{n}.log").read_text().strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise DemoFailed(f"device {ident} printed no result: {lines[-5:]}") from None
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


def _resolve(demo: Demo, root_url: str, policy: Path) -> bool:
    demo.step("7. resolve a device, with proofs checked offline against the policy")
    ident = DEVICES[0][0]
    code, _ = demo.shell("resolve", ident, "--root", root_url, "--verify", "--policy", policy,
                         "--config-dir", demo.path("client"))  # fmt: skip
    demo.facts["resolve_verified"] = code == 0
    return code == 0


def _receipt(demo: Demo, policy: Path) -> bool:
    demo.step("8. one reading: in its block, and the block in the log (receipt)")
    from edge import store  # noqa: PLC0415

    conn = store.connect(demo.path("gateway", "gateway.db"))
    try:
        serial_id = DEVICES[2][0]
        row = conn.execute(
            "SELECT r.block, b.raw, b.receipt, b.log_index FROM readings r "
            "JOIN blocks b ON b.height = r.block "
            "WHERE r.signer = ? AND b.state = 'anchored' ORDER BY r.id LIMIT 1",
            (serial_id,),
        ).fetchone()
        if row is None:
            demo.say("[red]no anchored reading from the serial device[/red]")
            return False
        height, raw_block, receipt, log_index = int(row[0]), bytes(row[1]), str(row[2]), int(row[3])
        bodies = [
            bytes(r[0])
            for r in conn.execute("SELECT raw FROM readings WHERE block = ? ORDER BY id", (height,))
        ]
        signers = [
            str(r[0])
            for r in conn.execute("SELECT signer FROM readings WHERE block = ? ORDER BY id", (height,))
        ]
    finally:
        conn.close()
    index = signers.index(serial_id)
    header = parse_block(raw_block).header
    verify_reading(header, bodies[index], index, reading_proof(bodies, index))
    demo.say(
        f"reading {index} of block {height} ({serial_id}, via the serial bridge) is in the block's "
        f"readings root ({len(bodies)} readings; RFC 6962 inclusion proof checked)"
    )
    out = demo.path("proof")
    out.mkdir(exist_ok=True)
    (out / "block.leaf").write_bytes(block_leaf(raw_block))
    (out / "receipt.txt").write_text(receipt)
    code, _ = demo.shell(
        "verify", "receipt", out / "receipt.txt", "--leaf", out / "block.leaf", "--policy", policy
    )
    demo.say(f"block {height} is log entry {log_index} of {ORIGIN}")
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


def _tampered(demo: Demo, coap_port: int) -> bool:
    demo.step("9. a tampered reading is refused")
    from chain_lite.cose import CoseSigner  # noqa: PLC0415
    from edge import store  # noqa: PLC0415
    from edgeroot.device import reading  # noqa: PLC0415
    from firmware_bridge.forward import CoapForwarder  # noqa: PLC0415

    ident = DEVICES[1][0]
    key = keys.load_private_pem(demo.path("keys", f"{file_stem(ident)}.key").read_bytes())
    genuine = reading(CoseSigner(ident, key), time.time_ns() // 1_000_000 + 10**9)
    raw, old, new = _tamper(genuine)
    before = store.status(demo.path("gateway", "gateway.db"))["rejects"].get("bad-signature", 0)

    async def send() -> Any:
        fwd = CoapForwarder(f"coap://127.0.0.1:{coap_port}/readings")
        await fwd.start()
        try:
            return await fwd.send(raw)
        finally:
            await fwd.stop()

    verdict = asyncio.run(send())
    after = store.status(demo.path("gateway", "gateway.db"))["rejects"].get("bad-signature", 0)
    demo.say(f"{ident}'s reading {old:g} °C changed to {new:g} °C after signing, sent over CoAP:")
    demo.say(f"    gateway answered [bold]{verdict.kind.upper()}[/bold] ({verdict.reason}); quarantined "
             f"as bad-signature: {before} → {after}")  # fmt: skip
    refused = bool(verdict.kind == "nack" and after == before + 1)
    demo.facts["tampered_refused"] = refused
    return refused
