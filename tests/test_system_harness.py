"""The whole-system harness's own pieces (edgeroot.system): waiting, configuration edits, daemon logs."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from edge import config as gateway_config
from edgeroot.cli import main
from edgeroot.system import Daemon, HarnessError, configure, free_port, wait_until

GATEWAY = "88.123.99/GW-1"


def test_wait_until_returns_the_first_true_value() -> None:
    """The condition's first true value comes back; it is not asked again after that."""
    calls = itertools.count(1)
    assert wait_until("the third call", lambda: (n := next(calls)) >= 3 and n, interval=0) == 3
    assert next(calls) == 4


def test_wait_until_fails_with_what_did_not_happen() -> None:
    """On timeout the message names what was awaited, asked at that moment if it is a callable."""
    seen: list[int] = []
    with pytest.raises(HarnessError, match=r"^never \(asked 2 times\): not within 0\.05 s$"):
        # asked at once, then again after the interval, when the deadline has passed
        wait_until(
            lambda: f"never (asked {len(seen)} times)", lambda: seen.append(1), timeout=0.05, interval=1
        )


def test_wait_until_check_fails_fast() -> None:
    """A failing check stops the wait at once, before the condition is asked."""
    asked = []

    def exited() -> None:
        raise HarnessError("the daemon exited")

    with pytest.raises(HarnessError, match="the daemon exited"):
        wait_until("ready", lambda: asked.append(1), timeout=60, check=exited)
    assert asked == []


def test_free_port_is_free() -> None:
    """The port can be bound at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_configure_changes_a_gateway_toml_through_its_declarations(tmp_path: Path) -> None:
    """Tables merge, a connector is appended, None removes a key, paths are written as text; an undeclared
    key or a file without a schema is refused."""
    state = tmp_path / "gw"
    assert (
        main(["gateway", "init", "--state", str(state), "--root", "http://r", "--id", GATEWAY, "--json"]) == 0
    )
    (state / "policy.txt").write_text("x")
    configure(
        state / "gateway.toml",
        {
            "block": {"max_seconds": 0.3},
            "devices": {"88.123.99/PUMP-1": state / "pump.pub", "88.123.99/PUMP-2": "two.pub"},
            "connector": [{"client_id": "gw-test"}, {"type": "coap", "port": 5999}],
        },
    )
    configure(state / "gateway.toml", {"devices": {"88.123.99/PUMP-2": None}})
    cfg = gateway_config.load(state)
    assert cfg.block_max_seconds == 0.3
    assert cfg.devices == {"88.123.99/PUMP-1": state / "pump.pub"}
    assert [type(c).__name__ for c in cfg.connectors] == ["MqttConfig", "CoapConfig"]
    with pytest.raises(ValueError, match=r"block\.max_secs"):
        configure(state / "gateway.toml", {"block": {"max_secs": 1}})
    (tmp_path / "other.toml").write_text("")
    with pytest.raises(HarnessError, match=r"other\.toml"):
        configure(tmp_path / "other.toml", {})


def test_daemon_this_run_is_only_the_latest_run(tmp_path: Path) -> None:
    """A restarted daemon appends to its log; readiness looks only at what this run wrote."""
    d = Daemon("echo", ["--version"], tmp_path / "logs" / "echo.log", finite=True)
    d.start()
    assert d.wait() == 0
    first = d.log_text()
    assert first.startswith("edgeroot ")
    d.start()
    assert d.wait() == 0
    assert d.this_run() == first and d.log_text() == first * 2
