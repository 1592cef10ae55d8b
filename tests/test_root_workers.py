"""``edgeroot root run --workers N`` as real processes over real HTTP: the workers share one socket, one of
them sequences, writes through any of them are integrated, no client ever sees an older checkpoint after
a newer one, and the supervisor speaks for all of them to systemd (READY, reload, stop, a dead worker)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.keys import load_private_pem
from chain_lite.registry import Value, admin_kid, build_write, sign_write
from edgeroot.output import EXIT_USAGE
from edgeroot.system import EDGEROOT, wait_until
from resolver import config as root_config
from resolver.assembly import init_root
from resolver.http_service import worker_listeners
from rootclient import routes
from runtime import worker_pool
from runtime.clock import now_ms
from runtime.service import EXIT_FAILED, EXIT_OK
from tests.notify_harness import NotifySocket
from tests.root_harness import POSTGRES_DOWN, free_port, postgres_schema

REPO = Path(__file__).resolve().parent.parent
ORIGIN = "workers.test"
PREFIX = "88.7"
WATCHDOG_S = 5.0


@dataclass
class Workers:
    """A running ``root run --workers 2`` with its notify socket and log."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    sock: NotifySocket
    admin: CoseSigner

    def text(self) -> str:
        return self.log.read_text()

    def get(self, path: str) -> httpx.Response:
        """One request on a connection of its own, so the kernel may hand it to either worker."""
        with httpx.Client(base_url=self.url, timeout=10) as client:
            return client.get(path, headers={"connection": "close"})

    def health(self) -> dict[str, Any]:
        answer = self.get(routes.HEALTH)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def write(self, identifier: str) -> None:
        """Register ``identifier`` through whichever worker takes the connection."""
        request = build_write(ORIGIN, "create", identifier, [Value(1, "URL", "string", "https://example.com")],
                              timestamp_ms=now_ms(), nonce=os.urandom(16))  # fmt: skip
        with httpx.Client(base_url=self.url, timeout=10) as client:
            headers = {"content-type": "application/cose", "connection": "close"}
            raw = sign_write(request, self.admin).raw
            answer = client.post(routes.REGISTRY, content=raw, headers=headers)
        assert answer.status_code in (200, 201, 202), answer.text

    def seen_workers(self, count: int = 2) -> dict[int, dict[str, Any]]:
        """/healthz of each worker, asked over new connections until all ``count`` answered."""
        seen: dict[int, dict[str, Any]] = {}

        def all_seen() -> bool:
            health = self.health()
            seen[health["worker"]] = health
            return len(seen) == count

        wait_until(lambda: f"every worker answering (heard {sorted(seen)})", all_seen, timeout=30, interval=0)
        return seen

    def exit_code(self, timeout: float = 40.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout} s later:\n{self.text()[-3000:]}") from None


def _databases() -> list[Any]:
    postgres = pytest.param("postgres", marks=pytest.mark.skipif(
        POSTGRES_DOWN is not None, reason=f"PostgreSQL not reachable: {POSTGRES_DOWN}"))  # fmt: skip
    return ["sqlite", postgres]


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
    else:
        with postgres_schema() as url:
            yield url


def _drain(sock: NotifySocket, stop: threading.Event) -> None:
    while not stop.is_set():
        sock.collect(0.2)


@pytest.fixture(params=_databases())
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    """``root run --workers 2`` over a fresh node (SQLite or PostgreSQL; no witnesses, so each batch is
    published at once), started under a notify socket with a watchdog; READY=1 heard."""
    with _database(request.param) as database:
        state = tmp_path / "root"
        result = init_root(state, ORIGIN, PREFIX, database=database)
        config = state / "root.toml"
        config.write_text(config.read_text().replace("interval_ms = 250", "interval_ms = 50"))
        sock = NotifySocket(tmp_path)
        log = tmp_path / "root.log"
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*EDGEROOT, "root", "run", "--state", str(state), "--listen", f"127.0.0.1:{port}",
                 "--workers", "2"],
                env=sock.env(WATCHDOG_S), stdout=out, stderr=out, cwd=REPO,
            )  # fmt: skip
        admin = CoseSigner(admin_kid(PREFIX), load_private_pem(result.admin_key.read_bytes()))
        running = Workers(proc, f"http://127.0.0.1:{port}", log, sock, admin)
        # systemd reads every datagram at once; a socket nobody reads fills up, and the supervisor's
        # next send (then the workers' to it) would block, as against a systemd that hangs.
        listening = threading.Event()
        drain = threading.Thread(target=_drain, args=(sock, listening), name="notify-drain", daemon=True)
        try:
            sock.wait_for("READY=1", timeout=60)
            drain.start()
            yield running
        finally:
            listening.set()
            if drain.is_alive():
                drain.join()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pid in re.findall(r"worker \d+ started \(pid (\d+)\)", log.read_text()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)  # only ours: the pids this supervisor logged
            sock.close()


def test_two_workers_share_the_socket_one_sequences_and_writes_through_either_are_integrated(
    workers: Workers,
) -> None:
    """READY=1 comes once both workers serve (each answers at once over new connections); one sequences,
    the other stands by; identifiers written over new connections (either worker) are all resolvable."""
    assert "all 2 workers ready" in workers.text()
    seen = workers.seen_workers()
    assert sorted(h["sequencer"] for h in seen.values()) == ["sequencing", "standby"]
    assert len({h["pid"] for h in seen.values()}) == 2
    identifiers = [f"{PREFIX}/ITEM-{i}" for i in range(12)]
    for identifier in identifiers:
        workers.write(identifier)

    def all_resolved() -> bool:
        return all(workers.get(f"{routes.RESOLVE_PREFIX}{i}").status_code == 200 for i in identifiers)

    wait_until("every identifier resolvable through the workers", all_resolved, timeout=30)
    status = workers.sock.wait_for("READY=1").split("\n")
    assert any(line.startswith("STATUS=worker 1: ") and "worker 2: " in line for line in status), status


def _worker_on(conn: socket.socket) -> int:
    """Ask /healthz on an open keep-alive connection; the worker that answered."""
    conn.sendall(f"GET {routes.HEALTH} HTTP/1.1\r\nhost: workers.test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(body) < length:
        body += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), data
    worker: int = json.loads(body)["worker"]
    return worker


def test_bursts_of_keep_alive_connections_are_spread_over_both_workers(workers: Workers) -> None:
    """32 connections opened at once, as a load generator opens them, land on both workers (each worker
    has its own socket of the port, D-140), and each stays with the worker that took it; three bursts in
    turn. With one shared socket the worker that woke first took most or all of a burst, and kept it."""
    workers.seen_workers()  # both serve
    host, _, port = workers.url.removeprefix("http://").rpartition(":")
    for burst in range(3):
        conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(32)]
        try:
            taken = [_worker_on(conn) for conn in conns]
            again = [_worker_on(conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()
        assert again == taken, "a keep-alive connection changed workers"
        counts = {number: taken.count(number) for number in (1, 2)}
        # The kernel spreads by a hash of each connection's addresses: fewer than 4 of 32 on one worker
        # has a probability of about 3 in a million.
        assert min(counts.values()) >= 4, f"burst {burst}: connections per worker: {counts}"


def test_worker_sockets_share_one_port_and_a_port_in_use_fails_at_once() -> None:
    """One SO_REUSEPORT socket per worker on the same port (port 0: the one the kernel picked), none
    listening yet; binding the group again while one of them listens fails (OSError), so a second
    `root run --workers` cannot silently join the first's port."""
    listeners = worker_listeners("127.0.0.1", 0, 3)
    try:
        ports = {listener.getsockname()[1] for listener in listeners}
        assert len(ports) == 1
        for listener in listeners:
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
            assert listener.proto == socket.IPPROTO_TCP  # D-118
        listeners[0].listen(8)
        with pytest.raises(OSError, match="Address already in use"):
            worker_listeners("127.0.0.1", ports.pop(), 2)
    finally:
        for listener in listeners:
            listener.close()


def _size(answer: httpx.Response) -> tuple[int, int | None]:
    """The log size an answer shows, and the worker named (``/healthz`` names it, a checkpoint does not)."""
    assert answer.status_code == 200, answer.text
    if answer.headers["content-type"].startswith("application/json"):
        body = answer.json()
        return body["published_size"], body["worker"]
    return SignedCheckpoint.parse(answer.content).checkpoint.size, None


def test_no_client_sees_an_older_checkpoint_after_a_newer_one_across_workers(workers: Workers) -> None:
    """While writes keep the log growing, clients ask in turn for /healthz and the checkpoint, each
    request on a new connection (so the kernel spreads them over both workers): the sizes one client
    sees never go down. Without the shared marker this fails: a worker's view lags the other's by up to
    its poll interval."""
    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        while not stop.is_set():
            workers.write(f"{PREFIX}/GROW-{written}")
            written += 1

    readers_done: list[tuple[list[int], set[int]]] = []

    def reader() -> None:
        sizes: list[int] = []
        named: set[int] = set()
        for i in range(150):
            size, worker = _size(workers.get(routes.HEALTH if i % 2 else routes.CHECKPOINT))
            sizes.append(size)
            if worker is not None:
                named.add(worker)
        readers_done.append((sizes, named))

    grower = threading.Thread(target=writer, name="writer")
    grower.start()
    try:
        readers = [threading.Thread(target=reader, name=f"reader-{n}") for n in range(3)]
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join()
    finally:
        stop.set()
        grower.join()
    assert len(readers_done) == 3, "a reader failed (its exception is above)"
    for sizes, named in readers_done:
        backwards = [(a, b) for a, b in itertools.pairwise(sizes) if b < a]
        assert backwards == [], f"sizes went back: {backwards[:5]}"
        assert named == {1, 2}, f"one client heard only worker(s) {named}"
        assert sizes[-1] > sizes[0], "the log did not grow while this client read"
    assert written > 10


def test_sighup_reaches_every_worker_and_the_reload_ends_when_all_reloaded(workers: Workers) -> None:
    """SIGHUP to the supervisor: RELOADING=1, each worker reloads (its own log line), READY=1 after."""
    workers.sock.messages.clear()
    workers.proc.send_signal(signal.SIGHUP)
    workers.sock.wait_for("RELOADING=1")
    workers.sock.wait_for("READY=1")
    text = workers.text()
    for number in (1, 2):
        assert f"INFO [worker {number}] runtime.service: root reloaded:" in text, text[-3000:]
    assert "SIGHUP forwarded to 2 workers, each reloaded" in text


def test_a_reload_ends_when_the_last_worker_says_ready_again_awaiting_no_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reload awaits the relays' READY=1 (STYLE 5: an event, no polling): it is still waiting after
    one worker's READY=1, ends at the other's, and at its deadline names a worker that stayed silent."""

    async def no_timer(_delay: float, *args: Any) -> Any:
        raise AssertionError("the reload polled (asyncio.sleep) instead of awaiting READY=1")

    async def run() -> None:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
        pool = []
        for number, (supervisor_end, _) in enumerate(pairs, start=1):
            supervisor_end.setblocking(False)
            pool.append(worker_pool._Worker(number, supervisor_end, (-1, -1)))
        stopping = asyncio.Event()
        relays = [asyncio.create_task(worker_pool._relay(w, stopping)) for w in pool]
        try:
            waiting = asyncio.create_task(worker_pool._ready_again(pool, 60))
            pairs[0][1].send(b"READY=1")
            await pool[0].ready_again.wait()
            assert not waiting.done(), "the reload ended before worker 2 said READY=1"
            pairs[1][1].send(b"STATUS=reloaded\nREADY=1")
            assert await asyncio.wait_for(waiting, 30) == []
            for w in pool:
                w.ready_again.clear()
            pairs[1][1].send(b"READY=1")
            assert [w.number for w in await worker_pool._ready_again(pool, 0.2)] == [1]
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            for ends in pairs:
                for end in ends:
                    end.close()

    monkeypatch.setattr(worker_pool.asyncio, "sleep", no_timer)
    asyncio.run(run())


def _root_run(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [*EDGEROOT, "root", "run", "--state", str(state), "--listen", f"127.0.0.1:{free_port()}", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


@pytest.mark.parametrize("broken", ["a database that cannot be opened", "a file that does not parse"])
def test_a_configuration_the_workers_cannot_start_with_is_said_as_one_process_says_it(
    tmp_path: Path, broken: str
) -> None:
    """`root run --workers 2` on a root.toml that its workers' setup refuses (or that does not even
    parse) says what `root run` alone says: the same one line, the same exit code (2), no traceback;
    and the pool stops at once, the worker that cannot start not started again, the other never."""
    state = tmp_path / "root"
    init_root(state, ORIGIN, PREFIX)
    config = state / "root.toml"
    if broken == "a database that cannot be opened":
        root_config.update(config, {"database": f"sqlite:///{tmp_path / 'no-such-dir' / 'root.db'}"})
    else:
        config.write_text(config.read_text() + "\n[sequencer\n")
    alone = _root_run(state)
    pool = _root_run(state, "--workers", "2")
    said = [line for line in alone.stderr.splitlines() if line.startswith("error: ")]
    assert alone.returncode == EXIT_USAGE and len(said) == 1, alone.stdout + alone.stderr
    output = pool.stdout + pool.stderr
    assert pool.returncode == EXIT_USAGE, output[-3000:]
    assert [line for line in pool.stderr.splitlines() if line.startswith("error: ")] == said, output[-3000:]
    assert "Traceback" not in output and "CRITICAL" not in output, output[-3000:]
    if broken == "a database that cannot be opened":
        assert "cannot open database" in said[0]
        assert output.count("worker 1 started") == 1 and output.count("cannot start") == 1, output[-3000:]
        assert re.search(r"worker 1 \(pid \d+\) cannot start: stopping, no worker restarted", output)
        assert re.search(r"worker 2 \(pid \d+\) exited with code 0", output), output[-3000:]  # never started


def test_sigterm_stops_every_worker_in_order_and_exits_0(workers: Workers) -> None:
    """SIGTERM to the supervisor: STOPPING=1, each worker runs its own ordered shutdown, exit code 0,
    no worker left."""
    pids = [h["pid"] for h in workers.seen_workers().values()]
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.exit_code() == EXIT_OK, workers.text()[-3000:]
    workers.sock.collect(0.1)
    assert "STOPPING=1" in workers.sock.text
    text = workers.text()
    for number in (1, 2):
        assert f"INFO [worker {number}] runtime.service: root stopped" in text, text[-3000:]
        assert f"worker {number} (pid " in text and "exited with code 0" in text
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_killed_worker_stops_the_whole_service_loudly_with_a_non_zero_exit(workers: Workers) -> None:
    """One worker is killed: the supervisor says which (one CRITICAL line), stops the other in order and
    exits 1, so systemd's Restart= restarts the whole node."""
    seen = workers.seen_workers()
    victim = seen[2]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert workers.exit_code() == EXIT_FAILED, workers.text()[-3000:]
    text = workers.text()
    assert "CRITICAL runtime.service: root: worker-2 failed; stopping the service" in text, text[-3000:]
    assert f"WorkerExited: worker 2 (pid {victim}) exited with signal SIGKILL" in text, text[-3000:]
    assert "INFO [worker 1] runtime.service: root stopped" in text, text[-3000:]
    assert "exiting with 1" in text


def test_a_hung_worker_is_killed_and_stops_the_service_within_the_watchdog_period(workers: Workers) -> None:
    """A worker that stops answering (SIGSTOP: no more pings) is noticed within one watchdog period:
    it is killed, the other one stops in order, the supervisor exits 1 naming it."""
    victim = workers.seen_workers()[1]["pid"]
    os.kill(victim, signal.SIGSTOP)
    assert workers.exit_code(timeout=4 * WATCHDOG_S) == EXIT_FAILED, workers.text()[-3000:]
    text = workers.text()
    critical = "CRITICAL runtime.service: root: worker-watchdog failed; stopping the service"
    assert critical in text, text[-3000:]
    assert f"WorkerUnresponsive: worker 1 (pid {victim}) sent no WATCHDOG=1" in text, text[-3000:]
    assert "INFO [worker 2] runtime.service: root stopped" in text, text[-3000:]
