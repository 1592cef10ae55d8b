"""The gateway's local HTTP API (loopback by default): the operator's page, health, Prometheus metrics,
latest readings and cached resolution with proofs.

``GET /`` (the gateway page: plain ES modules under ``/console/``, package data of ``edge/console/``),
``GET /v1/status`` and ``GET /v1/devices`` (the page's data), ``GET /healthz`` (200 ok / 503 degraded,
with the reasons), ``GET /metrics`` (Prometheus text), ``GET /v1/readings/latest``,
``GET /v1/resolve/{identifier}``, and behind a bearer token (``http.token``, D-072) ``GET /v1/readings``:
one device's readings in a time range with their blocks, inclusion proofs and receipts. It runs in its
own threads and only reads: the store through its own SQLite connections and read functions, and the
gateway's status as a frozen snapshot (:mod:`edge.status`) from a producer the gateway hands it.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chain_lite.envelope import decode_envelope, resolve
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from edge import store
from edge.status import GatewayStatus, StoreFacts
from runtime.clock import parse_instant_ms
from runtime.ratelimit import RateLimitedLog
from runtime.tomlconfig import Secret
from runtime.webassets import Asset, page_assets

log = logging.getLogger(__name__)

Snapshot = Callable[[], GatewayStatus]
"""The gateway's status producer; blocking (it reads the store), called on the API's request threads."""
PAGE_FILE = "index.html"
ASSETS_PREFIX = "/console/"
ROUTES = (
    "/", "/v1/status", "/v1/devices", "/healthz", "/metrics", "/v1/readings/latest", "/v1/resolve/{id}",
    "/v1/readings (bearer token)",
)  # fmt: skip
READINGS = "/v1/readings"
READINGS_PAGE = 500
"""Readings per page of ``GET /v1/readings`` unless ``limit`` asks for fewer or more (up to the max)."""
READINGS_PAGE_MAX = 2000
BEARER_REALM = 'Bearer realm="edgeroot-gateway"'
TokenSource = Callable[[], Secret | None]
"""The configured ``http.token`` now (a reload may change it); None: none configured."""


def held_gauges(facts: StoreFacts) -> Iterator[Metric]:
    """The held table now (D-059): how many readings wait for their signers' keys, and for how long."""
    waiting = GaugeMetricFamily(
        "edgeroot_gateway_held_waiting", "Readings in the held table now, waiting for their signers' keys"
    )
    waiting.add_metric([], facts.held)
    yield waiting
    oldest = GaugeMetricFamily(
        "edgeroot_gateway_held_oldest_seconds",
        "How long the oldest held reading has waited for its signer's key (0: none held)",
    )
    oldest.add_metric([], facts.held_oldest_age_s or 0.0)
    yield oldest


class GatewayCollector(Collector):
    """Takes one snapshot at scrape time, so nothing is counted twice and every figure is of one instant."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        st = self.snapshot()
        accepted = CounterMetricFamily("edgeroot_gateway_readings_accepted", "Readings stored")
        accepted.add_metric([], st.accepted)
        yield accepted
        duplicate = CounterMetricFamily(
            "edgeroot_gateway_readings_duplicate", "Resends of stored readings (acknowledged, stored once)"
        )
        duplicate.add_metric([], st.duplicates)
        yield duplicate
        protocol = CounterMetricFamily(
            "edgeroot_gateway_root_protocol_errors",
            "Root answers of the wrong shape (malformed proofs, hostile JSON): retried, never evidence",
        )
        protocol.add_metric([], st.root_protocol_errors)
        yield protocol
        rejected = CounterMetricFamily(
            "edgeroot_gateway_readings_rejected", "Inputs quarantined", labels=["reason"]
        )
        for reason, n in sorted(st.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        refused = CounterMetricFamily(
            "edgeroot_gateway_readings_refused", "Inputs refused (not acknowledged)"
        )
        refused.add_metric([], st.refused)
        yield refused
        blocks = GaugeMetricFamily("edgeroot_gateway_blocks", "Blocks by state", labels=["state"])
        for state, n in st.store.blocks.items():
            blocks.add_metric([state], n)
        yield blocks
        backlog = GaugeMetricFamily("edgeroot_gateway_unchained_readings", "Readings not yet in a block")
        backlog.add_metric([], st.store.unchained_readings)
        yield backlog
        full = GaugeMetricFamily("edgeroot_gateway_store_full", "1 when input is refused for the disk budget")
        full.add_metric([], 1 if st.store_full else 0)
        yield full
        evidence = GaugeMetricFamily("edgeroot_gateway_equivocation_evidence", "1 when evidence is stored")
        evidence.add_metric([], 1 if st.store.evidence else 0)
        yield evidence
        failing = GaugeMetricFamily(
            "edgeroot_gateway_registry_lookups_failing",
            "1 while registry lookups fail (root away, answers that do not verify): new devices are held",
        )
        failing.add_metric([], 1 if st.lookup_problem is not None else 0)
        yield failing
        refused_blocks = GaugeMetricFamily(
            "edgeroot_gateway_blocks_refused", "1 while blocks cannot be anchored (the root refuses them)"
        )
        refused_blocks.add_metric([], 1 if st.sync_problem is not None else 0)
        yield refused_blocks
        held = CounterMetricFamily(
            "edgeroot_gateway_readings_held", "Readings answered as held while their key was looked up"
        )
        held.add_metric([], st.held)
        yield held
        yield from held_gauges(st.store)
        lookups = CounterMetricFamily(
            "edgeroot_gateway_registry_lookups", "Registry lookups sent to the root"
        )
        lookups.add_metric([], st.lookups)
        yield lookups
        deferred = CounterMetricFamily(
            "edgeroot_gateway_registry_lookups_deferred", "Registry lookups not made: the bound was reached"
        )
        deferred.add_metric([], st.lookups_deferred)
        yield deferred
        sync_failures = CounterMetricFamily(
            "edgeroot_gateway_sync_failures", "Sync attempts that failed (retried with backoff)"
        )
        sync_failures.add_metric([], st.sync_failures)
        yield sync_failures


class ApiCollector(Collector):
    """The local API's own counter: requests refused for want of the right bearer token."""

    def __init__(self, api: LocalApi) -> None:
        self.api = api

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "edgeroot_gateway_api_unauthorized",
            "Requests to token-protected routes (GET /v1/readings) refused: no token, or a wrong one",
        )
        refused.add_metric([], self.api.unauthorized)
        yield refused


class BadQuery(ValueError):
    """A query parameter of ``GET /v1/readings`` is missing or malformed; the message names it."""


class LocalApi:
    """The routes, as plain functions: ``(status, content type, body)``.

    ``db`` is the gateway's store (read through connections of the API's own); ``snapshot`` produces the
    gateway's status, the only thing the API knows of the running daemon; ``token`` the configured bearer
    token of the protected routes (none: they refuse everyone).
    """

    def __init__(self, db: Path, snapshot: Snapshot, token: TokenSource = lambda: None) -> None:
        self.db = db
        self.snapshot = snapshot
        self.token = token
        self.unauthorized = 0  # under _lock: the server answers on several threads
        self._lock = threading.Lock()
        self.refusals = RateLimitedLog(log)  # a prober must not flood the journal; the counter counts all
        self.registry = CollectorRegistry()
        self.registry.register(GatewayCollector(snapshot))
        self.registry.register(ApiCollector(self))
        self.assets: dict[str, Asset] = page_assets("edge", "console")  # read once, served from memory
        self.routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/": lambda: self.asset(PAGE_FILE),
            "/v1/status": lambda: _json(200, self.status()),
            "/v1/devices": lambda: _json(200, self.devices()),
            "/healthz": self.healthz,
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(self.registry)),
            "/v1/readings/latest": lambda: _json(200, self.latest()),
        }

    def handle(self, path: str, authorization: str | None = None) -> tuple[int, str, bytes]:
        """Answer ``GET path``; ``authorization`` is the request's ``Authorization`` header, if any."""
        path, _, query = path.partition("?")
        path = unquote(path)
        if path == READINGS:
            return self.readings(query, authorization)
        route = self.routes.get(path)
        if route is not None:
            return route()
        if path.startswith("/v1/resolve/"):
            return self.cached_resolution(path[len("/v1/resolve/") :])
        name = path.removeprefix(ASSETS_PREFIX)
        if name != path and name in self.assets:  # only the packaged files: no client path reaches the disk
            return self.asset(name)
        return _json(404, {"message": f"no such resource {path}; try {', '.join(ROUTES)}"})

    def asset(self, name: str) -> tuple[int, str, bytes]:
        found = self.assets[name]
        return 200, found.content_type, found.body

    def healthz(self) -> tuple[int, str, bytes]:
        st = self.snapshot()
        return _json(503 if st.problems else 200, st.health())

    def status(self) -> dict[str, Any]:
        """The page's status: ``/healthz``'s body (problems, connectors, sync, the stored facts with the
        backlog and the last anchored block) plus the run's reject counters sampled over time."""
        st = self.snapshot()
        return {
            **st.health(),
            "problem_kinds": [{"kind": kind, "detail": detail} for kind, detail in st.problem_kinds],
            "refused": st.refused,
            "held": st.held,
            "reject_history": [sample.as_json() for sample in st.reject_history],
        }

    def devices(self) -> dict[str, Any]:
        """The device table: key source, last counter and newest stored reading of each known device."""
        conn = store.connect(self.db)
        try:
            rows = store.devices_overview(conn)
            total = store.count_devices(conn)
        finally:
            conn.close()
        return {
            "devices": [
                row.as_json(None if row.last_reading_raw is None else _records(row.last_reading_raw))
                for row in rows
            ],
            "total": total,
        }

    def latest(self) -> dict[str, Any]:
        """The newest stored reading of each device, SenML resolved."""
        conn = store.connect(self.db)
        try:
            newest = store.latest(conn)
        finally:
            conn.close()
        out = {
            subject: {
                "counter": r.counter,
                "received_ms": r.received_ms,
                "block": r.block,
                "records": _records(r.raw),
            }
            for subject, r in newest.items()
        }
        return {"devices": out}

    def authorized(self, authorization: str | None) -> bool:
        """Whether the header carries the configured bearer token (RFC 6750 §2.1), compared in constant
        time; never when no token is configured. The token is never logged, right or wrong."""
        token = self.token()
        scheme, _, given = (authorization or "").strip().partition(" ")
        if token is None or scheme.lower() != "bearer" or not given.strip():
            return False
        return hmac.compare_digest(given.strip().encode(), str(token).encode())

    def readings(self, query: str, authorization: str | None) -> tuple[int, str, bytes]:
        """``GET /v1/readings?device=ID&from=T1&to=T2[&after=N][&limit=N]``: the device's readings received
        in ``[from, to)`` (gateway arrival time; from inclusive, to exclusive; milliseconds since the epoch
        or RFC 3339), each with its exact envelope, its block and inclusion proof, and the blocks' signed
        headers and receipts; paged by reading id (``next`` → ``after``). 401 without the bearer token."""
        if not self.authorized(authorization):
            with self._lock:
                self.unauthorized += 1
            why = "no token configured (http.token)" if self.token() is None else "no or wrong bearer token"
            self.refusals.warning(why, "local API: GET %s refused: %s", READINGS, why)
            return _json(401, {"message": f"GET {READINGS} needs a bearer token: {why}"})
        try:
            device, from_ms, to_ms, after, limit = _readings_query(query)
        except BadQuery as exc:
            return _json(400, {"message": str(exc)})
        conn = store.connect(self.db)
        try:
            page = store.evidence(conn, device, from_ms=from_ms, to_ms=to_ms, after=after, limit=limit)
        finally:
            conn.close()
        body = {
            "device": device,
            "from_ms": from_ms,
            "to_ms": to_ms,
            "readings": [_proven_json(p) for p in page.readings],
            "blocks": [_block_json(b) for b in page.blocks.values()],
            "next": None if page.next_after is None else str(page.next_after),
        }
        return _json(200, body)

    def cached_resolution(self, identifier: str) -> tuple[int, str, bytes]:
        """The root's last answer for a device (with its proofs), served even while the root is down."""
        conn = store.connect(self.db)
        try:
            row = store.cached_resolution(conn, identifier)
        finally:
            conn.close()
        if row is None:
            return _json(404, {"message": f"no cached resolution of {identifier}"})
        return _json(200, {"cached": True, "fetched_ms": row[1], **json.loads(row[0])})


def _records(raw: bytes) -> list[dict[str, Any]]:
    """A stored envelope's SenML records, resolved; none if it cannot be decoded (stored before a codec
    change, say: the page still lists the device)."""
    try:
        return resolve(decode_envelope(raw).records)
    except ChainError:
        return []


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _proven_json(p: store.ProvenReading) -> dict[str, Any]:
    r = p.reading
    return {
        "id": r.id,
        "signer": r.signer,
        "counter": r.counter,
        "received_ms": r.received_ms,
        "envelope": _b64(r.raw),
        "block": r.block,
        "index": p.index,
        "proof": None if p.proof is None else [_b64(h) for h in p.proof],
    }


def _block_json(b: store.StoredBlock) -> dict[str, Any]:
    return {
        "height": b.height,
        "block_id": b.block_id.hex(),
        "header": _b64(b.raw),
        "state": b.state,
        "log_index": b.log_index,
        "receipt": b.receipt,
    }


def _readings_query(query: str) -> tuple[str, int, int, int, int]:
    """(device, from_ms, to_ms, after, limit) of ``GET /v1/readings``; :class:`BadQuery` names the
    parameter that is missing, repeated or malformed."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=16)
    except ValueError as exc:
        raise BadQuery(f"malformed query string: {exc}") from exc
    unknown = set(params) - {"device", "from", "to", "after", "limit"}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise BadQuery(f"unknown parameter(s) {names}; use device, from, to, after, limit")

    def one(name: str, default: str | None = None) -> str:
        values = params.get(name)
        if values is None:
            if default is None:
                raise BadQuery(f"{name} is required")
            return default
        if len(values) != 1:
            raise BadQuery(f"{name} is given {len(values)} times")
        return values[0]

    try:
        device = normalize(one("device"))
    except ChainError as exc:
        raise BadQuery(f"device: {exc}") from exc
    try:
        from_ms, to_ms = parse_instant_ms(one("from")), parse_instant_ms(one("to"))
    except ValueError as exc:
        raise BadQuery(f"from/to: {exc}") from exc
    if to_ms < from_ms:
        raise BadQuery(f"to ({to_ms}) is before from ({from_ms})")
    after, limit = one("after", "0"), one("limit", str(READINGS_PAGE))
    if not after.isdigit() or not limit.isdigit() or not 1 <= int(limit) <= READINGS_PAGE_MAX:
        raise BadQuery(f"after is a reading id (0 or more), limit 1 to {READINGS_PAGE_MAX}")
    return device, from_ms, to_ms, int(after), int(limit)


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
                    status, ctype, body = api.handle(self.path, self.headers.get("Authorization"))
                except Exception as exc:  # a read failed: answer, do not crash the server thread
                    log.exception("local API %s failed", self.path)
                    status, ctype, body = _json(500, {"message": f"internal error: {exc}"})
                self.send_response(status)
                if status == 401:  # RFC 6750 §3: say which scheme would do
                    self.send_header("WWW-Authenticate", BEARER_REALM)
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
