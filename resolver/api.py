"""The root node's HTTP API (FastAPI): Handle-compatible reads, native ``/v1`` and C2SP tlog-tiles.

Every error is JSON ``{"responseCode": <Handle code>, "message": <reason>}`` with the matching HTTP
status (see :mod:`resolver.errors`); request bodies above the configured cap get 413 before they are
read in full. Database work runs in the thread pool (sync endpoints, or ``run_in_threadpool``); what
only reads the published view (current resolutions, the checkpoint, health) runs on the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from chain_lite.registry import Delegation, Record, governed_prefix, parent_prefix, prefix_handle
from resolver import epcis_api
from resolver import openapi_models as om
from resolver.delegation_check import DelegationCheck
from resolver.errors import BadRequest, Delegated, InvalidHandle, NotFound, ResolverError, TooLarge
from resolver.handle_proxy import ReferralFollower
from resolver.metrics import RootMetrics
from resolver.reads import PublishedView, Resolution, RootNode
from resolver.tiles import parse_tile_path
from resolver.web import console_assets, render_page
from rootclient import codecs, routes
from rootclient.client import Hop
from rootclient.codecs import handle_record_values, handle_value
from rootclient.errors import ProtocolError

log = logging.getLogger(__name__)
HANDLE_OK = 1
HANDLE_NOT_FOUND = 100
HANDLE_VALUES_NOT_FOUND = 200
HANDLE_NOT_RESPONSIBLE = 301


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(codecs.error_json(code, message), status_code=status)


def error_response(exc: ResolverError) -> JSONResponse:
    """How any :class:`ResolverError` is answered (the app's generic handler, and :mod:`resolver.fast_reads`
    for an error raised before a request reaches the app)."""
    if isinstance(exc, Delegated):
        body = {**codecs.error_json(exc.handle_code, exc.message), "referral": exc.referral}
        return JSONResponse(body, status_code=exc.status)
    return _error(exc.status, exc.handle_code, exc.message)


def _proof_members(res: Resolution) -> dict[str, Any]:
    """A resolution's proof as both encoders take it (:func:`rootclient.codecs.proof_json` and its
    pre-encoded twin ``proof_json_bytes``)."""
    p = res.proof
    return {
        "epoch": res.epoch,
        "record": p.record,
        "map_proof": p.map_proof,
        "map_head_b64": res.map_head_b64,
        "receipt_text": res.receipt_text,
        "prefixes": res.prefixes,
    }


def proof_json(res: Resolution) -> dict[str, Any]:
    return codecs.proof_json(**_proof_members(res))


def resolve_answer(text: str, res: Resolution) -> Response:
    """``/v1/resolve``'s answer; ``text`` is the identifier as asked (echoed, like the Handle API; the
    proof is for its canonical form)."""
    return Response(resolve_body(text, res), media_type="application/json")


def resolve_body(text: str, res: Resolution) -> bytes:
    """The body of :func:`resolve_answer`: ``json.dumps(body, ensure_ascii=False)`` of ``{"identifier",
    "found", "values", "proof"[, "referral"]}`` in UTF-8, with the proof's shared members encoded once
    per checkpoint (:func:`rootclient.codecs.proof_json_bytes`, decisions D-141)."""
    values = [] if res.record is None else [handle_value(v) for v in res.record.values]
    head = codecs.to_json_text({"identifier": text, "found": res.record is not None, "values": values})
    proof = codecs.proof_json_bytes(**_proof_members(res))
    referral = res.referral()
    # A hint for clients that do not verify; verifiers read the proven chain.
    hint = b"" if referral is None else b', "referral": ' + codecs.to_json_text(referral.as_json()).encode()
    return b"".join((head[:-1].encode(), b', "proof": ', proof, hint, b"}"))


def handle_read(
    node: RootNode,
    view: PublishedView,
    text: str,
    types: list[str] | None,
    indexes: list[int] | None,
    *,
    proof: bool,
) -> JSONResponse:
    """The Handle REST API's answer for ``text`` as of ``view``: what the route and the fast path
    (:mod:`resolver.fast_reads`) both send. Raises :class:`InvalidHandle` for an invalid identifier."""
    res = node.resolve_in(view, text)
    return handle_answer(text, res, _responsible(node, view, res), types, indexes, proof=proof)


def _responsible(node: RootNode, view: PublishedView, res: Resolution) -> bool:
    """Whether this node answers for the identifier: it holds its record, or it holds the prefix it is
    under (writes need it registered, D-012), or, for a prefix record ``0.na/P``, the parent of ``P``
    (whose admin creates it). Everything else is another node's (Handle's "server not responsible")."""
    if res.record is not None:
        return True
    governed = governed_prefix(res.identifier)
    if governed is None:
        home: str | None = res.identifier.partition("/")[0]
    else:
        home = parent_prefix(governed)
    return home is not None and view.map.record_and_proof(prefix_handle(home))[0] is not None


def handle_answer(
    text: str,
    res: Resolution,
    responsible: bool,
    types: list[str] | None,
    indexes: list[int] | None,
    *,
    proof: bool,
) -> JSONResponse:
    """The Handle REST API's answer for ``text`` (echoed as asked; the record is the one under its
    canonical form), filtered by ``type``/``index``; ``proof`` adds a ``proof`` key.

    Codes and statuses as the Handle.Net REST API documents them ("Handle.Net Technical Manual",
    chapter "REST API", section "Responses", mirrored at https://doc.pidconsortium.net/docs/responses):
    1 success (200), 100 handle not found (404), 200 values not found (200 in resolution), 301 server
    not responsible for handle (400).
    """
    if not responsible:
        body: dict[str, Any] = {
            "responseCode": HANDLE_NOT_RESPONSIBLE,
            "handle": text,
            "message": "Server not responsible for handle",
        }
        status = 400
    elif res.record is None:
        body = {"responseCode": HANDLE_NOT_FOUND, "handle": text, "message": "Handle Not Found"}
        status = 404
    else:
        values = handle_record_values(res.record)
        if types or indexes:
            values = [
                v for v in values if v["index"] in (indexes or []) or _type_matches(v["type"], types or [])
            ]
        body = {"responseCode": HANDLE_OK, "handle": text, "values": values}
        if not values:
            body = {"responseCode": HANDLE_VALUES_NOT_FOUND, "handle": text, "message": "Values Not Found"}
        status = 200
    if proof:
        body["proof"] = proof_json(res)
    return JSONResponse(body, status_code=status)


def referral_answer(
    text: str, res: Resolution, delegation: Delegation, view: PublishedView, *, proof: bool
) -> JSONResponse:
    """``?referral=true`` under a delegated prefix: the delegation record ``0.na/<prefix>`` (its values,
    Handle-shaped) and the delegation under ``referral``; ``proof`` proves it (the prefix chain)."""
    record = next(
        (Record.decode(p.record) for p in res.prefixes if p.prefix == delegation.prefix and p.record), None
    )
    assert record is not None, "a referral is read from a proven prefix record"
    body: dict[str, Any] = {
        "responseCode": HANDLE_OK,
        "handle": text,
        "values": handle_record_values(record),
        "referral": delegation.as_json(),
    }
    if proof:
        body["proof"] = proof_json(res)
    return JSONResponse(body)


def followed_answer(
    text: str,
    res: Resolution,
    hops: tuple[Hop, ...],
    types: list[str] | None,
    indexes: list[int] | None,
    *,
    proof: bool,
) -> JSONResponse:
    """The Handle answer of the node responsible, reached through this node's delegation: its proven
    record (or proven absence: Handle 100), filtered; ``proof`` adds this node's proof (which proves the
    delegation) and the hop chain from there (``hops``, docs/formats.md §21)."""
    final = hops[-1].verified.proven
    final_res = Resolution(
        res.identifier, final.record, res.proof, res.epoch, res.map_head_b64, res.receipt_text
    )
    response = handle_answer(text, final_res, True, types, indexes, proof=False)
    if not proof:
        return response
    body = json.loads(bytes(response.body))
    body["proof"] = proof_json(res)
    body["hops"] = [hop.as_json() for hop in hops]
    return JSONResponse(body, status_code=response.status_code)


def checkpoint_answer(view: PublishedView) -> PlainTextResponse:
    return PlainTextResponse(view.checkpoint_bytes)


def tile_answer(data: bytes) -> Response:
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "max-age=31536000, immutable"},
    )


def _raw_path_part(request: Request, prefix: str) -> str:
    """The path after ``prefix``, percent-decoded strictly (bad escapes or bad UTF-8 are errors)."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    tail = raw.split(b"?", 1)[0][len(prefix) :]
    for i in range(len(tail)):
        if tail[i : i + 1] == b"%":
            esc = tail[i + 1 : i + 3]
            if len(esc) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in esc):
                raise InvalidHandle(f"bad percent-encoding near {tail[i : i + 3].decode('latin-1')!r}")
    try:
        return unquote_to_bytes(tail).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHandle("percent-encoded identifier is not UTF-8") from exc


async def _body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"request body of {declared} bytes exceeds the {cap}-byte limit")
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise TooLarge(f"request body exceeds the {cap}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyCap:
    """Refuse a declared body above the cap with 413 before anything reads it (streamed bodies are
    capped by :func:`_body`). A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs about
    as much per request as the whole resolution."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                    message = f"request body of {value.decode()} bytes exceeds the {self.max_body}-byte limit"
                    await _error(413, 2, message)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


CHECKPOINT_DOCS: om.Responses = {
    200: om.content("text/plain", "C2SP tlog-checkpoint signed note with its cosignatures"),
    **om.errors(503),
}


DOCS = "/docs"
REDOC = "/redoc"
DOCS_ASSETS = "/static-offline-docs"
"""Swagger UI's and ReDoc's scripts and styles, as packaged by fastapi-offline (D-058)."""


def offline_docs_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose ``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from the
    node itself (fastapi-offline's packaged copies, D-058), never from a CDN an offline plant cannot reach,
    and whose OpenAPI document says what the app really answers (:func:`om.publish_as_served`).

    The pages are FastAPI's own, wired as FastAPI wires its default ones (plain routes, outside the API);
    fastapi-offline's factory would add them as API routes, with an OAuth2 redirect no route here needs.
    """
    app = FastAPI(docs_url=None, redoc_url=None, **kwargs)
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{DOCS_ASSETS}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )

    app.add_route(DOCS, swagger_ui, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = om.publish_as_served(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to adjust the schema
    return app


def create_app(  # noqa: PLR0915 (one closure per route)
    node: RootNode,
    *,
    max_body: int = 1024 * 1024,
    lifespan: Any = None,
    metrics: RootMetrics | None = None,
    role: Any = None,
    policy_text: bytes | None = None,
    follower: ReferralFollower | None = None,
    delegations: DelegationCheck | None = None,
) -> FastAPI:
    """The node's app. ``lifespan`` is the owner's (the sequencer, the database); the app's own
    follower of its delegations (``follower``, or one made at the first read that needs it) is a warm
    client kept for the app's life and closed when its lifespan ends, after the owner's (D-130)."""
    followers = [] if follower is None else [follower]

    @contextlib.asynccontextmanager
    async def lifespan_closing_follower(served: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Last out: uvicorn ends the lifespan once the requests under way are answered.
            stack.push_async_callback(close_followers)
            if lifespan is not None:
                await stack.enter_async_context(lifespan(served))
            yield

    async def close_followers() -> None:
        for each in followers:
            await each.aclose()

    app = offline_docs_app(
        title="edgeroot resolution-root node",
        summary="Identifier registry, Merkle log and verifiable map with offline-checkable proofs.",
        version="1",
        lifespan=lifespan_closing_follower,
    )

    metrics = metrics or RootMetrics()

    def referrals() -> ReferralFollower:
        """The node's follower of its own delegations, made at the first read that needs it."""
        if not followers:
            followers.append(ReferralFollower(node.origin))
        return followers[0]

    def refused(exc: ResolverError) -> None:
        if exc.status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        elif exc.status == 404:
            metrics.refused.labels(reason=type(exc).__name__).inc()  # a lookup miss, not misbehaviour
        else:
            metrics.refuse(type(exc).__name__, exc.message)

    @app.exception_handler(ResolverError)
    async def resolver_error(_request: Request, exc: ResolverError) -> JSONResponse:
        refused(exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        metrics.refuse("RequestValidationError", reasons)
        return _error(400, 2, reasons or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        # Our own failure: the caller gets JSON with no internals; the traceback goes to the log.
        log.error("internal error: %r", exc)
        return _error(500, 2, "internal error; the node's log has the details")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, 2, str(exc.detail))

    app.add_middleware(BodyCap, max_body=max_body)

    # --- Handle-compatible -------------------------------------------------------------------------------

    @app.get(
        routes.HANDLE,
        tags=["handle"],
        responses={
            200: {
                "model": om.HandleFound | om.HandleMissing,
                "description": "The values, or none passes the filters (responseCode 200)",
            },
            404: {"model": om.HandleMissing, "description": "No such handle (responseCode 100)"},
            **om.errors(502, 503),
            400: {
                "model": om.HandleNotResponsible | om.ErrorBody,
                "description": "Not served here (responseCode 301), or a malformed handle or filter",
            },
        },
    )
    async def get_handle(  # noqa: PLR0917 (FastAPI passes the query parameters by name)
        request: Request,
        handle: str,
        type: Annotated[list[str] | None, Query()] = None,
        index: Annotated[list[int] | None, Query()] = None,
        proof: bool = False,
        referral: bool = False,
    ) -> JSONResponse:
        """Resolve a handle exactly as the Handle REST API does; ``proof=true`` adds a ``proof`` key.

        Under a prefix this node delegated, the node follows the delegation (verifying every hop) and
        answers with the record of the node responsible, ``proof=true`` adding the hop chain under
        ``hops``; ``referral=true`` answers with the delegation record instead (D-076)."""
        del handle  # re-read from the raw path: percent-decoding must be strict
        text = _raw_path_part(request, routes.HANDLE_PREFIX)
        view = node.view()
        res = node.resolve_in(view, text)
        delegation = res.referral()
        if delegation is None:
            return handle_read(node, view, text, type, index, proof=proof)
        if referral:
            return referral_answer(text, res, delegation, view, proof=proof)
        hops = await referrals().follow(delegation, res.identifier)
        return followed_answer(text, res, hops, type, index, proof=proof)

    # --- native /v1 --------------------------------------------------------------------------------------

    @app.get(
        routes.RESOLVE,
        tags=["resolve"],
        responses={200: {"model": om.ResolveAnswer}, **om.errors(400, 404, 503)},
    )
    async def resolve(request: Request, identifier: str, at: int | None = None) -> Response:
        """The current record (or its absence) with a map proof and a receipt; ``at=N``: as of log size N."""
        del identifier
        text = _raw_path_part(request, routes.RESOLVE_PREFIX)
        if at is not None and at < 1:
            raise BadRequest("at must be a log size of at least 1")
        return resolve_answer(text, await _resolve(text, at))

    async def _resolve(text: str, at: int | None) -> Resolution:
        # Current answers read only the published view (memory, no lock): on the loop. As-of answers
        # read the database and may rebuild an older map, so they run in the thread pool.
        if at is None:
            return node.resolve(text)
        return await run_in_threadpool(node.resolve, text, at)

    @app.get(routes.HISTORY, tags=["resolve"], responses={200: {"model": om.History}, **om.errors(400, 503)})
    def history(request: Request, identifier: str) -> dict[str, Any]:
        """Every logged change of an identifier, with its log index."""
        del identifier
        text = _raw_path_part(request, routes.HISTORY_PREFIX)
        changes = node.history(text)
        return {
            "identifier": node.canonical(text),
            "changes": [
                {
                    "log_index": idx,
                    "op": "delete" if rec is None else "set",
                    "values": [] if rec is None else [handle_value(v) for v in rec.values],
                }
                for idx, rec in changes
            ],
        }

    @app.post(
        routes.REGISTRY,
        status_code=201,
        tags=["registry"],
        responses={201: {"model": om.WriteAnswer}, **om.errors(400, 401, 403, 404, 409, 413, 503)},
        openapi_extra=om.request_body("application/cose", "A COSE_Sign1 signed write request"),
    )
    async def write(request: Request) -> dict[str, Any]:
        """Apply one signed write request (a COSE_Sign1 body, ``application/cose``)."""
        raw = await _body(request, max_body)
        accepted = await run_in_threadpool(node.write, raw)
        metrics.writes.inc()
        return {
            "responseCode": HANDLE_OK,
            "handle": accepted.identifier,
            "op": accepted.op,
            "request_id": accepted.request_id.hex(),
        }

    @app.post(
        routes.GATEWAY_BLOCKS,
        tags=["gateways"],
        responses={
            200: {"model": om.BlocksAccepted},
            **om.errors(400, 413, 503),
            **{
                s: {"model": om.BlocksRefused | om.ErrorBody, "description": om.ERROR_REASONS[s]}
                for s in (400, 403, 409, 422)
            },
        },
        openapi_extra=om.json_request_body(om.BlockBatch),
    )
    async def submit_blocks(request: Request) -> JSONResponse:
        """Submit a gateway's signed blocks in order (bodies too in replicate mode)."""
        raw = await _body(request, max_body)
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc
        except RecursionError as exc:
            # The C decoder counts its depth against the interpreter's recursion limit and raises
            # cleanly (no stack is exhausted); the body is the caller's fault, not ours.
            raise BadRequest("body is JSON nested too deeply") from exc
        try:
            batch = codecs.block_batch_from_json(payload)
        except ProtocolError as exc:
            raise BadRequest(str(exc)) from exc
        results, error = await run_in_threadpool(node.submit_blocks, batch)
        metrics.blocks.inc(sum(1 for r in results if not r.duplicate))
        body = codecs.blocks_answer_json(
            codecs.AcceptedBlock(r.block_id, r.height, r.duplicate) for r in results
        )
        status = 200
        if error is not None:
            assert isinstance(error, ResolverError)
            refused(error)
            body.update(responseCode=error.handle_code, message=error.message)
            status = error.status
        return JSONResponse(body, status_code=status)

    @app.get(
        routes.BLOCK, tags=["gateways"], responses={200: {"model": om.BlockInfo}, **om.errors(400, 404, 503)}
    )
    def block(block_id: str) -> dict[str, Any]:
        """An accepted block's log index and receipt (``receipt`` is null until it is sequenced)."""
        try:
            bid = bytes.fromhex(block_id)
        except ValueError as exc:
            raise BadRequest("block id must be hex") from exc
        gateway, height, idx, receipt = node.block(bid)
        return codecs.block_info_json(bid, gateway, height, idx, receipt)

    @app.get(
        routes.BLOCKS,
        tags=["gateways"],
        responses={200: {"model": om.WindowBlocks}, **om.errors(400, 503)},
    )
    def blocks_in_window(
        gateway: str,
        from_ms: Annotated[int, Query(alias="from", ge=0)],
        to_ms: Annotated[int, Query(alias="to", ge=0)],
        after: Annotated[int, Query(ge=-1)] = -1,
    ) -> dict[str, Any]:
        """A gateway's blocks that can hold readings it received in ``[from, to)`` (milliseconds): every
        block signed at or after ``from`` up to the first signed at or after ``to``, each with its
        receipt and whether its readings are here (replicate) or at the gateway (anchor); 64 a page."""
        if to_ms < from_ms:
            raise BadRequest(f"to ({to_ms}) is before from ({from_ms})")
        found, next_after = node.blocks_in_window(node.canonical(gateway), from_ms, to_ms, after=after)
        rows = (
            (b.block_id, b.header.height, b.header.time_ms, b.raw, b.log_index, r, b.replicated)
            for b, r in found
        )
        return codecs.window_blocks_json(gateway, from_ms, to_ms, rows, next_after)

    @app.get(
        routes.GATEWAY_HEAD,
        tags=["gateways"],
        responses={200: {"model": om.GatewayHead}, **om.errors(400, 404, 503)},
    )
    def gateway_head(request: Request, gateway: str) -> dict[str, Any]:
        """The highest accepted block of a gateway."""
        del gateway
        text = _raw_path_part(request, routes.GATEWAY_PREFIX).removesuffix(routes.GATEWAY_HEAD_SUFFIX)
        head = node.gateway_head(node.canonical(text))
        if head is None:
            raise NotFound(f"no block of gateway {text} has been accepted")
        return {"gateway": text, "height": head[0], "block_id": head[1].hex()}  # echoed as asked

    @app.get(routes.CHECKPOINT, response_class=PlainTextResponse, tags=["log"], responses=CHECKPOINT_DOCS)
    async def checkpoint() -> PlainTextResponse:
        """The latest published checkpoint (C2SP signed note with cosignatures)."""
        return checkpoint_answer(node.view())

    @app.get(
        routes.CONSISTENCY,
        tags=["log"],
        responses={200: {"model": om.ConsistencyProof}, **om.errors(400, 503)},
    )
    def consistency(old: int, new: int) -> dict[str, Any]:
        """RFC 9162 consistency proof between two published tree sizes."""
        return codecs.consistency_json(old, new, node.consistency(old, new))

    @app.get(
        routes.INCLUSION,
        tags=["log"],
        responses={200: {"model": om.InclusionProof}, **om.errors(400, 404, 503)},
    )
    def inclusion(index: int, size: int) -> dict[str, Any]:
        """RFC 9162 inclusion proof of a leaf, with the leaf's bytes."""
        proof = node.inclusion(index, size)
        return codecs.inclusion_json(index, size, node.leaf(index), proof)

    # --- C2SP tlog-tiles ---------------------------------------------------------------------------------

    @app.get(
        routes.TILES_CHECKPOINT, response_class=PlainTextResponse, tags=["tiles"], responses=CHECKPOINT_DOCS
    )
    async def tiles_checkpoint() -> PlainTextResponse:
        return checkpoint_answer(node.view())

    @app.get(
        routes.TILE,
        response_class=Response,
        tags=["tiles"],
        responses={
            200: om.content("application/octet-stream", "A tlog-tiles tile or entry bundle", binary=True),
            **om.errors(404, 503),
        },
    )
    def tile(path: str) -> Response:
        parsed = parse_tile_path(path)
        if parsed is None:
            raise NotFound(f"not a tlog-tiles path: tile/{path}")
        return tile_answer(node.tile(parsed))

    @app.get(routes.HEALTH, tags=["operations"], responses={200: {"model": om.Health}, **om.errors(503)})
    async def healthz() -> dict[str, Any]:
        """200 once the node serves a published checkpoint (503 before), with its size, its prefixes and
        their delegations, and problems."""
        size = node.view().size
        metrics.published_size.set(size)
        answer: dict[str, Any] = {"status": "ok", "origin": node.origin, "published_size": size}
        if delegations is not None:
            answer["prefixes"] = [s.as_json() for s in delegations.statuses()]
        if role is not None:
            answer["sequencer"] = role.name
            if role.worker is not None:
                answer["worker"] = role.worker
                answer["pid"] = os.getpid()
        answer["witnesses_failing"] = metrics.witnesses_failing()
        answer["problems"] = [
            f"witness {name} has not cosigned the last {n} checkpoint(s)"
            for name, n in answer["witnesses_failing"].items()
        ]
        if delegations is not None:  # one prefix without its delegation is its problem, not the node's
            answer["problems"] += delegations.problems()
        return answer

    @app.get(
        routes.METRICS,
        tags=["operations"],
        response_class=Response,
        responses={200: om.content(CONTENT_TYPE_LATEST, "Prometheus text exposition")},
    )
    def prometheus() -> Response:
        """Prometheus text exposition."""
        with contextlib.suppress(ResolverError):
            metrics.published_size.set(node.view().size)
        if role is not None:
            metrics.sequencing.set(1 if role.name == "sequencing" else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        routes.POLICY,
        response_class=PlainTextResponse,
        tags=["log"],
        responses={200: om.content("text/plain", "C2SP tlog-policy"), **om.errors(404)},
    )
    async def policy() -> PlainTextResponse:
        """The node's C2SP tlog-policy: the log key, the witnesses and the quorum its checkpoints meet."""
        if policy_text is None:
            raise NotFound("this node publishes no policy")
        return PlainTextResponse(policy_text)

    epcis_api.add_routes(app, node, max_body=max_body, metrics=metrics, read_body=_body)

    assets = console_assets()

    @app.get(routes.CONSOLE_ASSET, include_in_schema=False)
    async def console_asset(asset: str) -> Response:
        found = assets.get(asset)
        if found is None:
            raise NotFound(f"no console asset {asset}")
        return Response(found.body, media_type=found.content_type, headers={"Cache-Control": "no-cache"})

    @app.get(routes.WEB_PAGE, response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(assets, node.origin))

    return app


def _type_matches(value_type: str, wanted: list[str]) -> bool:
    """Handle's type filter (hdllib ``Util.isParentTypeInArray``), ASCII case-insensitive as Handle types
    are: ``URL`` matches ``url``; a type ending in ``.`` (``HS_SITE.``) matches itself without the dot
    and every subtype (``HS_SITE.PREFIX``); an empty type matches nothing."""
    got = value_type.lower()
    for w in wanted:
        want = w.lower()
        if want.endswith(".") and (got.startswith(want) or got == want[:-1]):
            return True
        if want and got == want:
            return True
    return False
