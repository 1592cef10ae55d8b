"""The root node and the witness as daemons: uvicorn as one task of :class:`runtime.service.Service`.

The Service owns the lifecycle (signals, sd_notify, the shutdown deadline, the exit code); this module
supplies what is particular to an HTTP app:

* start: uvicorn's ``Server.serve()`` runs as the task ``http`` (uvicorn's own signal handling is
  switched off: the Service is the one owner of SIGTERM/SIGINT/SIGHUP and of the second-signal rule);
  the app's background work (the root's sequencer) starts from its lifespan as Service tasks through
  :attr:`Hooks.spawn`. ``READY=1`` only once the sockets listen.
* status and reload: the app's :class:`Hooks` (``app.state.hooks``); the reload runs in a thread (it
  reads files).
* limits (:mod:`resolver.http_limits`): a connection cap answering 503, bounded request heads (431),
  a timeout for a request that does not arrive whole (408), uvicorn's keep-alive timeout, by
  :class:`LimitedHttpProtocol`.
* stop, one step under the deadline: ``server.should_exit``; uvicorn stops accepting, finishes the
  requests under way (at most half the deadline), runs the app's shutdown (sequencer, database), and
  the ``http`` task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from resolver.http_limits import MAX_BACKLOG, HttpLimits
from runtime.logsetup import configure_logging
from runtime.ratelimit import RateLimitedLog
from runtime.service import Service, Step, TextSource, run_service
from runtime.worker_pool import run_workers

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log, every_s=60.0)
STOP_DEADLINE_S = 20.0
"""The whole shutdown's deadline: below ``TimeoutStopSec=30`` of the root and witness units."""
WORKER_STOP_MARGIN_S = 5.0
"""What the supervisor of several workers adds to their deadline before it kills one."""

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def plain_task(name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A background task outside any Service (an app served by a test's server thread)."""
    return asyncio.create_task(coro, name=name)


@dataclass
class Hooks:
    """What an app tells the service: a one-line status, what a reload does (returns a summary), and how
    the app starts its background tasks (set to the Service's ``spawn`` when served by :func:`serve`, so
    a background task that dies stops the daemon loudly)."""

    status: Callable[[], str]
    reload: Callable[[], str] | None = None
    spawn: Spawn = field(default=plain_task)
    refused: Callable[[str], None] = field(default=lambda reason: None)
    """Told ``http-503``, ``http-431`` or ``http-408`` for each connection the HTTP limits refuse (the
    app counts them; the limits answer before the app sees a request)."""


class _Server(uvicorn.Server):
    """uvicorn, without its signal handlers, telling when its sockets listen."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The Service handles the signals; uvicorn would replace its handlers and re-raise the signal
        # after an orderly shutdown (the process would then die of it instead of exiting 0).
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._deepen_accept_queues()
            self.listening.set()

    def _deepen_accept_queues(self) -> None:
        """Give the kernel a deep accept queue again after asyncio listened with the small ``backlog``.

        asyncio uses one number both as ``listen()``'s backlog and as how many connections it accepts per
        loop iteration; the limits want the second small (descriptors taken before the first refusal are
        bounded, see :meth:`HttpLimits.descriptor_budget`) but not the first: a short kernel queue drops
        handshakes during a flood and a client then waits for TCP's 1-s retransmission. ``listen()`` on a
        listening socket only changes its queue length.
        """
        for server in self.servers:
            for transport_socket in server.sockets:
                with transport_socket.dup() as listener:  # the same socket; closing the copy keeps it
                    listener.listen(MAX_BACKLOG)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a header-size limit and a request timeout.

    Subclassed rather than wrapped because the limits need the parser's progress (first byte of a
    request, end of its head, end of its body), which only the protocol sees; use :func:`protocol`.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    cap: ClassVar[int] = HttpLimits().max_connections

    @staticmethod
    def on_refused(reason: str) -> None:
        """Told ``http-STATUS`` for each refusal (replaced by :func:`protocol` with the app's counter)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_deadline: asyncio.TimerHandle | None = None
        self._head_done = False
        self._head_bytes = self._unparsed_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.cap:
            _refusals.warning("cap", "http: %d connections open, the cap: refusing one with 503", self.cap)
            self.connections.discard(self)  # not held: the cap counts the connections it lets in
            self._refuse(503, "too many connections")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self._head_done:
            # Counted after feeding: a chunk that completes the head may carry body bytes too. This
            # bounds what an unterminated head can make the parser keep.
            self._unparsed_bytes += len(data)
        if self._head_too_large() or (
            not self._head_done and self._unparsed_bytes > self.limits.max_header_bytes
        ):
            limit = self.limits.max_header_bytes
            _refusals.warning("431", "http: a request head over %d bytes refused", limit)
            self._refuse(431, "request head too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._head_bytes = self._unparsed_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        if self._head_too_large():
            return  # a head that came whole in one chunk: data_received refuses it once the feed ends
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._head_too_large():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._head_too_large():
            super().on_message_complete()
        self._disarm()

    def _head_too_large(self) -> bool:
        """The request line and headers parsed so far exceed the limit."""
        return self._head_bytes > self.limits.max_header_bytes

    def _arm(self) -> None:
        if self._request_deadline is None:
            self._request_deadline = self.loop.call_later(self.limits.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _timed_out(self) -> None:
        self._request_deadline = None
        if not self.transport.is_closing():
            timeout = self.limits.request_timeout_s
            _refusals.warning("408", "http: a request not received within %.1f s: connection closed", timeout)
            self._refuse(408, "request not received in time")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close; only close when the app is answering an earlier request on this
        connection (an answer of ours would be mixed into its response)."""
        self._disarm()
        self.on_refused(f"http-{status}")
        if self.cycle is None or self.cycle.response_complete:
            body = reason.encode()
            self.transport.write(
                b"".join((
                    STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body,
                ))
            )  # fmt: skip
        self.transport.close()


def protocol(
    limits: HttpLimits, refused: Callable[[str], None] | None = None
) -> tuple[type[LimitedHttpProtocol], int]:
    """The protocol class to give ``uvicorn.Config(http=...)``, bound to ``limits``, the connection cap
    computed now and ``refused`` (told ``http-STATUS`` per refused connection), and the listen backlog to
    go with it (:meth:`HttpLimits.descriptor_budget`)."""
    cap, backlog = limits.descriptor_budget()
    log.info(
        "http: at most %d connections (backlog %d), request heads of %d bytes, received within %.1f s",
        cap, backlog, limits.max_header_bytes, limits.request_timeout_s,
    )  # fmt: skip
    members: dict[str, object] = {"limits": limits, "cap": cap}
    if refused is not None:
        members["on_refused"] = staticmethod(refused)
    bound = type("BoundLimitedHttpProtocol", (LimitedHttpProtocol,), members)
    return bound, backlog


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _run(
    app: FastAPI,
    name: str,
    listen: str,
    hooks: Hooks,
    limits: HttpLimits,
    *,
    sockets: list[socket.socket] | None = None,
) -> None:
    host, port = _host_port(listen)
    protocol_class, backlog = protocol(limits, hooks.refused)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False,
        timeout_graceful_shutdown=int(STOP_DEADLINE_S / 2),
        # Connection cap, head size and request timeout: uvicorn's own limits do not cover a connection
        # that never completes a request (resolver/http_limits.py says which and why).
        http=protocol_class, backlog=backlog, timeout_keep_alive=limits.keep_alive_s,
    )  # fmt: skip
    server = _Server(config)
    reload_hook = hooks.reload
    reload: TextSource | None = None
    if reload_hook is not None:

        async def reload_in_thread() -> str:
            return await asyncio.to_thread(reload_hook)

        reload = reload_in_thread
    async with Service(name, status=hooks.status, reload=reload, stop_deadline_s=STOP_DEADLINE_S) as service:
        hooks.spawn = service.spawn
        http = service.spawn("http", server.serve(sockets))

        async def stop_http() -> None:
            server.should_exit = True
            await asyncio.wait({http})

        service.shutdown_order(Step("stop http (finish requests, the app's shutdown)", stop_http))
        await server.listening.wait()  # a bind failure ends the http task, which cuts this wait short
        await service.serve()


def serve(
    app: FastAPI,
    name: str,
    listen: str,
    hooks: Hooks,
    limits: HttpLimits | None = None,
    *,
    sockets: list[socket.socket] | None = None,
    worker: int | None = None,
) -> int:
    """Run ``app`` on ``HOST:PORT`` (or on the listening ``sockets`` already bound, a worker's) as the
    daemon ``name`` until SIGTERM/SIGINT, within ``limits`` (default :class:`HttpLimits`); one log line
    per event on stdout (journald), naming ``worker`` when given; the process exit code
    (:func:`runtime.service.run_service`)."""
    configure_logging(worker=worker)
    return run_service(lambda: _run(app, name, listen, hooks, limits or HttpLimits(), sockets=sockets))


def worker_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP sockets bound to ``host:port`` with ``SO_REUSEPORT``, one per worker and not yet
    listening: each listens once its worker's server starts (asyncio's ``create_server`` does it), and
    from then on the kernel hands each new connection to one of the listening sockets by a hash of the
    connection's addresses (decisions D-140). One socket shared by every worker let whichever worker woke
    first take a whole burst of connections, and a keep-alive connection stays where it was accepted: 32
    connections opened at once landed unevenly on two workers, so the second core served little.

    A plain socket binds the port first and is closed at once, so a port something listens on fails here
    (``OSError``), even when that listener set ``SO_REUSEPORT`` too (another ``root run --workers`` of
    the same user would otherwise join the group silently and share the connections). Port 0 gives every
    socket the port the kernel picked.

    Made with ``IPPROTO_TCP`` spelled out: asyncio sets ``TCP_NODELAY`` only on sockets whose ``proto``
    says TCP, and a connection accepted from a socket made with proto 0 inherits 0, so every answer
    written in two sends (head, then body) waited for the client's delayed ACK, about 40 ms (D-118)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        # As uvicorn binds: connections of an earlier run in TIME_WAIT are no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def serve_workers(
    build: Callable[[int], FastAPI], name: str, listen: str, workers: int, limits: HttpLimits | None = None
) -> int:
    """Serve on ``HOST:PORT`` from ``workers`` processes, each on its own socket of the port
    (:func:`worker_listeners`): each worker runs ``build(number)``'s app as :func:`serve` would, under
    the supervisor of :func:`runtime.worker_pool.run_workers` (its exit code). The sockets are bound
    before any worker starts, so a port in use fails here at once (``OSError``)."""
    host, port = _host_port(listen)
    listeners = worker_listeners(host, port, workers)

    def run_worker(number: int) -> int:
        own = listeners[number - 1]
        for other in listeners:
            if other is not own:
                # Only its own worker may hold a socket open: one whose worker has exited must close,
                # or the kernel would keep handing it connections that nobody accepts.
                other.close()
        app = build(number)
        return serve(app, name, listen, app.state.hooks, limits, sockets=[own], worker=number)

    try:
        # The workers' deadline plus time to wait for them: below TimeoutStopSec=30 of the unit.
        return run_workers(
            name, workers, run_worker, stop_deadline_s=STOP_DEADLINE_S + WORKER_STOP_MARGIN_S,
            inherited=listeners,
        )  # fmt: skip
    finally:
        for listener in listeners:
            listener.close()
