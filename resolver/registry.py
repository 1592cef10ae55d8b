"""Accepting signed registry writes: signature, authority, replay and existence checks, then queue.

A write that passes every check changes the current record and enters the sequencer's queue in the
same transaction; one that fails any check changes nothing. The log leaf is the signed request itself
(:func:`chain_lite.log_leaf.registry_leaf`), so anyone replaying the log can re-check every decision.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from chain_lite.errors import ChainError, FormatError, IdentifierError, SignatureError
from chain_lite.keys import PublicKey
from chain_lite.log_leaf import registry_leaf
from chain_lite.registry import (
    Delegation,
    Record,
    SignedWrite,
    canonical_identifier,
    governed_prefix,
    may_write,
    open_write,
    parse_write,
    prefix_handle,
)
from chain_lite.resolution import home_prefixes
from resolver import namespace
from resolver.db import Database, Tx
from resolver.errors import (
    AlreadyExists,
    AuthenticationFailed,
    AuthenticationNeeded,
    Delegated,
    HandleNotFound,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    NotResponsible,
)

REPLAY_WINDOW_MS = 5 * 60 * 1000
"""A request's timestamp must be within this of the node's clock; its nonce is remembered that long."""


class _AcceptedChanges:
    """What an accepted write changes, ``(identifier, encoded record or None)``, keyed by its log leaf.

    Acceptance parses and checks the write; the sequencer needs the same identifier and record a few
    hundred milliseconds later, and parsing again was a third of its time per leaf. The value is a pure
    function of the leaf's bytes, so an entry can never be wrong, only missing (a write accepted by
    another process, or before a restart): then the sequencer parses the leaf itself. Bounded, oldest
    out first; a lock because writes are accepted in the thread pool while the sequencer pops.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self._changes: dict[bytes, tuple[str, bytes | None]] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, leaf: bytes, identifier: str, record: bytes | None) -> None:
        with self._lock:
            if len(self._changes) >= self._capacity:
                del self._changes[next(iter(self._changes))]
            self._changes[leaf] = (identifier, record)

    def pop(self, leaf: bytes) -> tuple[str, bytes | None] | None:
        with self._lock:
            return self._changes.pop(leaf, None)


_accepted = _AcceptedChanges()


def change_of(leaf: bytes) -> tuple[str, bytes | None]:
    """``(canonical identifier, encoded record or None after a delete)`` of a registry log leaf: the one
    its acceptance computed when this process accepted it, else parsed from the leaf."""
    change = _accepted.pop(leaf)
    if change is None:
        request = parse_write(leaf[1:]).request
        record = request.record()
        change = request.identifier, None if record is None else record.encode()
    return change


@dataclass(frozen=True, slots=True)
class Accepted:
    identifier: str
    op: str
    request_id: bytes


def load_record(tx: Tx, identifier: str, *, lock: bool = False) -> Record | None:
    """The current record of ``identifier`` in any spelling (a device's ``kid``, a block's gateway id).

    ``None`` when absent; raises :class:`chain_lite.errors.IdentifierError` for an invalid identifier.
    """
    identifier = canonical_identifier(identifier)
    if lock:
        row = tx.one("SELECT record FROM records WHERE identifier = ? FOR UPDATE", (identifier,))
    else:
        row = tx.one("SELECT record FROM records WHERE identifier = ?", (identifier,))
    return None if row is None else Record.decode(bytes(row[0]))


def _admin_key(tx: Tx, index: int, prefix: str) -> PublicKey | None:
    record = load_record(tx, f"0.na/{prefix}")
    if record is None:
        return None
    try:
        return record.public_key(index)
    except ChainError:
        return None


def _parse(raw: bytes) -> SignedWrite:
    if not raw:
        raise AuthenticationNeeded("the body must be a signed write request (COSE_Sign1)")
    try:
        return parse_write(raw)
    except IdentifierError as exc:
        raise InvalidHandle(str(exc)) from exc
    except FormatError as exc:
        raise InvalidValue(str(exc)) from exc


def check_and_apply(tx: Tx, raw: bytes, *, origin: str, now_ms: int, bootstrap: bool = False) -> Accepted:
    """Every check of a write inside ``tx``; on success the record changes and the leaf is queued.

    ``bootstrap`` accepts the self-signed creation of the node's root prefix at ``root init``.
    """
    signed = _parse(raw)
    req = signed.request
    if req.origin != origin:
        raise AuthenticationFailed(f"request is for node {req.origin!r}, this is {origin!r}")
    if abs(req.timestamp_ms - now_ms) > REPLAY_WINDOW_MS:
        raise AuthenticationFailed(
            f"request timestamp is {(req.timestamp_ms - now_ms) / 1000:+.0f} s from the node's clock "
            f"(window ±{REPLAY_WINDOW_MS // 1000} s)"
        )
    if not bootstrap:
        _check_served(tx, req.identifier)
    index, admin_prefix = signed.admin
    record = req.record()
    _check_keys(record)
    if bootstrap:
        if governed_prefix(req.identifier) != admin_prefix or req.op != "create" or record is None:
            raise InsufficientPermissions("a bootstrap write must create the signer's own prefix")
        key = record.public_key(index)
    else:
        key = _admin_key(tx, index, admin_prefix)
    if key is None:
        raise AuthenticationFailed(f"no admin key {signed.sign1.kid!r} is registered")
    try:
        open_write(raw, lambda _kid: key)
    except SignatureError as exc:
        raise AuthenticationFailed(str(exc)) from exc
    if not bootstrap and not may_write(admin_prefix, req.op, req.identifier):
        raise InsufficientPermissions(
            f"admin of {admin_prefix} may not {req.op} {req.identifier}: outside its prefix"
        )
    # The delegation first: under a delegated prefix the answer is "go to the child", with its address.
    _check_delegation(tx, req.identifier, record, admin_prefix)
    _check_home(tx, req.identifier, bootstrap=bootstrap)
    # The nonce insert is the replay guard; ON CONFLICT makes it atomic under concurrent requests.
    tx.execute("DELETE FROM nonces WHERE expires_ms < ?", (now_ms,))
    fresh = tx.one(
        "INSERT INTO nonces (nonce, expires_ms) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
        (req.nonce, now_ms + 2 * REPLAY_WINDOW_MS),
    )
    if fresh is None:
        raise AuthenticationFailed("replayed request: this nonce was already used")
    current = load_record(tx, req.identifier, lock=True)
    if req.op == "create" and current is not None:
        raise AlreadyExists(f"{req.identifier} already exists")
    if req.op != "create" and current is None:
        raise HandleNotFound(f"{req.identifier} does not exist")
    encoded = None if record is None else record.encode()
    if encoded is None:
        tx.execute("DELETE FROM records WHERE identifier = ?", (req.identifier,))
    elif req.op == "create":
        _create(tx, req.identifier, encoded, now_ms)
    else:
        tx.execute(
            "UPDATE records SET record = ?, updated_ms = ? WHERE identifier = ?",
            (encoded, now_ms, req.identifier),
        )
    _bind_keys(tx, req.identifier, record)
    leaf = registry_leaf(raw)
    tx.execute("INSERT INTO pending (leaf, received_ms) VALUES (?, ?)", (leaf, now_ms))
    # Carried to the sequencer (a rollback after this line leaves an entry nobody asks for: harmless).
    _accepted.remember(leaf, req.identifier, encoded)
    return Accepted(req.identifier, req.op, signed.request_id)


def _confusable_owner(tx: Tx, key: str) -> str | None:
    row = tx.one("SELECT identifier FROM records WHERE skeleton = ?", (key,))
    return None if row is None else str(row[0])


def _create(tx: Tx, identifier: str, record: bytes, now_ms: int) -> None:
    """Insert a new record, refusing a look-alike of an existing identifier (resolver.namespace)."""
    key = namespace.skeleton(identifier)
    owner = _confusable_owner(tx, key)
    if owner is not None:
        raise AlreadyExists(_confusable_message(identifier, owner))
    # No conflict target: both the identifier and the skeleton are unique, and a concurrent create of
    # either must lose here rather than fail as a storage error.
    created = tx.one(
        "INSERT INTO records (identifier, record, updated_ms, skeleton) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING RETURNING identifier",
        (identifier, record, now_ms, key),
    )
    if created is None:  # a concurrent create won the race
        owner = _confusable_owner(tx, key)
        if owner is None or owner == identifier:
            raise AlreadyExists(f"{identifier} already exists")
        raise AlreadyExists(_confusable_message(identifier, owner))


def _confusable_message(identifier: str, owner: str) -> str:
    return (
        f"{identifier} looks the same as the existing {owner} (same UTS #39 confusable skeleton): "
        f"identifiers that look the same are one identifier; use {owner}"
    )


def _bind_keys(tx: Tx, identifier: str, record: Record | None) -> None:
    """Bind the record's device keys to it (none after a delete); a key bound elsewhere is refused."""
    tx.execute("DELETE FROM device_keys WHERE identifier = ?", (identifier,))
    if record is None:
        return
    for fingerprint in namespace.bound_keys(record):
        bound = tx.one(
            "INSERT INTO device_keys (key_hash, identifier) VALUES (?, ?) "
            "ON CONFLICT (key_hash) DO NOTHING RETURNING identifier",
            (fingerprint, identifier),
        )
        if bound is None:
            row = tx.one("SELECT identifier FROM device_keys WHERE key_hash = ?", (fingerprint,))
            owner = "another identifier" if row is None else str(row[0])
            raise AlreadyExists(
                f"{identifier}: its HS_PUBKEY (SHA-256 {fingerprint.hex()[:16]}…) is already the key of "
                f"{owner}; one device key belongs to one device"
            )


def _check_served(tx: Tx, identifier: str) -> None:
    """Refuse, before any admin key is looked up, an identifier the node neither holds nor has a prefix
    of (Handle's "server not responsible", 301, which its servers answer before authenticating): a node
    serving ``88.123.99`` and ``88.200.5`` names the prefix of ``88.300.1/X`` rather than an unknown
    admin key. Everything else is judged by the checks after the signature (:func:`_check_home`)."""
    prefixes = home_prefixes(identifier)
    if not prefixes:
        return  # a top-level prefix record: only its own admin (update) or a bootstrap writes it
    handles = (*(prefix_handle(p) for p in prefixes), identifier)  # a record held here is served here
    marks = ", ".join("?" for _ in handles)
    query = f"SELECT 1 FROM records WHERE identifier IN ({marks}) LIMIT 1"  # noqa: S608 (placeholders only)
    if tx.one(query, handles) is None:
        raise NotResponsible(f"prefix {prefixes[-1]} is not registered at this node")


def _check_home(tx: Tx, identifier: str, *, bootstrap: bool) -> None:
    """The identifier's own prefix (or, for a prefix record, its parent) must be registered here."""
    governed = governed_prefix(identifier)
    if governed is None:
        home = identifier.partition("/")[0]
    else:
        parent, dot, _ = governed.rpartition(".")
        if not dot or bootstrap:
            return
        home = parent
    if tx.one("SELECT 1 FROM records WHERE identifier = ?", (f"0.na/{home}",)) is None:
        raise NotResponsible(f"prefix {home} is not registered at this node")


def delegation_above(tx: Tx, identifier: str) -> Delegation | None:
    """The delegation that takes ``identifier`` away from this node: the first delegated prefix record
    among :func:`chain_lite.resolution.home_prefixes` (shortest first), as resolution reads it."""
    for prefix in home_prefixes(identifier):
        record = load_record(tx, prefix_handle(prefix))
        if record is not None:
            delegation = record.delegation()
            if delegation is not None:
                return delegation
    return None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_delegation(tx: Tx, identifier: str, record: Record | None, admin_prefix: str) -> None:
    """Refuse a write under a delegated prefix (the child answers for it, D-075), a malformed
    delegation, a delegation by the prefix's own admin (only its parent's admin delegates it), and a
    delegation of a prefix under which this node still holds records."""
    above = delegation_above(tx, identifier)
    if above is not None:
        raise Delegated(
            f"{identifier} is under {above.prefix}, delegated to {', '.join(above.urls)} (log "
            f"{above.origin}): write it there",
            above.as_json(),
        )
    if record is None:
        return
    try:
        delegation = record.delegation()
    except ChainError as exc:
        raise InvalidValue(str(exc)) from exc
    if delegation is None:
        return
    if delegation.prefix == admin_prefix:
        raise InsufficientPermissions(
            f"admin of {admin_prefix} may not delegate its own prefix: the admin of its parent does"
        )
    p = _like_prefix(delegation.prefix)
    below = tx.one(
        "SELECT identifier FROM records WHERE identifier LIKE ? ESCAPE '\\' OR identifier LIKE ? ESCAPE '\\' "
        "OR identifier LIKE ? ESCAPE '\\' LIMIT 1",
        (f"{p}/%", f"{p}.%/%", f"0.na/{p}.%"),
    )
    if below is not None:
        raise AlreadyExists(
            f"cannot delegate {delegation.prefix}: this node still holds {below[0]} under it; move or "
            "delete the records under the prefix first"
        )


def _check_keys(record: Record | None) -> None:
    """Every HS_PUBKEY value must hold a usable key, or admins could lock themselves out by typo."""
    if record is None:
        return
    for value in record.values:
        if value.type == "HS_PUBKEY":
            try:
                record.public_key(value.index)
            except ChainError as exc:
                raise InvalidValue(f"HS_PUBKEY value {value.index}: {exc}") from exc
            if value.format != "base64":
                raise InvalidValue(f"HS_PUBKEY value {value.index} must be base64 SubjectPublicKeyInfo")


def submit_write(db: Database, raw: bytes, *, origin: str, now_ms: int, bootstrap: bool = False) -> Accepted:
    """Check and apply one signed write in its own transaction."""
    with db.transaction() as tx:
        return check_and_apply(tx, raw, origin=origin, now_ms=now_ms, bootstrap=bootstrap)
