"""The gateway's local HTTP API (loopback by default): health, Prometheus metrics, latest readings and
cached resolution with proofs.

``GET /healthz`` (200 ok / 503 degraded, with the reasons), ``GET /metrics`` (Prometheus text),
``GET /v1/readings/latest``, ``GET /v1/resolve/{identifier}``. It runs in its own threads and only
reads: the store through its own SQLite connections, counters from the ingest door as plain integers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chain_lite.envelope import decode_envelope, resolve
from chain_lite.errors import ChainError
from edge import store

if TYPE_CHECKING:
    from edge.gateway_service import Gateway

log = logging.getLogger(__name__)


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


class LocalApi:
    """The routes, as plain functions of the gateway: ``(status, content type, body)``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        self.registry.register(GatewayCollector(gateway))

    def handle(self, path: str) -> tuple[int, str, bytes]:
        path = unquote(path.split("?", 1)[0])
        if path == "/healthz":
            body = health(self.gateway)
            return _json(200 if body["status"] == "ok" else 503, body)
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/v1/readings/latest":
            return _json(200, self.latest())
        if path.startswith("/v1/resolve/"):
            return self.cached_resolution(path[len("/v1/resolve/") :])
        return _json(
            404, {"message": f"no such resource {path}; try /healthz, /metrics, /v1/readings/latest"}
        )

    def latest(self) -> dict[str, Any]:
        """The newest stored reading of each device, SenML resolved."""
        conn = store.connect(self.gateway.cfg.db)
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

    def cached_resolution(self, identifier: str) -> tuple[int, str, bytes]:
        """The root's last answer for a device (with its proofs), served even while the root is down."""
        conn = store.connect(self.gateway.cfg.db)
        try:
            row = conn.execute(
                "SELECT answer, fetched_ms FROM resolutions WHERE identifier = ?", (identifier,)
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return _json(404, {"message": f"no cached resolution of {identifier}"})
        return _json(200, {"cached": True, "fetched_ms": row[1], **json.loads(row[0])})


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


class LocalHttp:
    """A small threaded HTTP server for loopback use. The standard library's, not FastAPI/uvicorn:
    four read-only GET routes do not need them, and leaving them out keeps the gateway's resident
    memory about 17 MB lower (the issue's budget is 80 MB on a Raspberry Pi-class box)."""

    def __init__(self, api: LocalApi, listen: str) -> None:
        host, _, port = listen.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    status, ctype, body = api.handle(self.path)
                except Exception as exc:  # a read failed: answer, do not crash the server thread
                    log.exception("local API %s failed", self.path)
                    status, ctype, body = _json(500, {"message": f"internal error: {exc}"})
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
