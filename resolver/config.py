"""The root node's state directory and its ``root.toml``, validated once with key paths in every error.

Layout of ``--state DIR`` (made by ``edgeroot root init``)::

    root.toml        configuration (below)
    log.skey         the log's note signer key, Ed25519 or SM2 (`--suite sm`) (0600)
    log.vkey         its verifier key, for policies and witnesses
    admin.pem        the root prefix's admin key, P-256 (0600); registered as 300:0.na/<prefix>
    policy.txt       C2SP tlog-policy for this log and its witnesses
    root.db          the SQLite database (unless ``database`` points at PostgreSQL)

A node under a parent (a secondary or enterprise node, D-075) names it in ``parent``; the parent's
registry holds the delegation of ``prefix`` to this node (``edgeroot register prefix --node``).

``root.toml``: every key is declared once below, on the :class:`RootConfig` (or :class:`WitnessConfig`)
field that holds it, with its type, default, allowed range and help; ``edgeroot root init`` writes the
file from those declarations (:func:`render`), each key with its help as a comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from chain_lite.epcis_identifiers import check_base
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize_prefix
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    VerifierKey,
    check_key_name,
)
from chain_lite.suite import SUITES
from resolver.http_limits import DEFAULT as HTTP_DEFAULTS
from resolver.http_limits import HttpLimits
from runtime import tomlconfig
from runtime.tomlconfig import Table, read_settings, setting

CONFIG_NAME = "root.toml"


class ConfigError(tomlconfig.ConfigError):
    """``root.toml`` is invalid; the message names the file, the key path and the reason."""


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    name: str = setting("name", required=True, help="the witness's key name (as in its verifier key)")
    url: str = setting("url", required=True, help="where it answers C2SP tlog-witness add-checkpoint")
    vkey: VerifierKey = setting("vkey", required=True, help="its cosignature (0x04) verifier key")


@dataclass(frozen=True, slots=True)
class ChildConfig:
    origin: str = setting("origin", required=True, help="the child log's origin (checkpoint line 1)")
    vkey: VerifierKey = setting(
        "vkey", required=True, help="the child log's verifier key (Ed25519 0x01 or SM2)"
    )
    url: str = setting(
        "url", "", help="the child node's URL (optional): where `verify anchor` fetches consistency proofs"
    )
    hash: str = setting(
        "hash", "sha256", help="the child log's hash: sha256, or sm3 for a child made with `--suite sm`"
    )


CHILD_EXAMPLE = {
    "origin": "child.example",
    "vkey": "child.example+1234abcd+AQ...",
    "url": "http://127.0.0.1:8480",
}

WITNESS_EXAMPLE = {
    "name": "witness.example",
    "url": "http://127.0.0.1:8471",
    "vkey": "witness.example+1234abcd+BA...",
}


@dataclass(frozen=True, slots=True)
class RootConfig:
    state: Path
    origin: str = setting("origin", required=True, help="the log's name: checkpoint origin and key name")
    prefix: str = setting("prefix", required=True, help="the root prefix this node serves")
    database: str = setting(
        "database", example="sqlite:///STATE/root.db",
        help="sqlite:///PATH or postgresql://user@host/db (default: root.db in the state directory)",
    )  # fmt: skip
    parent: str = setting(
        "parent", "",
        help="URL of the parent node that delegated this node's prefix to it (empty: a top node)",
    )  # fmt: skip
    interval_ms: int = setting(
        "sequencer.interval_ms", 250, range=(10, 60_000),
        help="integrate pending leaves at least this often...",
    )  # fmt: skip
    max_batch: int = setting(
        "sequencer.max_batch", 1000, range=(1, 100_000), help="...or as soon as this many wait"
    )
    max_body_bytes: int = setting(
        "http.max_body_bytes", 1024 * 1024, range=(1024, 64 * 1024 * 1024),
        help="largest request body accepted",
    )  # fmt: skip
    max_connections: int = setting(
        "http.max_connections", HTTP_DEFAULTS.max_connections, range=(16, 1_000_000),
        help="connections held at once; more are answered 503 (lowered to fit the descriptor limit)",
    )  # fmt: skip
    max_header_bytes: int = setting(
        "http.max_header_bytes", HTTP_DEFAULTS.max_header_bytes, range=(1024, 1024 * 1024),
        help="largest request line and headers accepted (431 above)",
    )  # fmt: skip
    request_timeout_s: float = setting(
        "http.request_timeout_s", HTTP_DEFAULTS.request_timeout_s, range=(0.5, 600.0),
        help="a request must arrive whole this soon after its first byte or the connection's opening (408)",
    )  # fmt: skip
    keep_alive_s: int = setting(
        "http.keep_alive_s", HTTP_DEFAULTS.keep_alive_s, range=(1, 600),
        help="an idle connection between requests is closed after this long",
    )  # fmt: skip
    identifier_base: str = setting(
        "epcis.identifier_base", DEFAULT_IDENTIFIER_BASE,
        help="the https:// origin of edgeroot identifiers in EPCIS events (set once per network)",
    )  # fmt: skip
    witnesses: tuple[WitnessConfig, ...] = setting(
        "witness", (), kind=list, item=lambda _: WitnessConfig, example=[WITNESS_EXAMPLE],
        help="zero or more: witnesses asked to cosign each checkpoint",
    )  # fmt: skip
    children: tuple[ChildConfig, ...] = setting(
        "child", (), kind=list, item=lambda _: ChildConfig, example=[CHILD_EXAMPLE],
        help="zero or more: child logs this node witnesses and anchors in its own log (D-078)",
    )  # fmt: skip
    path: Path | None = None  # where root.toml was read (None: STATE/root.toml)

    @property
    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            self.max_connections, self.max_header_bytes, self.request_timeout_s, self.keep_alive_s
        )

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
    values = read_settings(RootConfig, top)
    try:
        check_key_name(values["origin"])
    except ChainError as exc:
        raise top.fail("origin", str(exc)) from exc
    try:
        values["prefix"] = normalize_prefix(values["prefix"])
    except ChainError as exc:
        raise top.fail("prefix", str(exc)) from exc
    parent = values["parent"] = values["parent"].rstrip("/")
    if parent and (not parent.startswith(("http://", "https://")) or any(c.isspace() for c in parent)):
        raise top.fail("parent", "must be empty or an http:// or https:// URL")
    database = values["database"] = values["database"] or f"sqlite:///{state / 'root.db'}"
    if not database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise top.fail("database", "must be sqlite:///PATH or postgresql://...")
    try:
        values["identifier_base"] = check_base(values["identifier_base"])
    except ChainError as exc:
        raise top.fail("epcis.identifier_base", str(exc)) from exc
    values["witnesses"] = tuple(_witness(w) for w in values["witnesses"])
    values["children"] = tuple(_child(c) for c in values["children"])
    origins = [c.origin for c in values["children"]]
    if len(set(origins)) != len(origins):
        raise top.fail("child", "two [[child]] tables name the same origin")
    return RootConfig(state, path=config, **values)


def _child(table: Table) -> ChildConfig:
    c = read_settings(ChildConfig, table)
    try:
        vkey = VerifierKey.parse(c["vkey"])
    except ChainError as exc:
        raise table.fail("vkey", str(exc)) from exc
    if vkey.sigtype not in (SIGTYPE_ED25519, SIGTYPE_SM2) or vkey.name != c["origin"]:
        raise table.fail("vkey", f"must be a log (0x01 or SM2) key named {c['origin']!r}")
    url = c["url"].rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise table.fail("url", "must be an http:// or https:// URL")
    if c["hash"] not in SUITES:
        raise table.fail("hash", f"must be one of {', '.join(SUITES)}")
    return ChildConfig(c["origin"], vkey, url, c["hash"])


def _witness(table: Table) -> WitnessConfig:
    w = read_settings(WitnessConfig, table)
    url = w["url"].rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise table.fail("url", "must be an http:// or https:// URL")
    try:
        vkey = VerifierKey.parse(w["vkey"])
    except ChainError as exc:
        raise table.fail("vkey", str(exc)) from exc
    if vkey.sigtype not in (SIGTYPE_COSIGNATURE_V1, SIGTYPE_SM2_COSIGNATURE) or vkey.name != w["name"]:
        raise table.fail("vkey", f"must be a cosignature (0x04 or SM2) key named {w['name']!r}")
    return WitnessConfig(w["name"], url, vkey)


TITLE = "edgeroot root node (resolver/config.py declares every key); validated at start, errors name the key."


def render(overrides: Mapping[str, Any]) -> str:
    """A commented ``root.toml``: every key with its help, ``overrides`` filled in, defaults elsewhere.

    ``overrides`` has the shape of the parsed file and must give ``origin`` and ``prefix``, e.g.
    ``{"origin": "root.example", "prefix": "88.123", "database": "sqlite:////var/lib/edgeroot/root.db",
    "sequencer": {"interval_ms": 50}, "witness": [{"name": ..., "url": ..., "vkey": ...}]}``.
    Raises :class:`ValueError` or :class:`TypeError` naming the key path of a bad override.
    """
    return tomlconfig.render(RootConfig, overrides, title=TITLE)


def update(path: Path, overrides: Mapping[str, Any]) -> None:
    """Rewrite the ``root.toml`` at ``path`` with ``overrides`` merged in, every key with its help again.

    Tables merge key by key, arrays of tables item by item (extra items appended), ``None`` removes a
    key. Raises as :func:`render` does.
    """
    tomlconfig.update(RootConfig, path, overrides, title=TITLE)
