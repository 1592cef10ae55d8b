"""Readings from made-up signers (issue 12 item 9): the registry lookups they cause are bounded in
concurrency and number, a proven absence is cached, and none of it delays a known device's reading.

The gateway's ingest door, writer and registry cache run in process over a real root; the root client
counts every ``/v1/resolve`` and holds it at a gate the test opens, so "pending" is a fact, not a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from chain_lite.registry import Value, pubkey_value
from edge import store
from edge.ingest import Ingest
from edge.intake import HELD, Outcome
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edge.writer import Writer
from rootclient.client import AsyncRootClient
from rootclient.pinned_log import PinnedLog
from tests.root_harness import RootUnderTest, running_root

GATEWAY = "88.123.99/GW-1"
KNOWN = "88.123.99/PUMP-0042"
FLOOD = 60


class GatedRoot(AsyncRootClient):
    """The root as the gateway sees it; each resolve is counted and waits at ``gate`` first."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()
        self.resolves: list[str] = []
        self.pending = 0

    async def resolve(self, identifier: str, at: int | None = None) -> dict[str, Any]:
        self.resolves.append(identifier)
        self.pending += 1
        try:
            await self.gate.wait()
        finally:
            self.pending -= 1
        return await super().resolve(identifier, at)


class FrozenClock:
    """The registry cache's clock: time moves only when the test says, so the rate budget is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Parts:
    root: GatedRoot
    ingest: Ingest
    registry: RegistryCache
    known: CoseSigner
    clock: FrozenClock
    counter: int = 0

    def known_reading(self) -> bytes:
        self.counter += 1
        return envelope.encode_envelope(self.known, [{envelope.N: "flow", envelope.V: 1.0}], self.counter)


def made_up(i: int) -> bytes:
    """A well-signed reading from a signer nobody registered."""
    signer = CoseSigner(f"88.123.99/FAKE-{i}", generate_p256())
    return envelope.encode_envelope(signer, [{envelope.N: "x", envelope.V: float(i)}], 1)


async def until(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def gateway(root: RootUnderTest, tmp_path: Path) -> AsyncIterator[Parts]:
    """Ingest, writer and registry cache wired as the daemon wires them; KNOWN is provisioned locally."""
    db = tmp_path / "gateway.db"
    store.create_schema(db)
    known = CoseSigner(KNOWN, generate_p256())
    store.replace_local_devices(db, {KNOWN: public_der(known.public_key)})  # as from [devices]
    writer = Writer(
        db, CoseSigner(GATEWAY, generate_p256()), max_readings=1000, max_seconds=3600,
        disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    ingest = Ingest(writer)
    await ingest.open()
    loop = asyncio.create_task(ingest.run())
    clock = FrozenClock()
    async with GatedRoot(root.url) as client:
        pins = SqlitePinStore(db)
        pinned = await PinnedLog.open(root.policy, root.origin, client, pins)
        registry = RegistryCache(client, pinned, pins, clock=clock)
        ingest.use_registry(registry)
        try:
            yield Parts(client, ingest, registry, known, clock)
        finally:
            client.gate.set()
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await ingest.close()


@pytest.fixture
def root_and_admin(tmp_path: Path) -> Iterator[tuple[RootUnderTest, CoseSigner]]:
    """A root node and witness on loopback (SQLite: the flood's bounds do not depend on the database),
    with the prefix 88.123.99 and its admin."""
    with running_root(tmp_path / "root", f"sqlite:///{tmp_path / 'root.db'}") as node:
        # Made-up signers under a real prefix: the root proves their absence.
        yield node, node.add_prefix("88.123.99")


@pytest.fixture
def sqlite_root(root_and_admin: tuple[RootUnderTest, CoseSigner]) -> RootUnderTest:
    return root_and_admin[0]


def held(outcome: Outcome) -> bool:
    """Held durably while the key is looked up (D-059: acknowledged, judged later; was not durable)."""
    return outcome.durable and not outcome.accepted and outcome.reason == HELD


def test_lookups_of_made_up_signers_are_bounded_and_a_proven_absence_is_cached(
    sqlite_root: RootUnderTest, tmp_path: Path
) -> None:
    """N made-up signers cost at most ``max_concurrent`` root lookups at once and at most the rate
    budget's burst in all (the clock stands still); their readings are held, never NACKed, until a
    lookup proves absence; a signer proven absent is then refused at once, with no lookup."""
    flood = [made_up(i) for i in range(FLOOD)]

    async def scenario() -> None:
        async with gateway(sqlite_root, tmp_path) as parts:
            registry, client = parts.registry, parts.root
            assert registry.max_concurrent < registry.burst < FLOOD
            first = await asyncio.wait_for(parts.ingest.submit_many([(r, "flood") for r in flood]), 10)
            assert all(held(o) for o in first), first
            await until("every lookup decided", lambda: registry.lookups + registry.deferred >= FLOOD)
            assert client.pending == len(client.resolves) == registry.max_concurrent
            client.gate.set()
            # Submit the flood again and again, as devices resend: lookups go on within the budget
            # until it is spent (the clock stands still), and none is made twice.
            for _ in range(10):
                made = len(client.resolves)
                await until("the lookups done", lambda: not parts.ingest.looking)
                last = await asyncio.wait_for(parts.ingest.submit_many([(r, "flood") for r in flood]), 10)
                await until("the lookups done", lambda: not parts.ingest.looking)
                if len(client.resolves) == made:
                    break
            assert len(client.resolves) == registry.burst, "lookups beyond the rate budget"
            assert len(set(client.resolves)) == registry.burst, "a proven absence was looked up again"
            for raw, outcome in zip(flood, last, strict=True):
                if envelope.decode_envelope(raw).signer in client.resolves:
                    final = (outcome.reason, outcome.durable, outcome.accepted)
                    assert final == ("unknown-device", True, False), outcome
                else:
                    assert held(outcome), outcome
            assert parts.ingest.stats.held >= FLOOD

    asyncio.run(scenario())


def test_a_known_device_is_acknowledged_while_the_flood_lookups_are_pending(
    sqlite_root: RootUnderTest, tmp_path: Path
) -> None:
    """A known device's reading in the same burst as a flood, and alone after it, is stored and
    acknowledged while every lookup the flood caused is still pending at the root."""

    async def scenario() -> None:
        async with gateway(sqlite_root, tmp_path) as parts:
            flood = [made_up(i) for i in range(20)]
            burst = [*flood[:10], parts.known_reading(), *flood[10:]]
            outcomes = await asyncio.wait_for(parts.ingest.submit_many([(r, "mqtt") for r in burst]), 10)
            assert outcomes[10].accepted and outcomes[10].durable
            assert all(held(o) for i, o in enumerate(outcomes) if i != 10)
            await until("the flood's lookups at the root", lambda: parts.root.pending > 0)
            alone = await asyncio.wait_for(parts.ingest.submit(parts.known_reading(), "coap"), 10)
            assert alone.accepted and alone.durable
            assert parts.root.pending == parts.registry.max_concurrent, "the lookups did not stay pending"
            assert parts.ingest.stats.accepted == 2 and parts.ingest.stats.rejected == {}

    asyncio.run(scenario())


def test_readings_held_during_their_lookup_are_stored_in_arrival_order_and_none_is_a_reject(
    root_and_admin: tuple[RootUnderTest, CoseSigner], tmp_path: Path
) -> None:
    """A device known only to the registry: its readings sent while the one lookup of its key is
    pending are held (durably, D-059), then stored by the gateway in arrival order, before a later
    one; a resend of a held reading is then a duplicate; nothing is quarantined or counted a reject."""
    node, admin = root_and_admin
    device = CoseSigner("88.123.99/PUMP-7", generate_p256())
    values = [pubkey_value(300, device.public_key), Value(1, "DEVICE", "string", device.kid)]
    with node.client() as c:
        c.write(node.write("create", device.kid, values, admin))
    node.settle()
    records = [{envelope.N: "t", envelope.V: 1.0}]
    readings = [envelope.encode_envelope(device, records, n) for n in range(1, 6)]

    async def scenario() -> None:
        async with gateway(node, tmp_path) as parts:
            for raw in readings[:3]:
                assert held(await asyncio.wait_for(parts.ingest.submit(raw, "coap"), 10))
            await until("the lookup at the root", lambda: parts.root.pending == 1)
            assert parts.root.resolves == [device.kid], "one lookup per signer"
            parts.root.gate.set()
            await until("the held readings judged", lambda: parts.ingest.stats.accepted == 3)
            assert not parts.ingest.looking
            for raw in readings[3:]:
                outcome = await asyncio.wait_for(parts.ingest.submit(raw, "coap"), 10)
                assert outcome.accepted and outcome.durable and outcome.reason is None
            resend = await asyncio.wait_for(parts.ingest.submit(readings[0], "coap"), 10)
            assert resend.accepted and resend.reason == "duplicate"
            stats = parts.ingest.stats
            assert (stats.accepted, stats.duplicates, stats.held, stats.rejected) == (5, 1, 3, {})

    asyncio.run(scenario())
    with store.reader(tmp_path / "gateway.db") as conn:
        assert [r.counter for r in store.readings(conn)] == [1, 2, 3, 4, 5]
        assert store.count_rejects_by_reason(conn) == {}
