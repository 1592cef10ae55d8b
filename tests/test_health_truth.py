"""Health that tells the truth (issue 12 item 6): whatever stops readings from being accepted or
anchored shows in ``/healthz`` (503 with the reason), ``edgeroot gateway status``, a metric and one
ERROR line; a reading waiting for its key's lookup is held, never NACKed for good nor counted as a
reject.

Each test runs the real gateway process against a real root (tests/gateway_harness.py) and talks to
it over CoAP, whose answer codes say exactly what the gateway decided.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiocoap
import httpx
import pytest

from chain_lite.keys import NoteKey
from chain_lite.note import SIGTYPE_COSIGNATURE_V1
from edge import store
from edge.pin_store import SqlitePinStore
from edge.registry_cache import FAILING_FOR_S, RegistryCache
from edgeroot.system import configure, wait_until
from rootclient.client import AsyncRootClient
from rootclient.pinned_log import PinnedLog
from tests.gateway_harness import DEVICE, EDGEROOT, Plant
from tests.helpers import ORIGIN, LogBuilder
from tests.root_harness import free_port
from tests.test_signer_flood import FrozenClock

LOOKUPS_FAILING = "registry lookups failing"
BLOCKS_REFUSED = "blocks cannot be anchored"


def post(plant: Plant, *payloads: bytes) -> list[tuple[str, bytes]]:
    """POST each envelope to the gateway's CoAP /readings; (code, payload) of each answer."""

    async def exchange() -> list[tuple[str, bytes]]:
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = []
            for payload in payloads:
                msg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{plant.coap_port}/readings",
                                      payload=payload)  # fmt: skip
                msg.opt.content_format = 18
                resp = await ctx.request(msg).response
                out.append((str(resp.code), resp.payload))
            return out
        finally:
            await ctx.shutdown()

    return asyncio.run(exchange())


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    return wait_until(what, condition, timeout=timeout)


def unprovision_device(plant: Plant) -> None:
    """Leave the device to the root's registry: its key must be looked up."""
    configure(plant.gateway.config, {"devices": {DEVICE: None}})


def quarantined(plant: Plant) -> list[str]:
    with store.reader(plant.gateway.db) as conn:
        return sorted(r for r, n in store.count_rejects_by_reason(conn).items() for _ in range(n))


def stored_counters(plant: Plant) -> list[int]:
    with store.reader(plant.gateway.db) as conn:
        return [r.counter for r in store.readings(conn)]


def error_lines(plant: Plant) -> list[str]:
    lines = plant.log().splitlines()
    return [line for line in lines if line.startswith("ERROR")]


def status_cli(plant: Plant) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEROOT, "gateway", "status", "--state", str(plant.state)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def metric(plant: Plant, name: str) -> float:
    text = httpx.get(f"{plant.http}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"no metric {name} in /metrics"
    return float(found.group(1))


def test_the_first_reading_of_a_registered_device_is_held_then_stored_and_not_a_reject(plant: Plant) -> None:
    """A device known only to the registry: its first reading is held (durably since D-059: 2.04
    `held: key lookup`, not quarantined), stored by the gateway once the key is found, and acknowledged
    when resent; no reject is counted anywhere and health stays ok."""
    unprovision_device(plant)
    plant.start()
    first = plant.reading()
    [(code, payload)] = post(plant, first)
    assert code.startswith("2.04") and payload == b"held: key lookup", (code, payload)
    wait_for("the held reading stored once the key was found", lambda: stored_counters(plant) == [1])
    answers = post(plant, first, plant.reading())
    assert [c[:4] for c, _ in answers] == ["2.04", "2.04"], answers
    assert stored_counters(plant) == [1, 2]
    assert quarantined(plant) == []
    health = httpx.get(f"{plant.http}/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["ingest"]["rejected"] == {} and health.json()["ingest"]["duplicates"] == 1
    assert metric(plant, "edgeroot_gateway_readings_held_total") == 1.0
    assert plant.stop() == 0


def test_a_wrong_trust_policy_holds_readings_and_degrades_health_once(plant: Plant) -> None:
    """With a policy that trusts another witness, registry answers cannot be verified: readings of a
    registered device are held (durably since D-059: 2.04), never refused as unknown-device, and
    /healthz (503), the metric and `gateway status` name the failing lookups; the log says so in one
    ERROR line."""
    unprovision_device(plant)
    policy = plant.state / "policy.txt"
    other = NoteKey.generate("witness.test", SIGTYPE_COSIGNATURE_V1).vkey()
    text = re.sub(r"^witness witness\.test \S+$", f"witness witness.test {other}", policy.read_text(),
                  flags=re.MULTILINE)  # fmt: skip
    assert text != policy.read_text()
    policy.write_text(text)
    plant.start()
    answers = post(plant, *(plant.reading() for _ in range(5)))
    assert all(c.startswith("2.04") and p == b"held: key lookup" for c, p in answers), answers
    health = httpx.get(f"{plant.http}/healthz")
    assert health.status_code == 503, health.text
    assert any(p.startswith(LOOKUPS_FAILING) for p in health.json()["problems"]), health.json()
    assert health.json()["ingest"]["rejected"] == {}
    assert metric(plant, "edgeroot_gateway_registry_lookups_failing") == 1.0
    status = status_cli(plant)
    assert status.returncode == 1 and LOOKUPS_FAILING in status.stdout + status.stderr, status
    assert quarantined(plant) == [] and stored_counters(plant) == []
    errors = error_lines(plant)
    assert len(errors) == 1 and LOOKUPS_FAILING in errors[0], errors
    plant.stop()


def test_an_unregistered_gateway_degrades_health_once_while_the_root_refuses_its_blocks(plant: Plant) -> None:
    """The root refuses every block of a gateway it does not know: readings are still stored, but
    /healthz (503), the metric and `gateway status` say blocks cannot be anchored, and the log says it
    once however many times the syncer retries."""
    toml = plant.state / "gateway.toml"
    toml.write_text(toml.read_text().replace('gateway = "88.123.99/GW-1"', 'gateway = "88.123.99/GW-NOBODY"'))
    plant.start()
    answers = post(plant, *(plant.reading() for _ in range(3)))
    assert all(c.startswith("2.04") for c, _ in answers), answers
    wait_for("three refused syncs", lambda: metric(plant, "edgeroot_gateway_sync_failures_total") >= 3)
    health = httpx.get(f"{plant.http}/healthz")
    assert health.status_code == 503, health.text
    assert any(p.startswith(BLOCKS_REFUSED) for p in health.json()["problems"]), health.json()
    assert metric(plant, "edgeroot_gateway_blocks_refused") == 1.0
    status = status_cli(plant)
    assert status.returncode == 1 and BLOCKS_REFUSED in status.stdout + status.stderr, status
    errors = error_lines(plant)
    assert len(errors) == 1 and BLOCKS_REFUSED in errors[0], errors
    plant.stop()


def test_failing_lookups_are_reported_once_and_for_as_long_as_they_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A root that cannot be reached: the first failed lookup logs one ERROR and sets the problem,
    later ones (other signers) only DEBUG; the signer is not asked again for ``retry_s``; with no
    failure for FAILING_FOR_S the problem ends (a blip is not reported forever)."""
    db = tmp_path / "gateway.db"
    store.create_schema(db)
    clock = FrozenClock()
    builder = LogBuilder()

    async def scenario() -> RegistryCache:
        async with AsyncRootClient(f"http://127.0.0.1:{free_port()}", timeout=2.0) as root:
            pins = SqlitePinStore(db)
            pinned = await PinnedLog.open(builder.policy(), ORIGIN, root, pins)
            registry = RegistryCache(root, pinned, pins, clock=clock)
            for i in range(5):
                assert not await registry.lookup(f"88.123.99/PUMP-{i}")
            assert registry.lookups == 5 and registry.failing is not None
            assert "cannot reach" in registry.failing
            assert not await registry.lookup("88.123.99/PUMP-0")  # within retry_s: not asked again
            assert registry.lookups == 5
            clock.now += FAILING_FOR_S + 1
            assert registry.failing is None
            return registry

    caplog.set_level(logging.DEBUG, logger="edge.registry_cache")
    asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and LOOKUPS_FAILING in errors[0].getMessage()
