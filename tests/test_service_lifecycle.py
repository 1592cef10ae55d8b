"""The one Service lifecycle (runtime/service.py): a failed task stops the service loudly with a non-zero
exit after the ordered shutdown; the deadline cancels a hung step; reloads; sd_notify datagrams on a real
socket; the ingest door never leaves a submitter waiting; and, as real processes, a daemon whose inner
task dies exits non-zero within the watchdog interval, and a second SIGTERM exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from chain_lite import envelope
from chain_lite.cose import CoseSigner
from chain_lite.keys import generate_p256
from edge.errors import IngestStopped
from edge.ingest import Ingest
from edge.intake import Outcome, Submission
from firmware_bridge.frames import FrameType, encode_frame
from runtime.sdnotify import Notifier
from runtime.service import EXIT_FAILED, EXIT_OK, Service, Step, run_service
from runtime.tomlconfig import ConfigError
from tests.gateway_harness import EDGEROOT, Plant
from tests.notify_harness import NotifySocket
from tests.root_harness import free_port
from tests.serial_harness import pty, write_all

REPO = Path(__file__).resolve().parent.parent
SILENT = Notifier("")  # no notify socket: every send is a no-op


def _critical(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.CRITICAL and r.name == "runtime.service"]


# --- the Service, in process ------------------------------------------------------------------------------


def test_a_task_that_raises_stops_the_service_loudly_after_the_steps_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task's exception: one CRITICAL line with its traceback, every shutdown step in its declared
    order, the stragglers cancelled, exit code 1."""
    caplog.set_level(logging.INFO)
    ran: list[str] = []
    idle_cancelled = asyncio.Event()

    async def record(name: str) -> None:
        ran.append(name)

    async def idle() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            idle_cancelled.set()

    async def main() -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.shutdown_order(*(Step(n, lambda n=n: record(n)) for n in ("intake", "drain", "close")))  # type: ignore[misc]
            serving = asyncio.Event()

            async def crasher() -> None:
                await serving.wait()
                raise RuntimeError("boom")

            service.spawn("crasher", crasher())
            service.spawn("idle", idle())
            serving.set()
            await service.serve()

    assert run_service(main) == EXIT_FAILED
    assert ran == ["intake", "drain", "close"]
    assert idle_cancelled.is_set()
    [line] = _critical(caplog)[:1]
    assert "crasher failed" in line.getMessage() and line.exc_info is not None
    assert isinstance(line.exc_info[1], RuntimeError)


def test_a_forever_task_that_returns_is_a_failure_but_a_one_shot_task_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``forever`` (the default): returning while the service runs stops it with exit 1; a task spawned
    ``forever=False`` may finish."""

    async def quits(forever: bool) -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.spawn("quitter", asyncio.sleep(0), forever=forever)
            if not forever:
                service.spawn("stopper", _stop_soon(service), forever=False)
            await service.serve()

    assert run_service(lambda: quits(True)) == EXIT_FAILED
    assert "task quitter returned while the service was running" in _critical(caplog)[0].getMessage()
    caplog.clear()
    assert run_service(lambda: quits(False)) == EXIT_OK
    assert _critical(caplog) == []


async def _stop_soon(service: Service) -> None:
    await asyncio.sleep(0)
    service.request_stop()


def test_first_sigterm_stops_cleanly_with_exit_0(caplog: pytest.LogCaptureFixture) -> None:
    """The first SIGTERM is a graceful stop: the steps run, exit code 0."""
    caplog.set_level(logging.INFO)
    ran: list[str] = []

    async def sigterm_when_serving(service: Service) -> None:
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the service's loop, not by this process's default

    async def main() -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.shutdown_order(Step("only", lambda: asyncio.sleep(0, ran.append("only"))))
            service.spawn("signaller", sigterm_when_serving(service), forever=False)
            await service.serve()

    assert run_service(main) == EXIT_OK
    assert ran == ["only"]
    assert any("SIGTERM: stopping within" in r.getMessage() for r in caplog.records)


def test_a_stop_asked_during_the_start_is_a_clean_stop_once_the_start_is_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM while the daemon is still starting: the start finishes, READY=1 is never sent, the steps
    run, exit 0 (the control task ending early is no failure)."""
    sock = NotifySocket(tmp_path)
    ran: list[str] = []

    async def main() -> None:
        async with Service("svc", notifier=Notifier(sock.path)) as service:
            service.shutdown_order(Step("only", lambda: asyncio.sleep(0, ran.append("only"))))
            service.request_stop()  # what the first SIGTERM does
            await asyncio.sleep(0.2)  # the rest of a slow start (the control task meanwhile sees the stop)
            await service.serve()

    assert _run_and_hear(sock, main) == EXIT_OK
    assert ran == ["only"] and _critical(caplog) == []
    assert "READY=1" not in sock.text and "STOPPING=1" in sock.text


def test_the_deadline_cancels_a_hung_step_and_skips_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """One deadline for the whole shutdown: the hung step is cancelled when it passes, the steps after it
    are skipped (and named), the exit code is 1."""
    ran: list[str] = []
    hung_cancelled = asyncio.Event()
    times: dict[str, float] = {}

    async def hangs() -> None:
        times["stop"] = time.monotonic()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            hung_cancelled.set()
            raise

    async def main() -> None:
        async with Service("svc", notifier=SILENT, stop_deadline_s=0.5) as service:
            service.shutdown_order(
                Step("first", lambda: asyncio.sleep(0, ran.append("first"))),
                Step("hangs", hangs),
                Step("after", lambda: asyncio.sleep(0, ran.append("after"))),
            )
            service.spawn("stopper", _stop_soon(service), forever=False)
            await service.serve()

    assert run_service(main) == EXIT_FAILED
    took = time.monotonic() - times["stop"]
    assert ran == ["first"] and hung_cancelled.is_set()
    assert 0.3 < took < 3.0, took
    message = next(r.getMessage() for r in caplog.records if "overran" in r.getMessage())
    assert "'hangs' overran the 0.5 s deadline" in message and "skipped: after" in message


def test_a_failing_step_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    """A step that raises does not stop the shutdown: it is logged with its traceback, the next step
    runs, and the exit code says the shutdown was incomplete (1)."""
    ran: list[str] = []

    async def fails() -> None:
        raise OSError("disk gone")

    async def main() -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.shutdown_order(
                Step("fails", fails), Step("next", lambda: asyncio.sleep(0, ran.append("next")))
            )
            service.spawn("stopper", _stop_soon(service), forever=False)
            await service.serve()

    assert run_service(main) == EXIT_FAILED
    assert ran == ["next"]
    record = next(r for r in caplog.records if "shutdown step 'fails' failed" in r.getMessage())
    assert record.exc_info is not None and isinstance(record.exc_info[1], OSError)


def test_a_task_dying_during_the_start_cuts_a_stuck_start_short(caplog: pytest.LogCaptureFixture) -> None:
    """A start waiting for what a dead task would have provided is cancelled: the steps run, exit 1,
    never a hang."""
    ran: list[str] = []

    async def dies() -> None:
        raise RuntimeError("could not bind")

    async def main() -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.shutdown_order(Step("cleanup", lambda: asyncio.sleep(0, ran.append("cleanup"))))
            service.spawn("listener", dies())
            await asyncio.Event().wait()  # e.g. "wait until the listener listens"
            await service.serve()

    started = time.monotonic()
    assert run_service(main) == EXIT_FAILED
    assert time.monotonic() - started < 5
    assert ran == ["cleanup"]
    assert "listener failed" in _critical(caplog)[0].getMessage()


def test_a_start_that_raises_is_a_failure_after_the_steps(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in the start itself: logged at CRITICAL with its traceback, steps run, exit 1."""
    ran: list[str] = []

    async def main() -> None:
        async with Service("svc", notifier=SILENT) as service:
            service.shutdown_order(Step("cleanup", lambda: asyncio.sleep(0, ran.append("cleanup"))))
            raise OSError("port in use")

    assert run_service(main) == EXIT_FAILED
    assert ran == ["cleanup"]
    [record] = _critical(caplog)[:1]
    assert "the start failed" in record.getMessage() and isinstance(record.exc_info[1], OSError)  # type: ignore[index]


def _count(sock: NotifySocket, field: str) -> int:
    return sum(field in m.split("\n") for m in sock.messages)


async def _until(sock: NotifySocket, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Collect datagrams (in a thread: the loop under test keeps running) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen; heard {sock.messages}"
        await asyncio.to_thread(sock.collect, 0.05)


def _run_and_hear(sock: NotifySocket, main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """``run_service(main)``; then the socket has heard everything and is closed."""
    try:
        code = run_service(main)
        sock.collect(0.1)
    finally:
        sock.close()
    return code


def test_notify_datagrams_and_reloads_over_a_real_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """READY=1 with STATUS=, WATCHDOG=1 with a fresh STATUS=, RELOADING=1 (with MONOTONIC_USEC=) then
    READY=1 around each SIGHUP: a good reload is applied, a bad file (ConfigError) is refused without a
    traceback and a broken reload is logged with one, both keeping the running configuration; STOPPING=1
    last."""
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sock = NotifySocket(tmp_path)
    config = {"version": "v1", "next": "v2"}

    def reload() -> str:
        if config["next"] == "bad file":
            raise ConfigError(tmp_path / "svc.toml", "port", "must be an integer")
        if config["next"] == "bug":
            raise RuntimeError("reload has a bug")
        config["version"] = config["next"]
        return f"now {config['version']}"

    async def driver(service: Service) -> None:
        await _until(sock, lambda: _count(sock, "WATCHDOG=1") >= 2, "two watchdog pings")
        for step, (nxt, readies) in enumerate((("v2", 2), ("bad file", 3), ("bug", 4))):
            config["next"] = nxt
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(sock, lambda r=readies: _count(sock, "READY=1") >= r, f"reload {step}")  # type: ignore[misc]
        await _until(sock, lambda: "STATUS=config v2" in sock.messages[-1], "a ping after the reloads")
        service.request_stop()

    async def main() -> None:
        notifier = Notifier(sock.path)
        async with Service("svc", status=lambda: f"config {config['version']}", reload=reload,
                           notifier=notifier) as service:  # fmt: skip
            service.spawn("driver", driver(service), forever=False)
            await service.serve()

    assert _run_and_hear(sock, main) == EXIT_OK
    text = sock.text
    first = [text.index(f) for f in ("READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1")]
    assert first == sorted(first), text
    assert sock.messages[0].split("\n") == ["READY=1", "STATUS=config v1"]
    assert "WATCHDOG=1\nSTATUS=config v1" in sock.messages
    reloading = [m for m in sock.messages if "RELOADING=1" in m]
    assert len(reloading) == 3 and all("MONOTONIC_USEC=" in m for m in reloading)
    assert "READY=1\nSTATUS=config v2" in sock.messages
    assert sock.messages[-1].startswith("STOPPING=1")
    assert config["version"] == "v2"
    logs = {r.getMessage(): r for r in caplog.records}
    assert "svc reloaded: now v2" in logs
    refused = next(r for m, r in logs.items() if "reload refused, keeping the running configuration" in m)
    assert refused.levelno == logging.ERROR and refused.exc_info is None and "port" in refused.getMessage()
    broken = next(r for m, r in logs.items() if "reload failed, keeping the running configuration" in m)
    assert broken.levelno == logging.ERROR and broken.exc_info is not None


def test_a_status_line_that_raises_never_stops_the_service(tmp_path: Path) -> None:
    """STATUS= says the status is unavailable; the service runs on and stops cleanly."""
    sock = NotifySocket(tmp_path)

    def status() -> str:
        raise KeyError("gone")

    async def main() -> None:
        async with Service("svc", status=status, notifier=Notifier(sock.path)) as service:
            service.spawn("stopper", _stop_soon(service), forever=False)
            await service.serve()

    assert _run_and_hear(sock, main) == EXIT_OK
    assert "STATUS=status unavailable: 'gone'" in sock.messages[0]


# --- the ingest door: never a submitter waiting forever ------------------------------------------------


class StallingWriter:
    """The writer thread's part of Ingest: ``process`` waits until released, then answers ``reply``."""

    store_full = False

    def __init__(self, reply: Callable[[list[Submission]], list[Outcome]]) -> None:
        self.reply = reply
        self.entered = threading.Event()
        self.release = threading.Event()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def process(self, subs: list[Submission]) -> list[Outcome]:
        self.entered.set()
        assert self.release.wait(10), "the test never released the writer"
        return self.reply(subs)


def _stored(subs: list[Submission]) -> list[Outcome]:
    return [Outcome(accepted=True, durable=True) for _ in subs]


def test_when_the_ingest_loop_crashes_every_waiting_submitter_gets_an_error_at_once() -> None:
    """The loop dies on a malformed writer answer while one submission is in hand, two are queued and
    the rest wait for room: every one raises IngestStopped promptly, later ones at once; drain returns."""

    async def scenario() -> list[BaseException | Outcome]:
        writer = StallingWriter(lambda subs: [])  # a wrong number of outcomes: the loop's zip raises
        ingest = Ingest(writer, max_batch=1, max_pending=2)  # type: ignore[arg-type]
        runner = asyncio.create_task(ingest.run())
        submitters = [asyncio.create_task(ingest.submit(b"r%d" % i, "t")) for i in range(10)]
        await asyncio.to_thread(writer.entered.wait, 5)
        writer.release.set()
        _, pending = await asyncio.wait(submitters, timeout=2)
        assert not pending, f"{len(pending)} submitter(s) still waiting after the ingest loop died"
        with pytest.raises(ValueError, match="zip"):
            await runner
        with pytest.raises(IngestStopped):
            await ingest.submit(b"later", "t")
        await asyncio.wait_for(ingest.drain(), 1)
        await ingest.close()
        return [t.exception() or t.result() for t in submitters]

    results = asyncio.run(scenario())
    assert all(isinstance(r, IngestStopped) for r in results), results


def test_drain_waits_for_the_batch_in_hand_by_event_and_logs_what_a_deadline_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """drain returns exactly when the queued and in-hand submissions are stored (no polling); cut short
    by the shutdown deadline, it says how many were not stored."""

    async def scenario() -> None:
        writer = StallingWriter(_stored)
        ingest = Ingest(writer, max_batch=2, max_pending=10)  # type: ignore[arg-type]
        runner = asyncio.create_task(ingest.run())
        submitters = [asyncio.create_task(ingest.submit(b"r%d" % i, "t")) for i in range(5)]
        await asyncio.to_thread(writer.entered.wait, 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ingest.drain(), 0.2)
        assert "drain cut short: 5 submission(s) not stored" in caplog.text
        drained = asyncio.create_task(ingest.drain())
        await asyncio.sleep(0)
        assert not drained.done()
        writer.release.set()
        await asyncio.wait_for(drained, 5)
        assert all(t.done() and t.result().accepted for t in submitters)
        assert (await ingest.submit(b"late", "t")).reason == "shutting-down"
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await ingest.close()

    asyncio.run(scenario())


# --- real daemons, as processes ----------------------------------------------------------------------


WATCHDOG_S = 5.0
"""The watchdog interval the daemons under test get: a crash must end the process well inside it."""


def _spawn(
    args: list[str], env: dict[str, str], log: Path, *, kill_task: str | None = None
) -> subprocess.Popen[bytes]:
    """``edgeroot ARGS``; with ``kill_task``, under tests/fault_injection.py (that task dies on SIGUSR1)."""
    command = [sys.executable, "-m", "tests.fault_injection", kill_task] if kill_task else EDGEROOT
    with log.open("ab") as out:
        return subprocess.Popen([*command, *args], env=env, stdout=out, stderr=out, cwd=REPO)


def _exit_within(proc: subprocess.Popen[bytes], seconds: float, log: Path) -> tuple[int, float]:
    started = time.monotonic()
    try:
        code = proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {seconds} s later:\n{log.read_text()[-3000:]}") from None
    return code, time.monotonic() - started


def _kill_task_and_see_it_die_loudly(args: list[str], task: str, sock: NotifySocket, log: Path) -> None:
    """Start ``edgeroot ARGS`` with ``task`` armed to die, wait for READY=1, kill the task: the process
    must exit 1 inside the watchdog interval, after one CRITICAL line with the traceback and STOPPING=1."""
    proc = _spawn(args, sock.env(WATCHDOG_S), log, kill_task=task)
    try:
        sock.wait_for("READY=1", timeout=30)
        proc.send_signal(signal.SIGUSR1)
        code, took = _exit_within(proc, WATCHDOG_S, log)
        sock.collect(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    text = log.read_text()
    assert code == EXIT_FAILED, text[-3000:]
    service = args[0]
    assert f"CRITICAL runtime.service: {service}: {task} failed; stopping the service" in text, text[-3000:]
    assert "Traceback" in text and "InjectedFault" in text, text[-3000:]
    assert text.count("CRITICAL") == 1, text[-3000:]
    assert f"exiting with {EXIT_FAILED}" in text, text[-3000:]
    assert "STOPPING=1" in sock.text
    assert took < WATCHDOG_S


def test_bridge_exits_non_zero_within_the_watchdog_interval_when_its_serial_task_dies(tmp_path: Path) -> None:
    """The bridge's serial task dies: one CRITICAL line with the traceback, the ordered shutdown
    (STOPPING=1), exit code 1, all well inside the watchdog interval (systemd restarts it at once instead
    of waiting for missed pings)."""
    sock = NotifySocket(tmp_path)
    log = tmp_path / "bridge.log"
    args = ["bridge", "run", "--port", str(tmp_path / "no-such-tty"),
            "--gateway", f"coap://127.0.0.1:{free_port()}/readings"]  # fmt: skip
    _kill_task_and_see_it_die_loudly(args, "serial", sock, log)


def test_gateway_exits_non_zero_within_the_watchdog_interval_when_its_ingest_task_dies(
    plant: Plant, tmp_path: Path
) -> None:
    """The gateway's ingest task dies: the service stops loudly in order (intake stopped, drain returns
    at once because the queue was failed, block closed, store closed) and exits 1 inside the watchdog
    interval: a crashed ingest loop no longer leaves the gateway up with every submitter waiting."""
    log = tmp_path / "gateway-crash.log"
    _kill_task_and_see_it_die_loudly(["gateway", "run", "--state", str(plant.state)], "ingest",
                                     NotifySocket(tmp_path), log)  # fmt: skip
    steps = "stop intake → drain → close the open block → stop the local HTTP → close the store"
    assert f"gateway stopping: {steps}" in log.read_text()


def test_a_second_sigterm_exits_at_once_while_the_first_shutdown_waits(tmp_path: Path) -> None:
    """The bridge holds a reading whose verdict will not come (the gateway never answers): the first
    SIGTERM's shutdown waits for it (up to the forwarder's 10 s timeout); a second SIGTERM ends the
    process at once with 128 + SIGTERM."""
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a CoAP server that never answers
    gateway.bind(("127.0.0.1", 0))
    gateway.settimeout(10)
    master, port = pty()
    sock = NotifySocket(tmp_path)
    log = tmp_path / "bridge.log"
    bridge = _spawn(
        ["bridge", "run", "--port", port, "--gateway", f"coap://127.0.0.1:{gateway.getsockname()[1]}/readings"],
        sock.env(WATCHDOG_S), log,
    )  # fmt: skip
    try:
        sock.wait_for("READY=1")
        _until_status(sock, f"STATUS=serving {port}")
        device = CoseSigner("88.123.99/PUMP-0042", generate_p256())
        reading = envelope.encode_envelope(device, [{envelope.N: "flow", envelope.V: 1.0}], 1)
        write_all(master, encode_frame(FrameType.READING, reading))
        gateway.recv(4096)  # the reading is in hand: forwarded, its verdict awaited
        bridge.send_signal(signal.SIGTERM)
        sock.wait_for("STOPPING=1", timeout=5)
        assert bridge.poll() is None, "the graceful stop should still be waiting for the verdict"
        bridge.send_signal(signal.SIGTERM)
        code, took = _exit_within(bridge, 5, log)
    finally:
        if bridge.poll() is None:
            bridge.kill()
        sock.close()
        gateway.close()
        os.close(master)
    assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert took < 2.0, took
    assert "second stop signal (SIGTERM): exiting at once" in log.read_text()


def _until_status(sock: NotifySocket, prefix: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(f.startswith(prefix) for m in sock.messages for f in m.split("\n")):
        assert time.monotonic() < deadline, f"no {prefix} within {timeout} s; heard {sock.messages}"
        sock.collect(0.1)


def test_a_root_that_cannot_bind_exits_1_instead_of_hanging(tmp_path: Path) -> None:
    """uvicorn cannot listen (the port is taken): the witness's http task fails, the start is cut short,
    exit code 1, READY=1 never sent."""
    from tests.test_root_cli import cli

    cli("witness", "init", "--state", tmp_path / "w", "--name", "w.bind", "--json")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    sock = NotifySocket(tmp_path)
    log = tmp_path / "witness.log"
    witness = _spawn(["witness", "run", "--state", str(tmp_path / "w"), "--listen",
                      f"127.0.0.1:{taken.getsockname()[1]}"], sock.env(WATCHDOG_S), log)  # fmt: skip
    try:
        code, _ = _exit_within(witness, 120, log)  # a hang is forever; a loaded machine starts Python slowly
        sock.collect(0.2)
    finally:
        taken.close()
        sock.close()
    assert code == EXIT_FAILED, log.read_text()[-3000:]
    assert "witness: http failed; stopping the service" in log.read_text()
    assert "READY=1" not in sock.text
