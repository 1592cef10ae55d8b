"""The systemd units pass `systemd-analyze verify` (where the command exists), say what they must, and the
daemons they start really speak sd_notify: READY, WATCHDOG, STATUS, RELOADING, STOPPING."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edgeroot.system import free_port
from tests.notify_harness import NotifySocket
from tests.test_root_cli import EDGEROOT, _wait_http, init_witness_and_root

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
SERVICES = {
    "edgeroot-root.service": "root run",
    "edgeroot-witness.service": "witness run",
    "edgeroot-gateway.service": "gateway run",
    "edgeroot-bridge@.service": "bridge run",
}
# What every unit must say (issue 6): notify with a watchdog, restart, state and configuration directories,
# reload, a dedicated user, hardening.
REQUIRED = (
    "Type=notify", "Restart=on-failure", "User=edgeroot", "Group=edgeroot", "ConfigurationDirectory=edgeroot",
    "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
    "PrivateTmp=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
    "Wants=network-online.target",
)  # fmt: skip


def _lines(name: str) -> list[str]:
    return (UNITS / name).read_text().splitlines()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_unit_says_what_it_must(name: str) -> None:
    lines = _lines(name)
    for line in REQUIRED:
        assert line in lines, f"{name}: {line}"
    assert any(line.startswith("WatchdogSec=") for line in lines), name
    assert any(line.startswith("StateDirectory=edgeroot/") for line in lines), name
    after = next(line for line in lines if line.startswith("After="))
    assert "network-online.target" in after, name
    start = next(line for line in lines if line.startswith("ExecStart="))
    assert start.startswith(f"ExecStart=/usr/bin/edgeroot {SERVICES[name]} "), start
    assert "${STATE_DIRECTORY}" in start and "${CONFIGURATION_DIRECTORY}/" in start, start


def test_gateway_and_bridge_start_after_the_broker() -> None:
    for name in ("edgeroot-gateway.service", "edgeroot-bridge@.service"):
        after = next(line for line in _lines(name) if line.startswith("After="))
        assert "mosquitto.service" in after, name


def test_bridge_unit_can_reach_its_port_and_nothing_else() -> None:
    lines = _lines("edgeroot-bridge@.service")
    wanted = ("SupplementaryGroups=dialout", "DevicePolicy=closed", "DeviceAllow=/dev/%I rw")
    wanted += ("BindsTo=dev-%i.device",)
    for line in wanted:
        assert line in lines, line
    rule = (UNITS / "99-edgeroot-bridge.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="edgeroot-bridge@%k.service"' in rule


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_unit_verifies(name: str, tmp_path: Path) -> None:
    """No unknown keys, no bad values (the template instantiated for ttyUSB0)."""
    edgeroot = Path(sys.executable).with_name("edgeroot")
    text = (UNITS / name).read_text().replace("/usr/bin/edgeroot", str(edgeroot))
    unit = tmp_path / name.replace("@.", "@ttyUSB0.")
    unit.write_text(text)
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 and problems == [], problems


def test_unit_verify_catches_a_mistake(tmp_path: Path) -> None:
    """The verify test above can fail: an unknown key is reported."""
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed here")
    edgeroot = Path(sys.executable).with_name("edgeroot")
    text = (UNITS / "edgeroot-root.service").read_text().replace("/usr/bin/edgeroot", str(edgeroot))
    unit = tmp_path / "edgeroot-root.service"
    unit.write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert "WatchdogSecs" in result.stdout + result.stderr


# --- the daemons over a real notify socket (the gateway's own test is in test_gateway_e2e.py) ------------


@pytest.fixture
def root_and_witness(tmp_path: Path) -> dict[str, object]:
    """Initialised witness and root state directories, not yet running."""
    wport, rport = free_port(), free_port()
    r = init_witness_and_root(tmp_path, "notify", wport)
    (tmp_path / "witness-logs.txt").write_text(r["log_vkey"] + "\n")  # the unit's --logs file
    return {"wport": wport, "rport": rport, "tmp": tmp_path, "log_vkey": r["log_vkey"]}


def _in_order(text: str) -> bool:
    """READY=1, then WATCHDOG=1, then RELOADING=1, then STOPPING=1 (first occurrences)."""
    positions = [text.find(field) for field in ("READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1")]
    return -1 not in positions and positions == sorted(positions)


def _run(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*EDGEROOT, *args], env=env, stdout=out, stderr=out)


def test_root_and_witness_speak_sd_notify(root_and_witness: dict[str, object]) -> None:
    """READY after the socket listens, WATCHDOG with STATUS while running, RELOADING/READY on SIGHUP (the
    reload is applied), STOPPING on SIGTERM, exit 0; the witness reads its logs from --logs as the unit
    says."""
    tmp = Path(str(root_and_witness["tmp"]))
    wport, rport = root_and_witness["wport"], root_and_witness["rport"]
    wsock, rsock = NotifySocket(tmp / "w"), NotifySocket(tmp / "root")
    witness = _run(
        ["witness", "run", "--state", str(tmp / "w"), "--logs", str(tmp / "witness-logs.txt"),
         "--listen", f"127.0.0.1:{wport}"],
        wsock.env(watchdog_s=1.0), tmp / "witness.log",
    )  # fmt: skip
    root = _run(
        ["root", "run", "--state", str(tmp / "root"), "--config", str(tmp / "root" / "root.toml"),
         "--listen", f"127.0.0.1:{rport}"],
        rsock.env(watchdog_s=1.0), tmp / "root.log",
    )  # fmt: skip
    try:
        wsock.wait_for("READY=1")
        ready = rsock.wait_for("READY=1")
        # READY=1 means the port answers.
        assert httpx.get(f"http://127.0.0.1:{rport}/healthz", timeout=5).status_code in (200, 503)
        assert any(f.startswith("STATUS=") for f in ready.split("\n"))
        rsock.wait_for("WATCHDOG=1", timeout=5)
        wsock.wait_for("WATCHDOG=1", timeout=5)
        _wait_http(f"http://127.0.0.1:{rport}/healthz", root)
        root.send_signal(signal.SIGHUP)
        witness.send_signal(signal.SIGHUP)
        rsock.wait_for("RELOADING=1", timeout=5)
        wsock.wait_for("RELOADING=1", timeout=5)
        rsock.collect(1.5)
        wsock.collect(0.2)
        assert root.poll() is None and witness.poll() is None, "SIGHUP must not stop a daemon"
        status = [m for m in rsock.messages if "WATCHDOG=1" in m][-1]
        assert "STATUS=sequencing; log size " in status, status
        wstatus = [m for m in wsock.messages if "WATCHDOG=1" in m][-1]
        assert "STATUS=following 1 log(s)" in wstatus, wstatus
    finally:
        root.terminate()
        witness.terminate()
        rcode, wcode = root.wait(timeout=30), witness.wait(timeout=30)
    rsock.collect(0.3)
    wsock.collect(0.3)
    rsock.close()
    wsock.close()
    for sock, code, log in ((rsock, rcode, "root.log"), (wsock, wcode, "witness.log")):
        text = sock.text
        assert code == 0, (tmp / log).read_text()[-2000:]
        assert _in_order(text), text
        assert "MONOTONIC_USEC=" in text
        assert "reloaded: " in (tmp / log).read_text()


def test_bridge_speaks_sd_notify(tmp_path: Path) -> None:
    """The bridge: READY even while its port is missing (STATUS says so), WATCHDOG, RELOADING on SIGHUP,
    STOPPING on SIGTERM, exit 0."""
    sock = NotifySocket(tmp_path)
    port = tmp_path / "no-such-tty"
    bridge = _run(
        ["bridge", "run", "--port", str(port), "--gateway", f"coap://127.0.0.1:{free_port()}/readings"],
        sock.env(watchdog_s=1.0), tmp_path / "bridge.log",
    )  # fmt: skip
    try:
        sock.wait_for("READY=1")
        sock.wait_for("WATCHDOG=1", timeout=5)
        bridge.send_signal(signal.SIGHUP)
        sock.wait_for("RELOADING=1", timeout=5)
        sock.collect(1.0)
        assert bridge.poll() is None
    finally:
        bridge.terminate()
        code = bridge.wait(timeout=30)
    sock.collect(0.3)
    sock.close()
    assert code == 0, (tmp_path / "bridge.log").read_text()[-2000:]
    text = sock.text
    assert f"waiting for {port}" in text
    assert _in_order(text), text
