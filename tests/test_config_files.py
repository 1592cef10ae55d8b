"""gateway.toml and root.toml: declared once, generated from the declarations, loaded back unchanged."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.keys import NoteKey
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    VerifierKey,
)
from edge import config as gateway_config
from edge.config import GatewayConfig
from edge.connectors import PLUGINS
from edge.connectors.coap import CoapConfig
from edge.connectors.mqtt import MqttConfig
from edge.errors import ConfigError as GatewayConfigError
from edgeroot.cli import main
from resolver import config as root_config
from resolver.config import ConfigError as RootConfigError
from resolver.config import RootConfig, WitnessConfig
from runtime.tomlconfig import Secret, Setting, markdown_table, setting, settings, toml_key, toml_value

GATEWAY = "88.123.99/GW-1"
ROOT = "http://127.0.0.1:8470"


def _gateway_state(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policy.txt").write_text("x")
    (tmp_path / "gateway.toml").write_text(text)
    return tmp_path


def _root_state(tmp_path: Path, text: str) -> Path:
    (tmp_path / "root.toml").write_text(text)
    return tmp_path


def _witness_vkey(name: str = "witness.test") -> VerifierKey:
    return VerifierKey.parse(NoteKey.generate(name, SIGTYPE_COSIGNATURE_V1).vkey())


def test_generated_gateway_toml_loads_as_the_declared_defaults(tmp_path: Path) -> None:
    """A gateway.toml rendered with only the required keys loads to exactly the dataclass defaults."""
    state = _gateway_state(tmp_path, gateway_config.render({"gateway": GATEWAY, "root": ROOT}))
    loaded = gateway_config.load(state)
    expected = GatewayConfig(state, GATEWAY, ROOT, policy=state / "policy.txt")
    assert loaded == expected
    assert loaded.block_max_seconds == 5.0 and loaded.sync_max_request_kb == 900 and loaded.connectors == ()


def test_generated_gateway_toml_loads_with_the_given_values(tmp_path: Path) -> None:
    """Overrides in every kind of place (top, section, free table, connectors) come back as given."""
    overrides = {
        "gateway": GATEWAY,
        "root": ROOT + "/",
        "mode": "anchor",
        "block": {"max_readings": 40, "max_seconds": 0.3},
        "sync": {"interval_s": 0.1, "max_request_kb": 8},
        "http": {"listen": "127.0.0.1:9999"},
        "devices": {"88.123.99/PUMP-0042": "pump.pub"},
        "connector": [
            {"type": "mqtt", "port": 1999, "client_id": "gw-test", "password": "hunter2"},
            {"type": "coap", "port": 5999},
        ],
    }
    loaded = gateway_config.load(_gateway_state(tmp_path, gateway_config.render(overrides)))
    expected = GatewayConfig(
        tmp_path,
        GATEWAY,
        ROOT,
        mode="anchor",
        policy=tmp_path / "policy.txt",
        block_max_readings=40,
        block_max_seconds=0.3,
        sync_interval_s=0.1,
        sync_max_request_kb=8,
        http_listen="127.0.0.1:9999",
        devices={"88.123.99/PUMP-0042": tmp_path / "pump.pub"},
        connectors=(
            MqttConfig(port=1999, client_id="gw-test", password=Secret("hunter2")),
            CoapConfig(port=5999),
        ),
    )
    assert loaded == expected
    assert isinstance(loaded.connectors[0], MqttConfig) and isinstance(loaded.connectors[0].password, Secret)
    assert "hunter2" not in repr(loaded), "a secret never shows in a repr (nor in the logs)"


def test_gateway_init_writes_the_generated_file_with_the_command_line_values(tmp_path: Path) -> None:
    """`edgeroot gateway init` writes the rendered sample: defaults plus --id, --root and --mqtt."""
    state = tmp_path / "gw"
    assert main(["gateway", "init", "--state", str(state), "--root", ROOT, "--id", GATEWAY,
                 "--mqtt", "10.0.0.5:1999"]) == 0  # fmt: skip
    (state / "policy.txt").write_text("x")
    mqtt = MqttConfig(host="10.0.0.5", port=1999, client_id="edgeroot-88.123.99_GW-1")
    expected = GatewayConfig(state, GATEWAY, ROOT, policy=state / "policy.txt", connectors=(mqtt,))
    assert gateway_config.load(state) == expected
    text = (state / "gateway.toml").read_text()
    connector = {"type": "mqtt", "host": "10.0.0.5", "port": 1999, "client_id": mqtt.client_id}
    assert text == gateway_config.render({"gateway": GATEWAY, "root": ROOT, "connector": [connector]})


def test_gateway_init_refuses_a_bad_broker_address_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --mqtt port out of range or not a number: exit 2 naming the problem, no key, no state directory."""
    for address, reason in (("h:70000", "connector[0].port"), ("h:x", "HOST:PORT")):
        state = tmp_path / address.replace(":", "_")
        argv = ["gateway", "init", "--state", str(state), "--root", ROOT, "--id", GATEWAY, "--mqtt", address]
        assert main(argv) == 2
        assert reason in capsys.readouterr().err
        assert not state.exists()


def test_generated_root_toml_loads_as_the_declared_defaults(tmp_path: Path) -> None:
    """A root.toml rendered with only the required keys loads to the dataclass defaults (SQLite in STATE)."""
    state = _root_state(tmp_path, root_config.render({"origin": "root.test", "prefixes": ["88.123"]}))
    expected = RootConfig(state, "root.test", ("88.123",), database=f"sqlite:///{state / 'root.db'}")
    assert root_config.load(state) == expected
    assert expected.interval_ms == 250 and expected.max_batch == 1000 and expected.max_body_bytes == 1 << 20


def test_generated_root_toml_loads_with_the_given_values(tmp_path: Path) -> None:
    """Given keys, sections and witnesses come back as given; the prefix is normalised as on load."""
    vkey = _witness_vkey()
    overrides = {
        "origin": "root.test",
        "prefix": "88.ABC",
        "database": "postgresql://edgeroot@/edgeroot",
        "sequencer": {"interval_ms": 50, "max_batch": 10},
        "http": {"max_body_bytes": 4096},
        "witness": [{"name": "witness.test", "url": "http://127.0.0.1:8471/", "vkey": str(vkey)}],
    }
    loaded = root_config.load(_root_state(tmp_path, root_config.render(overrides)))
    witness = WitnessConfig("witness.test", "http://127.0.0.1:8471", vkey)
    expected = RootConfig(
        tmp_path, "root.test", ("88.abc",), "88.ABC", "postgresql://edgeroot@/edgeroot",
        interval_ms=50, max_batch=10, max_body_bytes=4096, witnesses=(witness,),
    )  # fmt: skip
    assert loaded == expected


def test_root_init_writes_the_generated_file_with_the_command_line_values(tmp_path: Path) -> None:
    """`edgeroot root init` writes the rendered sample: defaults plus --origin, --prefix and --witness."""
    vkey = _witness_vkey()
    state = tmp_path / "root"
    argv = ["root", "init", "--state", str(state), "--origin", "root.test", "--prefix", "88.123",
            "--witness", f"http://127.0.0.1:8471={vkey}"]  # fmt: skip
    assert main(argv) == 0
    database = f"sqlite:///{(state / 'root.db').resolve()}"
    witness = WitnessConfig("witness.test", "http://127.0.0.1:8471", vkey)
    expected = RootConfig(state, "root.test", ("88.123",), database=database, witnesses=(witness,))
    assert root_config.load(state) == expected
    assert (state / "root.toml").read_text() == root_config.render(
        {
            "origin": "root.test",
            "prefixes": ["88.123"],
            "database": database,
            "witness": [{"name": "witness.test", "url": "http://127.0.0.1:8471", "vkey": str(vkey)}],
        }
    )


def test_root_toml_serves_a_list_of_prefixes_or_the_older_single_prefix(tmp_path: Path) -> None:
    """`prefixes = [...]` loads normalised, in order; an older file's `prefix = "P"` loads as `("p",)`
    (state directories made before several prefixes keep working); `root init --prefix A --prefix B`
    writes the list."""
    state = _root_state(tmp_path, 'origin = "root.test"\nprefixes = ["88.123.99", "88.200.5", "86.ABC"]\n')
    assert root_config.load(state).prefixes == ("88.123.99", "88.200.5", "86.abc")
    _root_state(tmp_path, 'origin = "root.test"\nprefix = "88.ABC"\n')
    loaded = root_config.load(tmp_path)
    assert (loaded.prefixes, loaded.one_prefix) == (("88.abc",), "88.ABC")
    two = tmp_path / "two"
    assert main(["root", "init", "--state", str(two), "--origin", "two.test", "--prefix", "88.123.99",
                 "--prefix", "88.200.5"]) == 0  # fmt: skip
    assert 'prefixes = ["88.123.99", "88.200.5"]' in (two / "root.toml").read_text()
    assert root_config.load(two).prefixes == ("88.123.99", "88.200.5")


@pytest.mark.parametrize(
    ("lines", "key", "reason"),
    [
        ('prefix = "88.1"\nprefixes = ["88.2"]\n', "prefix", "not both"),
        ("", "prefixes", "is required"),
        ("prefixes = []\n", "prefixes[0]", "at least one prefix"),
        ('prefixes = ["88.1", 7]\n', "prefixes[1]", "must be str"),
        ('prefixes = "88.1"\n', "prefixes", "must be list"),
        ('prefixes = ["88.1", "88..2"]\n', "prefixes[1]", "empty prefix segment"),
        ('prefixes = ["88.ABC", "88.abc"]\n', "prefixes[1]", "88.abc is named twice"),
        ('prefixes = ["88.123.99", "88.200", "88.123"]\n', "prefixes[2]", "88.123.99 is under 88.123"),
        ('prefixes = ["88.123", "88.1230", "88.123.5"]\n', "prefixes[2]", "88.123.5 is under 88.123"),
        ('prefix = "88/x"\n', "prefix", "prefix segments hold"),
    ],
    ids=["both", "neither", "empty", "not-a-string", "not-a-list", "invalid", "twice", "above", "below",
         "bad-single"],
)  # fmt: skip
def test_root_toml_prefix_lists_are_refused_with_their_key_path(
    tmp_path: Path, lines: str, key: str, reason: str
) -> None:
    """Both spellings, neither, an empty list, a non-string, a bad prefix, a prefix twice in any spelling,
    one under another (either order): refused at load, naming the key path (with the item's index)."""
    state = _root_state(tmp_path, f'origin = "root.test"\n{lines}')
    with pytest.raises(RootConfigError) as info:
        root_config.load(state)
    assert info.value.key == key and reason in info.value.reason, str(info.value)


def test_update_merges_overrides_into_an_initialised_gateway_toml(tmp_path: Path) -> None:
    """`update` after `gateway init`: given keys change, the others stay, connectors merge item by item,
    None brings a default back, and every key keeps its help."""
    state = tmp_path / "gw"
    assert main(["gateway", "init", "--state", str(state), "--root", ROOT, "--id", GATEWAY,
                 "--mqtt", "10.0.0.5:1999"]) == 0  # fmt: skip
    (state / "policy.txt").write_text("x")
    gateway_config.update(state / "gateway.toml", {"block": {"max_seconds": 0.3}, "mode": "anchor"})
    gateway_config.update(
        state / "gateway.toml",
        {
            "mode": None,
            "sync": {"max_request_kb": 8},
            "devices": {"88.123.99/PUMP-0042": "pump.pub"},
            "connector": [{"client_id": "gw-test"}, {"type": "coap", "port": 5999}],
        },
    )
    mqtt = MqttConfig(host="10.0.0.5", port=1999, client_id="gw-test")
    expected = GatewayConfig(
        state, GATEWAY, ROOT, policy=state / "policy.txt", block_max_seconds=0.3, sync_max_request_kb=8,
        devices={"88.123.99/PUMP-0042": state / "pump.pub"}, connectors=(mqtt, CoapConfig(port=5999)),
    )  # fmt: skip
    assert gateway_config.load(state) == expected
    text = (state / "gateway.toml").read_text()
    assert all(_documented(text, s) for s in settings(GatewayConfig) + settings(MqttConfig)), text
    with pytest.raises(ValueError, match=re.escape("block.max_secs")):
        gateway_config.update(state / "gateway.toml", {"block": {"max_secs": 1}})
    assert gateway_config.load(state) == expected, "a refused update leaves the file as it was"


def test_update_keeps_an_empty_devices_table_empty(tmp_path: Path) -> None:
    """An update that leaves [devices] empty keeps its example commented out: no device appears."""
    state = tmp_path / "gw"
    assert main(["gateway", "init", "--state", str(state), "--root", ROOT, "--id", GATEWAY, "--json"]) == 0
    (state / "policy.txt").write_text("x")
    gateway_config.update(state / "gateway.toml", {"block": {"max_seconds": 0.3}})
    assert gateway_config.load(state).devices == {}


def test_update_merges_overrides_into_an_initialised_root_toml(tmp_path: Path) -> None:
    """`update` after `root init`: the sequencer interval changes, database and witnesses stay."""
    vkey = _witness_vkey()
    state = tmp_path / "root"
    assert main(["root", "init", "--state", str(state), "--origin", "root.test", "--prefix", "88.123",
                 "--witness", f"http://127.0.0.1:8471={vkey}"]) == 0  # fmt: skip
    before = root_config.load(state)
    root_config.update(state / "root.toml", {"sequencer": {"interval_ms": 50}})
    assert root_config.load(state) == dataclasses.replace(before, interval_ms=50)
    assert len(before.witnesses) == 1


def _documented(text: str, s: Setting) -> bool:
    """Whether ``text`` has a line that sets (or shows, commented out) key ``s`` with its help."""
    name = re.escape(s.name)
    head = rf"(# )?(\[\[{re.escape(s.key)}\]\]|\[{re.escape(s.key)}\]|{name} = .+?)"
    return re.search(rf"^{head} +# {re.escape(s.help)}$", text, re.MULTILINE) is not None


@pytest.mark.parametrize(
    ("owner", "text"),
    [
        (GatewayConfig, gateway_config.render({"gateway": GATEWAY, "root": ROOT})),
        (RootConfig, root_config.render({"origin": "root.test", "prefixes": ["88.123"]})),
        (WitnessConfig, root_config.render({"origin": "root.test", "prefixes": ["88.123"]})),
        *((p.config, gateway_config.render({"gateway": GATEWAY, "root": ROOT})) for p in PLUGINS.values()),
        *((p.config, p.sample_config) for p in PLUGINS.values()),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_every_declared_key_appears_in_the_sample_with_its_help(owner: type, text: str) -> None:
    """Each declared key (connector and witness keys too) is in the generated file with its help text."""
    declared = settings(owner)
    assert declared, f"{owner.__name__} declares no keys"
    missing = [s.key for s in declared if not _documented(text, s)]
    assert not missing, f"not in the sample with their help: {missing}\n{text}"
    tomllib.loads(text)  # and the sample is valid TOML


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[block]\nmax_reading = 10\n", "block.max_reading"),
        ("[sync]\nbatch = 8\ninterval = 1\n", "sync.interval"),
        ('[http]\nlisten = "127.0.0.1:1"\nport = 1\n', "http.port"),
        ("[store]\nretention = 3\n", "store.retention"),
        ('[[connector]]\ntype = "coap"\nqos = 1\n', "connector[0].qos"),
        ("block = 3\n", "block"),
    ],
)
def test_gateway_unknown_or_misplaced_keys_inside_sections_are_refused(
    tmp_path: Path, extra: str, key: str
) -> None:
    """A key a section does not declare (a typo, a misplaced key) fails with its key path."""
    state = _gateway_state(tmp_path, f'gateway = "{GATEWAY}"\nroot = "{ROOT}"\n{extra}')
    with pytest.raises(GatewayConfigError) as info:
        gateway_config.load(state)
    assert info.value.key == key, str(info.value)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[sequencer]\ninterval = 100\n", "sequencer.interval"),
        ("[http]\nmax_body = 100\n", "http.max_body"),
        ('[sequencer]\ninterval_ms = "fast"\n', "sequencer.interval_ms"),
        ("[sequencer]\nmax_batch = 0\n", "sequencer.max_batch"),
        ('[[witness]]\nname = "w"\nurl = "http://w"\nvkey = "w+1+A"\nweight = 2\n', "witness[0].weight"),
        ('[[witness]]\nname = "w"\n', "witness[0].url"),
    ],
)
def test_root_unknown_or_bad_keys_inside_sections_name_the_key_path(
    tmp_path: Path, extra: str, key: str
) -> None:
    """root.toml errors name the key path, inside sections and witness tables too."""
    state = _root_state(tmp_path, f'origin = "root.test"\nprefix = "88.123"\n{extra}')
    with pytest.raises(RootConfigError) as info:
        root_config.load(state)
    assert info.value.key == key, str(info.value)


@pytest.mark.parametrize(
    ("overrides", "error", "path"),
    [
        ({"block": {"max_secs": 1.0}}, ValueError, "block.max_secs"),
        ({"block": {"max_seconds": "1"}}, TypeError, "block.max_seconds"),
        ({"block": {"max_seconds": 0.0}}, ValueError, "block.max_seconds"),
        ({"mode": "mirror"}, ValueError, "mode"),
        ({"block": 3}, TypeError, "block"),
        ({"connector": [{"type": "mqtt", "prot": 1}]}, ValueError, "connector[0].prot"),
        ({"connector": [{"type": "amqp"}]}, ValueError, "amqp"),
        ({"connector": {"type": "mqtt"}}, TypeError, "connector"),
        ({"devices": ["pump.pub"]}, TypeError, "devices"),
    ],
)
def test_render_refuses_overrides_the_loader_would_refuse(
    overrides: dict[str, object], error: type[Exception], path: str
) -> None:
    """A bad override fails when the file is written, naming its key path, not later at start."""
    with pytest.raises(error, match=re.escape(path)):
        gateway_config.render({"gateway": GATEWAY, "root": ROOT} | overrides)


def test_render_refuses_a_missing_required_key() -> None:
    """Every required key must be given: a sample without the gateway's identifier is not written."""
    with pytest.raises(ValueError, match="gateway: is required"):
        gateway_config.render({"root": ROOT})
    with pytest.raises(ValueError, match=re.escape("witness[0].vkey: is required")):
        root_config.render({"origin": "o", "prefix": "88", "witness": [{"name": "w", "url": "http://w"}]})


def test_a_key_the_sample_could_not_show_is_refused_at_declaration() -> None:
    """No default, not required, no example: the declaration itself fails, before any file is written."""
    with pytest.raises(ValueError, match="mystery"):
        setting("mystery", help="?")
    with pytest.raises(ValueError, match="ranged"):
        setting("ranged", example=1, range=(0, 2), help="?")
    with pytest.raises(ValueError, match="items"):
        setting("items", kind=list, help="?")


DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
BEGIN, END = "<!-- config keys: begin (generated) -->\n", "<!-- config keys: end -->\n"


def _docs_tables() -> str:
    root, gateway = markdown_table(RootConfig), markdown_table(GatewayConfig)
    return f"`root.toml`:\n\n{root}\n`gateway.toml`:\n\n{gateway}"


def _docs_with_tables(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + BEGIN + _docs_tables() + END + tail


def test_operations_doc_lists_every_key_as_declared() -> None:
    """docs/operations.md carries the key tables generated from the declarations, unchanged."""
    text = DOCS.read_text()
    assert BEGIN in text and END in text, "the generated block's markers are gone from docs/operations.md"
    assert text == _docs_with_tables(text), "key tables are stale: run `python -m tests.test_config_files`"


@given(st.text(), st.text(min_size=1))
def test_any_string_is_written_as_a_toml_literal_that_reads_back(value: str, key: str) -> None:
    """Values and keys of the generated files survive any characters: quotes, controls, DEL, emoji."""
    assert tomllib.loads(f"{toml_key(key)} = {toml_value(value)}\n") == {key: value}


if __name__ == "__main__":
    # The Chinese translation carries the same generated tables (tests/test_docs_zh.py checks it).
    for doc in (DOCS, DOCS.with_name("operations.zh-CN.md")):
        doc.write_text(_docs_with_tables(doc.read_text()))


def _log_vkey(name: str, sigtype: int = SIGTYPE_ED25519) -> str:
    return NoteKey.generate(name, sigtype).vkey()


@pytest.mark.parametrize(
    ("child", "key"),
    [
        ('origin = "c.test"\n', "child[0].vkey"),
        (f'origin = "c.test"\nvkey = "{_log_vkey("other.test")}"\n', "child[0].vkey"),
        (f'origin = "c.test"\nvkey = "{_witness_vkey("c.test")}"\n', "child[0].vkey"),
        (f'origin = "c.test"\nvkey = "{_log_vkey("c.test", SIGTYPE_SM2_COSIGNATURE)}"\n', "child[0].vkey"),
        (f'origin = "c.test"\nvkey = "{_log_vkey("c.test")}"\nurl = "ftp://c"\n', "child[0].url"),
        (f'origin = "c.test"\nvkey = "{_log_vkey("c.test")}"\nweight = 1\n', "child[0].weight"),
    ],
    ids=["no-vkey", "vkey-of-another-log", "witness-key", "sm2-witness-key", "bad-url", "unknown-key"],
)
def test_root_child_tables_are_validated_with_their_key_path(tmp_path: Path, child: str, key: str) -> None:
    """A [[child]] names a log key of its own origin and an http(s) URL; errors name the key path."""
    state = _root_state(tmp_path, f'origin = "root.test"\nprefix = "88.123"\n[[child]]\n{child}')
    with pytest.raises(RootConfigError) as info:
        root_config.load(state)
    assert info.value.key == key, str(info.value)


@pytest.mark.parametrize("sigtype", [SIGTYPE_ED25519, SIGTYPE_SM2], ids=["ed25519", "sm2"])
def test_root_child_tables_load_and_one_origin_is_listed_once(tmp_path: Path, sigtype: int) -> None:
    """Two [[child]] tables for one origin are refused; one loads with its key and URL. The child's log
    key may be Ed25519 or SM2 (an SM log's, D-084)."""
    vkey = _log_vkey("c.test", sigtype)
    one = f'[[child]]\norigin = "c.test"\nvkey = "{vkey}"\nurl = "http://c:1/"\n'
    state = _root_state(tmp_path, f'origin = "root.test"\nprefix = "88.123"\n{one}')
    (child,) = root_config.load(state).children
    assert (child.origin, str(child.vkey), child.url) == ("c.test", vkey, "http://c:1")
    _root_state(tmp_path, f'origin = "root.test"\nprefix = "88.123"\n{one}{one}')
    with pytest.raises(RootConfigError) as info:
        root_config.load(state)
    assert info.value.key == "child", str(info.value)
