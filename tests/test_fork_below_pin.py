"""A forked log shown to a gateway below its pin: evidence, never a replaced key or an anchored block.

A real root and a twin of it hold one log's keys (log key and witness key) over copies of one database:
what each writes afterwards makes two signed, cosigned histories of the same log, i.e. a fork. The
gateway's parts (pin store, pinned log, registry cache, syncer) talk to the honest root, except on the
routes where the test makes it show the fork: a split view. The fork is smaller than the log the gateway
has pinned, so it reaches the gateway as a checkpoint older than the pin, through the registry lookup
(a resolution answer) and through the receipt path (a block's receipt).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite import envelope
from chain_lite.block import GENESIS_PREV, build_header, sign_block
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.keys import PrivateKey, generate_p256, public_der
from chain_lite.registry import Value, pubkey_value
from edge import store
from edge.local_api import LocalApi
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edge.status import PROBLEM_EVIDENCE
from edge.sync import Syncer
from edgeroot.cli import main
from resolver import config as root_config
from resolver.assembly import build_root_app, build_witness_app
from rootclient import routes
from rootclient.client import AsyncRootClient
from rootclient.pin_file import pin_file
from rootclient.pinned_log import PinnedLog
from tests.root_harness import RootUnderTest, ServerThread, free_port, running_root
from tests.test_gateway_status import RUNNING

GATEWAY = "88.123.99/GW-1"
DEVICE = "88.123.99/PUMP-0042"


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, not a file copy)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@contextlib.contextmanager
def forked_twin(root: RootUnderTest, tmp: Path) -> Iterator[RootUnderTest]:
    """A second node and witness with ``root``'s log and witness keys, on copies of their databases as
    of now (``root`` settled): from here on, writes to either node make two histories of one log."""
    wstate, rstate = tmp / "witness", tmp / "root"
    shutil.copytree(root.witness_state, wstate, ignore=shutil.ignore_patterns("*.db*"))
    _copy_sqlite(root.witness_state / "witness.db", wstate / "witness.db")
    shutil.copytree(root.state, rstate)
    database = root_config.load(root.state).database
    twin_db = tmp / "root.db"
    _copy_sqlite(Path(database.removeprefix("sqlite:///")), twin_db)
    wport = free_port()
    text = (rstate / root_config.CONFIG_NAME).read_text()
    text = text.replace(database, f"sqlite:///{twin_db}").replace(
        root.witness_url, f"http://127.0.0.1:{wport}"
    )
    (rstate / root_config.CONFIG_NAME).write_text(text)
    app, _node = build_root_app(root_config.load(rstate))
    with ServerThread(build_witness_app(wstate), wport) as witness, ServerThread(app) as server:
        twin = RootUnderTest(
            server.url, rstate, root.origin, root.policy, root.admin, witness.url, witness, wstate, server
        )
        twin.settle()
        yield twin


@dataclass
class Fork:
    honest: RootUnderTest
    twin: RootUnderTest
    gateway: CoseSigner
    device: CoseSigner
    """The device's key in the honest log; the fork registers another one for it."""
    forked_key: PrivateKey
    honest_size: int


def _device_values(key: PrivateKey) -> list[Value]:
    return [pubkey_value(300, key.public_key()), Value(1, "DEVICE", "string", DEVICE)]


@pytest.fixture
def fork(tmp_path: Path) -> Iterator[Fork]:
    """The honest log, and a fork of it smaller than it: the device's key replaced in the fork only."""
    with running_root(tmp_path / "r", f"sqlite:///{tmp_path / 'root.db'}") as honest:
        admin = honest.add_prefix("88.123.99")
        gateway = CoseSigner(GATEWAY, generate_p256())
        device = CoseSigner(DEVICE, generate_p256())
        with honest.client() as c:
            values = [pubkey_value(300, gateway.public_key), Value(1, "GATEWAY", "string", GATEWAY)]
            c.write(honest.write("create", GATEWAY, values, admin))
            c.write(honest.write("create", DEVICE, [pubkey_value(300, device.public_key), values[1]], admin))
        honest.settle()
        with forked_twin(honest, tmp_path / "twin") as twin:
            forked_key = generate_p256()
            with twin.client() as c:
                c.write(twin.write("update", DEVICE, _device_values(forked_key), admin))
            fork_size = twin.settle()
            with honest.client() as c:
                for i in range(8):
                    values = [Value(1, "URL", "string", "v")]
                    c.write(honest.write("create", f"88.123.99/VALVE-{i}", values, admin))
            # Room below the honest size for the fork to grow by a block and its map head.
            honest_size = honest.settle()
            assert honest_size > fork_size + 4
            yield Fork(honest, twin, gateway, device, forked_key, honest_size)


class SplitView(httpx.AsyncBaseTransport):
    """A root showing a split view: a request whose path starts with a key of :attr:`shown` is answered
    by the node at that URL, everything else (consistency proofs included) by the node asked."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}
        self._http = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for prefix, node in self.shown.items():
            if request.url.path.startswith(prefix):
                content = await request.aread()
                headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
                target = httpx.URL(node)
                url = request.url.copy_with(host=target.host, port=target.port)
                request = httpx.Request(request.method, url, headers=headers, content=content)
                break
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


class SplitViewServer:
    """The same split view at a URL of its own (a small ASGI app forwarding to ``honest_url``), for
    clients that take a root URL, like the CLI."""

    def __init__(self, honest_url: str) -> None:
        self.honest_url = honest_url
        self.view = SplitView()

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.view.aclose()  # its connections belong to the server's loop: closed there
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        query = scope["query_string"].decode()
        url = self.honest_url + scope["raw_path"].decode() + (f"?{query}" if query else "")
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() != b"host"]
        response = await self.view.handle_async_request(
            httpx.Request(scope["method"], url, headers=headers, content=body)
        )
        content = await response.aread()
        drop = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        out = [(k.encode(), v.encode()) for k, v in response.headers.multi_items() if k.lower() not in drop]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": content})


@dataclass
class GatewayParts:
    """The gateway's root-facing parts, wired as the daemon wires them (one pin, one store)."""

    db: Path
    view: SplitView
    pins: SqlitePinStore
    pinned: PinnedLog
    registry: RegistryCache
    syncer: Syncer

    async def pin_state(self) -> dict[str, Any] | None:
        return await self.pins.load_pin()

    async def device_key(self) -> bytes | None:
        return await self.pins.db(lambda c: store.device_key(c, DEVICE))

    def health(self) -> tuple[int, dict[str, Any], str]:
        """/healthz (status and body) and /metrics as the gateway's local API serves them now."""
        snapshot = replace(RUNNING, gateway=GATEWAY, sync=self.syncer.state, store=store.read_status(self.db))
        api = LocalApi(self.db, lambda: snapshot)
        status, _, body = api.handle("/healthz")
        return status, json.loads(body), api.handle("/metrics")[2].decode()


@contextlib.asynccontextmanager
async def gateway(fork: Fork, tmp_path: Path) -> AsyncIterator[GatewayParts]:
    db = tmp_path / "gateway.db"
    store.create_schema(db)
    view = SplitView()
    http = httpx.AsyncClient(transport=view, base_url=fork.honest.url, timeout=15.0)
    async with AsyncRootClient(fork.honest.url, http=http) as root:
        pins = SqlitePinStore(db)
        pinned = await PinnedLog.open(fork.honest.policy, fork.honest.origin, root, pins)
        registry = RegistryCache(root, pinned, pins)
        registry.retry_s = 0.0  # every fetch asks the root: the test decides when
        syncer = Syncer(root, pinned, pins, mode="anchor", interval_s=0.05)
        yield GatewayParts(db, view, pins, pinned, registry, syncer)


def _assert_evidence_reported(parts: GatewayParts, fork: Fork, caplog: pytest.LogCaptureFixture) -> None:
    """The evidence is in the store (the honest pin and the fork's checkpoint) and every report shows it."""
    saved = asyncio.run(parts.pins.db(lambda c: store.read_meta(c, "evidence")))
    assert saved is not None, "no evidence was stored"
    evidence = json.loads(saved)
    conflicting = SignedCheckpoint.parse(evidence["conflicting"].encode()).checkpoint
    pinned = SignedCheckpoint.parse(evidence["pinned"].encode()).checkpoint
    assert conflicting.size < pinned.size and evidence["proof"]
    with fork.twin.client() as c:
        assert conflicting.root == SignedCheckpoint.parse(c.checkpoint()).checkpoint.root
    status, body, metrics = parts.health()
    assert status == 503 and PROBLEM_EVIDENCE in body["problems"] and body["store"]["evidence"] is True
    assert "edgeroot_gateway_equivocation_evidence 1.0" in metrics
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "edge.pin_store"]
    assert len(errors) == 1 and "EQUIVOCATION" in errors[0].getMessage()


def test_a_forked_registry_answer_below_the_pin_is_evidence_and_the_cached_key_stays(
    fork: Fork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Registry lookup path: the fork's answer (another key for the device, at a size below the pin) is
    checked against the pin, kept as evidence and reported; the cached key and the pin do not change."""
    caplog.set_level(logging.INFO)

    async def scenario() -> GatewayParts:
        async with gateway(fork, tmp_path) as parts:
            assert await parts.registry.fetch(DEVICE)
            honest_key = public_der(fork.device.public_key)
            assert await parts.device_key() == honest_key
            pin = await parts.pin_state()
            assert parts.pinned.size == fork.honest_size
            parts.view.shown = {routes.RESOLVE_PREFIX: fork.twin.url}
            assert not await parts.registry.fetch(DEVICE)
            assert await parts.device_key() == honest_key, "the forked answer replaced the cached key"
            assert (await parts.pin_state()) == pin
            return parts

    parts = asyncio.run(scenario())
    assert public_der(fork.forked_key.public_key()) != public_der(fork.device.public_key)
    _assert_evidence_reported(parts, fork, caplog)


def test_a_forked_receipt_below_the_pin_is_evidence_and_sync_stops(
    fork: Fork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Receipt path: the fork sequences the gateway's block and serves its receipt against a checkpoint
    below the pin; the syncer keeps the evidence and stops, the block stays unanchored, the pin stays."""
    caplog.set_level(logging.INFO)
    records = [{envelope.N: "t", envelope.V: 1.0}]
    readings = [
        envelope.decode_envelope(envelope.encode_envelope(fork.device, records, n)) for n in (1, 2, 3)
    ]
    block = sign_block(build_header(GATEWAY, 0, GENESIS_PREV, readings, 1_700_000_000_000), fork.gateway)

    async def scenario() -> GatewayParts:
        async with gateway(fork, tmp_path) as parts:
            assert await parts.registry.fetch(DEVICE)  # pins the honest log's latest checkpoint
            pin = await parts.pin_state()
            await parts.pins.db(
                lambda c: c.execute(
                    "INSERT INTO blocks (height, block_id, raw, first_reading, count, time_ms, state) "
                    "VALUES (0, ?, ?, 1, 3, 0, 'chained')",
                    (block.block_id, block.raw),
                )
            )
            blocks = routes.BLOCK.split("{", 1)[0]
            parts.view.shown = {routes.GATEWAY_BLOCKS: fork.twin.url, blocks: fork.twin.url}
            stop = asyncio.Event()
            task = asyncio.create_task(parts.syncer.run(stop), name="sync")
            deadline = time.monotonic() + 30
            try:
                while parts.syncer.state != "stopped: equivocation evidence":
                    assert not task.done(), task
                    assert time.monotonic() < deadline, f"sync did not stop: {parts.syncer.last_error}"
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await task
            states = await parts.pins.db(lambda c: [b.state for b in store.blocks(c)])
            assert states == ["submitted"], "the block was anchored by a forked receipt"
            assert (await parts.pin_state()) == pin
            return parts

    parts = asyncio.run(scenario())
    _assert_evidence_reported(parts, fork, caplog)
    with fork.twin.client() as c:
        assert c.block(block.block_id).receipt is not None  # the fork did serve a receipt


def test_the_cli_names_the_evidence_of_a_fork_below_its_pin_and_refuses_a_stale_answer(
    fork: Fork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resolve --verify` with a pin: a forked answer below it exits 1 naming the evidence file (the pin
    stays); an honest but older answer (a lagging replica) exits 1 as stale, and verifies with --at."""
    config = tmp_path / "cfg"

    def resolve(*extra: str) -> tuple[int, dict[str, Any]]:
        args = ["resolve", DEVICE, "--root", front.url, "--verify", "--policy", str(fork.honest.policy_path)]
        code = main([*args, "--config-dir", str(config), "--json", *extra])
        return code, json.loads(capsys.readouterr().out)

    with forked_twin(fork.honest, tmp_path / "lagging") as lagging:
        with fork.honest.client() as c:
            admin = fork.honest.admin_signer("88.123")
            c.write(fork.honest.write("create", "88.123/LATER", [Value(1, "URL", "string", "l")], admin))
        newest = fork.honest.settle()
        server = SplitViewServer(fork.honest.url)
        with ServerThread(server) as front:
            code, answer = resolve()
            assert code == 0 and answer["pinned_size"] == newest, answer
            pinned = json.loads(pin_file(fork.honest.origin, config).read_text())["pinned"]

            server.view.shown = {routes.RESOLVE_PREFIX: lagging.url}
            code, answer = resolve()
            assert code == 1 and "STALE" in answer["error"] and str(fork.honest_size) in answer["error"]
            code, answer = resolve("--at", str(fork.honest_size))
            assert code == 0 and answer["as_of_log_size"] == fork.honest_size, answer
            assert answer["pinned_size"] == newest

            server.view.shown = {routes.RESOLVE_PREFIX: fork.twin.url}
            code, answer = resolve()
    assert code == 1 and answer["error"].startswith("EQUIVOCATION"), answer
    evidence = json.loads(Path(answer["evidence"]).read_text())
    assert Path(answer["evidence"]).parent == config / "evidence" and answer["evidence"] in answer["error"]
    conflicting = SignedCheckpoint.parse(evidence["conflicting"].encode()).checkpoint
    with fork.twin.client() as c:
        assert conflicting.root == SignedCheckpoint.parse(c.checkpoint()).checkpoint.root
    assert evidence["pinned"] == pinned
    assert json.loads(pin_file(fork.honest.origin, config).read_text())["pinned"] == pinned
