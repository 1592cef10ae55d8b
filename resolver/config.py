"""The root node's state directory and its ``root.toml``, validated once with key paths in every error.

Layout of ``--state DIR`` (made by ``edgeroot root init``)::

    root.toml        configuration (below)
    log.skey         the log's Ed25519 note signer key (0600)
    log.vkey         its verifier key, for policies and witnesses
    admin.pem        the root prefix's admin key, P-256 (0600); registered as 300:0.na/<prefix>
    policy.txt       C2SP tlog-policy for this log and its witnesses
    root.db          the SQLite database (unless ``database`` points at PostgreSQL)

``root.toml``::

    origin = "root.example"                  # the log's name: checkpoint origin and key name
    prefix = "88.123"                        # the root prefix this node serves
    database = "sqlite:///DIR/root.db"       # or postgresql://user@host/db
    [sequencer]
    interval_ms = 250                        # integrate at least this often...
    max_batch = 1000                         # ...or as soon as this many leaves wait
    [http]
    max_body_bytes = 1048576
    [[witness]]                              # zero or more
    name = "witness.example"
    url = "http://127.0.0.1:8471"
    vkey = "witness.example+1234abcd+BA..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chain_lite.errors import ChainError
from chain_lite.identifier import normalize_prefix
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, VerifierKey, check_key_name
from runtime import tomlconfig
from runtime.tomlconfig import Table

DEFAULT_INTERVAL_MS = 250
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY = 1024 * 1024
CONFIG_NAME = "root.toml"


class ConfigError(tomlconfig.ConfigError):
    """``root.toml`` is invalid; the message names the file, the key path and the reason."""


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    name: str
    url: str
    vkey: VerifierKey


@dataclass(frozen=True, slots=True)
class RootConfig:
    state: Path
    origin: str
    prefix: str
    database: str
    interval_ms: int = DEFAULT_INTERVAL_MS
    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = DEFAULT_MAX_BODY
    witnesses: tuple[WitnessConfig, ...] = field(default_factory=tuple)
    path: Path | None = None  # where root.toml was read (None: STATE/root.toml)

    @property
    def log_skey(self) -> Path:
        return self.state / "log.skey"

    @property
    def log_vkey(self) -> Path:
        return self.state / "log.vkey"

    @property
    def admin_key(self) -> Path:
        return self.state / "admin.pem"

    @property
    def policy(self) -> Path:
        return self.state / "policy.txt"


def load(state: Path, config: Path | None = None) -> RootConfig:
    """Read ``config`` (default ``STATE/root.toml``; systemd units use /etc/edgeroot/root.toml)."""
    path = config or state / CONFIG_NAME
    top = Table.read(path, "run `edgeroot root init` first", ConfigError)
    top.check_known({"origin", "prefix", "database", "sequencer", "http", "witness"})
    origin = top.get("origin", str, required=True)
    try:
        check_key_name(origin)
    except ChainError as exc:
        raise top.fail("origin", str(exc)) from exc
    try:
        prefix = normalize_prefix(top.get("prefix", str, required=True))
    except ChainError as exc:
        raise top.fail("prefix", str(exc)) from exc
    database = top.get("database", str, f"sqlite:///{state / 'root.db'}")
    if not database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise top.fail("database", "must be sqlite:///PATH or postgresql://...")
    seq, http = top.table("sequencer"), top.table("http")
    witnesses = []
    for w in top.tables("witness"):
        name = w.get("name", str, required=True)
        url = w.get("url", str, required=True).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise w.fail("url", "must be an http:// or https:// URL")
        try:
            vkey = VerifierKey.parse(w.get("vkey", str, required=True))
        except ChainError as exc:
            raise w.fail("vkey", str(exc)) from exc
        if vkey.sigtype != SIGTYPE_COSIGNATURE_V1 or vkey.name != name:
            raise w.fail("vkey", f"must be a cosignature (0x04) key named {name!r}")
        witnesses.append(WitnessConfig(name, url, vkey))
    return RootConfig(
        state,
        origin,
        prefix,
        database,
        interval_ms=seq.number("interval_ms", int, DEFAULT_INTERVAL_MS, 10, 60_000),
        max_batch=seq.number("max_batch", int, DEFAULT_MAX_BATCH, 1, 100_000),
        max_body_bytes=http.number("max_body_bytes", int, DEFAULT_MAX_BODY, 1024, 64 * 1024 * 1024),
        witnesses=tuple(witnesses),
        path=config,
    )


def render(origin: str, prefix: str, database: str, witnesses: list[tuple[str, str, str]]) -> str:
    """A commented ``root.toml`` for ``root init``."""
    lines = [
        "# edgeroot root node (see `edgeroot root --help`); validated at start.",
        f'origin = "{origin}"',
        f'prefix = "{prefix}"',
        f'database = "{database}"',
        "",
        "[sequencer]",
        f"interval_ms = {DEFAULT_INTERVAL_MS}",
        f"max_batch = {DEFAULT_MAX_BATCH}",
        "",
        "[http]",
        f"max_body_bytes = {DEFAULT_MAX_BODY}",
    ]
    for name, url, vkey in witnesses:
        lines += ["", "[[witness]]", f'name = "{name}"', f'url = "{url}"', f'vkey = "{vkey}"']
    return "\n".join(lines) + "\n"
