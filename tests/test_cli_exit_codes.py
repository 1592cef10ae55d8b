"""One exit-code rule for every command: 0 proven / done, 1 the thing checked is false or refused, 2 the
command could not judge (usage, configuration, unreadable input, unreachable service); messages say
what to do and never show Python reprs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from chain_lite.log_leaf import block_leaf
from edgeroot import device_simulation
from edgeroot.cli import build_parser, main
from edgeroot.output import EXIT_RULE, Reporter
from tests.root_harness import running_root
from tests.test_root_gateway_sync import GATEWAY, Plant, _receipt

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1


def _subcommands(parser: argparse.ArgumentParser, path: str = "edgeroot") -> list[tuple[str, str]]:
    found = [(path, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _subcommands(child, f"{path} {name}")
    return found


def test_every_command_help_states_the_exit_rule() -> None:
    """`edgeroot --help` and every subcommand's help end with the one exit-status rule."""
    helps = _subcommands(build_parser())
    assert len(helps) > 20
    flat = " ".join(EXIT_RULE.split())
    missing = [path for path, text in helps if flat not in " ".join(text.split())]
    assert missing == []


def test_an_unreachable_root_is_exit_2_for_register_resolve_and_proof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A root that is down could not judge anything: exit 2 for every command, never "refused"."""
    assert main(["keygen", "--kind", "device", "--name", "88.123/admin", "--out", str(tmp_path)]) == 0
    key = str(tmp_path / "88.123_admin.key")
    assert main(["register", "id", "88.123/X", "--root", DOWN, "--key", key, "--value", "URL=x"]) == 2
    assert main(["resolve", "88.123/X", "--root", DOWN]) == 2
    assert main(["proof", "checkpoint", "--root", DOWN, "--out", str(tmp_path / "cp")]) == 2
    err = capsys.readouterr().err
    assert "refused" not in err and err.count("cannot reach") == 3


def test_resolve_checks_the_identifier_and_the_policy_before_asking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resolve garbage` names what was typed (no `garbage/`); a broken policy is "cannot read policy"."""
    assert main(["resolve", "garbage", "--root", DOWN]) == 2
    err = capsys.readouterr().err
    assert "'garbage'" in err and "garbage/" not in err and "cannot reach" not in err
    (tmp_path / "policy.txt").write_text("junk\n")
    policy = str(tmp_path / "policy.txt")
    assert main(["resolve", "88.123/X", "--root", DOWN, "--verify", "--policy", policy]) == 2
    err = capsys.readouterr().err
    assert f"cannot read policy {policy}" in err and "does NOT verify" not in err


def test_human_output_shows_no_python_reprs(capsys: pytest.CaptureFixture[str]) -> None:
    """Lists, records and booleans are written for people: no brackets, quotes, True/False or None."""
    Reporter(as_json=False).ok(
        "done",
        cosigned_by=["w.one", "w.two"],
        rejects={"malformed": 1},
        values=[{"index": 1, "type": "URL", "value": "https://x.example"}],
        evidence=False,
        last=None,
    )
    out = capsys.readouterr().out
    for repr_mark in ("[", "]", "{", "'", "True", "False", "None"):
        assert repr_mark not in out, out
    assert "cosigned_by: w.one, w.two" in out and "rejects: malformed=1" in out
    assert "index=1, type=URL, value=https://x.example" in out and "evidence: no" in out


def test_device_simulate_exits_1_unless_every_reading_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 of 3 acknowledged (all refused) is exit 1, not 0; 3 of 3 is exit 0."""
    assert main(["keygen", "--kind", "device", "--name", "88.123/D", "--out", str(tmp_path)]) == 0
    verdicts: dict[str, Any] = {"sent": 3, "ack": 0, "nack": 3, "busy": 0, "seconds": 0.1}

    async def fake_coap(*_args: object) -> dict[str, Any]:
        return verdicts

    monkeypatch.setattr(device_simulation, "simulate_coap", fake_coap)
    argv = ["device", "simulate", "--coap", "coap://127.0.0.1:1/readings", "--id", "88.123/D",
            "--key", str(tmp_path / "88.123_D.key"), "--count", "3"]  # fmt: skip
    assert main(argv) == 1
    assert "0 of 3 readings acknowledged" in capsys.readouterr().err
    verdicts.update(ack=3, nack=0)
    assert main(argv) == 0


def test_resolve_at_beyond_the_log_is_an_error_not_a_clamp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resolve --at N` with N above the log's size exits 2 saying so; within the log it answers."""
    with running_root(tmp_path, f"sqlite:///{tmp_path / 'root.db'}") as root:
        size = root.settle()
        base = ["resolve", "88.123/X", "--root", root.url, "--json"]
        assert main([*base, "--at", str(size + 100)]) == 2
        assert (
            json.loads(capsys.readouterr().out)["error"]
            == f"--at {size + 100} is beyond the log's size {size}"
        )
        assert main([*base, "--at", str(size)]) == 1  # answered: not registered (unverified)
        assert "not registered" in json.loads(capsys.readouterr().out)["error"]


def test_a_stale_pin_names_its_file_and_pin_forget_clears_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new root under an old origin: exit 2 naming the pin file and `edgeroot pin forget`; `pin list`
    shows the pin, `pin forget ORIGIN` removes it, and the next --verify pins the new log."""
    config = str(tmp_path / "config")

    def resolve(root: Any) -> int:
        return main(["resolve", "88.123/X", "--root", root.url, "--verify", "--policy",
                     str(root.policy_path), "--config-dir", config])  # fmt: skip

    with running_root(tmp_path / "first", f"sqlite:///{tmp_path / 'first.db'}") as first:
        first.settle()
        assert resolve(first) == 0
    capsys.readouterr()
    assert main(["pin", "list", "--config-dir", config, "--json"]) == 0
    [pin] = json.loads(capsys.readouterr().out)["pins"]
    assert pin["origin"] == first.origin and pin["size"] >= 1
    with running_root(tmp_path / "second", f"sqlite:///{tmp_path / 'second.db'}") as second:
        assert second.origin == first.origin
        second.settle()
        assert resolve(second) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert pin["file"] in err and f"edgeroot pin forget {first.origin} --config-dir {config}" in err
        assert main(["pin", "forget", first.origin, "--config-dir", config]) == 0
        assert not Path(pin["file"]).exists()
        assert resolve(second) == 0
    assert main(["pin", "forget", "--all", "--config-dir", config]) == 0
    assert main(["pin", "forget", "unknown.example", "--config-dir", config]) == 2


def test_proof_receipt_of_a_block_is_what_verify_receipt_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`proof receipt --block ID` (or `--gateway ID`: its latest block) writes the root's receipt of a
    gateway block and the block's log entry; `verify receipt` proves it (by bytes and by the printed leaf
    hash); an unknown block is exit 2."""
    with running_root(tmp_path, f"sqlite:///{tmp_path / 'root.db'}") as root:
        plant = Plant(root)
        block, body = plant.next_block()
        with root.client() as c:
            assert c.submit_blocks([(block.raw, body)]).status == 200
        served = _receipt(root, block)
        out, leaf = tmp_path / "block.tlog-proof", tmp_path / "block.leaf"
        fetch = ["proof", "receipt", "--root", root.url, "--block", block.block_id.hex(),
                 "--out", str(out), "--leaf-out", str(leaf), "--json"]  # fmt: skip
        assert main(fetch) == 0
        fetched = json.loads(capsys.readouterr().out)
        assert out.read_text() == served and leaf.read_bytes() == block_leaf(block.raw)
        head, head_leaf = tmp_path / "head.tlog-proof", tmp_path / "head.leaf"
        by_gateway = ["proof", "receipt", "--root", root.url, "--gateway", GATEWAY,
                      "--out", str(head), "--leaf-out", str(head_leaf)]  # fmt: skip
        assert main(by_gateway) == 0
        assert head.read_text() == served and head_leaf.read_bytes() == leaf.read_bytes()
        policy = str(root.policy_path)
        assert main(["verify", "receipt", str(out), "--policy", policy, "--leaf", str(leaf)]) == 0
        assert (
            main(["verify", "receipt", str(out), "--policy", policy, "--leaf-hash", fetched["leaf_hash"]])
            == 0
        )
        unknown = ["proof", "receipt", "--root", root.url, "--block", "00" * 32, "--out", str(out),
                   "--leaf-out", str(leaf)]  # fmt: skip
        assert main(unknown) == 2
        assert main(["proof", "receipt", "--root", root.url, "--index", "100000", "--out", str(out),
                     "--leaf-out", str(leaf)]) == 2  # fmt: skip


def test_an_unknown_key_inside_a_bridge_register_table_is_exit_2_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """modbus.toml: a key a [[register]] table does not declare is refused with its key path, before
    the port is opened (root.toml and gateway.toml: tests/test_config_files.py)."""
    config = tmp_path / "modbus.toml"
    config.write_text(
        'mode = "modbus"\nbridge_id = "88.123.99/BR-1"\nkey = "bridge.key"\n[[register]]\nunit = 1\n'
        'address = 0\ntype = "uint16"\ndevice = "88.123.99/D"\nname = "t"\npoll_s = 1\ncolour = "red"\n'
    )
    assert main(["bridge", "run", "--port", str(tmp_path / "no-such-port"), "--config", str(config)]) == 2
    assert "register[0].colour: unknown key" in capsys.readouterr().err


def test_usage_errors_quote_what_was_typed_without_reprs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --witness or --mqtt is echoed as typed (exit 2), not as a Python string repr."""
    root = ["root", "init", "--state", str(tmp_path / "r"), "--origin", "o.test", "--prefix", "88"]
    assert main([*root, "--witness", "nonsense"]) == 2
    assert "--witness nonsense: want URL=VKEY" in capsys.readouterr().err
    gateway = ["gateway", "init", "--state", str(tmp_path / "g"), "--root", DOWN, "--id", "88.1/GW"]
    assert main([*gateway, "--mqtt", "host-without-port"]) == 2
    assert "--mqtt host-without-port: want HOST:PORT" in capsys.readouterr().err


def test_resolve_at_refuses_a_proof_for_a_later_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resolve --verify --at N` answered with a valid proof of a LATER state (a node ignoring ``at``)
    exits 1 naming both sizes: it is no answer to the question asked."""
    from chain_lite.registry import Value
    from rootclient.client import AsyncRootClient

    with running_root(tmp_path, f"sqlite:///{tmp_path / 'root.db'}") as root:
        admin = root.admin_signer()
        with root.client() as c:
            c.write(root.write("create", "88.123/X", [Value(1, "URL", "string", "https://a.example")], admin))
            early = root.settle()
            c.write(root.write("update", "88.123/X", [Value(1, "URL", "string", "https://b.example")], admin))
            late = root.settle()
        assert late > early
        base = ["resolve", "88.123/X", "--root", root.url, "--verify", "--policy", str(root.policy_path)]
        base += ["--config-dir", str(tmp_path / "cfg"), "--json"]
        assert main([*base, "--at", str(early)]) == 0
        assert json.loads(capsys.readouterr().out)["as_of_log_size"] == early

        real = AsyncRootClient.resolve

        async def ignoring_at(self: AsyncRootClient, identifier: str, at: int | None = None) -> Any:
            return await real(self, identifier, None)

        monkeypatch.setattr(AsyncRootClient, "resolve", ignoring_at)
        assert main([*base, "--at", str(early)]) == 1
        out = json.loads(capsys.readouterr().out)
        assert out["error"] == f"answer for 88.123/X is for log size {late}, after the --at {early} asked for"
