"""A real `edgeroot root run` (and witness) under HTTP abuse: deep JSON, idle and half-sent connections,
oversized and unterminated request heads. Loopback only; every loop bounded, every wait a deadline."""

from __future__ import annotations

import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resolver import config as root_config
from resolver.http_limits import DEFAULT, FD_RESERVE, HttpLimits
from rootclient import routes
from tests.root_harness import free_port
from tests.test_root_cli import EDGEROOT, _wait_http, init_witness_and_root

UNITS = Path(__file__).resolve().parent.parent / "systemd"
NOFILE = 512
"""The root's descriptor limit here: low, so that idle connections would exhaust it within the test."""
CAP = (NOFILE - FD_RESERVE) // 2
REQUEST_TIMEOUT_S = 2.0
FLOOD = 1000
"""Idle connections opened at once: twice the descriptor limit."""
MEMORY_CEILING_KB = 150 * 1024


@dataclass
class Daemons:
    root: subprocess.Popen[bytes]
    root_port: int
    witness_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.root_port}"

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.root.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1])


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    """A witness and a root (RLIMIT_NOFILE 512, a 2-s request timeout), each its own process."""
    tmp = tmp_path_factory.mktemp("abuse")
    wport, rport = free_port(), free_port()
    init_witness_and_root(tmp, "abuse", wport)
    root_config.update(tmp / "root" / "root.toml", {"http": {"request_timeout_s": REQUEST_TIMEOUT_S}})
    witness = subprocess.Popen(
        [*EDGEROOT, "witness", "run", "--state", str(tmp / "w"), "--listen", f"127.0.0.1:{wport}"]
    )
    # The shell lowers the limit and execs the root (same pid), rather than a preexec_fn, which is unsafe
    # in a process that may have threads.
    root = subprocess.Popen([
        "/bin/sh", "-c", f'ulimit -n {NOFILE} && exec "$@"', "sh",
        *EDGEROOT, "root", "run", "--state", str(tmp / "root"), "--listen", f"127.0.0.1:{rport}",
    ])  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{wport}/docs", witness)
        _wait_http(f"http://127.0.0.1:{rport}{routes.HEALTH}", root)
        yield Daemons(root, rport, wport)
    finally:
        for p in (root, witness):
            p.terminate()
        for p in (root, witness):
            p.wait(timeout=20)


def _refused(url: str, reason: str) -> float:
    """The root's ``edgeroot_root_refused_total{reason=...}`` now (0 when never counted)."""
    for family in text_string_to_metric_families(httpx.get(url + routes.METRICS, timeout=5).text):
        for sample in family.samples:
            if sample.name == "edgeroot_root_refused_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _answer(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (a reset counts as a close), and how long that took."""
    start = time.monotonic()
    sock.settimeout(deadline_s)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {deadline_s} s") from None
    return got, time.monotonic() - start


def test_deeply_nested_json_is_a_400_with_the_error_body(daemons: Daemons) -> None:
    """JSON nested 5,000 deep is the caller's error (400 and the API's error body), not a 500."""
    body = b"[" * 5000 + b"]" * 5000
    answer = httpx.post(daemons.url + routes.GATEWAY_BLOCKS, content=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"responseCode": 2, "message": "body is JSON nested too deeply"}


def test_half_sent_and_idle_connections_are_closed_after_the_request_timeout(daemons: Daemons) -> None:
    """A connection that sends nothing, half a head, or a head and half its body is closed after 2 s."""
    idle = _connect(daemons.root_port)
    half_head = _connect(daemons.root_port)
    half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    half_body = _connect(daemons.root_port)
    half_body.sendall(
        b"POST " + routes.GATEWAY_BLOCKS.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"blocks": ['
    )
    for sock, expect_408 in ((idle, True), (half_head, True), (half_body, False)):
        with sock:
            got, took = _answer(sock, deadline_s=REQUEST_TIMEOUT_S + 4)
        assert took < REQUEST_TIMEOUT_S + 2, took
        if expect_408:
            assert got.startswith(b"HTTP/1.1 408 "), got
        else:
            assert b" 200 " not in got, got  # the app has the request: closed, never answered as if whole


def test_connections_beyond_the_cap_get_503_and_healthz_answers_within_the_timeout(daemons: Daemons) -> None:
    """1,000 idle connections, 512 descriptors: 503 beyond the cap, 408 for the held, then /healthz."""
    # The cap is half of what the reserve leaves (192); every connection is answered, none reset or
    # left silent (which is what EMFILE looks like from outside).
    before = {status: _refused(daemons.url, f"http-{status}") for status in (503, 408)}
    start = time.monotonic()
    socks = [_connect(daemons.root_port) for _ in range(FLOOD)]
    try:
        answers: list[bytes] = []
        # epoll, not select(): inside a long test run this process's descriptors exceed FD_SETSIZE (1024).
        with selectors.DefaultSelector() as waiting:
            for sock in socks:
                waiting.register(sock, selectors.EVENT_READ)
            deadline = start + REQUEST_TIMEOUT_S + 4
            while waiting.get_map():
                left = len(waiting.get_map())
                assert time.monotonic() < deadline, f"{left} connections neither refused nor timed out"
                for key, _ in waiting.select(max(0.0, deadline - time.monotonic())):
                    waiting.unregister(key.fileobj)
                    answers.append(_answer(key.fileobj, deadline_s=2)[0])  # type: ignore[arg-type]
        statuses = sorted(answer[:12] for answer in answers)
        assert statuses == sorted([b"HTTP/1.1 503"] * (FLOOD - CAP) + [b"HTTP/1.1 408"] * CAP), {
            status: statuses.count(status) for status in set(statuses)
        }
        assert httpx.get(daemons.url + routes.HEALTH, timeout=2).status_code == 200
        assert time.monotonic() - start < REQUEST_TIMEOUT_S + 4
        assert daemons.rss_kb() < MEMORY_CEILING_KB
        # Counted, so an operator sees the flood in Prometheus and not only in the journal.
        assert _refused(daemons.url, "http-503") - before[503] == FLOOD - CAP
        assert _refused(daemons.url, "http-408") - before[408] == CAP
    finally:
        for sock in socks:
            sock.close()


def _oversized_head(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n"


@pytest.mark.parametrize("which", ["root", "witness"])
def test_an_oversized_request_head_is_refused_with_431(daemons: Daemons, which: str) -> None:
    """A complete head twice the limit is answered 431 by the root and by the witness (the same server)."""
    port = daemons.root_port if which == "root" else daemons.witness_port
    with _connect(port) as sock:
        sock.sendall(_oversized_head(2 * DEFAULT.max_header_bytes))
        got, _took = _answer(sock, deadline_s=5)
    assert got.startswith(b"HTTP/1.1 431 "), got


def test_200_mib_of_unterminated_headers_leave_the_root_under_150_mb(daemons: Daemons) -> None:
    """200 MiB of unterminated headers: each connection refused (431 or a reset), the root under 150 MB."""
    # Offered over as many connections as it takes (each takes what the socket buffers hold, a few MiB,
    # before the root refuses it); before the limits one connection took it all and the root grew.
    before = peak = daemons.rss_kb()
    chunk = b"a" * (1024 * 1024)
    offered = connections = 0
    while offered < 200 * len(chunk):
        assert connections < 2000, f"only {offered} bytes offered over {connections} connections"
        connections += 1
        with _connect(daemons.root_port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
            refused = False
            for _ in range(200):
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    refused = True
                    break
                offered += len(chunk)
            if not refused:
                got, _took = _answer(sock, deadline_s=5)
                assert got.startswith(b"HTTP/1.1 431 "), got
        peak = max(peak, daemons.rss_kb())
        assert peak < MEMORY_CEILING_KB, (before, peak)
    after = daemons.rss_kb()
    assert after < MEMORY_CEILING_KB, (before, after)
    # The figure the issue asks for (shown by `pytest -rP`): the root's memory through the abuse.
    print(f"root RSS {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB at most, "
          f"{after / 1024:.0f} MiB after {offered / 2**20:.0f} MiB of unterminated headers "
          f"over {connections} connections")  # fmt: skip
    assert httpx.get(daemons.url + routes.HEALTH, timeout=5).status_code == 200


@pytest.mark.parametrize(
    "name", ["edgeroot-root.service", "edgeroot-witness.service", "edgeroot-gateway.service"]
)
def test_units_raise_the_descriptor_limit_above_the_connection_cap(name: str) -> None:
    """LimitNOFILE is set; for the root and witness high enough that the default cap is not lowered."""
    lines = (UNITS / name).read_text().splitlines()
    limit = next((line for line in lines if line.startswith("LimitNOFILE=")), None)
    assert limit is not None, f"{name} sets no LimitNOFILE"
    if name != "edgeroot-gateway.service":
        assert (int(limit.split("=", 1)[1]) - FD_RESERVE) // 2 >= DEFAULT.max_connections, limit


def test_http_keys_of_root_toml_reach_the_limits(tmp_path: Path) -> None:
    """The [http] keys of root.toml become the server's limits; the defaults are HttpLimits'."""
    (tmp_path / "root.toml").write_text(root_config.render({"origin": "root.example", "prefix": "88"}))
    assert root_config.load(tmp_path).http_limits == DEFAULT
    http = {"max_connections": 64, "max_header_bytes": 4096, "request_timeout_s": 2.5, "keep_alive_s": 3}
    root_config.update(tmp_path / "root.toml", {"http": http})
    assert root_config.load(tmp_path).http_limits == HttpLimits(64, 4096, 2.5, 3)
