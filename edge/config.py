"""``gateway.toml``: typed, documented, validated once at start; every error names the key path.

Layout of ``--state DIR`` (made by ``edgeroot gateway init``)::

    gateway.toml     this configuration
    gateway.key      the gateway's P-256 or SM2 key (0600); gateway.pub its public key
    policy.txt       the root's C2SP tlog-policy (copied from the root operator, never fetched)
    registration.json  identifier and public key for the root's prefix admin to register
    gateway.db       the SQLite store

``gateway.toml``: every key is declared once below, on the :class:`GatewayConfig` field that holds it,
with its type, default, allowed range and help; ``edgeroot gateway init`` writes the file from those
declarations (:func:`render`), each key with its help as a comment. Connector keys are declared the
same way on each connector's config class (``edge/connectors/*.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain_lite.envelope import MAX_COUNTER
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from edge.admission import COUNTER_WINDOW_DEFAULT
from edge.connectors import PLUGINS, ConnectorConfig
from edge.errors import ConfigError
from runtime import tomlconfig
from runtime.tomlconfig import Secret, Table, read_settings, setting

CONFIG_NAME = "gateway.toml"


def _connector_config(table: Mapping[str, Any]) -> type:
    """The config class that declares the keys of a ``[[connector]]`` table, chosen by its ``type``."""
    plugin = PLUGINS.get(str(table.get("type")))
    if plugin is None:
        raise ValueError(f"connector type {table.get('type')!r} is not one of {', '.join(sorted(PLUGINS))}")
    return plugin.config


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    state: Path
    gateway: str = setting("gateway", required=True, help="this gateway's identifier, registered at the root")
    root: str = setting("root", required=True, help="the root node's URL")
    mode: str = setting(
        "mode", "replicate", choices=("replicate", "anchor"),
        help='"replicate" sends readings to the root; "anchor" block headers only (data stays here)',
    )  # fmt: skip
    policy: Path = setting(
        "policy", Path("policy.txt"), help="the root operator's C2SP tlog-policy, relative to the state dir"
    )
    block_max_readings: int = setting(
        "block.max_readings", 1000, range=(1, 100_000), help="close a block at this many readings..."
    )
    block_max_seconds: float = setting(
        "block.max_seconds", 5.0, range=(0.05, 3600), help="...or when its oldest reading is this old"
    )
    disk_budget_mb: int = setting(
        "store.disk_budget_mb", 1024, range=(1, 10_000_000),
        help="live data; at the budget with unanchored data, input is refused",
    )  # fmt: skip
    retention_days: float = setting(
        "store.retention_days", 30.0, range=(0.0, 36500), help="anchored readings older than this are pruned"
    )
    counter_window: int = setting(
        "counters.max_jump", COUNTER_WINDOW_DEFAULT, range=(1, MAX_COUNTER),
        help="refuse (as counter-jump) a reading whose counter is more than this above its signer's last, "
        "or above 0 for a first reading; wide by default for Modbus bridge counters (microseconds)",
    )  # fmt: skip
    verify_workers: int = setting(
        "verify.workers", 0, range=(-1, 64),
        help="processes checking reading signatures beside the writer: 0 none (the writer thread checks "
        "them; the default: on a busy 2-core box the workers were not faster, D-151), -1 one per core "
        "(none on a one-core box; for idle cores and batch messages), N that many",
    )  # fmt: skip
    sync_batch: int = setting("sync.batch", 64, range=(1, 256), help="blocks per request to the root")
    sync_interval_s: float = setting(
        "sync.interval_s", 0.5, range=(0.05, 3600), help="how often to push pending blocks"
    )
    sync_max_blocks_per_s: float = setting(
        "sync.max_blocks_per_s", 200.0, range=(0.1, 100_000), help="catch-up pace after an outage"
    )
    sync_max_request_kb: int = setting(
        "sync.max_request_kb", 900, range=(1, 65536),
        help="stay under the root's request body cap (1 MiB by default)",
    )  # fmt: skip
    http_listen: str = setting(
        "http.listen", "127.0.0.1:8480", help="local API (/healthz, /metrics, latest readings): HOST:PORT"
    )
    http_token: Secret | None = setting(
        "http.token", example="a long random string", secret=True,
        help="bearer token for GET /v1/readings (readings with proofs, evidence export); unset: that "
        "route answers 401 to everyone. Never logged; compared in constant time",
    )  # fmt: skip
    devices: dict[str, Path] = setting(
        "devices", {}, kind=dict, example={"88.123.99/PUMP-0042": "keys/88.123.99_PUMP-0042.pub"},
        help="local provisioning, works offline: identifier = public key file",
    )  # fmt: skip
    connectors: tuple[ConnectorConfig, ...] = setting(
        "connector", (), kind=list, item=_connector_config,
        example=[{"type": name} for name in PLUGINS], help="one table per connector",
    )  # fmt: skip
    path: Path | None = None  # where gateway.toml was read (None: STATE/gateway.toml)

    @property
    def key(self) -> Path:
        return self.state / "gateway.key"

    @property
    def db(self) -> Path:
        return self.state / "gateway.db"


def load(state: Path, config: Path | None = None) -> GatewayConfig:
    """Read ``config`` (default ``STATE/gateway.toml``; the systemd unit uses /etc/edgeroot/gateway.toml).

    Relative paths inside (policy, device keys) are relative to the state directory.
    """
    top = Table.read(config or state / CONFIG_NAME, "run `edgeroot gateway init` first", ConfigError)
    values = read_settings(GatewayConfig, top)
    try:
        values["gateway"] = normalize(values["gateway"])
    except ChainError as exc:
        raise top.fail("gateway", str(exc)) from exc
    values["root"] = values["root"].rstrip("/")
    if not values["root"].startswith(("http://", "https://")):
        raise top.fail("root", "must be an http:// or https:// URL")
    values["policy"] = policy = state / values["policy"]
    if not policy.is_file():
        raise top.fail("policy", f"{policy} is missing: copy the root operator's policy.txt there")
    devices: Table = values["devices"]
    values["devices"] = {}
    for ident, file in devices.data.items():
        try:
            values["devices"][normalize(ident)] = state / str(file)
        except ChainError as exc:
            raise devices.fail(ident, str(exc)) from exc
    connectors = []
    for table in values["connectors"]:
        kind = table.data.get("type")
        plugin = PLUGINS.get(str(kind))
        if plugin is None:
            raise table.fail("type", f"{kind!r} is not one of {', '.join(sorted(PLUGINS))}")
        connectors.append(plugin.validate(table))
    values["connectors"] = tuple(connectors)
    return GatewayConfig(state=state, path=config, **values)


TITLE = """\
edgeroot gateway (edge/config.py declares every key); validated at start, errors name the key.
Relative paths are relative to the state directory. Reload (SIGHUP) re-reads this file."""


def render(overrides: Mapping[str, Any]) -> str:
    """A commented ``gateway.toml``: every key with its help, ``overrides`` filled in, defaults elsewhere.

    ``overrides`` has the shape of the parsed file and must give ``gateway`` and ``root``, e.g.
    ``{"gateway": "88.123.99/GW-1", "root": "http://127.0.0.1:8470", "block": {"max_seconds": 1.0},
    "devices": {"88.123.99/PUMP-0042": "pump.pub"}, "connector": [{"type": "mqtt", "port": 1883}]}``.
    Raises :class:`ValueError` or :class:`TypeError` naming the key path of a bad override.
    """
    return tomlconfig.render(GatewayConfig, overrides, title=TITLE)


def update(path: Path, overrides: Mapping[str, Any]) -> None:
    """Rewrite the ``gateway.toml`` at ``path`` with ``overrides`` merged in, every key with its help again.

    Tables merge key by key, arrays of tables item by item (extra items appended), ``None`` removes a
    key. Raises as :func:`render` does.
    """
    tomlconfig.update(GatewayConfig, path, overrides, title=TITLE)
