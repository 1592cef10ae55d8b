"""The EPCIS routes of the root node's API: capture (EPCIS 2.0 REST binding), query, completeness.

Capture follows the EPCIS 2.0 REST binding's ``POST /capture``: 202 Accepted with the capture job's
``Location`` (``GET /epcis/capture/{id}`` reports it) and ``GS1-EPCIS-Capture-Limit``. Where it differs
(docs/operations.md, "EPCIS capture"): the node checks the whole document before it answers, so an
invalid, unauthorised or tampered document is refused at once with a 4xx naming the event and the
reason, instead of a job that fails later; the job of an accepted document only waits for the
sequencer (``running`` until every event has a log index, then ``success``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from resolver import epcis_intake, epcis_query
from resolver import openapi_models as om
from resolver.errors import NotFound
from resolver.log_store import receipt_for
from resolver.metrics import RootMetrics
from resolver.reads import RootNode
from rootclient import routes
from runtime.clock import now_ms


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def capture_job(node: RootNode, capture_id: str) -> dict[str, Any]:
    """The capture job's state (EPCIS 2.0 ``CaptureJob`` fields, plus each event's hash ID, log index and
    receipt: a C2SP tlog-proof of its leaf in the published checkpoint)."""
    view = node.view()
    with node.db.transaction(write=False) as tx:
        row = tx.one("SELECT hash_ids, created_ms FROM epcis_captures WHERE capture_id = ?", (capture_id,))
        if row is None:
            raise NotFound(f"no capture job {capture_id}")
        hash_ids: list[str] = json.loads(row[0])
        found = {
            str(h): None if i is None else int(i)
            for h, i in tx.all(
                f"SELECT hash_id, idx FROM epcis_events WHERE hash_id IN ({','.join('?' * len(hash_ids))})",  # noqa: S608
                hash_ids,
            )
        }
        events: list[dict[str, Any]] = []
        for hash_id in hash_ids:
            index = found.get(hash_id)
            if index is None or index >= view.size:
                events.append({"hashID": hash_id, "logIndex": None, "receipt": None})
                continue
            receipt = receipt_for(tx, index, view.checkpoint).to_bytes().decode()
            events.append({"hashID": hash_id, "logIndex": index, "receipt": receipt})
    running = any(e["logIndex"] is None for e in events)
    created = dt.datetime.fromtimestamp(int(row[1]) / 1000, dt.UTC).isoformat(timespec="milliseconds")
    return {
        "captureID": capture_id,
        "createdAt": created.replace("+00:00", "Z"),
        "running": running,
        "success": not running,
        "captureErrorBehaviour": "rollback",
        "errors": [],
        "edgeroot:events": events,
        "edgeroot:checkpointSize": view.size,
    }


def add_routes(app: FastAPI, node: RootNode, *, max_body: int, metrics: RootMetrics, read_body: Any) -> None:
    """Add the EPCIS routes to the node's app (``read_body`` is the API's size-capped body reader)."""
    caches = epcis_query.QueryCaches()  # this node's database only
    checking = asyncio.Lock()
    """One capture document checked at a time (D-095: the checks are CPU work under one GIL; two at once
    only slow each other and the event loop). Waited for here, on the event loop: a burst of captures
    queued in the thread pool would hold the threads every blocking endpoint shares (D-122)."""

    @app.post(
        routes.EPCIS_CAPTURE,
        status_code=202,
        tags=["epcis"],
        responses={202: {"model": om.EpcisCaptured}, **om.errors(413, 503), **om.EPCIS_REFUSALS},
        openapi_extra=om.request_body("application/json", "An EPCIS 2.0 EPCISDocument, every event signed"),
    )
    async def capture(request: Request) -> JSONResponse:
        """Capture an EPCISDocument whose events are each signed (``edgeroot:signedCapture``)."""
        body = await read_body(request, max_body)
        async with checking:
            # The checks, then the write: blocking, so each in a worker thread (the pool's).
            checked = await run_in_threadpool(
                epcis_intake.check_capture, node.db, body, origin=node.origin, bases=node.identifier_bases
            )
        job, results = await run_in_threadpool(epcis_intake.store_capture, node.db, checked, now_ms=now_ms())
        fresh = sum(1 for r in results if not r.duplicate)
        metrics.epcis_events.inc(fresh)
        answer = {
            "captureID": job,
            "events": [{"hashID": r.hash_id, "signer": r.signer, "duplicate": r.duplicate} for r in results],
        }
        headers = {
            "Location": routes.epcis_capture_job(job),
            "GS1-EPCIS-Capture-Limit": str(epcis_intake.MAX_EVENTS_PER_CAPTURE),
        }
        return JSONResponse(answer, status_code=202, headers=headers)

    @app.get(
        routes.EPCIS_CAPTURE_JOB,
        tags=["epcis"],
        responses={200: {"model": om.EpcisCaptureJob}, **om.errors(404, 503)},
    )
    def capture_status(capture_id: str) -> dict[str, Any]:
        """A capture job: each event's hash ID and, once sequenced and published, its log index."""
        return capture_job(node, capture_id)

    @app.get(
        routes.EPCIS_EVENTS,
        tags=["epcis"],
        responses={200: {"model": om.EpcisQueryDocument}, **om.errors(400, 503)},
    )
    def events(request: Request) -> JSONResponse:
        """EPCIS 2.0 event query; every event with its signed capture and inclusion proof."""
        params = dict(request.query_params)
        page = epcis_query.query_events(node.db, node.view(), params, node.identifier_bases, caches)
        headers = {}
        if page.next_token is not None:
            query = {k: v for k, v in params.items() if k != "nextPageToken"}
            query["nextPageToken"] = page.next_token
            url = request.url.replace_query_params(**query)
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse(epcis_query.query_document(page, _now_text()), headers=headers)

    @app.get(
        routes.EPCIS_INDEX,
        tags=["epcis"],
        responses={200: {"model": om.EpcisIndexAnswer}, **om.errors(400, 503)},
    )
    def index(id: Annotated[list[str], Query()]) -> dict[str, Any]:
        """Completeness proofs of identifiers' events (``id`` repeated, at most 100) as of the published
        checkpoint."""
        return epcis_query.index_answer(node.db, node.view(), id, node.identifier_bases)
