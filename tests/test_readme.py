"""The README's tour runs as written: every ```sh block, in order, in an empty directory.

Each command is one line (``\\``-continued lines joined) run by bash; it must exit 0. The ports the
README names are replaced by free ones, so the test runs beside anything else on the machine. A line
ending in ``&`` is a service: it is started in its own process group, the next line waits (with a
deadline) until it answers, and every service is stopped at the end. ``make demo``/``make test`` are
not run (they are this test's own callers); ``curl`` lines run when curl is installed and are skipped
saying so otherwise; lines naming a serial device (``/dev/tty...``) need hardware and are skipped
saying so.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.root_harness import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
README_PORTS = (8470, 8471, 8480, 1883, 5683)
"""Every port the README uses (root, witness, gateway API, MQTT broker, CoAP)."""
SERVICE_DEADLINE_S = 60.0
COMMAND_TIMEOUT_S = 120.0


def sh_commands(markdown: str) -> list[str]:
    """The commands of every ```sh block in order, continuation lines joined, comment lines dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.endswith("\\"):
                pending = line[:-1]
                continue
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def words(command: str) -> list[str]:
    """The command's words as bash reads them (trailing comment dropped)."""
    return shlex.split(command, comments=True)


def test_sh_commands_joins_continuations_and_drops_comments() -> None:
    """The extractor sees a continued command as one line and skips comment lines."""
    text = "x\n```sh\n# note\na --b \\\n    c   # why\nd &\n```\n```text\nnot run\n```\n"
    assert sh_commands(text) == ["a --b     c   # why", "d &"]
    assert words("d &  # a service") == ["d", "&"]


@dataclass
class Tour:
    """The temporary directory the tour runs in, its environment, ports and services."""

    root: Path
    ports: dict[int, int]
    env: dict[str, str]
    services: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def substitute(self, command: str) -> str:
        for readme_port, port in self.ports.items():
            command = re.sub(rf"(?<![0-9]){readme_port}(?![0-9])", str(port), command)
        return command

    def run(self, command: str) -> None:
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"README command exited {done.returncode}: {command}\n{done.stdout}{done.stderr}{self.logs()}"
        )

    def start(self, command: str) -> None:
        """A background service; waits until it answers, so the README's next line can use it."""
        argv = words(command)
        assert argv[-1] == "&"
        name = "-".join(argv[:3])
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {shlex.join(argv[:-1])}"],
            cwd=self.root, env=self.env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.services.append((name, proc))
        self.wait_for(argv, proc)

    def wait_for(self, argv: list[str], proc: subprocess.Popen[bytes]) -> None:
        if argv[0] == "mosquitto":
            self.wait(proc, lambda: _tcp_open(int(argv[argv.index("-p") + 1])), f"{argv[0]} answering")
            return
        if "--listen" in argv:
            address = argv[argv.index("--listen") + 1]
        else:  # `gateway run`: its local API's address is in the gateway.toml `gateway init` wrote
            toml = (self.root / argv[argv.index("--state") + 1] / "gateway.toml").read_text()
            found = re.search(r'^listen = "([^"]+)"', toml, flags=re.MULTILINE)
            assert found, "gateway.toml has no listen address"
            address = found.group(1)
        self.wait(proc, lambda: _healthy(f"http://{address}/healthz"), f"{' '.join(argv[:3])} healthy")

    def wait(self, proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + SERVICE_DEADLINE_S
        while not ready():
            assert proc.poll() is None, f"{what}: exited {proc.returncode}{self.logs()}"
            assert time.monotonic() < deadline, f"{what}: not within {SERVICE_DEADLINE_S} s{self.logs()}"
            time.sleep(0.05)

    def after(self, argv: list[str]) -> None:
        """`gateway init` writes the README's default API port into gateway.toml: give it the free one."""
        if argv[:3] == ["edgeroot", "gateway", "init"]:
            toml = self.root / argv[argv.index("--state") + 1] / "gateway.toml"
            toml.write_text(self.substitute(toml.read_text()))

    def logs(self) -> str:
        return "".join(
            f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-2000:]}" for p in self.root.glob("*.log")
        )

    def stop(self) -> None:
        for _, proc in reversed(self.services):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.services):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _healthy(url: str) -> bool:
    """The service answers /healthz with 200, or has no /healthz at all (404: the witness)."""
    try:
        return httpx.get(url, timeout=2).status_code in (200, 404)
    except httpx.HTTPError:
        return False


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    # `. .venv/bin/activate` in the README finds the environment these tests run in.
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["EDGEROOT_CONFIG_DIR"] = str(tmp_path / "config")  # the pins stay in the test's directory
    env.pop("VIRTUAL_ENV", None)
    t = Tour(tmp_path, {p: free_port() for p in README_PORTS}, env)
    try:
        yield t
    finally:
        t.stop()
        if t.skipped:
            print("README lines not run:\n  " + "\n  ".join(t.skipped))  # shown with -rA or -s


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="the README's gateway needs mosquitto")
def test_readme_tour_runs_as_written(tour: Tour) -> None:
    """Every ```sh command of the README, in order, exits 0 (services started and awaited)."""
    commands = sh_commands(README.read_text())
    assert any(c.startswith("edgeroot proof") for c in commands), "the README tour lost its proofs"
    curl = shutil.which("curl") is not None
    for command in commands:
        argv = words(command)
        if argv[0] == "make":
            continue  # `make demo` and `make test`: what runs this test
        if argv[0] == "curl" and not curl:
            tour.skipped.append(f"{command}  (curl is not installed)")
            continue
        if any(w.startswith("/dev/tty") for w in argv):
            tour.skipped.append(f"{command}  (needs a serial device)")
            continue
        line = tour.substitute(command)
        if argv[-1] == "&":
            tour.start(line)
        else:
            tour.run(line)
            tour.after(argv)
