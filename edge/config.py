"""``gateway.toml``: typed, documented, validated once at start; every error names the key path.

Layout of ``--state DIR`` (made by ``edgeroot gateway init``)::

    gateway.toml     this configuration
    gateway.key      the gateway's P-256 key (0600); gateway.pub its public key
    policy.txt       the root's C2SP tlog-policy (copied from the root operator, never fetched)
    registration.json  identifier and public key for the root's prefix admin to register
    gateway.db       the SQLite store

``gateway.toml`` (defaults shown)::

    gateway = "88.123.99/GW-1"          # this gateway's identifier (registered at the root)
    root = "http://127.0.0.1:8470"      # the root node
    mode = "replicate"                  # or "anchor": headers only, readings stay in the plant
    policy = "policy.txt"               # relative to the state directory

    [block]
    max_readings = 1000                 # close a block at this many readings...
    max_seconds = 5.0                   # ...or when the oldest unchained reading is this old

    [store]
    disk_budget_mb = 1024               # live data; at the budget with unanchored data, input is refused
    retention_days = 30                 # anchored readings older than this are pruned

    [sync]
    batch = 64                          # blocks per request
    interval_s = 0.5
    max_blocks_per_s = 200              # catch-up pace after an outage
    max_request_kb = 900                # stay under the root's request body cap (1 MiB by default)

    [http]
    listen = "127.0.0.1:8480"           # local API: /healthz, /metrics, latest readings

    [devices]                           # local provisioning, works offline: identifier = public key file
    "88.123.99/PUMP-0042" = "keys/88.123.99_PUMP-0042.pub"

    [[connector]]                       # one table per connector; see edge/connectors/*.py SAMPLE_CONFIG
    type = "mqtt"
    ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from edge.connectors import PLUGINS, ConnectorConfig
from edge.errors import ConfigError
from runtime.tomlconfig import Table

CONFIG_NAME = "gateway.toml"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    state: Path
    gateway: str
    root: str
    mode: str = "replicate"
    policy: Path = Path("policy.txt")
    block_max_readings: int = 1000
    block_max_seconds: float = 5.0
    disk_budget_mb: int = 1024
    retention_days: float = 30.0
    sync_batch: int = 64
    sync_interval_s: float = 0.5
    sync_max_blocks_per_s: float = 200.0
    sync_max_request_kb: int = 900
    http_listen: str = "127.0.0.1:8480"
    devices: dict[str, Path] = field(default_factory=dict)
    connectors: tuple[ConnectorConfig, ...] = ()
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
    top.check_known(
        {"gateway", "root", "mode", "policy", "block", "store", "sync", "http", "devices", "connector"}
    )
    try:
        gateway = normalize(top.get("gateway", str, required=True))
    except ChainError as exc:
        raise top.fail("gateway", str(exc)) from exc
    root = top.get("root", str, required=True).rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise top.fail("root", "must be an http:// or https:// URL")
    mode = top.get("mode", str, "replicate")
    if mode not in ("replicate", "anchor"):
        raise top.fail("mode", "must be 'replicate' or 'anchor'")
    policy = state / top.get("policy", str, "policy.txt")
    if not policy.is_file():
        raise top.fail("policy", f"{policy} is missing: copy the root operator's policy.txt there")
    block, st, sync, http = top.table("block"), top.table("store"), top.table("sync"), top.table("http")
    devices = {}
    for ident, file in top.table("devices").data.items():
        try:
            devices[normalize(ident)] = state / str(file)
        except ChainError as exc:
            raise top.fail(f"devices.{ident}", str(exc)) from exc
    connectors = []
    for table in top.tables("connector"):
        kind = table.data.get("type")
        plugin = PLUGINS.get(str(kind))
        if plugin is None:
            raise table.fail("type", f"{kind!r} is not one of {', '.join(sorted(PLUGINS))}")
        connectors.append(plugin.validate(table))
    return GatewayConfig(
        state=state,
        gateway=gateway,
        root=root,
        mode=mode,
        policy=policy,
        block_max_readings=block.number("max_readings", int, 1000, 1, 100_000),
        block_max_seconds=block.number("max_seconds", float, 5.0, 0.05, 3600),
        disk_budget_mb=st.number("disk_budget_mb", int, 1024, 1, 10_000_000),
        retention_days=st.number("retention_days", float, 30.0, 0.0, 36500),
        sync_batch=sync.number("batch", int, 64, 1, 256),
        sync_interval_s=sync.number("interval_s", float, 0.5, 0.05, 3600),
        sync_max_blocks_per_s=sync.number("max_blocks_per_s", float, 200.0, 0.1, 100_000),
        sync_max_request_kb=sync.number("max_request_kb", int, 900, 1, 65536),
        http_listen=http.get("listen", str, "127.0.0.1:8480"),
        devices=devices,
        connectors=tuple(connectors),
        path=config,
    )
