"""The root node's state directory and its ``root.toml``, validated once with key paths in every error.

Layout of ``--state DIR`` (made by ``edgeroot root init``)::

    root.toml        configuration (below)
    log.skey         the log's note signer key, Ed25519 or SM2 (`--suite sm`) (0600)
    log.vkey         its verifier key, for policies and witnesses
    admin.pem        the root prefixes' admin key, P-256 (0600); registered as 300:0.na/<prefix> for each
    policy.txt       C2SP tlog-policy for this log and its witnesses
    root.db          the SQLite database (unless ``database`` points at PostgreSQL)

A node serves one or more root prefixes (``prefixes``; ``prefix = "P"``, the older spelling, is
``prefixes = ["P"]``), none under another: IDIS's secondary nodes serve many enterprise prefixes that are
not under one another (D-125). A node under a parent (a secondary or enterprise node, D-075) names it
in ``parent``; the registry of the parent (or of a node below it) holds the delegation of each served
prefix to this node (``edgeroot register prefix --node``), which the node checks (D-127).

``root.toml``: every key is declared once below, on the :class:`RootConfig` (or :class:`WitnessConfig`)
field that holds it, with its type, default, allowed range and help; ``edgeroot root init`` writes the
file from those declarations (:func:`render`), each key with its help as a comment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from chain_lite.registry import is_below
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
    prefixes: tuple[str, ...] = setting(
        "prefixes", kind=tuple, example=["88.123.99", "88.200.5"],
        help="the root prefixes this node serves, none under another (or the one-prefix spelling below)",
    )  # fmt: skip
    one_prefix: str | None = setting(
        "prefix", example="88.123",
        help='the older spelling of a one-prefix node: prefix = "P" is prefixes = ["P"]; give one of the two',
    )  # fmt: skip
    database: str = setting(
        "database", example="sqlite:///STATE/root.db",
        help="sqlite:///PATH or postgresql://user@host/db (default: root.db in the state directory)",
    )  # fmt: skip
    parent: str = setting(
        "parent", "",
        help="URL of the parent node that delegated this node's prefixes to it, or of a node above all of "
        "them (empty: a top node); each delegation is looked for from there, following referrals",
    )  # fmt: skip
    parent_check_s: int = setting(
        "parent_check_s", 60, range=(1, 86_400),
        help="with a parent: check every this many seconds that each prefix is delegated here (/healthz)",
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
    values["prefixes"] = _prefixes(top, values["prefixes"], values["one_prefix"])
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


class PrefixListError(ValueError):
    """A list of served prefixes is not usable; ``index`` is the position of the prefix at fault."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def served_prefixes(items: Sequence[str]) -> tuple[str, ...]:
    """``items`` normalised (lowercase, as :func:`chain_lite.identifier.normalize_prefix` spells them), in
    their order. Raises :class:`PrefixListError` for an empty list, an invalid prefix, a prefix named twice
    (in any spelling) and a prefix under another of the list (a node serves sub-prefixes of its own
    prefixes anyway: their records are created by the admin of the prefix above, D-012)."""
    if not items:
        raise PrefixListError(0, "must name at least one prefix")
    out: list[str] = []
    for i, item in enumerate(items):
        try:
            prefix = normalize_prefix(item)
        except ChainError as exc:
            raise PrefixListError(i, str(exc)) from exc
        for earlier in out:
            if prefix == earlier:
                raise PrefixListError(i, f"{prefix} is named twice")
            if is_below(prefix, earlier) or is_below(earlier, prefix):
                low, high = (prefix, earlier) if is_below(prefix, earlier) else (earlier, prefix)
                why = f"{low} is under {high}: serve {high} and create {low} below it (register prefix)"
                raise PrefixListError(i, why)
        out.append(prefix)
    return tuple(out)


def _prefixes(top: Table, listed: tuple[str, ...] | None, one: str | None) -> tuple[str, ...]:
    """The served prefixes from ``prefixes = [...]`` or ``prefix = "..."`` (exactly one of the two)."""
    if listed is not None and one is not None:
        raise top.fail("prefix", 'give prefixes = [...] or prefix = "...", not both')
    if listed is None and one is None:
        raise top.fail("prefixes", 'is required (or the one-prefix spelling prefix = "...")')
    try:
        return served_prefixes(listed if listed is not None else (one or "",))
    except PrefixListError as exc:
        raise top.fail("prefix" if listed is None else f"prefixes[{exc.index}]", exc.reason) from exc


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

    ``overrides`` has the shape of the parsed file and must give ``origin`` and ``prefixes`` (or the older
    ``prefix``), e.g. ``{"origin": "root.example", "prefixes": ["88.123"], "database":
    "sqlite:////var/lib/edgeroot/root.db",
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
