"""A new user's first hour (issue 12, item 12): every command run as a real `edgeroot` process on the
wrong inputs answers with one line and exit 2, never a traceback, and leaves no files behind; one daemon
per state directory, and a second one is refused before it touches the directory or the network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from chain_lite.keys import NoteKey, generate_p256, private_pem
from chain_lite.note import SIGTYPE_ED25519
from tests.gateway_harness import Plant
from tests.helpers import LogBuilder
from tests.root_harness import RootUnderTest, free_port

EDGEROOT = [sys.executable, "-m", "edgeroot"]
GATEWAY = "88.123.99/GW-1"
Spawn = Callable[..., tuple[subprocess.Popen[bytes], Path]]


def edgeroot(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEROOT, *map(str, args)], capture_output=True, text=True, check=False, timeout=timeout
    )


def refused(result: subprocess.CompletedProcess[str], *words: str, code: int = 2) -> str:
    """Assert ``result`` exited ``code`` with one line on stderr holding ``words``, no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    for word in words:
        assert word in lines[0], output
    return lines[0]


def tree(path: Path) -> set[str]:
    """Every path under ``path`` (itself included when it exists), relative to its parent."""
    if not path.exists():
        return set()
    return {str(p.relative_to(path.parent)) for p in [path, *path.rglob("*")]}


def gateway_init(state: Path, policy: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return edgeroot(
        "gateway", "init", "--state", state, "--root", "http://127.0.0.1:9", "--id", GATEWAY,
        "--policy", policy, *extra,
    )  # fmt: skip


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.txt"
    path.write_bytes(LogBuilder().policy().to_text().encode())
    return path


# --- status before the first run -------------------------------------------------------------------------


def test_gateway_status_before_first_run_says_never_run_and_creates_no_store(
    tmp_path: Path, policy: Path
) -> None:
    """`gateway status` on a fresh state: STOPPED, never run, exit 1 (stopped is false); no gateway.db."""
    state = tmp_path / "gw"
    assert gateway_init(state, policy).returncode == 0
    before = tree(state)
    line = refused(edgeroot("gateway", "status", "--state", state), "STOPPED", "never run", code=1)
    assert GATEWAY in line
    assert tree(state) == before, "status created files"


def test_gateway_status_on_an_empty_store_left_by_an_earlier_status_is_never_run(
    tmp_path: Path, policy: Path
) -> None:
    """An empty gateway.db (what `status` used to leave) reads as a gateway that has never run."""
    state = tmp_path / "gw"
    assert gateway_init(state, policy).returncode == 0
    (state / "gateway.db").write_bytes(b"")
    refused(edgeroot("gateway", "status", "--state", state), "STOPPED", "never run", code=1)


# --- init and keygen on bad paths ------------------------------------------------------------------------


def init_commands(tmp_path: Path, policy: Path) -> dict[str, list[str | Path]]:
    """Each command that makes a directory, with everything but the directory."""
    gateway = ["--root", "http://127.0.0.1:9", "--id", GATEWAY, "--policy", policy]
    return {
        "keygen": ["keygen", "--kind", "device", "--name", "88.123.99/PUMP-1", "--out"],
        "witness init": ["witness", "init", "--name", "w.example", "--state"],
        "gateway init": ["gateway", "init", *gateway, "--state"],
        "root init": ["root", "init", "--origin", "root.example", "--prefix", "88.123", "--state"],
    }


COMMANDS = ("keygen", "witness init", "gateway init", "root init")


@pytest.mark.parametrize("command", COMMANDS)
def test_init_on_a_file_is_one_line_exit_2(tmp_path: Path, policy: Path, command: str) -> None:
    """A file where the directory should be: one line naming it, exit 2, the file untouched."""
    target = tmp_path / "taken"
    target.write_text("mine\n")
    refused(edgeroot(*init_commands(tmp_path, policy)[command], target), str(target), "not a directory")
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_init_under_a_file_is_one_line_exit_2(tmp_path: Path, policy: Path, command: str) -> None:
    """A parent that is a file: one line naming the path, exit 2, nothing created."""
    (tmp_path / "taken").write_text("mine\n")
    target = tmp_path / "taken" / "state"
    refused(edgeroot(*init_commands(tmp_path, policy)[command], target), str(target))
    assert (tmp_path / "taken").read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
@pytest.mark.parametrize("command", COMMANDS)
def test_init_in_an_unwritable_directory_is_one_line_exit_2(
    tmp_path: Path, policy: Path, command: str
) -> None:
    """A directory this user cannot write: one line saying so, exit 2, nothing created."""
    target = tmp_path / "locked"
    target.mkdir(mode=0o555)
    refused(edgeroot(*init_commands(tmp_path, policy)[command], target), str(target), "not writable")
    assert tree(target) == {"locked"}


@pytest.mark.parametrize("command", COMMANDS)
def test_init_on_an_initialised_state_is_one_line_exit_2_and_changes_nothing(
    tmp_path: Path, policy: Path, command: str
) -> None:
    """The second init (or keygen) on the same directory refuses in one line and changes no file."""
    target = tmp_path / "state"
    args = init_commands(tmp_path, policy)[command]
    first = edgeroot(*args, target)
    assert first.returncode == 0, first.stdout + first.stderr
    files = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    refused(edgeroot(*args, target), str(target), "exists")
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == files


def test_gateway_init_with_a_missing_policy_leaves_nothing_behind(tmp_path: Path) -> None:
    """A --policy that cannot be read: one line naming it, exit 2, and no half-made state directory
    (which the next init would refuse as initialised)."""
    state = tmp_path / "gw"
    refused(gateway_init(state, tmp_path / "nosuch.txt"), "nosuch.txt")
    assert not state.exists()


def test_gateway_init_with_a_missing_policy_keeps_an_existing_directory_as_it_was(tmp_path: Path) -> None:
    """Same refusal in a directory that existed: it is kept, with only what it held before."""
    state = tmp_path / "gw"
    state.mkdir()
    (state / "notes.txt").write_text("mine\n")
    refused(gateway_init(state, tmp_path / "nosuch.txt"), "nosuch.txt")
    assert tree(state) == {"gw", "gw/notes.txt"}


def test_gateway_init_with_a_root_that_is_no_url_is_refused_before_writing(
    tmp_path: Path, policy: Path
) -> None:
    """--root without http(s):// was written into a gateway.toml that `run` and `status` then refuse."""
    state = tmp_path / "gw"
    args = ["gateway", "init", "--state", state, "--root", "root.example:8470", "--id", GATEWAY]
    refused(edgeroot(*args, "--policy", policy), "--root root.example:8470", "http://")
    assert not state.exists()


def test_witness_init_with_a_bad_name_creates_no_directory(tmp_path: Path) -> None:
    """A key name with a space: one line, exit 2, no empty state directory left behind."""
    state = tmp_path / "w"
    refused(edgeroot("witness", "init", "--state", state, "--name", "bad name"), "bad name")
    assert not state.exists()


def test_keygen_that_cannot_write_the_public_half_keeps_no_private_half(tmp_path: Path) -> None:
    """keygen refusing the existing .pub must not leave the new .key it wrote first."""
    out = tmp_path / "keys"
    out.mkdir()
    (out / "88.123.99_PUMP-1.pub").write_text("someone else's\n")
    refused(edgeroot("keygen", "--kind", "device", "--name", "88.123.99/PUMP-1", "--out", out), "exists")
    assert tree(out) == {"keys", "keys/88.123.99_PUMP-1.pub"}


# --- daemons on bad state directories ---------------------------------------------------------------------


@pytest.mark.parametrize("what", ["gateway", "witness"])
def test_run_on_a_missing_state_is_one_line_exit_2_and_creates_nothing(tmp_path: Path, what: str) -> None:
    """`run` on a directory that does not exist says so in one line (exit 2) and does not create it."""
    state = tmp_path / "nosuch"
    refused(edgeroot(what, "run", "--state", state), str(state))
    assert not state.exists()


def test_gateway_run_with_a_log_key_as_its_key_is_one_line_exit_2(tmp_path: Path, policy: Path) -> None:
    """A gateway.key of the wrong kind (a log's note key) is named in one line, exit 2."""
    state = tmp_path / "gw"
    assert gateway_init(state, policy).returncode == 0
    (state / "gateway.key").write_text(NoteKey.generate("log.example", SIGTYPE_ED25519).skey() + "\n")
    refused(edgeroot("gateway", "run", "--state", state), "gateway.key")
    assert not (state / "gateway.db").exists()


def test_bridge_modbus_with_a_missing_key_is_one_line_exit_2(tmp_path: Path) -> None:
    """A modbus bridge whose key file is missing names it in one line, exit 2."""
    config = tmp_path / "bridge.toml"
    config.write_text(
        'mode = "modbus"\nbridge_id = "88.123.99/BRIDGE-1"\nkey = "nosuch.key"\n'
        '[[register]]\ndevice = "88.123.99/PUMP-1"\nunit = 1\naddress = 0\nname = "flow"\n'
    )
    refused(edgeroot("bridge", "run", "--port", "/dev/nonexistent", "--config", config), "nosuch.key")


def test_root_init_on_an_unreachable_database_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """libpq's two-line refusal is one line; the state directory made for it is gone again."""
    state = tmp_path / "root"
    args = ["root", "init", "--state", state, "--origin", "root.example", "--prefix", "88.123"]
    refused(edgeroot(*args, "--database", "postgresql://nobody@127.0.0.1:1/none"), "cannot open database")
    assert not state.exists()


NOT_SQLITE = b"not a database, whatever its name says" * 4


@pytest.mark.parametrize(
    "command",
    [["status"], ["run"], ["device", "reset-counter", "88.123.99/PUMP-1", "--to", "5"]],
    ids=["status", "run", "reset-counter"],
)
def test_gateway_on_a_store_that_is_not_sqlite_is_one_line_exit_2(
    tmp_path: Path, policy: Path, command: list[str]
) -> None:
    """A gateway.db that is not a SQLite file is named in one line, exit 2, and left as it was."""
    state = tmp_path / "gw"
    assert gateway_init(state, policy).returncode == 0
    (state / "gateway.db").write_bytes(NOT_SQLITE)
    refused(edgeroot("gateway", *command, "--state", state), "gateway.db", "not a database")
    assert (state / "gateway.db").read_bytes() == NOT_SQLITE


def test_resolve_with_a_file_as_config_dir_is_one_line_exit_2(tmp_path: Path, root: RootUnderTest) -> None:
    """--config-dir naming a file: the pin cannot be kept, said in one line naming it (exit 2)."""
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    result = edgeroot(
        "resolve", "88.123/NOBODY", "--root", root.url, "--verify", "--policy", root.policy_path,
        "--config-dir", taken,
    )  # fmt: skip
    refused(result, "cannot keep the pin", str(taken))
    assert taken.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("where", "words"),
    [
        (["--mqtt", "127.0.0.1:9"], ["--mqtt 127.0.0.1:9", "mqtt://"]),
        (["--coap", "127.0.0.1:9"], ["--coap 127.0.0.1:9", "coap://"]),
        (["--serial", "/dev/edgeroot-no-such-port"], ["/dev/edgeroot-no-such-port"]),
    ],
    ids=["mqtt-without-scheme", "coap-without-scheme", "missing-serial-port"],
)
def test_device_simulate_on_a_bad_destination_is_one_line_exit_2(
    tmp_path: Path, where: list[str], words: list[str]
) -> None:
    """A URL without its scheme (it would go to the default broker) or a missing serial port: exit 2."""
    key = tmp_path / "device.key"
    key.write_bytes(private_pem(generate_p256()))
    args = ["device", "simulate", *where, "--id", "88.123.99/PUMP-1", "--key", key, "--count", "1"]
    refused(edgeroot(*args, timeout=30), *words)


# --- one daemon per state directory ------------------------------------------------------------------------


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout} s: {log.read_text()}"
        time.sleep(0.05)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `edgeroot ARGS` in the background, its output in a log file; stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str | Path) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"daemon-{len(procs)}.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen([*EDGEROOT, *map(str, args)], stdout=out, stderr=out))
        return procs[-1], log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


def test_second_gateway_run_is_refused_naming_the_pid_and_never_knocks_the_first_off(plant: Plant) -> None:
    """A second `gateway run` on the same state exits 2 naming the running one's PID, before it
    connects anywhere: the first stays connected to the broker, with no reconnect in its log."""
    plant.start()
    assert plant.proc is not None
    log = plant.system.daemons["gateway"].log
    wait_for_line(log, "MQTT connected", plant.proc)
    second = edgeroot("gateway", "run", "--state", plant.state)
    refused(second, str(plant.state), f"PID {plant.proc.pid}")
    assert "MQTT" not in second.stdout, second.stdout
    health = httpx.get(f"{plant.http}/healthz", timeout=5).json()
    assert health["connectors"]["MqttConnector[0]"] == "connected", health
    assert plant.proc.poll() is None
    text = log.read_text()
    assert text.count("MQTT connected") == 1 and "connection lost" not in text, text
    assert plant.stop() == 0


def test_second_witness_run_is_refused_naming_the_pid(tmp_path: Path, spawn: Spawn) -> None:
    """A second `witness run` on the same state (even on another port) exits 2 naming the first's PID."""
    state = tmp_path / "w"
    assert edgeroot("witness", "init", "--state", state, "--name", "w.example").returncode == 0
    first, log = spawn("witness", "run", "--state", state, "--listen", f"127.0.0.1:{free_port()}")
    wait_for_line(log, "Uvicorn running", first)
    second = edgeroot("witness", "run", "--state", state, "--listen", f"127.0.0.1:{free_port()}", timeout=30)
    refused(second, str(state), f"PID {first.pid}")
    assert first.poll() is None


def test_second_bridge_on_the_same_state_is_refused_naming_the_pid(tmp_path: Path, spawn: Spawn) -> None:
    """Two bridges with one --state (one port's bridge, edgeroot-bridge@.service): the second exits 2."""
    state = tmp_path / "bridge"
    state.mkdir()
    port = tmp_path / "no-such-tty"
    first, log = spawn("bridge", "run", "--port", port, "--state", state)
    wait_for_line(log, "not available", first)
    second = edgeroot("bridge", "run", "--port", port, "--state", state, timeout=30)
    refused(second, str(state), f"PID {first.pid}")
    assert first.poll() is None


def test_state_lock_is_released_when_the_holder_is_killed(tmp_path: Path, spawn: Spawn) -> None:
    """SIGKILL leaves the PID in the lock file, but the lock goes with the process: the next run starts."""
    state = tmp_path / "bridge"
    state.mkdir()
    port = tmp_path / "no-such-tty"
    first, log = spawn("bridge", "run", "--port", port, "--state", state)
    wait_for_line(log, "not available", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    again, log = spawn("bridge", "run", "--port", port, "--state", state)
    wait_for_line(log, "not available", again)
    assert (state / ".lock").read_text().strip() == str(again.pid)
