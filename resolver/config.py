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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain_lite.errors import ChainError
from chain_lite.identifier import normalize_prefix
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, VerifierKey, check_key_name

DEFAULT_INTERVAL_MS = 250
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY = 1024 * 1024
CONFIG_NAME = "root.toml"


class ConfigError(Exception):
    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")


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


def _get(table: dict[str, Any], key: str, kind: type, default: Any, path: Path, where: str) -> Any:  # noqa: PLR0917 (read as a table row)
    value = table.get(key, default)
    if value is None:
        raise ConfigError(path, f"{where}{key}", "is required")
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(path, f"{where}{key}", f"must be {kind.__name__}, not {type(value).__name__}")
    return value


def load(state: Path) -> RootConfig:
    path = state / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(
            path, "(file)", f"cannot read: {exc.strerror} (run `edgeroot root init` first)"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(file)", f"not valid TOML: {exc}") from exc
    origin = _get(data, "origin", str, None, path, "")
    try:
        check_key_name(origin)
    except ChainError as exc:
        raise ConfigError(path, "origin", str(exc)) from exc
    try:
        prefix = normalize_prefix(_get(data, "prefix", str, None, path, ""))
    except ChainError as exc:
        raise ConfigError(path, "prefix", str(exc)) from exc
    database = _get(data, "database", str, f"sqlite:///{state / 'root.db'}", path, "")
    if not database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(path, "database", "must be sqlite:///PATH or postgresql://...")
    seq = _get(data, "sequencer", dict, {}, path, "")
    interval = _get(seq, "interval_ms", int, DEFAULT_INTERVAL_MS, path, "sequencer.")
    max_batch = _get(seq, "max_batch", int, DEFAULT_MAX_BATCH, path, "sequencer.")
    if not 10 <= interval <= 60_000:
        raise ConfigError(path, "sequencer.interval_ms", "must be between 10 and 60000")
    if not 1 <= max_batch <= 100_000:
        raise ConfigError(path, "sequencer.max_batch", "must be between 1 and 100000")
    http = _get(data, "http", dict, {}, path, "")
    max_body = _get(http, "max_body_bytes", int, DEFAULT_MAX_BODY, path, "http.")
    if not 1024 <= max_body <= 64 * 1024 * 1024:
        raise ConfigError(path, "http.max_body_bytes", "must be between 1 KiB and 64 MiB")
    witnesses = []
    for i, w in enumerate(_get(data, "witness", list, [], path, "")):
        where = f"witness[{i}]."
        if not isinstance(w, dict):
            raise ConfigError(path, f"witness[{i}]", "must be a table")
        name = _get(w, "name", str, None, path, where)
        url = _get(w, "url", str, None, path, where).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(path, f"{where}url", "must be an http:// or https:// URL")
        try:
            vkey = VerifierKey.parse(_get(w, "vkey", str, None, path, where))
        except ChainError as exc:
            raise ConfigError(path, f"{where}vkey", str(exc)) from exc
        if vkey.sigtype != SIGTYPE_COSIGNATURE_V1 or vkey.name != name:
            raise ConfigError(path, f"{where}vkey", f"must be a cosignature (0x04) key named {name!r}")
        witnesses.append(WitnessConfig(name, url, vkey))
    return RootConfig(state, origin, prefix, database, interval, max_batch, max_body, tuple(witnesses))


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
