"""The operator's commands as real processes: root/witness init and run, register, resolve --verify."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite.checkpoint import SignedCheckpoint
from edgeroot.system import ANY_STATUS, START_DEADLINE_S, free_port, wait_http
from resolver import config as root_config
from resolver.db import Database
from resolver.log_store import latest_checkpoint_bytes

EDGEROOT = [sys.executable, "-m", "edgeroot"]


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*EDGEROOT, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"edgeroot {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the server answers at all; fail at once if it exits."""

    def exited() -> None:
        assert proc.poll() is None, f"server exited with {proc.returncode}"

    wait_http(url, ok=ANY_STATUS, timeout=START_DEADLINE_S, check=exited)


def init_witness_and_root(tmp_path: Path, name: str, wport: int, alg: str = "p256") -> dict[str, Any]:
    """`witness init` (as w.NAME, in tmp/w, with an SM2 key when ``alg`` is ``sm2``) and `root init` (as
    root.NAME, in tmp/root) asking it to cosign, the witness following the root's log; root init's JSON
    answer."""
    init = ("witness", "init", "--state", tmp_path / "w", "--name", f"w.{name}", "--alg", alg, "--json")
    w = json.loads(cli(*init).stdout)
    r: dict[str, Any] = json.loads(
        cli(
            "root", "init", "--state", tmp_path / "root", "--origin", f"root.{name}", "--prefix", "88.123",
            "--witness", f"http://127.0.0.1:{wport}={w['vkey']}", "--json",
        ).stdout
    )  # fmt: skip
    with (tmp_path / "w" / "logs.txt").open("a") as f:
        f.write(r["log_vkey"] + "\n")
    return r


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A witness and a root node, each its own `edgeroot ... run` process; the witness's key is SM2 when
    the fixture is parametrised (``indirect``) with ``sm2``."""
    wport, rport = free_port(), free_port()
    alg = getattr(request, "param", "p256")
    r = init_witness_and_root(tmp_path, "cli", wport, alg)
    procs = [
        subprocess.Popen(
            [*EDGEROOT, "witness", "run", "--state", str(tmp_path / "w"), "--listen", f"127.0.0.1:{wport}"]
        ),
        subprocess.Popen(
            [*EDGEROOT, "root", "run", "--state", str(tmp_path / "root"), "--listen", f"127.0.0.1:{rport}"]
        ),
    ]
    try:
        url = f"http://127.0.0.1:{rport}"
        _wait_http(f"http://127.0.0.1:{wport}/docs", procs[0])
        _wait_http(f"{url}/openapi.json", procs[1])
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/v1/checkpoint").status_code != 200:
            assert time.monotonic() < deadline, "no published checkpoint"
            time.sleep(0.05)
        yield {"url": url, "root": tmp_path / "root", "init": r, "tmp": tmp_path, "alg": alg}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)


@pytest.mark.parametrize("running", ["p256", "sm2"], indirect=True)
def test_register_device_and_resolve_with_verify(running: dict[str, object]) -> None:
    """The README tour: register a prefix and a device, then resolve it with --verify; with ``sm2`` the
    witness cosigns with an SM2 key (the root collects it, the policy lists it, --verify counts it), and
    the prefix admin's key (which signs the device's registry write) and the device's key are SM2."""
    url, root, tmp = str(running["url"]), Path(str(running["root"])), Path(str(running["tmp"]))
    alg = str(running["alg"])
    keys = tmp / "keys"
    cli("keygen", "--kind", "device", "--name", "88.123.99/admin", "--alg", alg, "--out", keys)
    cli("keygen", "--kind", "device", "--name", "88.123.99/PUMP-0042", "--alg", alg, "--out", keys)
    cli(
        "register",
        "prefix",
        "88.123.99",
        "--root",
        url,
        "--key",
        root / "admin.pem",
        "--pub",
        keys / "88.123.99_admin.pub",
    )
    out = cli(
        "register", "device", "88.123.99/PUMP-0042", "--root", url, "--key", keys / "88.123.99_admin.key",
        "--pub", keys / "88.123.99_PUMP-0042.pub", "--value", "URL=https://plant.example/pump42", "--json",
    )  # fmt: skip
    assert json.loads(out.stdout)["ok"] is True
    config = tmp / "config"
    deadline = time.monotonic() + 10
    while True:
        res = cli(
            "resolve", "88.123.99/PUMP-0042", "--root", url, "--verify", "--policy", root / "policy.txt",
            "--config-dir", config, "--json", check=False,
        )  # fmt: skip
        answer = json.loads(res.stdout)
        if res.returncode == 0 and "PROVEN:" in answer["message"]:
            break
        assert time.monotonic() < deadline, res.stdout + res.stderr
        time.sleep(0.1)
    assert answer["cosigned_by"] == ["w.cli"]
    assert any(v["type"] == "URL" and v["value"] == "https://plant.example/pump42" for v in answer["values"])

    def resolve_verified(identifier: str) -> str:
        policy = root / "policy.txt"
        return cli(
            "resolve", identifier, "--root", url, "--verify", "--policy", policy, "--config-dir", config
        ).stdout

    human = resolve_verified("88.123.99/PUMP-0042")
    assert "PROVEN" in human and "cosigned by w.cli" in human
    assert "PROVEN ABSENT" in resolve_verified("88.123.99/NOPE")
    # The pin persisted and moved forward.
    pins = list((config / "pinned").glob("*.json"))
    assert len(pins) == 1 and json.loads(pins[0].read_text())["pinned"].startswith("root.cli\n")


def test_refused_registration_exits_1_with_the_reason(running: dict[str, object]) -> None:
    """A write outside the admin's prefix exits 1 and says why."""
    url, tmp = str(running["url"]), Path(str(running["tmp"]))
    cli("keygen", "--kind", "device", "--name", "88.999/admin", "--out", tmp / "k")
    res = cli(
        "register", "id", "88.123/X", "--root", url, "--key", tmp / "k" / "88.999_admin.key",
        "--value", "URL=x", check=False,
    )  # fmt: skip
    assert res.returncode == 1 and "refused" in res.stderr


def test_verify_against_the_wrong_policy_fails(running: dict[str, object]) -> None:
    """An answer checked against another log's policy does not verify (exit 1)."""
    url, tmp = str(running["url"]), Path(str(running["tmp"]))
    other = json.loads(
        cli("keygen", "--kind", "log", "--name", "root.cli", "--out", tmp / "other", "--json").stdout
    )
    (tmp / "other-policy.txt").write_text(f"log {other['vkey']}\nquorum none\n")
    res = cli(
        "resolve", "88.123/X", "--root", url, "--verify", "--policy", tmp / "other-policy.txt",
        "--config-dir", tmp / "c2", check=False,
    )  # fmt: skip
    assert res.returncode == 1 and "does NOT verify" in res.stderr


def test_broken_config_names_the_key(tmp_path: Path) -> None:
    """`root run` on a bad root.toml exits 2 naming the key and the reason."""
    cli("root", "init", "--state", tmp_path, "--origin", "o.test", "--prefix", "88")
    text = (tmp_path / "root.toml").read_text().replace("interval_ms = 250", 'interval_ms = "fast"')
    (tmp_path / "root.toml").write_text(text)
    res = cli("root", "run", "--state", tmp_path, "--listen", f"127.0.0.1:{free_port()}", check=False)
    assert res.returncode == 2 and "sequencer.interval_ms" in res.stderr and "int" in res.stderr
    again = cli("root", "init", "--state", tmp_path, "--origin", "o.test", "--prefix", "88", check=False)
    assert again.returncode == 2 and "exists" in again.stderr


def test_root_init_serves_several_prefixes_and_refuses_one_under_another(tmp_path: Path) -> None:
    """`root init --prefix A --prefix B`: one admin key registered under each, both in root.toml's
    `prefixes`; a prefix under another (or twice) exits 2 naming both and leaves no state behind."""
    state = tmp_path / "two"
    r = json.loads(
        cli("root", "init", "--state", state, "--origin", "two.test", "--prefix", "88.123.99",
            "--prefix", "88.200.5", "--json").stdout
    )  # fmt: skip
    assert r["prefixes"] == ["88.123.99", "88.200.5"]
    assert r["admins"] == ["300:0.na/88.123.99", "300:0.na/88.200.5"]
    assert 'prefixes = ["88.123.99", "88.200.5"]' in (state / "root.toml").read_text()
    for prefixes, reason in (
        (("88.123", "88.123.99"), "88.123.99 is under 88.123"),
        (("88.123.99", "88.123"), "88.123.99 is under 88.123"),
        (("88.200", "88.200"), "88.200 is named twice"),
    ):
        bad = tmp_path / "bad"
        argv = [a for p in prefixes for a in ("--prefix", p)]
        res = cli("root", "init", "--state", bad, "--origin", "bad.test", *argv, check=False)
        assert res.returncode == 2 and reason in res.stderr, res.stderr
        assert not bad.exists()


def test_add_prefix_on_a_stopped_node_logs_the_bootstrap_write_and_rewrites_an_older_root_toml(
    tmp_path: Path,
) -> None:
    """`root add-prefix` on a node whose root.toml has the older `prefix = "..."`: the prefix record is
    created with the node's admin key and logged (this command sequences it: no node runs), root.toml
    lists both as `prefixes`; a prefix under a served one, or served already, exits 2 with nothing
    written."""
    state = tmp_path / "root"
    cli("root", "init", "--state", state, "--origin", "old.test", "--prefix", "88.123")
    toml = state / "root.toml"
    toml.write_text(toml.read_text().replace('prefixes = ["88.123"]', 'prefix = "88.123"'))
    before = toml.read_text()
    added = json.loads(cli("root", "add-prefix", "88.200.5", "--state", state, "--json").stdout)
    assert added["prefixes"] == ["88.123", "88.200.5"] and added["sequenced"] is True
    assert added["admin"] == "300:0.na/88.200.5" and "next" not in added  # a top node: no parent
    text = toml.read_text()
    assert 'prefixes = ["88.123", "88.200.5"]' in text
    assert not any(line.startswith("prefix =") for line in text.splitlines())
    db = Database(root_config.load(state).database)
    try:
        with db.transaction(write=False) as tx:
            record = tx.one("SELECT record FROM records WHERE identifier = ?", ("0.na/88.200.5",))
            pending = tx.one("SELECT COUNT(*) FROM pending")
            latest = latest_checkpoint_bytes(tx)
    finally:
        db.close()
    assert record is not None and pending == (0,)
    assert (
        latest is not None and SignedCheckpoint.parse(latest).checkpoint.size == 4
    )  # 2 records, 2 map heads
    for prefix, reason in (("88.123.7", "88.123.7 is under 88.123"), ("88.200.5", "named twice")):
        res = cli("root", "add-prefix", prefix, "--state", state, check=False)
        assert res.returncode == 2 and reason in res.stderr, res.stderr
    assert 'prefixes = ["88.123", "88.200.5"]' in toml.read_text() and before != toml.read_text()
    missing = cli("root", "add-prefix", "88.300", "--state", tmp_path / "nowhere", check=False)
    assert missing.returncode == 2 and "root.toml" in missing.stderr
