"""One PinnedLog for the CLI (pin file) and the gateway (SQLite): same verdicts, same evidence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from chain_lite import b64, envelope
from chain_lite.block import GENESIS_PREV, build_header, sign_block
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.errors import StaleCheckpoint, UnverifiedCheckpoint
from chain_lite.keys import generate_p256
from chain_lite.light_client import LightClient
from chain_lite.log_leaf import block_leaf
from chain_lite.merkle import leaf_hash
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt
from edge import store as gateway_store
from edge.errors import SyncError
from edge.local_api import LocalApi
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edge.sync import Syncer
from rootclient import codecs, routes
from rootclient.client import AsyncRootClient
from rootclient.errors import ClientError, EquivocationDetected, PinError, ProtocolError, RootClientError
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import Older, PinnedLog, PinStore

from .helpers import ORIGIN, LogBuilder
from .test_gateway_status import RUNNING

T = TypeVar("T")
STORES = ("file", "sqlite")


class FakeRoot:
    """Serves consistency proofs from ``log`` (or ``override``), recording what was asked."""

    def __init__(self, log: LogBuilder) -> None:
        self.log = log
        self.asked: list[tuple[int, int]] = []
        self.override: list[bytes] | None = None

    async def consistency(self, old: int, new: int) -> list[bytes]:
        self.asked.append((old, new))
        return self.override if self.override is not None else self.log.tree.consistency_proof(old, new)


def make_store(kind: str, directory: Path) -> PinStore:
    if kind == "file":
        return FilePinStore(ORIGIN, directory)
    gateway_store.create_schema(directory / "gateway.db")
    return SqlitePinStore(directory / "gateway.db")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def signed(data: bytes) -> SignedCheckpoint:
    return SignedCheckpoint.parse(data)


@pytest.fixture
def log() -> LogBuilder:
    builder = LogBuilder()
    builder.add(10)
    return builder


@pytest.mark.parametrize("kind", STORES)
def test_pin_moves_forward_with_one_proof_and_survives_a_restart(
    kind: str, log: LogBuilder, tmp_path: Path
) -> None:
    """The first checkpoint is pinned without a proof; a newer one with one proof; a reopen resumes."""
    root = FakeRoot(log)
    pins = make_store(kind, tmp_path)

    async def scenario() -> int:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        first = await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        assert first.moved and root.asked == []
        log.add(6)
        second = await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        assert second.moved and root.asked == [(10, 16)]
        same = await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        assert not same.moved and root.asked == [(10, 16)]
        return (await PinnedLog.open(log.policy(), ORIGIN, root, pins)).size

    assert run(scenario()) == 16


def test_the_same_fork_is_detected_the_same_way_by_the_cli_and_the_gateway(
    log: LogBuilder, tmp_path: Path
) -> None:
    """A validly signed checkpoint inconsistent with the pin: both stores get the same evidence, keep
    the same pin, and raise EquivocationDetected naming where the evidence went."""
    pinned_at_10 = log.checkpoint()
    log.add(6)
    fork = log.checkpoint(root=b"\x07" * 32)
    outcomes: dict[str, tuple[dict[str, Any], dict[str, Any] | None, str]] = {}
    for kind in STORES:
        directory = tmp_path / kind
        directory.mkdir()
        pins = make_store(kind, directory)
        saved: list[dict[str, Any]] = []
        original = pins.save_evidence

        async def keep(
            evidence: dict[str, Any],
            original: Callable[..., Any] = original,
            saved: list[dict[str, Any]] = saved,
        ) -> str:
            saved.append(evidence)
            where: str = await original(evidence)
            return where

        pins.save_evidence = keep  # type: ignore[method-assign]  # observe what the store is given

        async def scenario(pins: PinStore = pins) -> tuple[dict[str, Any] | None, str]:
            pinned = await PinnedLog.open(log.policy(), ORIGIN, FakeRoot(log), pins)
            await pinned.accept(signed(pinned_at_10), older=Older.REFUSE)
            with pytest.raises(EquivocationDetected) as info:
                await pinned.accept(signed(fork), older=Older.REFUSE)
            assert pinned.size == 10
            return await pins.load_pin(), info.value.evidence

        pin, where = run(scenario())
        assert len(saved) == 1
        outcomes[kind] = (saved[0], pin, where)
    (file_evidence, file_pin, file_where), (db_evidence, db_pin, db_where) = (
        outcomes["file"],
        outcomes["sqlite"],
    )
    assert file_evidence == db_evidence
    assert file_evidence["pinned"] == pinned_at_10.decode() and file_evidence["conflicting"] == fork.decode()
    assert file_evidence["proof"] and file_evidence["reason"]
    assert file_pin == db_pin and file_pin is not None and file_pin["pinned"] == pinned_at_10.decode()
    assert Path(file_where).parent.name == "evidence" and "evidence" in db_where
    db = SqlitePinStore(tmp_path / "sqlite" / "gateway.db")
    assert run(db.has_evidence())


def test_a_log_vouches_only_for_checkpoints_it_proved_and_not_after_equivocating(
    log: LogBuilder, tmp_path: Path
) -> None:
    """vouches_for (what a referral cache relies on): yes for the pin and an older checkpoint it proved
    consistent, no for one it never judged, and no for anything once the log showed a fork."""
    root = FakeRoot(log)

    async def scenario() -> None:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, FilePinStore(ORIGIN, tmp_path))
        at_10 = (await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)).checkpoint
        log.add(6)
        never_shown = log.policy().verify_checkpoint(signed(log.checkpoint()), ORIGIN)
        log.add(2)
        at_18 = (await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)).checkpoint
        assert pinned.vouches_for(at_10) and pinned.vouches_for(at_18)
        assert not pinned.vouches_for(never_shown)
        with pytest.raises(EquivocationDetected):
            await pinned.accept(signed(log.checkpoint(root=b"\x07" * 32)), older=Older.REFUSE)
        assert not pinned.vouches_for(at_18) and not pinned.vouches_for(at_10)

    run(scenario())


def assert_no_evidence(pins: PinStore, directory: Path) -> None:
    if isinstance(pins, SqlitePinStore):
        assert not run(pins.has_evidence())
    else:
        assert not (directory / "evidence").exists()


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("direction", ["newer", "older"])
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda p: p[:-1], id="a-hash-missing"),
        pytest.param(lambda p: [*p, p[0]], id="a-hash-too-many"),
        pytest.param(lambda p: [], id="empty"),
        pytest.param(lambda p: [p[0][:31], *p[1:]], id="a-31-byte-hash"),
    ],
)
def test_a_malformed_proof_for_an_honest_checkpoint_is_a_protocol_error_not_evidence(
    kind: str, direction: str, mangle: Callable[[list[bytes]], list[bytes]], log: LogBuilder, tmp_path: Path
) -> None:
    """A proof of the wrong shape proves nothing, whether it is from the pin to a newer checkpoint or
    from an older checkpoint to the pin: ProtocolError, no evidence, the pin stays."""
    root = FakeRoot(log)
    pins = make_store(kind, tmp_path)
    at_10 = log.checkpoint()
    log.add(6)
    pin, other = (at_10, log.checkpoint()) if direction == "newer" else (log.checkpoint(), at_10)
    pinned_size = SignedCheckpoint.parse(pin).checkpoint.size
    root.override = mangle(log.tree.consistency_proof(10, 16))

    async def scenario() -> None:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        await pinned.accept(signed(pin), older=Older.REFUSE)
        for older in Older:
            with pytest.raises(ProtocolError):
                await pinned.accept(signed(other), older=older)
        assert pinned.size == pinned_size and root.asked == [(10, 16), (10, 16)]
        assert (await PinnedLog.open(log.policy(), ORIGIN, root, pins)).size == pinned_size

    run(scenario())
    assert_no_evidence(pins, tmp_path)


@pytest.mark.parametrize("kind", STORES)
def test_an_older_checkpoint_is_refused_for_current_answers_and_never_pinned(
    kind: str, log: LogBuilder, tmp_path: Path
) -> None:
    """Behind the pin: checked against the pin with one proof (from it to the pin), then StaleCheckpoint
    with Older.REFUSE; with Older.USE, verified but not pinned, and remembered across a restart."""
    older = log.checkpoint()
    log.add(6)
    pins = make_store(kind, tmp_path)
    root = FakeRoot(log)

    async def scenario() -> None:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        with pytest.raises(StaleCheckpoint):
            await pinned.accept(signed(older), older=Older.REFUSE)
        assert root.asked == [(10, 16)]
        accepted = await pinned.accept(signed(older), older=Older.USE)
        assert not accepted.moved and accepted.checkpoint.checkpoint.size == 10 and pinned.size == 16
        reopened = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        again = await reopened.accept(signed(older), older=Older.USE)
        assert not again.moved and reopened.size == 16 and root.asked == [(10, 16)]

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("path", ["receipt", "answer-used", "answer-refused"])
def test_a_forked_checkpoint_older_than_the_pin_is_evidence_on_every_path(
    kind: str, path: str, log: LogBuilder, tmp_path: Path
) -> None:
    """A validly signed older checkpoint inconsistent with the pin, seen through a receipt or a
    resolution answer (used as of its size, or refused as stale): the proof from its size to the pin
    fails, the evidence is saved through the store and EquivocationDetected names it; the pin stays."""
    log.add(6)
    pin = log.checkpoint()
    fork = log.checkpoint(10, root=b"\x07" * 32)
    pins = make_store(kind, tmp_path)
    root = FakeRoot(log)

    async def scenario() -> str:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        await pinned.accept(signed(pin), older=Older.REFUSE)
        receipt = Receipt(3, tuple(log.tree.inclusion_proof(3, 10)), signed(fork))
        older = Older.USE if path == "answer-used" else Older.REFUSE
        seen = (
            pinned.verify_receipt(receipt, b"entry 3")
            if path == "receipt"
            else pinned.accept(signed(fork), older=older)
        )
        with pytest.raises(EquivocationDetected) as info:
            await seen
        assert pinned.size == 16 and root.asked == [(10, 16)]
        state = await pins.load_pin()
        assert state is not None and state["pinned"] == pin.decode() and "10" not in state["known"]
        return info.value.evidence

    where = run(scenario())
    if isinstance(pins, SqlitePinStore):
        assert run(pins.has_evidence()) and "evidence" in where
        saved = run(pins.db(lambda c: gateway_store.read_meta(c, "evidence")))
        evidence = json.loads(saved or "null")
    else:
        evidence = json.loads(Path(where).read_text())
        assert Path(where).parent == tmp_path / "evidence"
    assert evidence["pinned"] == pin.decode() and evidence["conflicting"] == fork.decode()
    assert evidence["proof"] == [b64.encode(h) for h in log.tree.consistency_proof(10, 16)]


@pytest.mark.parametrize("kind", STORES)
def test_a_root_that_will_not_prove_an_older_checkpoint_gets_it_refused_not_used(
    kind: str, log: LogBuilder, tmp_path: Path
) -> None:
    """When the consistency proof cannot be had (the root refuses or is away), an older checkpoint is
    neither used nor evidence: the ClientError reaches the caller, who retries later."""
    older = log.checkpoint()
    log.add(6)
    pins = make_store(kind, tmp_path)

    class Refusing(FakeRoot):
        async def consistency(self, old: int, new: int) -> list[bytes]:
            self.asked.append((old, new))
            raise ClientError("no such proof", 400)

    root = Refusing(log)
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3, 10)), signed(older))

    async def scenario() -> None:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
        await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        with pytest.raises(ClientError) as info:
            await pinned.verify_receipt(receipt, b"entry 3")
        assert not isinstance(info.value, EquivocationDetected)
        assert pinned.size == 16 and root.asked == [(10, 16)]

    run(scenario())
    assert_no_evidence(pins, tmp_path)


def test_a_receipt_checkpoint_is_verified_once(
    log: LogBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the receipt path the checkpoint's signatures are checked exactly once, and a receipt against
    an older checkpoint this client never verified is checked against the pin (one proof) before use."""
    policy = log.policy()
    calls: list[object] = []
    verify = Policy.verify_checkpoint

    def counting(
        self: Policy, data: bytes | SignedCheckpoint, origin: str | None = None
    ) -> VerifiedCheckpoint:
        calls.append(data)
        return verify(self, data, origin)

    pins = make_store("sqlite", tmp_path)
    unseen = Receipt(3, tuple(log.tree.inclusion_proof(3)), signed(log.checkpoint()))
    log.add(6)
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), signed(log.checkpoint()))

    root = FakeRoot(log)

    async def scenario() -> None:
        pinned = await PinnedLog.open(policy, ORIGIN, root, pins)
        monkeypatch.setattr(Policy, "verify_checkpoint", counting)
        verified = await pinned.verify_receipt(receipt, b"entry 3")
        assert verified.checkpoint.size == 16 and len(calls) == 1
        with pytest.raises(UnverifiedCheckpoint):
            pinned.light.verify_receipt(unseen, leaf_hash(b"entry 3"))
        older = await pinned.verify_receipt(unseen, b"entry 3")
        assert older.checkpoint.size == 10 and len(calls) == 2 and root.asked == [(10, 16)]
        assert pinned.size == 16

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_a_stored_pin_the_policy_does_not_trust_is_refused(
    kind: str, log: LogBuilder, tmp_path: Path
) -> None:
    """A pin signed by keys the policy does not list, or a mangled state, is a PinError, not a crash."""
    pins = make_store(kind, tmp_path)
    other = LogBuilder()
    other.add(3)
    run(pins.save_pin(LightClient(other.policy(), ORIGIN, other.checkpoint()).state()))
    with pytest.raises(PinError):
        run(PinnedLog.open(log.policy(), ORIGIN, FakeRoot(log), pins))
    run(pins.save_pin({"origin": ORIGIN, "pinned": 5}))
    with pytest.raises(PinError):
        run(PinnedLog.open(log.policy(), ORIGIN, FakeRoot(log), pins))


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("direction", ["newer", "older"])
@pytest.mark.parametrize(
    "bad_hash",
    ["not base64!", b64.encode(b"\x11" * 31), "ERERERERERERERERERERERERERERERERERERERERERF="],
    ids=["bad-base64", "31-bytes", "non-canonical-base64"],
)
def test_a_proof_hash_the_codec_refuses_over_http_is_never_evidence(
    kind: str, direction: str, bad_hash: str, log: LogBuilder, tmp_path: Path
) -> None:
    """The root's consistency answer with one undecodable hash, for a newer checkpoint or one below the
    pin: ProtocolError from the client for both stores (the gateway once read it as empty bytes and
    could have stored evidence)."""
    assert b64.decode(bad_hash) is None or len(b64.decode(bad_hash) or b"") != 32
    pins = make_store(kind, tmp_path)
    log_at_10 = log.checkpoint()
    log.add(6)
    pin, other = (log_at_10, log.checkpoint()) if direction == "newer" else (log.checkpoint(), log_at_10)

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == routes.CONSISTENCY
        proof = [b64.encode(h) for h in log.tree.consistency_proof(10, 16)]
        return httpx.Response(200, json={"old": 10, "new": 16, "proof": [*proof[:-1], bad_hash]})

    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://root.invalid")
        async with AsyncRootClient("http://root.invalid", http=http) as root:
            pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
            await pinned.accept(signed(pin), older=Older.REFUSE)
            size = pinned.size
            for older in Older:
                with pytest.raises(ProtocolError):
                    await pinned.accept(signed(other), older=older)
            assert pinned.size == size

    run(scenario())
    assert_no_evidence(pins, tmp_path)


# --- the gateway's callers of the pinned log: a hostile root reaches them as typed errors --------------

HOSTILE_CONTENT = [b"[]", b"null", b"{}", b'"x"', b"not json", b'{"accepted": null, "receipt": 5}']
"""Bodies a misbehaving root can answer with, whatever its status."""


def _gateway_block(height: int = 0) -> tuple[bytes, bytes]:
    """(block id, signed block bytes) of a gateway block with one reading."""
    device = CoseSigner("88.123.99/PUMP-1", generate_p256())
    reading = envelope.decode_envelope(
        envelope.encode_envelope(device, [{envelope.N: "t", envelope.V: 1}], 1)
    )
    gateway = CoseSigner("88.123.99/GW-1", generate_p256())
    block = sign_block(build_header("88.123.99/GW-1", height, GENESIS_PREV, [reading], 1), gateway)
    return block.block_id, block.raw


async def _gateway_with_block(
    tmp_path: Path,
    log: LogBuilder,
    answer: Callable[[httpx.Request], httpx.Response],
    state: str,
    block: tuple[bytes, bytes],
) -> tuple[AsyncRootClient, Syncer, RegistryCache]:
    """The gateway's syncer and registry cache over one pin, talking to a root that answers ``answer``;
    the store holds ``block`` (id, bytes) in ``state``."""
    pins = make_store("sqlite", tmp_path)
    assert isinstance(pins, SqlitePinStore)
    block_id, raw = block
    await pins.db(
        lambda c: c.execute(
            "INSERT INTO blocks (height, block_id, raw, first_reading, count, time_ms, state) "
            "VALUES (0, ?, ?, 1, 1, 0, ?)",
            (block_id, raw, state),
        )
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://root.invalid")
    root = AsyncRootClient("http://root.invalid", http=http)
    pinned = await PinnedLog.open(log.policy(), ORIGIN, root, pins)
    return root, Syncer(root, pinned, pins, mode="anchor"), RegistryCache(root, pinned, pins)


@pytest.mark.parametrize("status", [200, 400, 409, 500])
@pytest.mark.parametrize("content", HOSTILE_CONTENT)
def test_hostile_root_answers_reach_the_syncer_and_registry_cache_as_typed_errors(
    status: int, content: bytes, log: LogBuilder, tmp_path: Path
) -> None:
    """Whatever the root answers, the syncer's push and receipt fetch return or raise a RootClientError
    or SyncError (retried with backoff), and a registry lookup fails cleanly: no TypeError or KeyError
    escapes, and nothing is stored as evidence except on a 409 (the root's fork refusal)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    async def scenario() -> None:
        for state in ("chained", "submitted"):
            directory = tmp_path / state
            directory.mkdir()
            root, syncer, registry = await _gateway_with_block(
                directory, log, answer, state, _gateway_block()
            )
            async with root:
                with contextlib.suppress(RootClientError, SyncError):
                    assert await (syncer.push() if state == "chained" else syncer.fetch_receipts()) == 0
                assert not await registry.fetch("88.123.99/PUMP-1")
                assert registry.protocol_errors == (1 if status == 200 else 0)
                if status != 409:
                    assert not await syncer.pins.has_evidence()

    run(scenario())


def test_a_refusal_that_claims_every_block_accepted_is_a_protocol_error(
    log: LogBuilder, tmp_path: Path
) -> None:
    """A 400 whose answer lists every submitted block as accepted contradicts itself: ProtocolError
    (the syncer once failed with an IndexError looking for the refused block), and the block counts
    as submitted."""
    block = _gateway_block()
    block_id = block[0]

    def answer(request: httpx.Request) -> httpx.Response:
        accepted = [{"block_id": block_id.hex(), "height": 0, "duplicate": False}]
        return httpx.Response(400, json={"accepted": accepted, "message": "refused"})

    async def scenario() -> list[str]:
        root, syncer, _ = await _gateway_with_block(tmp_path, log, answer, "chained", block)
        async with root:
            with pytest.raises(ProtocolError):
                await syncer.push()
            return await syncer.pins.db(lambda c: [b.state for b in gateway_store.blocks(c)])

    assert run(scenario()) == ["submitted"]


def test_a_malformed_proof_on_the_receipt_path_is_counted_and_retried_never_evidence(
    log: LogBuilder, tmp_path: Path
) -> None:
    """The syncer meets a consistency proof with a 31-byte hash for an honest receipt: it backs off,
    counts a protocol error (shown as a metric), keeps no evidence, and anchors the block once the root
    answers properly."""
    block_id, raw = block = _gateway_block()
    pinned_at = log.checkpoint()
    index = log.tree.append(block_leaf(raw))
    log.add(5)
    receipt = Receipt(index, tuple(log.tree.inclusion_proof(index)), signed(log.checkpoint()))
    broken = {"proof": True}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == routes.CONSISTENCY:
            proof = [b64.encode(h) for h in log.tree.consistency_proof(10, 16)]
            if broken["proof"]:
                proof[-1] = b64.encode(b"\x11" * 31)
            return httpx.Response(200, json={"old": 10, "new": 16, "proof": proof})
        assert request.url.path == routes.block(block_id)
        return httpx.Response(200, json=codecs.block_info_json(block_id, "88.123.99/GW-1", 0, index, receipt))

    async def scenario() -> Syncer:
        root, syncer, _ = await _gateway_with_block(tmp_path, log, answer, "submitted", block)
        syncer.interval_s = 0.05
        async with root:
            await syncer.pinned.accept(signed(pinned_at), older=Older.REFUSE)
            stop = asyncio.Event()
            task = asyncio.create_task(syncer.run(stop), name="sync")
            try:
                await _until(lambda: syncer.protocol_errors >= 1, task, "no protocol error was counted")
                assert syncer.state == "backing off" and not await syncer.pins.has_evidence()
                broken["proof"] = False

                async def anchored() -> bool:
                    states = await syncer.pins.db(lambda c: [b.state for b in gateway_store.blocks(c)])
                    return states == ["anchored"]

                deadline = time.monotonic() + 30
                while not await anchored():
                    assert time.monotonic() < deadline and not task.done(), "the block was not anchored"
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await task
            assert syncer.pinned.size == 16 and not await syncer.pins.has_evidence()
            return syncer

    syncer = run(scenario())
    status = replace(RUNNING, root_protocol_errors=syncer.protocol_errors)
    metrics = LocalApi(tmp_path / "gateway.db", lambda: status).handle("/metrics")[2].decode()
    assert f"edgeroot_gateway_root_protocol_errors_total {float(syncer.protocol_errors)}" in metrics


async def _until(condition: Callable[[], bool], task: asyncio.Task[None], message: str) -> None:
    """Wait (polling, with a deadline) until ``condition`` holds while ``task`` still runs."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline and not task.done(), message
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", STORES)
def test_every_piece_of_evidence_is_kept_none_overwritten(
    kind: str, log: LogBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two forks seen in the same second (one above the pin, one below it): both are kept where each
    EquivocationDetected says, the first where status looks for it (the gateway's meta['evidence'])."""
    monkeypatch.setattr(time, "time", lambda: 1_760_000_000.0)
    at_10 = log.checkpoint()
    log.add(6)
    forks = [log.checkpoint(root=b"\x07" * 32), log.checkpoint(10, root=b"\x08" * 32)]
    pins = make_store(kind, tmp_path)

    async def scenario() -> list[str]:
        pinned = await PinnedLog.open(log.policy(), ORIGIN, FakeRoot(log), pins)
        await pinned.accept(signed(at_10), older=Older.REFUSE)
        await pinned.accept(signed(log.checkpoint()), older=Older.REFUSE)
        where = []
        for fork in forks:
            with pytest.raises(EquivocationDetected) as info:
                await pinned.accept(signed(fork), older=Older.USE)
            where.append(info.value.evidence)
        return where

    where = run(scenario())
    assert len(set(where)) == 2
    if isinstance(pins, SqlitePinStore):
        keys = ["evidence", "evidence.2"]
        assert [w.endswith(f"meta['{k}']") for w, k in zip(where, keys, strict=True)] == [True, True]
        saved = [run(pins.db(lambda c, k=k: gateway_store.read_meta(c, k))) or "null" for k in keys]
    else:
        saved = [Path(w).read_text() for w in where]
    assert [json.loads(text)["conflicting"] for text in saved] == [f.decode() for f in forks]
