"""The root's published view: an immutable map snapshot, answers from one view, nothing blocking the loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.cose import CoseSigner
from chain_lite.keys import NoteKey, load_private_pem
from chain_lite.note import VerifierKey
from chain_lite.policy import Policy
from chain_lite.registry import (
    Record,
    Value,
    admin_kid,
    build_write,
    canonical_identifier,
    prefix_handle,
    sign_write,
)
from chain_lite.resolution import PrefixProof, home_prefixes, verify_resolution
from chain_lite.sparse_map import SparseMap, map_key
from resolver import config as root_config
from resolver.api import create_app
from resolver.assembly import build_root_app, build_witness_app, init_root, init_witness
from resolver.cosigning import Cosigner
from resolver.db import Database, Tx
from resolver.errors import ViewBehind
from resolver.fast_reads import FastReads
from resolver.log_store import latest_checkpoint
from resolver.map_state import MapSnapshot
from resolver.metrics import RootMetrics
from resolver.published_marker import PublishedMarker
from resolver.reads import RootNode
from resolver.sequencer import Sequencer
from runtime.clock import now_ms
from tests.root_harness import ServerThread, free_port

ORIGIN = "view.test"
IDS = [canonical_identifier(f"88.1/D{i}") for i in range(12)]


def _record(identifier: str, version: int) -> bytes:
    return Record(identifier, (Value(1, "URL", "string", f"https://v{version}.example"),)).encode()


# --- the persistent map against the mutable reference ----------------------------------------------------

_changes = st.lists(
    st.lists(st.tuples(st.sampled_from(IDS), st.one_of(st.none(), st.integers(0, 3))), max_size=8),
    max_size=6,
)


@given(_changes)
def test_map_snapshot_matches_sparse_map_and_old_snapshots_never_change(batches: list[Any]) -> None:
    """Every snapshot has SparseMap's root and proofs; moving forward never changes an older snapshot."""
    reference = SparseMap()
    snapshot = MapSnapshot.as_of(_Latest([]), 0)
    kept: list[tuple[MapSnapshot, bytes, dict[str, bytes | None]]] = []
    current: dict[str, bytes | None] = {}
    for number, batch in enumerate(batches, start=1):
        rows = [(ident, None if v is None else _record(ident, v)) for ident, v in batch]
        snapshot = snapshot.with_changes(rows, number)
        for ident, record in rows:
            reference.set(map_key(ident), None if record is None else Record.decode(record).value_hash)
            current[ident] = record
        assert snapshot.root() == reference.root()
        assert len(snapshot) == len(reference)
        for ident in IDS:
            record, proof = snapshot.record_and_proof(ident)
            assert record == current.get(ident)
            assert proof == reference.prove(map_key(ident))
        kept.append((snapshot, reference.root(), dict(current)))
        built = MapSnapshot.as_of(_Latest(list(current.items())), number)  # all at once, same map
        assert built.root() == snapshot.root() and len(built) == len(snapshot)
    for old, root, records in kept:
        assert old.root() == root
        for ident in IDS:
            assert old.record_and_proof(ident)[0] == records.get(ident)


class _Latest:
    """A transaction whose every query answers ``rows``: each identifier's latest ``history`` row."""

    def __init__(self, rows: list[tuple[str, bytes | None]]) -> None:
        self.rows = rows

    def all(self, _sql: str, _params: Any = ()) -> list[Any]:
        return self.rows


# --- a root node on SQLite, driven by hand ------------------------------------------------------------------


@contextlib.contextmanager
def _node(tmp: Path) -> Iterator[tuple[RootNode, Sequencer, Any]]:
    """A root (no witnesses: batches publish at once) with its first view; yields the node, its
    sequencer, and ``write(identifier)`` queueing a create."""
    result = init_root(tmp / "root", ORIGIN, "88.123")
    cfg = root_config.load(tmp / "root")
    signer = NoteKey.parse_skey(cfg.log_skey.read_text()).log_signer()
    db = Database(cfg.database)
    admin = CoseSigner(admin_kid("88.123"), load_private_pem(result.admin_key.read_bytes()))
    node = RootNode(db, ORIGIN)
    sequencer = Sequencer(db, signer, ORIGIN, publish=True)

    def write(identifier: str) -> None:
        request = build_write(
            ORIGIN, "create", identifier, [Value(1, "URL", "string", identifier)], timestamp_ms=now_ms(),
            nonce=os.urandom(16))  # fmt: skip
        node.write(sign_write(request, admin).raw)

    try:
        assert node.refresh()
        yield node, sequencer, write
    finally:
        sequencer.close()
        db.close()


def test_bulk_built_snapshot_equals_the_one_moved_forward(tmp_path: Path) -> None:
    """A snapshot built from history at once equals one moved forward batch by batch."""
    with _node(tmp_path) as (node, sequencer, write):
        first = node.view()
        first_root = first.map.root()
        for i in range(5):
            write(f"88.123/B{i}")
            sequencer.integrate(now_ms())
            assert node.refresh()
        moved = node.view().map
        with node.db.transaction(write=False) as tx:
            built = MapSnapshot.as_of(tx, moved.size)
        assert built.root() == moved.root() != first_root
        assert first.map.root() == first_root  # the old view still holds the old map
        b3 = canonical_identifier("88.123/B3")
        assert built.record_and_proof(b3) == moved.record_and_proof(b3)
        assert moved.record_and_proof(b3)[0] is not None and first.map.record_and_proof(b3)[0] is None


def _policy(tmp: Path) -> Policy:
    return Policy.parse((tmp / "root" / "policy.txt").read_bytes())


def test_an_answer_comes_from_one_view_even_when_the_view_moves_mid_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view swapped while an answer is being built does not leak into it: record, map proof, map
    head and receipt all come from the view the answer started with, and verify together."""
    with _node(tmp_path) as (node, sequencer, write):
        write("88.123/MOVING")
        sequencer.integrate(now_ms())
        node.refresh()
        before = node.view()
        write("88.123/OTHER")
        sequencer.integrate(now_ms())
        original = MapSnapshot.record_and_proof
        swapped: list[int] = []

        def swap_first(snapshot: MapSnapshot, identifier: str) -> Any:
            if not swapped:
                assert node.refresh()  # the next checkpoint's view goes live in the middle of this answer
                swapped.append(node.view().size)
            return original(snapshot, identifier)

        monkeypatch.setattr(MapSnapshot, "record_and_proof", swap_first)
        answer = node.resolve("88.123/OTHER")
        monkeypatch.undo()
    assert swapped and swapped[0] > before.size
    assert answer.epoch == before.size and answer.record is None  # OTHER is not in the old view
    verified = _policy(tmp_path).verify_checkpoint(answer.proof.receipt.checkpoint)
    proven = verify_resolution(answer.proof, verified)
    assert proven.epoch == before.size and proven.record is None
    assert answer.receipt_text == before.receipt_text and answer.map_head_b64 == before.map_head_b64


def test_each_answer_carries_the_prefix_chain_of_its_own_identifier(tmp_path: Path) -> None:
    """The prefix proofs an answer carries (kept once per view and prefix) are those of its own
    identifier's home prefixes, for identifiers under different prefixes, prefix records and a top-level
    prefix record, asked in turn and again; each answer verifies."""
    with _node(tmp_path) as (node, _sequencer, _write):
        view = node.view()
        policy = _policy(tmp_path)
        asked = ["88.123.5/X", "88.123/Y", "0.na/88.123.5", "88/Z", "0.na/88", "88.123.5/W", "88.123/Y"]
        for text in asked + asked:
            answer = node.resolve(text)
            ident = canonical_identifier(text)
            naive = tuple(
                PrefixProof(p, record, proof.to_bytes())
                for p in home_prefixes(ident)
                for record, proof in [view.map.record_and_proof(prefix_handle(p))]
            )
            assert answer.prefixes == naive, text
            verify_resolution(answer.proof, policy.verify_checkpoint(answer.proof.receipt.checkpoint))
        assert set(view.prefix_chains) == {"88.123.5", "88.123", "88"}  # none kept for 0.na/...


def test_follower_moves_the_view_when_woken_without_waiting_for_the_poll(tmp_path: Path) -> None:
    """A publication by this process (``wake``) moves the view at once; the poll is for other processes."""
    with _node(tmp_path) as (node, sequencer, write):
        first = node.view().size

        async def main() -> int:
            stop = asyncio.Event()
            follower = asyncio.create_task(node.follow(stop, poll_s=3600))
            await asyncio.to_thread(write, "88.123/WOKEN")
            await asyncio.to_thread(sequencer.integrate, now_ms())
            node.wake()
            deadline = time.monotonic() + 10
            while node.view().size == first:
                assert time.monotonic() < deadline, "the woken follower did not move the view"
                await asyncio.sleep(0.01)
            stop.set()
            node.wake()
            await follower
            return node.view().size

        assert asyncio.run(main()) > first
        assert node.resolve("88.123/WOKEN").record is not None


# --- several workers: the shared marker --------------------------------------------------------------


def test_published_marker_is_shared_with_forked_processes_and_never_goes_down() -> None:
    """A size raised in a forked child is seen by the parent; a smaller raise leaves it unchanged."""
    marker = PublishedMarker()
    marker.raise_to(5)
    pid = os.fork()
    if pid == 0:  # the child: raise it, then a smaller raise that must not lower it
        marker.raise_to(9)
        marker.raise_to(7)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.size == 9
    marker.raise_to(3)
    assert marker.size == 9


def test_a_worker_behind_the_marker_catches_up_before_answering_and_refuses_an_unreachable_one(
    tmp_path: Path,
) -> None:
    """Two nodes over one database share a marker: the one whose view moved raised it; the other one,
    never woken, moves its view to the marker in ``caught_up``; a marker beyond anything published
    (the database cannot show it) is refused with ViewBehind (503), never answered from the old view."""
    with _node(tmp_path) as (node, sequencer, write):
        marker = PublishedMarker()
        node.marker = marker
        other = RootNode(node.db, ORIGIN, marker=marker)
        assert other.refresh()
        write("88.123/SHARED")
        sequencer.integrate(now_ms())
        assert node.refresh()
        assert marker.size == node.view().size > other.view().size
        asyncio.run(other.caught_up())
        assert other.view().size == node.view().size
        assert other.resolve("88.123/SHARED").record is not None
        marker.raise_to(node.view().size + 10)
        with pytest.raises(ViewBehind):
            asyncio.run(other.caught_up())
        assert other.view().size == node.view().size


def test_a_view_behind_is_answered_503_counted_and_logged_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose view cannot catch up answers 503 on the bare-ASGI path (before FastAPI's handler),
    counted in edgeroot_root_refused{reason="ViewBehind"} of the app's /metrics and logged at ERROR once
    per interval, the rest held back, as every refusal is."""
    with _node(tmp_path) as (node, _sequencer, _write):
        marker = PublishedMarker()
        behind = RootNode(node.db, ORIGIN, marker=marker)
        assert behind.refresh()
        marker.raise_to(node.view().size + 10)  # beyond anything the database can show
        metrics = RootMetrics()
        app = FastReads(create_app(behind, metrics=metrics), behind, metrics=metrics)

        async def ask() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://root.test") as client:
                return [await client.get(path) for path in ("/v1/checkpoint", "/v1/checkpoint", "/healthz")]

        with caplog.at_level(logging.WARNING, logger="resolver.refused"):
            answers = asyncio.run(ask())
        assert [a.status_code for a in answers] == [503, 503, 503]
        assert all("behind log size" in a.json()["message"] for a in answers), answers[0].text
        refused = metrics.registry.get_sample_value("edgeroot_root_refused_total", {"reason": "ViewBehind"})
        assert refused == 3
        logged = [r for r in caplog.records if r.name == "resolver.refused"]
        assert [(r.levelno, "ViewBehind" in r.getMessage()) for r in logged] == [(logging.ERROR, True)]


# --- over HTTP: handlers never wait for the next view -----------------------------------------------


def test_handlers_answer_from_the_old_view_while_the_next_is_being_built(tmp_path: Path) -> None:
    """While the worker building the next view is held (as a large map rebuild would hold it), the
    current resolution, the checkpoint and /healthz are answered at once from the old view."""
    result = init_root(tmp_path / "root", ORIGIN, "88.123")
    cfg = root_config.load(tmp_path / "root")
    app, node = build_root_app(cfg)
    admin = CoseSigner(admin_kid("88.123"), load_private_pem(result.admin_key.read_bytes()))
    building, release = threading.Event(), threading.Event()
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        old = http.get("/v1/checkpoint").content
        build = node._build  # the test holds the builder of the next view at a gate

        def held(*args: Any) -> Any:
            building.set()
            assert release.wait(30), "the test never released the view builder"
            return build(*args)

        node._build = held  # type: ignore[method-assign]
        try:
            request = build_write(
                ORIGIN, "create", "88.123/HELD", [Value(1, "URL", "string", "x")], timestamp_ms=now_ms(),
                nonce=os.urandom(16))  # fmt: skip
            assert http.post("/v1/registry", content=sign_write(request, admin).raw).status_code == 201
            assert building.wait(15), "the sequencer's publication did not start building a view"
            answer = http.get("/v1/resolve/88.123/HELD").json()
            assert answer["found"] is False
            assert http.get("/v1/checkpoint").content == old
            assert http.get("/healthz").status_code == 200
        finally:
            release.set()
        deadline = time.monotonic() + 15
        while not http.get("/v1/resolve/88.123/HELD").json()["found"]:
            assert time.monotonic() < deadline, "the view did not move on after the builder was released"
            time.sleep(0.02)
        assert http.get("/v1/checkpoint").content != old


# --- the cosigner's database work runs in worker threads --------------------------------------------


class OffLoopDatabase(Database):
    """A database that notes every transaction opened on a thread running an event loop."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.on_loop: list[str] = []

    def transaction(self, *, write: bool = True) -> AbstractContextManager[Tx]:
        with contextlib.suppress(RuntimeError):  # RuntimeError: no loop runs in this thread, as wanted
            asyncio.get_running_loop()
            self.on_loop.append(threading.current_thread().name)
        return super().transaction(write=write)


def test_cosigner_runs_its_database_work_off_the_event_loop(tmp_path: Path) -> None:
    """Cosigning a checkpoint, and retrying a witness that missed one, open no transaction on the loop."""
    wstate, wport = tmp_path / "witness", free_port()
    wkey = init_witness(wstate, "witness.test", [])
    witness = (f"http://127.0.0.1:{wport}", VerifierKey.parse(wkey.vkey()))
    result = init_root(tmp_path / "root", ORIGIN, "88.123", witnesses=[witness])
    (wstate / "logs.txt").write_text(result.log_vkey + "\n")
    cfg = root_config.load(tmp_path / "root")
    db = OffLoopDatabase(cfg.database)
    down = [dataclasses.replace(w, url=f"http://127.0.0.1:{free_port()}") for w in cfg.witnesses]

    async def main(size: int) -> int:
        async with httpx.AsyncClient() as client:
            cosigner = Cosigner(db, down, client)
            await cosigner.cosign_and_publish(size)  # the witness is unreachable: published uncosigned
            assert cosigner.failures == {"witness.test": 1}
            cosigner.set_witnesses(cfg.witnesses)
            return await cosigner.retry_failing()

    try:
        with db.transaction(write=False) as tx:
            cp = latest_checkpoint(tx, published_only=False)
        assert cp is not None
        with ServerThread(build_witness_app(wstate), wport):
            assert asyncio.run(main(cp.checkpoint.size)) == 1
        with db.transaction(write=False) as tx:
            published = latest_checkpoint(tx)
        assert published is not None and len(published.note.signatures) == 2
        assert db.on_loop == []
    finally:
        db.close()
