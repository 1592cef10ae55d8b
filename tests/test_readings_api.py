"""The gateway's token-protected readings API (GET /v1/readings, D-072) on a real SQLite store without a
running gateway: the token, the time range's edges, paging, and proofs that verify."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from chain_lite import envelope
from chain_lite.block import parse_block, verify_reading
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from edge import store
from edge.intake import Submission
from edge.local_api import LocalApi
from edge.writer import Writer
from runtime.clock import parse_instant_ms
from runtime.tomlconfig import Secret
from tests.test_gateway_page import RUNNING

PUMP = "88.123.99/PUMP-1"
OTHER = "88.123.99/PUMP-2"
T0 = 1_764_489_600_000  # 2025-11-30T08:00:00Z
ARRIVALS = [0, 10, 10, 20, 30, 40]  # ms after T0; the last one stays unchained
TOKEN = "t0ken-for-tests"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """PUMP's six readings arriving at T0 + ARRIVALS with one of OTHER between them, in two blocks (the
    last reading not chained)."""
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    pump, other = CoseSigner(PUMP, generate_p256()), CoseSigner(OTHER, generate_p256())
    store.replace_local_devices(
        path, {PUMP: public_der(pump.public_key), OTHER: public_der(other.public_key)}
    )
    writer = Writer(
        path, CoseSigner("88.123.99/GW-1", generate_p256()),
        max_readings=4, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    writer.open()
    for n, dt in enumerate(ARRIVALS, 1):
        raw = envelope.encode_envelope(pump, [{envelope.N: "temp", envelope.V: float(n)}], n)
        writer.process([Submission(raw, "test", T0 + dt)])
        if n == 2:
            other_raw = envelope.encode_envelope(other, [{envelope.N: "temp", envelope.V: 0.0}], 1)
            writer.process([Submission(other_raw, "test", T0 + 10)])
        if n in (3, 5):  # blocks closed by hand: their arrival times are long past
            assert writer.close_block_if_due(force=True) is not None
    writer.close()
    return path


def _get(api: LocalApi, token: str | None = TOKEN, **params: Any) -> tuple[int, dict[str, Any]]:
    status, ctype, body = api.handle(
        f"/v1/readings?{urlencode(params)}", None if token is None else f"Bearer {token}"
    )
    assert ctype == "application/json"
    return status, json.loads(body)


def _api(db: Path, token: str | None = TOKEN) -> LocalApi:
    return LocalApi(db, lambda: RUNNING, lambda: None if token is None else Secret(token))


def test_readings_need_the_configured_bearer_token_and_refusals_are_counted(db: Path) -> None:
    """No header, another scheme, a wrong token, or no token configured at all: 401, each counted."""
    api = _api(db)
    window = {"device": PUMP, "from": T0, "to": T0 + 100}
    assert _get(api, None, **window)[0] == 401
    assert _get(api, "wrong", **window)[0] == 401
    assert api.handle(f"/v1/readings?{urlencode(window)}", f"Basic {TOKEN}")[0] == 401
    assert api.handle(f"/v1/readings?{urlencode(window)}", f"bearer  {TOKEN}")[0] == 200  # scheme: any case
    assert api.unauthorized == 3
    metrics = api.handle("/metrics")[2].decode().splitlines()
    assert "edgeroot_gateway_api_unauthorized_total 3.0" in metrics
    unset = _api(db, None)
    status, body = _get(unset, TOKEN, **window)
    assert status == 401 and "http.token" in body["message"]
    assert _api(db).handle("/v1/readings/latest")[0] == 200  # latest stays anonymous


def test_time_range_is_from_inclusive_to_exclusive_on_arrival_time(db: Path) -> None:
    """[from, to) on the gateway's arrival time, in ms or RFC 3339; only the device asked for."""
    api = _api(db)
    _, body = _get(api, device=PUMP, **{"from": T0 + 10, "to": T0 + 30})
    assert [r["received_ms"] - T0 for r in body["readings"]] == [10, 10, 20]
    assert {r["signer"] for r in body["readings"]} == {PUMP}
    _, same = _get(
        api, device=PUMP, **{"from": "2025-11-30T08:00:00.010Z", "to": "2025-11-30T16:00:00.030+08:00"}
    )
    assert same == {**body, "from_ms": T0 + 10, "to_ms": T0 + 30}
    assert _get(api, device=PUMP, **{"from": T0 + 10, "to": T0 + 10})[1]["readings"] == []
    assert [
        r["received_ms"] - T0
        for r in _get(api, device=PUMP, **{"from": T0 + 40, "to": T0 + 41})[1]["readings"]
    ] == [40]
    bad_queries = [
        {"from": T0},
        {"device": PUMP, "from": T0, "to": T0 - 1},
        {"device": PUMP, "from": "2025-11-30T08:00:00", "to": T0},
        {"device": PUMP, "from": T0, "to": T0, "limit": 0},
        {"device": PUMP, "from": T0, "to": T0, "x": 1},
        {"device": "no slash", "from": T0, "to": T0},
    ]
    for bad in bad_queries:
        status, answer = _get(api, **bad)
        assert status == 400 and answer["message"], bad


def test_each_reading_comes_with_a_proof_in_its_signed_block_and_pages_lose_nothing(db: Path) -> None:
    """Chained readings carry an inclusion proof against their block's signed header; the unchained one
    says so; one reading a page gives the same readings as one page."""
    api = _api(db)
    window = {"device": PUMP, "from": T0, "to": T0 + 100}
    _, whole = _get(api, **window)
    blocks = {b["height"]: parse_block(base64.b64decode(b["header"])).header for b in whole["blocks"]}
    assert sorted(blocks) == [0, 1]
    for r in whole["readings"]:
        raw = base64.b64decode(r["envelope"])
        if r["block"] is None:
            assert r["received_ms"] == T0 + 40 and r["proof"] is None
            continue
        verify_reading(blocks[r["block"]], raw, r["index"], [base64.b64decode(h) for h in r["proof"]])
    pages, after = [], "0"
    while after is not None:
        _, page = _get(api, limit=1, after=after, **window)
        pages += page["readings"]
        after = page["next"]
    assert pages == whole["readings"]


def test_instants_are_epoch_milliseconds_or_rfc3339_with_an_offset() -> None:
    """Exact to the millisecond; a timestamp without an offset is refused."""
    assert parse_instant_ms("1764489600123") == T0 + 123
    assert parse_instant_ms("2025-11-30T08:00:00.123Z") == T0 + 123
    assert parse_instant_ms("2025-11-30T16:00:00+08:00") == T0
    for bad in ("2025-11-30T08:00:00", "yesterday", "-5", ""):
        with pytest.raises(ValueError, match=r"offset|RFC 3339"):
            parse_instant_ms(bad)
