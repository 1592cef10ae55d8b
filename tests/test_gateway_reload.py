"""SIGHUP reloads that go wrong: the gateway keeps taking readings with the running configuration."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiocoap
import httpx

from edgeroot.system import configure
from tests.gateway_harness import DEVICE, Plant


def _coap_code(port: int, payload: bytes, timeout: float = 10.0) -> str:
    """POST one envelope; its response code, or ``"timeout"`` when nothing answers in time."""

    async def run() -> str:
        ctx = await aiocoap.Context.create_client_context()
        try:
            msg = aiocoap.Message(code=aiocoap.POST, payload=payload, uri=f"coap://127.0.0.1:{port}/readings")
            msg.opt.content_format = 18
            return str((await asyncio.wait_for(ctx.request(msg).response, timeout)).code)
        except TimeoutError:
            return "timeout"
        finally:
            await ctx.shutdown()

    return asyncio.run(run())


def test_a_reload_whose_connectors_cannot_start_keeps_the_running_ones(plant: Plant) -> None:
    """A new configuration whose CoAP port is taken: the reload fails loudly and the connectors of the
    running configuration are back, so intake never stays stopped behind a "kept" message."""
    plant.start()
    assert plant.proc is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        configure(  # and the device dropped
            plant.gateway.config,
            {"connector": [{}, {"port": taken.getsockname()[1]}], "devices": {DEVICE: None}},
        )
        plant.proc.send_signal(signal.SIGHUP)
        log = plant.system.daemons["gateway"].log
        deadline = time.monotonic() + 30
        while "reload failed, keeping the running configuration" not in log.read_text():
            assert plant.proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the failed reload was not reported"
            time.sleep(0.1)
        assert _coap_code(plant.coap_port, plant.reading()) == "2.04 Changed"
        connectors = httpx.get(f"{plant.http}/healthz").json()["connectors"]
        assert sorted(connectors.values()) == ["connected", "listening"], connectors
        # The running configuration's [devices] are back too: the device is still trusted by its local key.
        devices = {d["identifier"]: d for d in httpx.get(f"{plant.http}/v1/devices").json()["devices"]}
        assert devices[DEVICE]["key_source"] == "local", devices
    assert plant.proc.poll() is None
