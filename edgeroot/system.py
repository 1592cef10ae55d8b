"""The whole system in one directory: witness, root node, MQTT broker, gateway, bridge and devices.

Every daemon is the real ``edgeroot`` command in its own child process, its log in ``logs/NAME.log``;
setup steps (``keygen``, ``root init``, ``register``, ``gateway init``) are the same commands an operator
types, run in this process because they are quick. ``edgeroot demo``, the benchmarks (``bench/``) and the
end-to-end tests all put the system together here, so there is one way to do it.

Waiting is always for a condition (a port answering, a log line, a row) with a deadline and a message
that says what did not happen (:func:`wait_until`); a daemon that exits while something waits for it
fails the wait with the tail of its log.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from chain_lite.cose import CoseSigner
from chain_lite.keys import PrivateKey, load_private_pem
from chain_lite.note import SIGTYPE_SM2, VerifierKey
from chain_lite.policy import Policy
from chain_lite.registry import Value, admin_kid, build_write, sign_write
from chain_lite.suite import LOG_PROFILES
from edge import config as gateway_config
from edge import store
from edgeroot.cli import main
from resolver import config as root_config
from resolver.witness_server import witness_log_line
from rootclient import routes
from rootclient.client import RootClient
from runtime.clock import now_ms
from runtime.keyfiles import file_stem

if TYPE_CHECKING:
    from edgeroot.mqtt_broker import LocalBroker

EDGEROOT = [sys.executable, "-m", "edgeroot"]
T = TypeVar("T")


class HarnessError(Exception):
    """A part of the system did not start, exited, or a condition was not met in time."""


START_DEADLINE_S = 60.0
"""How long a daemon may take to be ready: a root starts in about a second of CPU, but with four test
workers beside `stress-ng --cpu 2` (issue 12's stressed runs) it gets a fraction of a core; a deadline
only bounds how long a broken start takes to be reported."""
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _listen_ports() -> range:
    """Ports outside the kernel's ephemeral range: no outgoing connection is given one of these, so a
    port picked here stays free until the service it was picked for binds it (a port from ``bind(0)``
    comes from the ephemeral range, and an HTTP client's connection took one such port in CI between
    the pick and the bind)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    ports = range(10_000, low) if low - 10_000 >= 2_000 else range(high + 1, 65_536)
    # Parallel test workers (pytest-xdist; their subprocesses inherit the variables) each take their own
    # slice, so two workers never pick the same port between one's check and its service's bind.
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return ports[int(worker[2:]) % int(count) :: int(count)]
    return ports


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port on loopback that nothing uses over TCP or UDP (CoAP uses the same number), outside the
    ephemeral range and never handed out twice by this process."""
    ports = _listen_ports()
    pick = random.Random(os.getpid() ^ time.monotonic_ns())  # noqa: S311 (spreads test ports, no secret)
    for _ in range(200):
        port = pick.choice(ports)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise HarnessError(f"no free loopback port in {ports.start}-{ports.stop - 1} after 200 tries")


def wait_until(
    what: str | Callable[[], str],
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``condition`` until it returns a true value and return that value. ``check`` runs before each
    try (to fail fast, e.g. when a process exited). :class:`HarnessError` naming ``what`` on timeout
    (a callable ``what`` is asked then, so the message can say how far things got)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise HarnessError(f"{what() if callable(what) else what}: not within {timeout:g} s")
        time.sleep(interval)


ANY_STATUS = range(100, 600)


def wait_http(
    url: str,
    *,
    ok: Sequence[int] = (200,),
    timeout: float = 30.0,
    check: Callable[[], None] | None = None,
) -> httpx.Response:
    """Wait until ``url`` answers with one of the ``ok`` status codes (``ANY_STATUS``: answers at all);
    that response."""

    codes = "" if ok is ANY_STATUS else f" {'/'.join(map(str, ok))}"
    response = wait_until(f"{url} answering{codes}", lambda: _answer(url, ok), timeout=timeout, check=check)
    assert response is not None  # wait_until returns only a true value
    return response


# --- configuration files ---------------------------------------------------------------------------------

# What the harness sets in a configuration file: TOML values; a table is a mapping, an array of tables a
# list of mappings, None removes a key.
Overrides = Mapping[str, Any]


def configure(path: Path, overrides: Overrides) -> None:
    """Every configuration edit of the harness: ``overrides`` merged into the ``gateway.toml`` or
    ``root.toml`` that ``init`` wrote, through the config package's own ``update`` (declared keys only,
    each written again with its help; tables merge key by key, arrays of tables item by item with extra
    items appended, None removes a key). A key that was renamed or removed fails here, loudly."""
    updaters: dict[str, Callable[[Path, Overrides], None]] = {
        "gateway.toml": gateway_config.update,
        "root.toml": root_config.update,
    }
    if path.name not in updaters:
        raise HarnessError(f"no configuration schema for {path.name}")
    updaters[path.name](path, _plain(overrides))


def _plain(value: Any) -> Any:
    """Paths as strings (TOML has no path type); tables and arrays recursively."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


# --- the parts -------------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One ``edgeroot`` child process; ``ready`` says when it is up, ``finite`` ones exit on their own."""

    name: str
    args: list[str]
    log: Path
    ready: Callable[[], object] | None = None
    finite: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_start: int = 0  # where this run's lines begin in the log (a restart appends)

    def start(self, env: Mapping[str, str] | None = None, timeout: float = START_DEADLINE_S) -> None:
        self.launch(env)
        self.wait_ready(timeout)

    def launch(self, env: Mapping[str, str] | None = None) -> None:
        """Start the process without waiting for it to be ready (:meth:`wait_ready`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(  # noqa: S603 (our own CLI)
                [*EDGEROOT, *self.args], stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env
            )

    def wait_ready(self, timeout: float = START_DEADLINE_S) -> None:
        if self.ready is not None:
            wait_until(f"{self.name} ready", self.ready, timeout=timeout, check=self.check)

    def check(self) -> None:
        """Raise if the process exited (with the tail of its log)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-2000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; its code (negative: killed by that signal)."""
        if self.proc is None:
            raise HarnessError(f"{self.name} is not running")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise HarnessError(f"{self.name} did not exit within {timeout:g} s of signal {sig}") from None
        self.proc = None
        return code

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for a finite process to exit by itself; its exit code."""
        if self.proc is None:
            raise HarnessError(f"{self.name} is not running")
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name} did not exit within {timeout:g} s") from None
        self.proc = None
        return code

    def log_text(self) -> str:
        """Everything this daemon logged, over all its runs."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def this_run(self) -> str:
        """What the current (or last) run logged."""
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")


@dataclass
class RootNode:
    """A root node (and its witness, if any) as initialised by ``root init``."""

    url: str
    port: int
    state: Path
    origin: str
    prefix: str
    witness_name: str | None
    witness_url: str | None
    witness_state: Path | None

    @property
    def policy_path(self) -> Path:
        return self.state / "policy.txt"

    @property
    def admin_key(self) -> Path:
        return self.state / "admin.pem"

    def policy(self) -> Policy:
        return Policy.parse(self.policy_path.read_bytes())

    def client(self) -> RootClient:
        return RootClient(self.url)

    def admin_signer(self, prefix: str | None = None, key: Path | None = None) -> CoseSigner:
        """The signer of ``prefix``'s admin (the root prefix's, from ``admin.pem``, by default)."""
        pem = (key or self.admin_key).read_bytes()
        return CoseSigner(admin_kid(prefix or self.prefix), load_private_pem(pem))

    def write(self, op: str, identifier: str, values: list[Value] | None, signer: CoseSigner) -> bytes:
        """A signed registry write request (not sent)."""
        req = build_write(self.origin, op, identifier, values, timestamp_ms=now_ms(), nonce=os.urandom(16))
        return sign_write(req, signer).raw


@dataclass
class GatewayNode:
    """A gateway's state directory and where it listens."""

    ident: str
    state: Path
    http: str
    coap_port: int
    mqtt: tuple[str, int]
    device_keys: dict[str, Path] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.state / "gateway.db"

    @property
    def config(self) -> Path:
        return self.state / "gateway.toml"

    @property
    def public_key(self) -> Path:
        return self.state / "gateway.pub"

    @property
    def coap_url(self) -> str:
        return f"coap://127.0.0.1:{self.coap_port}/readings"

    def device_signer(self, ident: str) -> CoseSigner:
        return CoseSigner(ident, self.device_key(ident))

    def device_key(self, ident: str) -> PrivateKey:
        return load_private_pem(self.device_keys[ident].read_bytes())

    def status(self) -> dict[str, Any]:
        return store.status(self.db)

    def anchored(self, readings: int) -> bool:
        """At least ``readings`` stored, all of them chained and every block anchored."""
        st = self.status()
        return st["readings"] >= readings and not st["unchained_readings"] and not st["unanchored_blocks"]

    def wait_anchored(
        self, readings: int, timeout: float = 60.0, check: Callable[[], None] | None = None
    ) -> None:
        wait_until(
            lambda: f"{readings} readings stored and anchored (now {self.status()})",
            lambda: self.anchored(readings),
            timeout=timeout,
            interval=0.2,
            check=check,
        )


class System:
    """The parts of one system in ``workdir``; :meth:`stop_all` stops every process it started."""

    def __init__(self, workdir: Path, *, echo: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.echo = echo  # shown each setup command as ``edgeroot ...`` (the demo prints them)
        self.daemons: dict[str, Daemon] = {}
        self.broker: LocalBroker | None = None
        self.cables = contextlib.ExitStack()
        self.root: RootNode | None = None
        self.gateway: GatewayNode | None = None

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    def shown(self, args: Sequence[str | Path]) -> str:
        return " ".join(str(a) for a in args).replace(str(self.workdir) + "/", "")

    def cli(self, *args: str | Path) -> dict[str, Any]:
        """Run an ``edgeroot`` command in this process (setup steps: fast); its JSON answer."""
        shown = self.shown(args)
        if self.echo is not None:
            self.echo(f"$ edgeroot {shown}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main([*map(str, args), "--json"])
        answer: dict[str, Any] = json.loads(out.getvalue() or "{}")
        if code != 0:
            raise HarnessError(f"edgeroot {shown} exited {code}: {answer.get('error', answer)}")
        return answer

    # --- processes ---------------------------------------------------------------------------------------

    def daemon(
        self,
        name: str,
        *args: str | Path,
        ready: Callable[[], object] | None = None,
        finite: bool = False,
    ) -> Daemon:
        """Declare a child process (not started); its log is ``logs/NAME.log``."""
        d = Daemon(name, [str(a) for a in args], self.path("logs", f"{name}.log"), ready, finite)
        self.daemons[name] = d
        return d

    def start(
        self, name: str, env: Mapping[str, str] | None = None, timeout: float = START_DEADLINE_S
    ) -> Daemon:
        """Start (or restart) a declared process and wait until it is ready."""
        d = self.daemons[name]
        d.start(env, timeout)
        return d

    def start_together(self, *names: str, timeout: float = START_DEADLINE_S) -> None:
        """Start several declared processes at once (their start-ups overlap: Python's imports take most
        of a second each), then wait until each is ready."""
        for name in names:
            self.daemons[name].launch()
        for name in names:
            self.daemons[name].wait_ready(timeout)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return self.daemons[name].stop(sig, timeout)

    def alive(self) -> None:
        """Raise if a daemon that should be running exited."""
        for d in self.daemons.values():
            if not d.finite:
                d.check()

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM every process, newest first; kill what is still there at the deadline; then the
        broker and the serial cables."""
        running = [d for d in reversed(self.daemons.values()) if d.proc is not None]
        for d in running:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for d in running:
            assert d.proc is not None
            try:
                d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
            d.proc = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.cables.close()

    # --- root and witness --------------------------------------------------------------------------------

    def init_root(
        self,
        origin: str,
        prefix: str,
        *,
        witness: str | None = None,
        interval_ms: int | None = None,
        suite: str = "default",
    ) -> RootNode:
        """``witness init`` (if a witness name is given) and ``root init --suite SUITE`` asking it to
        cosign, the witness following the root's log; declares the ``witness`` and ``root`` daemons (not
        started). With ``suite="sm"`` the witness cosigns with SM2 too (``witness init --alg sm2``), so
        log key, witness and hash are all 国密 (D-084)."""
        rport = free_port()
        args: list[str | Path] = ["root", "init", "--state", self.path("root"), "--origin", origin,
                                  "--prefix", prefix, "--suite", suite]  # fmt: skip
        witness_url = None
        if witness is not None:
            wport = free_port()
            witness_url = f"http://127.0.0.1:{wport}"
            alg = "sm2" if LOG_PROFILES[suite].log_sigtype == SIGTYPE_SM2 else "p256"
            w = self.cli("witness", "init", "--state", self.path("witness"), "--name", witness, "--alg", alg)
            args += ["--witness", f"{witness_url}={w['vkey']}"]
        r = self.cli(*args)
        if witness is not None:
            with self.path("witness", "logs.txt").open("a") as f:  # the witness follows this log
                vkey = VerifierKey.parse(str(r["log_vkey"]))
                f.write(witness_log_line(vkey, LOG_PROFILES[suite].hash) + "\n")
            self.daemon("witness", "witness", "run", "--state", self.path("witness"),
                        "--listen", f"127.0.0.1:{wport}", ready=lambda: _listening(wport))  # fmt: skip
        if interval_ms is not None:
            configure(self.path("root", "root.toml"), {"sequencer": {"interval_ms": interval_ms}})
        url = f"http://127.0.0.1:{rport}"
        self.daemon("root", "root", "run", "--state", self.path("root"), "--listen", f"127.0.0.1:{rport}",
                    ready=lambda: _answer(url + routes.CHECKPOINT, (200,)))  # fmt: skip
        self.root = RootNode(
            url, rport, self.path("root"), origin, prefix, witness, witness_url,
            None if witness is None else self.path("witness"),
        )  # fmt: skip
        return self.root

    def start_root(self, timeout: float = START_DEADLINE_S) -> RootNode:
        """The witness (if any), then the root; returns once the root serves a published checkpoint
        (before that it answers, but refuses writes: "no published checkpoint yet")."""
        assert self.root is not None, "init_root first"
        if "witness" in self.daemons:
            self.start("witness", timeout=timeout)
        self.start("root", timeout=timeout)
        return self.root

    def init_child_root(
        self, name: str, origin: str, prefix: str, *, parent: RootNode, suite: str = "default"
    ) -> RootNode:
        """``root init --parent`` of a node serving ``prefix`` under ``parent`` (a secondary or enterprise
        node, issue 14), state in ``NAME/``, cosigned by its parent (the parent's witness key, which its
        ``root init`` made, of its suite: D-105) so that the parent anchors its log; declares the ``NAME``
        daemon (not started). The parent delegates ``prefix`` to it with :meth:`delegate`."""
        from resolver.anchoring import ensure_witness_key  # noqa: PLC0415 (only for a hierarchy)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cosigner = ensure_witness_key(parent.state, parent.origin)
        self.cli("root", "init", "--state", self.path(name), "--origin", origin, "--prefix", prefix,
                 "--suite", suite, "--parent", parent.url,
                 "--witness", f"{parent.url}={cosigner.vkey()}")  # fmt: skip
        self.daemon(name, "root", "run", "--state", self.path(name), "--listen", f"127.0.0.1:{port}",
                    ready=lambda: _answer(url + routes.CHECKPOINT, (200,)))  # fmt: skip
        return RootNode(url, port, self.path(name), origin, prefix, cosigner.name, parent.url, None)

    def delegate(self, parent: RootNode, child: RootNode) -> None:
        """``register prefix --node --node-policy``: ``parent``'s admin delegates ``child.prefix`` to it."""
        self.cli("register", "prefix", child.prefix, "--root", parent.url, "--key", parent.admin_key,
                 "--node", child.url, "--node-policy", child.policy_path)  # fmt: skip

    # --- MQTT broker -------------------------------------------------------------------------------------

    def start_broker(
        self, *, embedded: bool = False, persistence: bool = True, mosquitto_only: bool = False
    ) -> LocalBroker:
        """mosquitto (or the embedded amqtt broker) on a loopback port, stopped by :meth:`stop_all`.
        ``mosquitto_only``: refuse the embedded broker (benchmarks and drills: DESIGN §9)."""
        from edgeroot.mqtt_broker import (  # noqa: PLC0415 (it imports free_port from here)
            BrokerUnavailable,
            Mosquitto,
            local_broker,
        )

        broker = local_broker(self.workdir, embedded=embedded, persistence=persistence)
        if mosquitto_only and not isinstance(broker, Mosquitto):
            raise BrokerUnavailable("needs mosquitto (the embedded amqtt broker stalls under load)")
        broker.start()
        self.broker = broker
        return broker

    # --- gateway -----------------------------------------------------------------------------------------

    def register_prefix(self, prefix: str, keys: Path | None = None) -> Path:
        """A new admin key for ``prefix`` (``keygen``, into ``keys``) and the prefix registered with the
        root admin's key; the admin's private key file."""
        assert self.root is not None, "init_root first"
        keys = keys or self.path("keys", f"{file_stem(prefix)}-admin")
        self.cli("keygen", "--kind", "device", "--name", f"{prefix}/ADMIN", "--out", keys)
        self.cli("register", "prefix", prefix, "--root", self.root.url, "--key", self.root.admin_key,
                 "--pub", keys / f"{file_stem(prefix)}_ADMIN.pub")  # fmt: skip
        return keys / f"{file_stem(prefix)}_ADMIN.key"

    def init_gateway(
        self,
        ident: str,
        *,
        admin_key: Path,
        mqtt: tuple[str, int],
        devices: Sequence[str] = (),
        provision_locally: bool = False,
        settings: Overrides | None = None,
        device_alg: str = "p256",
        gateway_alg: str = "p256",
        devices_at: tuple[RootNode, Path] | None = None,
    ) -> GatewayNode:
        """``gateway init``, the gateway and each device (a new key) registered at the root with
        ``admin_key``, its configuration set (local API port, a CoAP connector, ``settings``); declares
        the ``gateway`` daemon (not started). ``provision_locally`` also lists the devices' keys in
        gateway.toml (works offline) instead of leaving the gateway to fetch them from the registry.
        ``device_alg`` is the devices' ``keygen --alg`` (``sm2``: 国密 devices on this gateway),
        ``gateway_alg`` the ``gateway init --alg`` of the key that signs its blocks. ``devices_at`` (a node
        and its prefix admin's key) registers the devices at another node than the gateway's root (a
        node its root delegated their prefix to: the gateway finds their keys by referral)."""
        assert self.root is not None, "init_root first"
        state = self.path("gateway")
        self.cli("gateway", "init", "--state", state, "--root", self.root.url, "--id", ident,
                 "--policy", self.root.policy_path, "--mqtt", f"{mqtt[0]}:{mqtt[1]}",
                 "--alg", gateway_alg)  # fmt: skip
        self.cli("register", "gateway", ident, "--root", self.root.url, "--key", admin_key,
                 "--pub", state / "gateway.pub")  # fmt: skip
        keys: dict[str, Path] = {}
        for device in devices:
            self.cli("keygen", "--kind", "device", "--name", device, "--alg", device_alg,
                     "--out", self.path("keys"))  # fmt: skip
            at, key = devices_at or (self.root, admin_key)
            self.cli("register", "device", device, "--root", at.url, "--key", key,
                     "--pub", self.path("keys", f"{file_stem(device)}.pub"))  # fmt: skip
            keys[device] = self.path("keys", f"{file_stem(device)}.key")
        http_port, coap_port = free_port(), free_port()
        http = f"http://127.0.0.1:{http_port}"
        local = {d: self.path("keys", f"{file_stem(d)}.pub") for d in devices} if provision_locally else {}
        wanted = dict(settings or {})
        wanted["http"] = {"listen": f"127.0.0.1:{http_port}", **wanted.get("http", {})}
        if local:
            wanted["devices"] = {**local, **wanted.get("devices", {})}
        # init declares one connector (MQTT); CoAP ingest comes second.
        coap = {"type": "coap", "host": "127.0.0.1", "port": coap_port}
        wanted["connector"] = [*wanted.get("connector", [{}]), coap]
        configure(state / "gateway.toml", wanted)
        self.daemon("gateway", "gateway", "run", "--state", state,
                    ready=lambda: _answer(f"{http}/healthz", (200, 503)))  # fmt: skip
        self.gateway = GatewayNode(ident, state, http, coap_port, mqtt, keys)
        return self.gateway

    # --- bridge and devices ------------------------------------------------------------------------------

    def null_modem(self) -> tuple[str, str]:
        """A pseudo-terminal pair (the bridge's end, the device's end), closed by :meth:`stop_all`."""
        from firmware_bridge.null_modem import null_modem  # noqa: PLC0415 (POSIX pty; only serial parts)

        ends: tuple[str, str] = self.cables.enter_context(null_modem())
        return ends

    def start_bridge(
        self,
        port: str | Path,
        *,
        name: str = "bridge",
        baud: int | None = None,
        state: Path | None = None,
        start: bool = True,
    ) -> Daemon:
        """``bridge run`` on a serial port, forwarding to the gateway's CoAP; returns once the port is open
        (a serial port flushes what arrived before it was opened, as a real UART would lose it).
        ``start=False`` only declares it (for :meth:`start_together`)."""
        assert self.gateway is not None, "init_gateway first"
        args: list[str | Path] = ["bridge", "run", "--port", port, "--gateway", self.gateway.coap_url]
        if baud is not None:
            args += ["--baud", str(baud)]
        if state is not None:
            args += ["--state", state]
        d = self.daemon(name, *args)
        d.ready = lambda: "open at" in d.this_run()
        return self.start(name) if start else d

    def simulate(self, name: str, ident: str, where: Sequence[str], *extra: str) -> Daemon:
        """``device simulate`` (a finite process: it exits when it has sent its readings)."""
        assert self.gateway is not None, "init_gateway first"
        self.daemon(name, "device", "simulate", *where, "--id", ident,
                        "--key", self.gateway.device_keys[ident], *extra, finite=True)  # fmt: skip
        return self.start(name)


def _answer(url: str, ok: Sequence[int]) -> httpx.Response | None:
    """The response if ``url`` answers with one of the ``ok`` codes, else None."""
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(url, timeout=1)
        if response.status_code in ok:
            return response
    return None


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False
