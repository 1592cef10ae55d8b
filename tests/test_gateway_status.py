"""The gateway's status snapshot and what renders it: /healthz, /metrics, STATUS= and `gateway status`,
each without a running gateway (the snapshot is the only thing they know of it)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from edge import store
from edge.intake import Submission
from edge.local_api import LocalApi
from edge.status import AnchoredBlock, GatewayStatus, StoreFacts
from edge.writer import Writer
from edgeroot.cli import main
from runtime.clock import now_ms
from tests.root_harness import free_port

STORED = StoreFacts(
    readings=120,
    unchained_readings=3,
    blocks={"chained": 1, "submitted": 2, "anchored": 4},
    last_anchored=AnchoredBlock(height=3, log_index=41),
    rejects={"malformed": 2, "replay": 1},
    gaps=1,
    evidence=False,
    duplicates=9,
)
RUNNING = GatewayStatus(
    gateway="88.123.99/GW-1",
    accepted=117,
    rejected={"replay": 1, "malformed": 2},
    refused=0,
    store_full=False,
    sync="synced",
    connectors={"MqttConnector[0]": "connected", "CoapConnector[1]": "listening"},
    store=STORED,
    duplicates=4,
)


def serve(tmp_path: Path, *snapshots: GatewayStatus) -> tuple[LocalApi, list[GatewayStatus]]:
    """A local API over a producer that hands out ``snapshots`` in turn; the list is what is left."""
    left = list(snapshots)
    return LocalApi(tmp_path / "gateway.db", lambda: left.pop(0)), left


def test_healthz_renders_the_snapshot(tmp_path: Path) -> None:
    """/healthz: 200 and every fact of a healthy snapshot, in the shape it has always had."""
    api, _ = serve(tmp_path, RUNNING)
    status, ctype, body = api.handle("/healthz")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {
        "status": "ok",
        "problems": [],
        "gateway": "88.123.99/GW-1",
        "connectors": {"MqttConnector[0]": "connected", "CoapConnector[1]": "listening"},
        "sync": "synced",
        "ingest": {"accepted": 117, "duplicates": 4, "rejected": {"replay": 1, "malformed": 2}},
        "store": {
            "readings": 120,
            "unchained_readings": 3,
            "blocks": {"chained": 1, "submitted": 2, "anchored": 4},
            "unanchored_blocks": 3,
            "last_anchored": {"height": 3, "log_index": 41},
            "rejects": {"malformed": 2, "replay": 1},
            "gaps": 1,
            "evidence": False,
            "duplicates": 9,
            "counter_resets": [],
            "held": 0,
            "held_oldest_age_s": None,
        },
    }


@pytest.mark.parametrize(
    ("store_full", "evidence", "problems"),
    [
        (True, False, ["disk budget reached: input refused"]),
        (False, True, ["equivocation evidence stored: sync stopped"]),
        (True, True, ["disk budget reached: input refused", "equivocation evidence stored: sync stopped"]),
    ],
)
def test_healthz_is_503_naming_each_problem(
    tmp_path: Path, store_full: bool, evidence: bool, problems: list[str]
) -> None:
    """A full disk budget or stored equivocation evidence degrades health: 503 with the reasons."""
    snapshot = replace(RUNNING, store_full=store_full, store=replace(STORED, evidence=evidence))
    api, _ = serve(tmp_path, snapshot)
    status, _, body = api.handle("/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "degraded" and json.loads(body)["problems"] == problems


def test_metrics_render_one_snapshot_per_scrape_under_the_same_names(tmp_path: Path) -> None:
    """/metrics takes exactly one snapshot per scrape and renders it under the gateway's metric names."""
    full = replace(RUNNING, store_full=True)
    api, left = serve(tmp_path, RUNNING, full)
    status, ctype, body = api.handle("/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert len(left) == 1, "a scrape took more than one snapshot"
    lines = set(body.decode().splitlines())
    assert {
        "edgeroot_gateway_readings_accepted_total 117.0",
        "edgeroot_gateway_readings_duplicate_total 4.0",
        'edgeroot_gateway_readings_rejected_total{reason="malformed"} 2.0',
        'edgeroot_gateway_readings_rejected_total{reason="replay"} 1.0',
        "edgeroot_gateway_readings_refused_total 0.0",
        'edgeroot_gateway_blocks{state="chained"} 1.0',
        'edgeroot_gateway_blocks{state="submitted"} 2.0',
        'edgeroot_gateway_blocks{state="anchored"} 4.0',
        "edgeroot_gateway_unchained_readings 3.0",
        "edgeroot_gateway_store_full 0.0",
        "edgeroot_gateway_equivocation_evidence 0.0",
    } <= lines
    assert "edgeroot_gateway_store_full 1.0" in api.handle("/metrics")[2].decode().splitlines()
    assert not left


def test_status_line_reports_counts_backlog_sync_and_refusal() -> None:
    """The STATUS= figures: this run's counts, blocks not anchored, sync state, and a full store loudly."""
    assert RUNNING.status_line() == "accepted=117 rejected=3 refused=0 unanchored_blocks=3 sync=synced"
    full = replace(RUNNING, store_full=True, refused=5)
    assert full.status_line() == (
        "accepted=117 rejected=3 refused=5 unanchored_blocks=3 sync=synced STORE FULL: refusing input"
    )


def test_gateway_status_reads_the_store_while_the_gateway_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgeroot gateway status` with no gateway running: says STOPPED and exits 1, with the stored facts
    and `running: false`; PROBLEMS once equivocation evidence is stored."""
    state = tmp_path / "gw"
    assert (
        main(
            [
                "gateway",
                "init",
                "--state",
                str(state),
                "--root",
                "http://127.0.0.1:1",
                "--id",
                "88.123.99/GW-1",
            ]
        )
        == 0
    )
    (state / "policy.txt").write_text("not read by `gateway status`\n")
    toml = state / "gateway.toml"
    port = free_port()
    toml.write_text(toml.read_text().replace('listen = "127.0.0.1:8480"', f'listen = "127.0.0.1:{port}"'))
    db = state / "gateway.db"
    store.create_schema(db)
    writer = Writer(
        db, CoseSigner("88.123.99/GW-1", generate_p256()),
        max_readings=10, max_seconds=3600, disk_budget_bytes=1 << 30, retention_days=30,
    )  # fmt: skip
    writer.open()
    writer.process([Submission(b"junk", "test", now_ms())])
    capsys.readouterr()

    assert main(["gateway", "status", "--state", str(state), "--json"]) == 1
    facts = json.loads(capsys.readouterr().out)
    assert facts["running"] is False and "connectors" not in facts
    assert {k: facts[k] for k in ("gateway", "rejects", "unanchored_blocks", "readings", "evidence")} == {
        "gateway": "88.123.99/GW-1", "rejects": {"malformed": 1}, "unanchored_blocks": 0, "readings": 0,
        "evidence": False,
    }  # fmt: skip
    assert facts["error"] == (
        f"88.123.99/GW-1 is STOPPED (nothing answers on 127.0.0.1:{port}); "
        "88.123.99/GW-1: 0 block(s) not anchored, 0 reading(s) not chained, last anchored never"
    )

    assert writer.conn is not None
    store.write_meta(writer.conn, "evidence", "{}")
    writer.close()
    assert main(["gateway", "status", "--state", str(state), "--json"]) == 1
    facts = json.loads(capsys.readouterr().out)
    assert facts["evidence"] is True and facts["error"].endswith("PROBLEMS: equivocation evidence")
