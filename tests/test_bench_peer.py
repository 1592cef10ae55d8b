"""bench/peer.py's stand-in for ThingsBoard: what the peer gateway's forwarding depends on (D-111)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeroot.system import wait_until
from tests.mqtt_harness import require_mosquitto

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def peer() -> Iterator[ModuleType]:
    """bench/peer.py, imported as the benchmarks run it (bench/ on sys.path)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("peer")
    finally:
        sys.path.remove(str(BENCH))


def test_stand_in_answers_session_limits_and_the_gateway_never_reads_its_own_request(
    peer: ModuleType,
) -> None:
    """The gateway's user reads the stand-in's answer to getSessionLimits, never its own request back."""
    require_mosquitto()
    got: list[tuple[str, dict[str, object]]] = []
    subscribed: list[object] = []
    with peer.upstream() as (broker, stand_in):
        gateway = paho.Client(CallbackAPIVersion.VERSION2, client_id="tb-gateway-under-test")
        gateway.username_pw_set(peer.TOKEN)
        gateway.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
        gateway.on_subscribe = lambda *args: subscribed.append(args)
        gateway.connect(broker.host, broker.port)
        gateway.loop_start()
        try:
            # ThingsBoard's client subscribes to both: server-side RPC requests and its own calls' answers.
            gateway.subscribe([("v1/devices/me/rpc/request/+", 1), ("v1/devices/me/rpc/response/+", 1)])
            wait_until("the gateway subscribed", lambda: subscribed)
            request = {"method": "getSessionLimits", "params": {"timeout": 5000}}
            gateway.publish("v1/devices/me/rpc/request/7", json.dumps(request), qos=1)
            wait_until("the answer to request 7", lambda: got)
            point = {"88.123/DEV-0": [{"ts": 1_764_460_800_005, "values": {"flow": 5.0}}]}
            gateway.publish("v1/gateway/telemetry", json.dumps(point), qos=1).wait_for_publish(10)
            wait_until("the point upstream", lambda: stand_in.count() == 1)
        finally:
            gateway.disconnect()
            gateway.loop_stop()
    assert [topic for topic, _ in got] == ["v1/devices/me/rpc/response/7"]
    answer = got[0][1]
    assert answer["rateLimits"] == {}
    assert answer["gatewayRateLimits"] == {}
    assert answer["maxInflightMessages"] == 1250
    assert stand_in.limits_answered.is_set()
    assert set(stand_in.arrived) == {("88.123/DEV-0", 1_764_460_800_005)}
