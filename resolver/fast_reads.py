"""The hot reads served as precomputed bytes, in front of FastAPI.

Current resolutions (``/v1/resolve/{id}``, ``/api/handles/{prefix}/{suffix}``), the checkpoint and the
tlog tiles are most of a root node's traffic, and FastAPI's routing, validation and response machinery
cost about as much per request as the resolution itself. :class:`FastReads` is a plain ASGI middleware
that answers exactly these requests itself: it encodes each answer once per published checkpoint
(with the very builders the FastAPI endpoints use, so the bytes are the same) and keeps it in that
view's :class:`resolver.reads.AnswerCache`; a repeat is two ``send`` calls.

Anything it does not recognise exactly goes on to FastAPI unchanged: other paths and methods, a query
it does not parse (``?at=``, an unknown key, a ``proof`` spelled other than ``true``/``false``), a
percent-encoded path (FastAPI's endpoints decode it strictly), a request with a body, and every error
(so errors are rendered and counted in one place, :mod:`resolver.api`'s generic handler).

Being the outermost of the app's own layers, it is also where every request of a worker of
``root run --workers N`` first catches its view up with the other workers' (:meth:`RootNode.caught_up`);
a view that cannot catch up is answered 503 here, rendered as the generic handler renders it, counted in
``edgeroot_root_refused{reason="ViewBehind"}`` and logged at ERROR, rate-limited like every refusal
(:meth:`RootMetrics.refuse`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from resolver.api import checkpoint_answer, error_response, handle_read, resolve_answer, tile_answer
from resolver.errors import ResolverError
from resolver.metrics import RootMetrics
from resolver.reads import Answer, PublishedView, RootNode
from resolver.tiles import parse_tile_path
from rootclient import routes

_RESOLVE = routes.RESOLVE_PREFIX.encode()
_HANDLE = routes.HANDLE_PREFIX.encode()
_TILE = routes.TILE.partition("{")[0].encode()
_CHECKPOINTS = frozenset({routes.CHECKPOINT.encode(), routes.TILES_CHECKPOINT.encode()})
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_MAX_INDEX_DIGITS = 9


class _Unhandled(Exception):
    """This request is FastAPI's to answer (see the module docstring)."""


def _encoded(response: Response) -> Answer:
    return response.status_code, response.raw_headers, bytes(response.body)


def _plain_tail(raw: bytes, prefix: bytes) -> str:
    """The path after ``prefix`` when it needs no decoding (plain ASCII, no ``%``)."""
    tail = raw[len(prefix) :]
    if b"%" in tail or not tail.isascii():
        raise _Unhandled
    return tail.decode("ascii")


def _handle_query(query: bytes) -> tuple[list[str] | None, list[int] | None, bool]:
    """``type``, ``index`` and ``proof`` as FastAPI reads them, for the spellings read the same way
    by both (decimal indexes without leading zeros, ``proof`` once as ``true`` or ``false``)."""
    types: list[str] = []
    indexes: list[int] = []
    proof: bool | None = None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "type":
            types.append(value)
        elif key == "index" and value.isascii() and value.isdigit() and len(value) <= _MAX_INDEX_DIGITS:
            if value != str(int(value)):
                raise _Unhandled
            indexes.append(int(value))
        elif key == "proof" and proof is None and value in ("true", "false"):
            proof = value == "true"
        else:
            raise _Unhandled
    return types or None, indexes or None, bool(proof)


class FastReads:
    """Answers the hot reads from the current published view's encoded answers; the rest goes to ``app``."""

    def __init__(self, app: ASGIApp, node: RootNode, metrics: RootMetrics | None = None) -> None:
        self.app = app
        self.node = node
        self.metrics = RootMetrics() if metrics is None else metrics
        """The app's own (its ``/metrics``): a refusal here never reaches the app's error handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Under `root run --workers N`, before anything that shows a checkpoint: no answer of this
            # worker is older than one another worker gave (a memory read unless this view is behind).
            try:
                await self.node.caught_up()
            except ResolverError as exc:
                # The database failed for this worker: our failure, met by every request while it lasts.
                self.metrics.refuse(type(exc).__name__, exc.message, ours=True)
                await error_response(exc)(scope, receive, send)
                return
        if scope["type"] == "http" and scope["method"] == "GET":
            try:
                answer = await self._answer(scope)
            except (_Unhandled, ResolverError):
                pass  # FastAPI answers it (and renders and counts any error)
            else:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> Answer:
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        raw = raw.split(b"?", 1)[0]
        if not (raw.startswith((_RESOLVE, _HANDLE, _TILE)) or raw in _CHECKPOINTS):
            raise _Unhandled
        for name, _ in scope["headers"]:
            if name in _BODY_HEADERS:
                raise _Unhandled  # the body cap's answer is FastAPI's
        query: bytes = scope["query_string"]
        # One view for the whole answer: it is cached in the view it was computed from.
        view = self.node.view()
        key = raw + b"?" + query
        answer = view.answers.get(key)
        if answer is None:
            answer = await self._encode(view, raw, query)
            view.answers.put(key, answer)
        return answer

    async def _encode(self, view: PublishedView, raw: bytes, query: bytes) -> Answer:
        if raw.startswith(_RESOLVE):
            if query:
                raise _Unhandled  # ?at= reads the database
            text = _plain_tail(raw, _RESOLVE)
            return _encoded(resolve_answer(text, self.node.resolve_in(view, text)))
        if raw.startswith(_HANDLE):
            types, indexes, proof = _handle_query(query)
            text = _plain_tail(raw, _HANDLE)
            if self.node.resolve_in(view, text).referral() is not None:
                raise _Unhandled  # under a delegated prefix the endpoint follows it (network, own cache)
            return _encoded(handle_read(self.node, view, text, types, indexes, proof=proof))
        if query:
            raise _Unhandled
        if raw in _CHECKPOINTS:
            return _encoded(checkpoint_answer(view))
        parsed = parse_tile_path(_plain_tail(raw, _TILE))
        if parsed is None:
            raise _Unhandled
        # The database: in the thread pool, as FastAPI runs the tile endpoint.
        return _encoded(tile_answer(await run_in_threadpool(self.node.tile, parsed, view)))
