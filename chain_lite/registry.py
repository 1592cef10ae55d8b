"""Registry records and signed write requests (DESIGN §2): the pure rules, no storage.

Records
    A record is the identifier and a list of Handle-style typed values ``(index, type, format, value,
    ttl, timestamp)``. ``format`` is ``string`` (UTF-8 text), ``base64`` or ``hex`` (bytes, shown in
    that encoding, canonical). Its commitment in the verifiable map is SHA-256 of the deterministic CBOR
    ``["edgeroot/record/v1", identifier, [[index, type, format, value, ttl, timestamp_ms], ...]]``,
    values sorted by index.

Prefixes
    A prefix ``88.123`` has the record ``0.na/88.123`` (the Handle convention). Its ``HS_PUBKEY`` values
    (base64 SubjectPublicKeyInfo DER, P-256 or Ed25519) are the prefix's admin keys, named in a request
    as ``INDEX:0.na/PREFIX`` (Handle's admin notation, e.g. ``300:0.na/88.123``).

Write requests
    A COSE_Sign1 with content type :data:`WRITE_CONTENT_TYPE`, ``kid`` = the admin key name, over the
    deterministic CBOR ``["edgeroot/registry-write/v1", origin, op, identifier, values | null,
    timestamp_ms, nonce]``. ``origin`` binds the request to one node; ``timestamp_ms`` and the 16-byte
    ``nonce`` let the node refuse replays (it remembers nonces for its acceptance window). The record's
    values take the request's timestamp, so a record follows from the logged request alone.

Delegation (:class:`Delegation`)
    A prefix record may carry one ``HS_SITE`` value: the prefix is served by another node (Handle's
    ``HS_SITE`` idea). Its data is base64 of the deterministic CBOR ``["edgeroot/delegation/v1",
    prefix, [url, ...], vkey, policy]``: the child node's URLs, its log's verifier key and the C2SP
    tlog-policy its answers must satisfy, all inside the record the parent's map commits to.

Authority (:func:`may_write`)
    The admin of prefix ``P`` may write identifiers ``P/...`` and ``Q/...`` for any prefix ``Q`` below
    ``P``; it may create, update and delete the prefix records of prefixes below ``P``, and update (not
    delete) its own prefix record (key rotation). Nothing else.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from chain_lite import b64, cbor
from chain_lite.cose import HDR_CONTENT_TYPE, CoseSigner, KeyLookup, Sign1, parse_sign1, verify_with
from chain_lite.cosignature import log_verifier
from chain_lite.errors import FormatError, IdentifierError
from chain_lite.identifier import Identifier, normalize_prefix
from chain_lite.keys import PublicKey, load_public_der, public_der
from chain_lite.note import VerifierKey
from chain_lite.policy import Policy

RECORD_LABEL = "edgeroot/record/v1"
WRITE_LABEL = "edgeroot/registry-write/v1"
WRITE_CONTENT_TYPE = "application/vnd.edgeroot.registry-write+cbor"
PREFIX_HANDLE_PREFIX = "0.na"
FORMATS = ("string", "base64", "hex")
OPS = ("create", "update", "delete")
NONCE_SIZE = 16
MAX_VALUES = 64
MAX_VALUE_SIZE = 4096
MAX_TYPE_LENGTH = 64
MAX_REQUEST_SIZE = 32 * 1024
DEFAULT_TTL = 86400
MAX_UINT31 = (1 << 31) - 1
ADMIN_INDEX = 300
DELEGATION_TYPE = "HS_SITE"
DELEGATION_LABEL = "edgeroot/delegation/v1"
DELEGATION_INDEX = 1
MAX_NODE_URLS = 4
MAX_NODE_URL_LENGTH = 200
MAX_DELEGATED_POLICY = 2048
"""Bytes of tlog-policy text a delegation may carry: with four URLs and the vkey, its base64 still fits
one value (:data:`MAX_VALUE_SIZE`)."""


@dataclass(frozen=True, slots=True)
class Value:
    """One typed value of a record; ``timestamp_ms`` is 0 until the value is written."""

    index: int
    type: str
    format: str
    value: str
    ttl: int = DEFAULT_TTL
    timestamp_ms: int = 0

    def __post_init__(self) -> None:
        if type(self.index) is not int or not 1 <= self.index <= MAX_UINT31:
            raise FormatError("record value", f"index {self.index!r} is not an integer in 1..2**31-1")
        if (
            not isinstance(self.type, str)
            or not 1 <= len(self.type) <= MAX_TYPE_LENGTH
            or not self.type.isascii()
            or not self.type.isprintable()
        ):
            raise FormatError("record value", f"type {self.type!r} is not 1..64 printable ASCII characters")
        if self.format not in FORMATS:
            raise FormatError("record value", f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        if not isinstance(self.value, str) or len(self.value.encode()) > MAX_VALUE_SIZE:
            raise FormatError("record value", f"value is not text of at most {MAX_VALUE_SIZE} bytes")
        if self.format == "base64" and b64.decode(self.value) is None:
            raise FormatError("record value", "base64 value is not canonical padded base64")
        if self.format == "hex" and (self.value != self.value.lower() or _unhex(self.value) is None):
            raise FormatError("record value", "hex value is not lowercase hexadecimal of whole bytes")
        if type(self.ttl) is not int or not 0 <= self.ttl <= MAX_UINT31:
            raise FormatError("record value", f"ttl {self.ttl!r} is not an integer in 0..2**31-1")
        if type(self.timestamp_ms) is not int or self.timestamp_ms < 0:
            raise FormatError("record value", "timestamp is not a non-negative integer")

    def as_bytes(self) -> bytes:
        """The value's data as bytes (UTF-8 for ``string``)."""
        if self.format == "base64":
            data = b64.decode(self.value)
            assert data is not None
            return data
        if self.format == "hex":
            return bytes.fromhex(self.value)
        return self.value.encode()

    def stamped(self, timestamp_ms: int) -> Value:
        return Value(self.index, self.type, self.format, self.value, self.ttl, timestamp_ms)

    def to_list(self, *, with_timestamp: bool) -> list[object]:
        out: list[object] = [self.index, self.type, self.format, self.value, self.ttl]
        if with_timestamp:
            out.append(self.timestamp_ms)
        return out


def _unhex(text: str) -> bytes | None:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return None


def pubkey_value(index: int, key: PublicKey, ttl: int = DEFAULT_TTL) -> Value:
    """An ``HS_PUBKEY`` value carrying ``key`` as base64 SubjectPublicKeyInfo DER."""
    return Value(index, "HS_PUBKEY", "base64", b64.encode(public_der(key)), ttl)


def check_values(values: Sequence[Value]) -> tuple[Value, ...]:
    """Values sorted by index; refuses duplicates and too many values."""
    if not values:
        raise FormatError("record", "a record needs at least one value (delete it instead)")
    if len(values) > MAX_VALUES:
        raise FormatError("record", f"more than {MAX_VALUES} values")
    ordered = tuple(sorted(values, key=lambda v: v.index))
    if len({v.index for v in ordered}) != len(ordered):
        raise FormatError("record", "two values share an index")
    return ordered


@dataclass(frozen=True, slots=True)
class Record:
    identifier: str
    values: tuple[Value, ...]

    def encode(self) -> bytes:
        values = [v.to_list(with_timestamp=True) for v in self.values]
        return cbor.encode([RECORD_LABEL, self.identifier, values])

    @property
    def value_hash(self) -> bytes:
        """What the verifiable map stores for this record."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes, *, identifier: str | None = None) -> Record:
        """The record ``data`` encodes, checked strictly. ``identifier``: the canonical identifier the
        caller found the record under (precondition: canonical, as from :func:`canonical_identifier`);
        the record must carry exactly it, which also proves its identifier canonical without computing
        the canonical form again."""
        item = cbor.decode_deterministic(data, "record", max_size=MAX_REQUEST_SIZE)
        if not isinstance(item, list) or len(item) != 3 or item[0] != RECORD_LABEL:
            raise FormatError("record", f"not a 3-item array labelled {RECORD_LABEL!r}")
        _, carried, values = item
        if not isinstance(carried, str) or not isinstance(values, list):
            raise FormatError("record", "identifier must be text and values an array")
        # Strict, not re-canonicalised: the record's hash is over these bytes, and a record under a
        # non-canonical identifier could never match its map key.
        if identifier is not None:
            if carried != identifier:
                raise FormatError("record", f"a record of {carried!r} found under {identifier!r}")
        elif canonical_identifier(carried) != carried:
            raise FormatError("record", f"identifier {carried!r} is not in canonical form")
        return cls(carried, _values_from(values, with_timestamp=True))

    def has_type(self, type_: str) -> bool:
        return any(v.type == type_ for v in self.values)

    def signing_key(self) -> PublicKey | None:
        """The key of a device, gateway or bridge record: its lowest-index ``HS_PUBKEY`` value."""
        for v in self.values:
            if v.type == "HS_PUBKEY" and v.format == "base64":
                return load_public_der(v.as_bytes())
        return None

    def delegation(self) -> Delegation | None:
        """The prefix record's delegation (its one ``HS_SITE`` value), or ``None`` when it has none.

        Only a prefix record delegates: an ``HS_SITE`` value of any other record is an ordinary value.
        Raises :class:`FormatError` for a malformed one, for two of them, and for a delegation that
        names another prefix.
        """
        prefix = governed_prefix(self.identifier)
        sites = [v for v in self.values if v.type == DELEGATION_TYPE]
        if not sites or prefix is None:
            return None
        if len(sites) > 1:
            raise FormatError("delegation", f"{self.identifier} has {len(sites)} HS_SITE values, at most 1")
        if sites[0].format != "base64":
            raise FormatError("delegation", "an HS_SITE value must be base64 (of the delegation's CBOR)")
        delegation = Delegation.decode(sites[0].as_bytes())
        if delegation.prefix != prefix:
            raise FormatError("delegation", f"{self.identifier} carries a delegation of {delegation.prefix}")
        return delegation

    def public_key(self, index: int) -> PublicKey | None:
        """The key in this record's ``HS_PUBKEY`` value at ``index``, if any."""
        for v in self.values:
            if v.index == index and v.type == "HS_PUBKEY" and v.format == "base64":
                return load_public_der(v.as_bytes())
        return None


def _check_node_url(url: object) -> str:
    if (
        not isinstance(url, str)
        or not url.startswith(("http://", "https://"))
        or not 8 < len(url) <= MAX_NODE_URL_LENGTH
        or not url.isascii()
        or not url.isprintable()
        or " " in url
        or url.endswith("/")
    ):
        raise FormatError(
            "delegation", f"node URL {url!r} is not an http(s) URL of at most {MAX_NODE_URL_LENGTH} "
            "printable ASCII characters without spaces or a trailing slash",
        )  # fmt: skip
    return url


@dataclass(frozen=True, slots=True)
class Delegation:
    """``prefix`` is served by the node at ``urls``, whose log is ``vkey`` and whose answers must satisfy
    ``policy`` (C2SP tlog-policy text naming exactly that one log)."""

    prefix: str
    urls: tuple[str, ...]
    vkey: str
    policy: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or normalize_prefix(self.prefix) != self.prefix:
            raise FormatError("delegation", f"prefix {self.prefix!r} is not a normalised prefix")
        if not isinstance(self.urls, tuple) or not 1 <= len(self.urls) <= MAX_NODE_URLS:
            raise FormatError("delegation", f"needs 1..{MAX_NODE_URLS} node URLs")
        for url in self.urls:
            _check_node_url(url)
        if len(set(self.urls)) != len(self.urls):
            raise FormatError("delegation", "a node URL is listed twice")
        if not isinstance(self.vkey, str):
            raise FormatError("delegation", "vkey must be text")
        key = VerifierKey.parse(self.vkey)
        log_verifier(key)  # a log key (Ed25519 type 0x01, or SM2): never a witness's
        if str(key) != self.vkey:
            raise FormatError("delegation", "vkey must be a log verifier key, written canonically")
        if not isinstance(self.policy, str) or len(self.policy.encode()) > MAX_DELEGATED_POLICY:
            raise FormatError("delegation", f"policy must be text of at most {MAX_DELEGATED_POLICY} bytes")
        logs = [str(log.verifier.vkey()) for log in self.trust_policy().logs]
        if logs != [self.vkey]:
            raise FormatError("delegation", "the policy must list exactly one log: the delegated node's vkey")

    @property
    def origin(self) -> str:
        """The child log's name (its checkpoints' origin)."""
        return self.vkey.partition("+")[0]

    def trust_policy(self) -> Policy:
        return Policy.parse(self.policy.encode())

    def encode(self) -> bytes:
        return cbor.encode([DELEGATION_LABEL, self.prefix, list(self.urls), self.vkey, self.policy])

    @classmethod
    def decode(cls, data: bytes) -> Delegation:
        item = cbor.decode_deterministic(data, "delegation", max_size=MAX_VALUE_SIZE)
        if not isinstance(item, list) or len(item) != 5 or item[0] != DELEGATION_LABEL:
            raise FormatError("delegation", f"not a 5-item array labelled {DELEGATION_LABEL!r}")
        _, prefix, urls, vkey, policy = item
        if not isinstance(urls, list):
            raise FormatError("delegation", "node URLs must be an array")
        return cls(prefix, tuple(urls), vkey, policy)

    def value(self, index: int = DELEGATION_INDEX, ttl: int = DEFAULT_TTL) -> Value:
        """The ``HS_SITE`` value carrying this delegation."""
        return Value(index, DELEGATION_TYPE, "base64", b64.encode(self.encode()), ttl)

    def as_json(self) -> dict[str, object]:
        return {"prefix": self.prefix, "urls": list(self.urls), "vkey": self.vkey, "policy": self.policy}


def _values_from(items: object, *, with_timestamp: bool) -> tuple[Value, ...]:
    if not isinstance(items, list):
        raise FormatError("record", "values must be an array")
    width = 6 if with_timestamp else 5
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != width:
            raise FormatError("record", f"a value must be an array of {width} items")
        out.append(Value(*item))
    ordered = check_values(out)
    if list(ordered) != out:
        raise FormatError("record", "values must be sorted by index")
    return ordered


def prefix_handle(prefix: str) -> str:
    """The identifier of a prefix's own record: ``0.na/<prefix>``."""
    return f"{PREFIX_HANDLE_PREFIX}/{normalize_prefix(prefix)}"


def canonical_identifier(text: str) -> str:
    """The registry's one key for an identifier: what records carry, the node stores and the map hashes.

    The namespace key of :func:`chain_lite.identifier.fold` (prefix lowercase, suffix NFC with its ASCII
    letters lowercased); the suffix of a prefix record (``0.na/88.ABC``) is a prefix, so it must also be
    a valid prefix. Every producer (write requests, the node) and every verifier (resolution proofs)
    calls this function, so they cannot disagree on a map key. Raises :class:`IdentifierError`.
    """
    ident = Identifier.parse(text).folded()
    if ident.prefix == PREFIX_HANDLE_PREFIX:
        return prefix_handle(ident.suffix)
    return str(ident)


def governed_prefix(identifier: str) -> str | None:
    """For a prefix record ``0.na/P``, the prefix ``P``; ``None`` for any other identifier."""
    prefix, _, suffix = identifier.partition("/")
    return suffix if prefix == PREFIX_HANDLE_PREFIX else None


def is_below(prefix: str, ancestor: str) -> bool:
    """True when ``prefix`` is ``ancestor`` or lies below it in the dot hierarchy."""
    return prefix == ancestor or prefix.startswith(ancestor + ".")


def parent_prefix(prefix: str) -> str | None:
    head, dot, _ = prefix.rpartition(".")
    return head if dot else None


def may_write(admin_prefix: str, op: str, identifier: str) -> bool:
    """Whether the admin of ``admin_prefix`` may apply ``op`` to ``identifier`` (module docstring)."""
    governed = governed_prefix(identifier)
    if governed is None:
        return is_below(identifier.partition("/")[0], admin_prefix)
    if governed == admin_prefix:
        return op == "update"
    return is_below(governed, admin_prefix)


def parse_admin_kid(kid: str) -> tuple[int, str]:
    """``300:0.na/88.123`` → ``(300, "88.123")``."""
    index_text, colon, handle = kid.partition(":")
    if not colon or not index_text.isdigit() or index_text != str(int(index_text)):
        raise FormatError("admin key name", f"{kid!r} is not INDEX:0.na/PREFIX")
    try:
        canonical = canonical_identifier(handle)
    except IdentifierError as exc:
        raise FormatError("admin key name", f"{kid!r}: {exc}") from exc
    governed = governed_prefix(canonical)
    if governed is None:
        raise FormatError("admin key name", f"{kid!r} does not name a prefix record (0.na/PREFIX)")
    return int(index_text), governed


def admin_kid(prefix: str, index: int = ADMIN_INDEX) -> str:
    return f"{index}:{prefix_handle(prefix)}"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    origin: str
    op: str
    identifier: str
    values: tuple[Value, ...] | None
    timestamp_ms: int
    nonce: bytes

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise FormatError("write request", f"op {self.op!r} is not one of {', '.join(OPS)}")
        if (self.op == "delete") != (self.values is None):
            raise FormatError("write request", "delete carries no values; create and update carry some")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise FormatError("write request", f"nonce must be {NONCE_SIZE} bytes")
        if type(self.timestamp_ms) is not int or self.timestamp_ms < 0:
            raise FormatError("write request", "timestamp is not a non-negative integer")
        if not isinstance(self.origin, str) or not self.origin:
            raise FormatError("write request", "origin must be non-empty text")

    def encode(self) -> bytes:
        values = None if self.values is None else [v.to_list(with_timestamp=False) for v in self.values]
        return cbor.encode(
            [WRITE_LABEL, self.origin, self.op, self.identifier, values, self.timestamp_ms, self.nonce]
        )

    @classmethod
    def decode(cls, data: bytes) -> WriteRequest:
        item = cbor.decode_deterministic(data, "write request", max_size=MAX_REQUEST_SIZE)
        if not isinstance(item, list) or len(item) != 7 or item[0] != WRITE_LABEL:
            raise FormatError("write request", f"not a 7-item array labelled {WRITE_LABEL!r}")
        _, origin, op, identifier, values, timestamp_ms, nonce = item
        if not isinstance(identifier, str):
            raise FormatError("write request", "identifier must be text")
        canonical = canonical_identifier(identifier)
        if canonical != identifier:
            raise FormatError("write request", f"identifier is not in canonical form ({canonical!r})")
        vals = None if values is None else _values_from(values, with_timestamp=False)
        return cls(origin, op, identifier, vals, timestamp_ms, nonce)

    def record(self) -> Record | None:
        """The record this request leaves behind (``None`` after a delete)."""
        if self.values is None:
            return None
        return Record(self.identifier, tuple(v.stamped(self.timestamp_ms) for v in self.values))


@dataclass(frozen=True, slots=True)
class SignedWrite:
    request: WriteRequest
    raw: bytes
    sign1: Sign1

    @property
    def admin(self) -> tuple[int, str]:
        """``(key index, prefix)`` of the signing admin key."""
        return parse_admin_kid(self.sign1.kid)

    @property
    def request_id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def build_write(
    origin: str,
    op: str,
    identifier: str,
    values: Sequence[Value] | None,
    *,
    timestamp_ms: int,
    nonce: bytes,
) -> WriteRequest:
    """A write request; the caller supplies the clock reading and a fresh random ``nonce`` of
    :data:`NONCE_SIZE` bytes (``chain_lite`` has no clock and no randomness of its own)."""
    ident = canonical_identifier(identifier)
    vals = None if values is None else check_values(values)
    return WriteRequest(origin, op, ident, vals, timestamp_ms, nonce)


def sign_write(request: WriteRequest, signer: CoseSigner) -> SignedWrite:
    """Sign ``request`` with an admin key whose ``kid`` is ``INDEX:0.na/PREFIX``."""
    parse_admin_kid(signer.kid)
    raw = signer.sign(request.encode(), {HDR_CONTENT_TYPE: WRITE_CONTENT_TYPE})
    return parse_write(raw)


def parse_write(data: bytes) -> SignedWrite:
    """Parse a signed write request; does *not* check the signature or the authority."""
    msg = parse_sign1(data, "write request", max_size=MAX_REQUEST_SIZE)
    if msg.protected.get(HDR_CONTENT_TYPE) != WRITE_CONTENT_TYPE:
        raise FormatError("write request", f"content type is not {WRITE_CONTENT_TYPE}")
    parse_admin_kid(msg.kid)
    return SignedWrite(WriteRequest.decode(msg.payload), data, msg)


def open_write(data: bytes, lookup: KeyLookup) -> SignedWrite:
    """Parse and check the admin signature (authority and replay are the caller's rules)."""
    signed = parse_write(data)
    verify_with(signed.sign1, lookup)
    return signed
