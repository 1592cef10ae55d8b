"""The operator's page at the gateway's local API `/`, and its JSON (/v1/status, /v1/devices), from
hand-built snapshots and a real SQLite store, without a running gateway; then in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256, public_der
from edge import store
from edge.intake import Submission
from edge.local_api import LocalApi, LocalHttp
from edge.status import AnchoredBlock, GatewayStatus, RejectHistory, RejectSample, StoreFacts
from edge.writer import Writer
from runtime.clock import now_ms
from runtime.webassets import page_assets
from tests.gateway_harness import DEVICE, Plant
from tests.root_harness import free_port
from tests.test_health_truth import post

PUMP = "88.123.99/pump-0042"
VALVE = "88.123.99/valve-7"
T0 = 1_700_000_000_000
HISTORY = (
    RejectSample(T0, {}),
    RejectSample(T0 + 10_000, {"malformed": 2}),
    RejectSample(T0 + 20_000, {"malformed": 2, "replay": 1}),
)
STORED = StoreFacts(
    readings=2,
    unchained_readings=0,
    blocks={"chained": 1, "submitted": 0, "anchored": 4},
    last_anchored=AnchoredBlock(height=3, log_index=41),
    rejects={"malformed": 3, "replay": 1},
    gaps=0,
    evidence=False,
)
RUNNING = GatewayStatus(
    gateway="88.123.99/GW-1",
    accepted=2,
    rejected={"malformed": 2, "replay": 1},
    refused=0,
    store_full=False,
    sync="backing off",
    connectors={"MqttConnector[0]": "connected", "CoapConnector[1]": "listening"},
    store=STORED,
    lookup_problem="root unreachable",
    reject_history=HISTORY,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with a local device (two readings, chained), a registry device (no reading) and a reject."""
    path = tmp_path / "gateway.db"
    store.create_schema(path)
    pump = CoseSigner(PUMP, generate_p256())
    store.replace_local_devices(path, {PUMP: public_der(pump.public_key)})
    conn = store.connect(path)
    with conn:  # as the registry cache stores a key it proved against the pinned checkpoint
        conn.execute(
            "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES (?, ?, 'registry', ?)",
            (VALVE, public_der(generate_p256().public_key()), T0),
        )
    conn.close()
    writer = Writer(
        path, CoseSigner("88.123.99/GW-1", generate_p256()),
        max_readings=10, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    writer.open()
    readings = [
        envelope.encode_envelope(pump, [{envelope.N: "flow", envelope.V: float(n)}], n) for n in (1, 2)
    ]
    writer.process([Submission(raw, "test", now_ms()) for raw in readings])
    writer.process([Submission(b"junk", "test", now_ms())])
    assert writer.close_block_if_due(force=True) is not None
    writer.close()
    return path


def api_for(db: Path, *snapshots: GatewayStatus) -> LocalApi:
    left = list(snapshots)
    return LocalApi(db, lambda: left.pop(0))


def test_page_and_its_assets_are_served_with_their_content_types(db: Path) -> None:
    """`/` is the page; its modules and style sheets come from the package under /console/ (those shared
    with the root console under /console/shared/), nothing else."""
    api = api_for(db)
    status, ctype, body = api.handle("/")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert b'src="/console/app.js"' in body and b'href="/console/page.css"' in body
    for name, want in [
        ("app.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("page.css", "text/css"),
        ("shared/i18n.js", "text/javascript"),
        ("shared/dom.js", "text/javascript"),
        ("shared/base.css", "text/css"),
    ]:
        status, ctype, body = api.handle(f"/console/{name}")
        assert status == 200 and ctype.startswith(want) and body, name
    for outside in ["/console/../local_api.py", "/console/", "/console/shared/", "/console/nope.js", "/x.py"]:
        assert api.handle(outside)[0] == 404, outside


def test_status_json_has_connectors_backlog_anchor_problems_and_reject_history(db: Path) -> None:
    """/v1/status: /healthz's facts plus the problems by kind and the run's reject samples."""
    status, ctype, body = api_for(db, RUNNING).handle("/v1/status")
    assert (status, ctype) == (200, "application/json")
    got = json.loads(body)
    assert got["connectors"] == {"MqttConnector[0]": "connected", "CoapConnector[1]": "listening"}
    assert got["store"]["unchained_readings"] == 0 and got["store"]["unanchored_blocks"] == 1
    assert got["store"]["last_anchored"] == {"height": 3, "log_index": 41}
    assert got["status"] == "degraded"
    assert got["problem_kinds"] == [{"kind": "lookups", "detail": "root unreachable"}]
    assert got["problems"] == [
        "registry lookups failing: readings of devices without a key here are held, not accepted "
        "(root unreachable)"
    ]
    assert got["reject_history"] == [
        {"time_ms": T0, "rejected": {}},
        {"time_ms": T0 + 10_000, "rejected": {"malformed": 2}},
        {"time_ms": T0 + 20_000, "rejected": {"malformed": 2, "replay": 1}},
    ]
    assert (got["refused"], got["held"]) == (0, 0)


def test_status_is_200_even_while_degraded(db: Path) -> None:
    """The page's status answers 200 with the problems (it is data); /healthz is the one that says 503."""
    api = api_for(db, RUNNING, RUNNING)
    assert api.handle("/v1/status")[0] == 200
    assert api.handle("/healthz")[0] == 503


def test_devices_json_lists_key_source_counter_and_last_reading(db: Path) -> None:
    """/v1/devices: every known device with its key's source, last counter and newest stored reading."""
    status, ctype, body = api_for(db).handle("/v1/devices")
    assert (status, ctype) == (200, "application/json")
    got = json.loads(body)
    assert got["total"] == 2
    pump, valve = got["devices"]
    assert pump["identifier"] == PUMP and pump["key_source"] == "local" and pump["last_counter"] == 2
    assert pump["key_fetched_ms"] is None
    last = pump["last_reading"]
    assert last["counter"] == 2 and last["block"] is not None and last["received_ms"] > T0
    assert [(r["name"], r["value"]) for r in last["records"]] == [("flow", 2.0)]
    assert valve == {
        "identifier": VALVE,
        "key_source": "registry",
        "key_fetched_ms": T0,
        "last_counter": None,
        "last_reading": None,
    }


def test_latest_json_has_the_newest_stored_reading_of_each_device(db: Path) -> None:
    """/v1/readings/latest: per device, its newest stored reading (counter, block, SenML resolved)."""
    status, ctype, body = api_for(db).handle("/v1/readings/latest")
    assert (status, ctype) == (200, "application/json")
    [(subject, newest)] = json.loads(body)["devices"].items()
    assert subject == PUMP
    assert newest["counter"] == 2 and newest["block"] is not None and newest["received_ms"] > T0
    assert [(r["name"], r["value"]) for r in newest["records"]] == [("flow", 2.0)]


def test_devices_overview_is_bounded_and_counts_all(db: Path) -> None:
    """The device table stops at its bound; the count says how many there are in all."""
    conn = store.connect(db)
    try:
        rows = store.devices_overview(conn, limit=1)
        assert [r.identifier for r in rows] == [PUMP]
        assert store.count_devices(conn) == 2
    finally:
        conn.close()


def test_reject_history_keeps_one_sample_per_interval_and_the_newest_only() -> None:
    """One sample per 10 s however often snapshots are taken; the ring drops the oldest past its size."""
    ring = RejectHistory(every_ms=10_000, keep=3)
    assert ring.observe(0, {"replay": 1}) == (RejectSample(0, {"replay": 1}),)
    assert len(ring.observe(9_999, {"replay": 2})) == 1  # too soon: not kept
    for t in (10_000, 20_000, 30_000):
        samples = ring.observe(t, {"replay": t // 10_000})
    assert [s.time_ms for s in samples] == [10_000, 20_000, 30_000]
    assert samples[-1].rejected == {"replay": 3}


def test_a_sample_does_not_change_when_the_counters_it_copied_do() -> None:
    """A sample is a copy: the ingest's live dict changing later does not rewrite the past."""
    live = {"replay": 1}
    ring = RejectHistory()
    ring.observe(0, live)
    live["replay"] = 5
    assert ring.observe(1, live)[0].rejected == {"replay": 1}


# --- In a real headless Chromium ---------------------------------------------------------------------

INSTALL_HINT = "install Debian's headless Chromium: apt-get install -y chromium-headless-shell"
CHROMIUM = shutil.which("chromium-headless-shell") or next(
    (str(p) for p in [Path("/usr/lib/chromium/chromium-headless-shell")] if p.exists()), None
)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason=f"no headless Chromium: {INSTALL_HINT}")


@pytest.fixture
def served(db: Path) -> Iterator[tuple[str, list[GatewayStatus]]]:
    """The local API on a free loopback port over a snapshot the test can swap (``holder[0]``)."""
    holder = [RUNNING]
    http = LocalHttp(LocalApi(db, lambda: holder[0]), f"127.0.0.1:{free_port()}")
    http.start()
    host, port = http.server.server_address[:2]
    try:
        yield f"http://{host}:{port}", holder
    finally:
        http.stop()


@pytest.fixture
def page(served: tuple[str, list[GatewayStatus]]) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the browser tests need the playwright package: pip install -e '.[test]'",
    )
    url, _ = served
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        context = chromium.new_context(locale="en-US", viewport={"width": 390, "height": 844})  # a phone
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready] #device-table table")
        yield page
        context.close()
        chromium.close()


@needs_browser
def test_page_shows_connectors_problem_devices_and_rejects(page: Any) -> None:
    """Connectors with their state, the health problem, the backlog and last anchor, the reject chart
    and the device table, in English by default for an English browser."""
    assert page.inner_text("#gateway") == "88.123.99/GW-1"
    connectors = page.inner_text("#connector-table")
    assert "MqttConnector[0]" in connectors and "connected" in connectors and "listening" in connectors
    problems = page.inner_text("#problems")
    assert "Registry lookups failing" in problems and "root unreachable" in problems
    assert page.get_attribute("#problems [role=alert]", "role") == "alert"
    chain = page.inner_text("#chain-facts")
    assert "height 3, log index 41" in chain and "backing off" in chain
    assert page.locator("#reject-chart svg polyline").count() == 2  # malformed, replay
    assert page.get_attribute("#reject-chart svg", "aria-label").startswith("Chart of rejects by reason: 3 ")
    rows = page.locator("#device-table tbody tr")
    assert rows.count() == 2
    pump = rows.nth(0).inner_text()
    assert PUMP in pump and "local" in pump and "flow=2" in pump
    assert "registry" in rows.nth(1).inner_text() and "none stored" in rows.nth(1).inner_text()


@needs_browser
def test_page_switches_to_chinese_and_back_and_remembers(page: Any) -> None:
    """中文 and back through the labelled select; the choice survives a reload."""
    page.select_option("#lang", "zh-CN")
    page.wait_for_function("document.documentElement.lang === 'zh-CN'")
    assert page.inner_text("h1").startswith("网关")
    assert "注册表查询失败" in page.inner_text("#problems")
    assert page.inner_text("#h-devices") == "设备"
    assert "本地" in page.locator("#device-table tbody tr").nth(0).inner_text()
    page.reload()
    page.wait_for_selector("body[data-ready] #device-table table")
    assert page.input_value("#lang") == "zh-CN" and page.inner_text("#h-connectors") == "连接器"
    page.select_option("#lang", "en")
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.inner_text("#h-devices") == "Devices"
    assert "Registry lookups failing" in page.inner_text("#problems")


@needs_browser
def test_page_shows_a_reject_appearing(page: Any, served: tuple[str, list[GatewayStatus]]) -> None:
    """A new reject reason in the run's counters shows in the chart's legend and the table on refresh."""
    _, holder = served
    assert "bad-signature" not in page.inner_text("#reject-chart")
    later = (*HISTORY, RejectSample(T0 + 30_000, {"malformed": 2, "replay": 1, "bad-signature": 4}))
    holder[0] = replace(
        RUNNING,
        rejected=later[-1].rejected,
        reject_history=later,
        store=replace(STORED, rejects={**STORED.rejects, "bad-signature": 4}),
    )
    page.reload()
    page.wait_for_selector("#reject-chart polyline[data-reason=bad-signature]")
    assert "bad-signature" in page.inner_text("#reject-chart ul.legend")
    row = page.locator("#reject-chart tbody tr", has_text="bad-signature").inner_text()
    assert row.split() == ["bad-signature", "4", "4"]


def test_a_page_may_not_hide_a_shared_asset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service folder holding its own shared/ is refused by name, not silently shadowed."""
    (tmp_path / "pkg" / "console" / "shared").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "console" / "shared" / "i18n.js").write_text("// mine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"pkg/console must not hold shared/: \['shared/i18n.js'\]"):
        page_assets("pkg", "console")


def test_real_gateway_samples_its_rejects_and_lists_its_device(plant: Plant) -> None:
    """A running gateway: a junk input shows in /v1/status's reject history (sampled from the gateway's
    own snapshots, at most every 10 s), and a stored reading in /v1/devices."""
    plant.start()
    try:
        codes = [code for code, _ in post(plant, plant.reading(), b"junk")]
        assert codes[0].startswith("2.") and codes[1].startswith("4."), codes
        deadline = time.monotonic() + 40  # the next sample is due 10 s after the first
        while True:
            status = httpx.get(plant.http + "/v1/status", timeout=5).json()
            history = status["reject_history"]
            if history and history[-1]["rejected"].get("malformed") == 1:
                break
            assert time.monotonic() < deadline, f"no sample with the reject: {history}"
            time.sleep(0.5)
        assert history[0]["time_ms"] < history[-1]["time_ms"]
        devices = httpx.get(plant.http + "/v1/devices", timeout=5).json()["devices"]
        mine = next(d for d in devices if d["identifier"].lower() == DEVICE.lower())
        assert mine["last_reading"]["counter"] == 1 and mine["last_counter"] == 1
        page = httpx.get(plant.http + "/", timeout=5)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    finally:
        plant.stop()
