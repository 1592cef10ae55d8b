"""The root client's transport (httpx over aiohttp's pool, D-090) turns every failure to talk to a node
into :class:`rootclient.errors.ClientError`: a node answering out of HTTP is a node that cannot be asked,
and callers (referrals, the gateway's registry cache, the Handle proxy) count and fall back on that."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from rootclient.client import RootClient
from rootclient.errors import ClientError


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server on loopback answering every connection with bytes that are not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT-HTTP garbage\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_an_answer_that_is_not_http_is_a_client_error(garbage_server: str) -> None:
    """A malformed status line (aiohttp raises its own error, which httpx-aiohttp passes through)."""
    with RootClient(garbage_server) as client, pytest.raises(ClientError, match="cannot reach"):
        client.checkpoint()


def test_a_node_that_is_not_listening_is_a_client_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with RootClient(f"http://127.0.0.1:{port}") as client, pytest.raises(ClientError):
            client.checkpoint()
