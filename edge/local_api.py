"""The gateway's local HTTP API (loopback by default): health, Prometheus metrics, latest readings.

It runs in its own thread with its own event loop (uvicorn would otherwise take over the daemon's
signal handling), and only reads: the store through its own SQLite connections, counters from the
ingest door as plain integers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chain_lite.envelope import decode_envelope, resolve
from chain_lite.errors import ChainError
from edge import store

if TYPE_CHECKING:
    from edge.daemon import Gateway


class GatewayCollector(Collector):
    """Reads the figures at scrape time, so nothing is counted twice."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        stats = self.gateway.ingest.stats
        accepted = CounterMetricFamily("edgeroot_gateway_readings_accepted", "Readings stored")
        accepted.add_metric([], stats.accepted)
        yield accepted
        rejected = CounterMetricFamily(
            "edgeroot_gateway_readings_rejected", "Inputs quarantined", labels=["reason"]
        )
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        refused = CounterMetricFamily(
            "edgeroot_gateway_readings_refused", "Inputs refused (not acknowledged)"
        )
        refused.add_metric([], stats.refused)
        yield refused
        st = store.status(self.gateway.cfg.db)
        blocks = GaugeMetricFamily("edgeroot_gateway_blocks", "Blocks by state", labels=["state"])
        for state, n in st["blocks"].items():
            blocks.add_metric([state], n)
        yield blocks
        backlog = GaugeMetricFamily("edgeroot_gateway_unchained_readings", "Readings not yet in a block")
        backlog.add_metric([], st["unchained_readings"])
        yield backlog
        full = GaugeMetricFamily("edgeroot_gateway_store_full", "1 when input is refused for the disk budget")
        full.add_metric([], 1 if self.gateway.writer.store_full else 0)
        yield full
        evidence = GaugeMetricFamily("edgeroot_gateway_equivocation_evidence", "1 when evidence is stored")
        evidence.add_metric([], 1 if st["evidence"] else 0)
        yield evidence


def health(gateway: Gateway) -> dict[str, Any]:
    st = store.status(gateway.cfg.db)
    connectors = {f"{c.__class__.__name__}[{i}]": c.state for i, c in enumerate(gateway.connectors)}
    problems = []
    if gateway.writer.store_full:
        problems.append("disk budget reached: input refused")
    if st["evidence"]:
        problems.append("equivocation evidence stored: sync stopped")
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "gateway": gateway.cfg.gateway,
        "connectors": connectors,
        "sync": gateway.syncer.state if gateway.syncer else "starting",
        "ingest": {"accepted": gateway.ingest.stats.accepted, "rejected": gateway.ingest.stats.rejected},
        "store": st,
    }


def create_local_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="edgeroot gateway (local)", version="1")
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        body = health(gateway)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/readings/latest")
    def latest() -> dict[str, Any]:
        """The newest stored reading of each device, SenML resolved."""
        conn = store.connect(gateway.cfg.db)
        try:
            rows = conn.execute(
                "SELECT r.subject, r.counter, r.received_ms, r.raw, r.block FROM readings r "
                "JOIN (SELECT subject, MAX(id) AS id FROM readings GROUP BY subject) m ON r.id = m.id"
            ).fetchall()
        finally:
            conn.close()
        out = {}
        for subject, counter, received_ms, raw, block in rows:
            try:
                records = resolve(decode_envelope(bytes(raw)).records)
            except ChainError:
                records = []
            out[subject] = {
                "counter": counter,
                "received_ms": received_ms,
                "block": block,
                "records": records,
            }
        return {"devices": out}

    @app.get("/v1/resolve/{identifier:path}")
    def cached_resolution(identifier: str) -> JSONResponse:
        """The root's last answer for a device (with its proofs), served even while the root is down."""
        conn = store.connect(gateway.cfg.db)
        try:
            row = conn.execute(
                "SELECT answer, fetched_ms FROM resolutions WHERE identifier = ?", (identifier,)
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return JSONResponse({"message": f"no cached resolution of {identifier}"}, status_code=404)
        return JSONResponse({"cached": True, "fetched_ms": row[1], **json.loads(row[0])})

    return app


class LocalHttp:
    """uvicorn in its own thread: it owns neither the daemon's loop nor its signals."""

    def __init__(self, app: FastAPI, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(
            app, host=host or "127.0.0.1", port=int(port), log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="local-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
