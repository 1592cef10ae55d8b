"""Root nodes and witnesses for tests: real uvicorn servers on loopback ports, real databases."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.keys import PrivateKey, generate_p256, load_private_pem
from chain_lite.note import SIGTYPE_SM2, VerifierKey
from chain_lite.policy import Policy
from chain_lite.registry import (
    DEFAULT_TTL,
    Delegation,
    Value,
    admin_kid,
    build_write,
    prefix_handle,
    pubkey_value,
    sign_write,
)
from chain_lite.suite import LOG_PROFILES, LogProfile
from edgeroot.system import free_port
from resolver import config as root_config
from resolver.assembly import build_root_app, build_witness_app, init_root, init_witness
from resolver.db import Database
from resolver.log_store import latest_checkpoint_bytes
from resolver.witness_server import witness_log_line
from rootclient.client import RootClient
from rootclient.errors import ClientError
from runtime.clock import now_ms

__all__ = [
    "POSTGRES_DOWN",
    "POSTGRES_URL",
    "SECOND_LINE",
    "Hierarchy",
    "RootUnderTest",
    "ServerThread",
    "TamperingProxy",
    "delegate",
    "delegation_to",
    "free_port",
    "running_hierarchy",
    "running_root",
]

POSTGRES_URL = os.environ.get("EDGEROOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ORIGIN = "root.test"


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] or type(exc).__name__
    return None


POSTGRES_DOWN = _postgres_reachable()


class ServerThread:
    """A real uvicorn server on a loopback port, in a thread, stopped on exit."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database; yields a URL whose search_path points at it."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@dataclass
class RootUnderTest:
    url: str
    state: Path
    origin: str
    policy: Policy
    admin: PrivateKey
    witness_url: str
    witness_server: ServerThread
    witness_state: Path
    server: ServerThread
    prefixes: tuple[str, ...] = ("88.123",)
    app: Any = None
    """The served app (its ``state.hooks`` are what systemd would call)."""

    @property
    def prefix(self) -> str:
        """The first root prefix: the one the admin key signs for by default."""
        return self.prefixes[0]

    @property
    def policy_path(self) -> Path:
        return self.state / "policy.txt"

    def reload(self) -> str:
        """What SIGHUP does to the running node (``root.toml`` read again), from this thread."""
        result: str = self.app.state.hooks.reload()
        return result

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=10).json()
        return answer

    def wait_for_delegations(self, expected: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
        """``/healthz`` once its ``prefixes`` have the ``delegation`` verdicts ``expected`` (prefix ->
        verdict, every served prefix named); the delegation check runs at start, after a reload, and
        every ``parent_check_s``."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            found = {p["prefix"]: p["delegation"] for p in health.get("prefixes", [])}
            if found == expected:
                return health
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.origin}: delegations {found}, not {expected}: {health}")
            time.sleep(0.05)

    def client(self) -> RootClient:
        return RootClient(self.url)

    def admin_signer(self, prefix: str | None = None) -> CoseSigner:
        return CoseSigner(admin_kid(prefix or self.prefix), self.admin)

    def write(self, op: str, identifier: str, values: list[Value] | None, signer: CoseSigner) -> bytes:
        """A signed write request (not sent)."""
        req = build_write(self.origin, op, identifier, values, timestamp_ms=now_ms(), nonce=os.urandom(16))
        return sign_write(req, signer).raw

    def add_prefix(self, prefix: str) -> CoseSigner:
        """Register ``prefix`` under the root prefix with a new admin key; returns that admin's signer."""
        key = generate_p256()
        values = [pubkey_value(300, key.public_key())]
        raw = self.write("create", prefix_handle(prefix), values, self.admin_signer())
        with self.client() as c:
            c.write(raw)
        return CoseSigner(admin_kid(prefix), key)

    def wait_for_size(self, size: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while SignedCheckpoint.parse(c.checkpoint()).checkpoint.size < size:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"log did not reach size {size}")
                time.sleep(0.02)

    def _served_checkpoint(self) -> bytes | None:
        """The checkpoint the API serves; ``None`` while it has none yet (503)."""
        with self.client() as c:
            try:
                return c.checkpoint()
            except ClientError as exc:
                if exc.status != 503:
                    raise
                return None

    def settle(self, timeout: float = 10.0) -> int:
        """Wait until nothing is queued, the latest checkpoint is published and the API serves it; its
        size."""
        database = Database(root_config.load(self.state).database)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with database.transaction(write=False) as tx:
                    pending = tx.one("SELECT COUNT(*) FROM pending")
                    unpublished = tx.one("SELECT COUNT(*) FROM checkpoints WHERE published = 0")
                    latest = latest_checkpoint_bytes(tx)
                if pending == (0,) and unpublished == (0,) and latest is not None:
                    served = self._served_checkpoint()
                    if served == latest:
                        return SignedCheckpoint.parse(served).checkpoint.size
                if time.monotonic() > deadline:
                    raise TimeoutError("the sequencer or the API did not catch up")
                time.sleep(0.02)
        finally:
            database.close()


@contextlib.contextmanager
def running_root(
    tmp: Path,
    database: str,
    *,
    interval_ms: int = 50,
    profile: LogProfile = LOG_PROFILES["default"],
    origin: str = ORIGIN,
    prefixes: tuple[str, ...] = ("88.123",),
    parent: str = "",
) -> Iterator[RootUnderTest]:
    """A root node with one witness, served on loopback; the sequencer runs every ``interval_ms``;
    ``profile`` is the log's suite (``root init --suite``; an SM2 log, ``sm``, gets an SM2 witness, so the
    node is 国密 throughout); ``origin``, ``prefixes`` (``--prefix``, repeated) and ``parent`` as
    ``edgeroot root init`` takes them (a node under a parent)."""
    wstate, rstate = tmp / "witness", tmp / "root"
    witness_alg = "sm2" if profile.log_sigtype == SIGTYPE_SM2 else "p256"
    wname = "witness.test" if origin == ORIGIN else f"witness.{origin}"
    wkey = init_witness(wstate, wname, [], alg=witness_alg)
    wport = free_port()
    result = init_root(
        rstate,
        origin,
        *prefixes,
        database=database,
        witnesses=[(f"http://127.0.0.1:{wport}", VerifierKey.parse(wkey.vkey()))],
        profile=profile,
        parent=parent,
    )
    with (wstate / "logs.txt").open("a") as f:
        f.write(witness_log_line(VerifierKey.parse(result.log_vkey), profile.hash) + "\n")
    cfg_text = (rstate / "root.toml").read_text().replace("interval_ms = 250", f"interval_ms = {interval_ms}")
    (rstate / "root.toml").write_text(cfg_text)
    cfg = root_config.load(rstate)
    app, _node = build_root_app(cfg)
    with ServerThread(build_witness_app(wstate), wport) as witness, ServerThread(app) as server:
        node = RootUnderTest(
            server.url,
            rstate,
            origin,
            Policy.parse(result.policy.read_bytes()),
            load_private_pem(result.admin_key.read_bytes()),
            witness.url,
            witness,
            wstate,
            server,
            result.prefixes,
            app,
        )
        node.settle()
        yield node


def delegation_to(child: RootUnderTest, prefix: str, urls: tuple[str, ...] | None = None) -> Delegation:
    """The delegation of ``prefix`` to ``child`` (its URL, log key and policy file), as
    ``edgeroot register prefix --node --node-policy`` writes it."""
    policy = child.policy_path.read_text()
    return Delegation(prefix, urls or (child.url,), str(child.policy.logs[0].verifier.vkey()), policy)


def delegate(
    parent: RootUnderTest, delegation: Delegation, *, op: str = "create", ttl: int = DEFAULT_TTL
) -> None:
    """Write ``delegation`` at ``parent`` (signed by the admin of the parent of its prefix), its
    ``HS_SITE`` value with ``ttl`` (how long a warm client may reuse it)."""
    values = [delegation.value(ttl=ttl)]
    owner = delegation.prefix.rpartition(".")[0]
    raw = parent.write(op, prefix_handle(delegation.prefix), values, parent.admin_signer(owner))
    with parent.client() as c:
        c.write(raw)


@dataclass
class Hierarchy:
    """Three nodes over real HTTP: top ``88.123`` delegates ``88.123.99`` to the secondary node, which
    delegates ``88.123.99.7`` to the enterprise node (IDIS's top-level → secondary → enterprise). With
    the second line (:data:`SECOND_LINE`) the enterprise node serves a second, unrelated prefix too."""

    top: RootUnderTest
    secondary: RootUnderTest
    enterprise: RootUnderTest

    @property
    def nodes(self) -> tuple[RootUnderTest, ...]:
        return (self.top, self.secondary, self.enterprise)

    def settle(self) -> None:
        for node in self.nodes:
            node.settle()


HIERARCHY = (("top.test", "88.123"), ("secondary.test", "88.123.99"), ("enterprise.test", "88.123.99.7"))
SECOND_LINE = ("88.200", "88.200.5")
"""The second line of a hierarchy made with ``second_line``: the top node serves ``88.200`` beside
``88.123`` (a top-level node serves many industries' prefixes) and delegates ``88.200.5`` straight to
the enterprise node, which serves it beside ``88.123.99.7``: one enterprise holding prefixes from two
parents (the secondary node for one, the top for the other), none under another. The enterprise node's
``parent`` is then the top, the node above both parents (D-127)."""


@contextlib.contextmanager
def running_hierarchy(
    tmp: Path,
    backends: tuple[str, str, str] = ("sqlite", "sqlite", "sqlite"),
    suites: tuple[str, str, str] = ("default", "default", "default"),
    *,
    second_line: bool = False,
) -> Iterator[Hierarchy]:
    """:class:`Hierarchy` with each node on its own database (top, secondary, enterprise: a ``sqlite``
    file, or a schema of the ``postgresql`` test database) and log suite (``root init --suite``),
    delegations written and published; ``second_line`` adds :data:`SECOND_LINE`. The sequencer's
    PostgreSQL advisory lock is per database, so at most one node can use PostgreSQL."""
    if backends.count("postgresql") > 1:
        raise ValueError("one test database holds one sequencer lock: at most one PostgreSQL node")
    extra = {0: SECOND_LINE[0], 2: SECOND_LINE[1]} if second_line else {}
    with contextlib.ExitStack() as stack:
        nodes: list[RootUnderTest] = []
        for i, ((origin, prefix), backend, suite) in enumerate(zip(HIERARCHY, backends, suites, strict=True)):
            home = tmp / origin
            if backend == "sqlite":
                database = f"sqlite:///{home / 'root.db'}"
            else:
                database = stack.enter_context(postgres_schema())
            parent = nodes[0 if second_line else -1].url if nodes else ""
            prefixes = (prefix, extra[i]) if i in extra else (prefix,)
            root = running_root(
                home, database, origin=origin, prefixes=prefixes, parent=parent, profile=LOG_PROFILES[suite]
            )
            node = stack.enter_context(root)
            if nodes:
                delegate(nodes[-1], delegation_to(node, prefix))
            nodes.append(node)
        hierarchy = Hierarchy(*nodes)
        if second_line:
            delegate(hierarchy.top, delegation_to(hierarchy.enterprise, SECOND_LINE[1]))
        hierarchy.settle()
        yield hierarchy


class TamperingProxy:
    """An ASGI front for a node: forwards every GET (and POST) unchanged, except that ``tamper`` may
    rewrite the JSON of ``/v1/resolve`` answers: a node (or a man in the middle) that lies. Without
    ``tamper`` it only forwards, and :attr:`requests` says what its clients asked, over which
    connections."""

    def __init__(self, target: str, tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.target = target.rstrip("/")
        self.tamper = tamper or (lambda answer: answer)
        self.requests: list[tuple[str, str]] = []
        """(the client's ``host:port``, i.e. its connection; the path and query) of every request."""

    def connections(self) -> set[str]:
        """The connections the requests came over (each by its client's address and port)."""
        return {peer for peer, _ in self.requests}

    def asked(self, path_prefix: str) -> list[str]:
        """The paths (with their queries) of the requests under ``path_prefix``, in order."""
        return [path for _, path in self.requests if path.startswith(path_prefix)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        host, port = scope.get("client") or ("?", 0)
        self.requests.append((f"{host}:{port}", scope["path"] + (f"?{query}" if query else "")))
        url = self.target + scope["raw_path"].decode() + (f"?{query}" if query else "")
        async with httpx.AsyncClient() as client:
            answer = await client.request(scope["method"], url, content=body or None)
        content = answer.content
        if scope["path"].startswith("/v1/resolve/") and answer.status_code == 200:
            content = json.dumps(self.tamper(answer.json())).encode()
        headers = [(b"content-type", answer.headers.get("content-type", "application/json").encode())]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": content})
