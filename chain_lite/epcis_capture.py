"""Signed EPCIS captures on the log (leaf 0x05) and the per-identifier event index in the map.

Signed capture (docs/formats.md, "EPCIS events on the log")
    A COSE_Sign1 (section 8 rules), ``kid`` = the signer: a prefix admin (``INDEX:0.na/PREFIX``) or a
    *capture key* (an identifier ``PREFIX/NAME`` whose record carries an ``EPCIS_CAPTURE`` value and
    its key as the lowest-index ``HS_PUBKEY``), content type :data:`CAPTURE_CONTENT_TYPE`, payload
    deterministic CBOR ``["edgeroot/epcis-capture/v1", origin, hash ID, event JSON (bytes)]``. The
    event JSON is the UTF-8 JSON text of one EPCIS 2.0 event exactly as the signer serialised it; the
    hash ID is its CBV 2.0 event hash (``ni:///sha-256;<hex>?ver=CBV2.0``), which an auditor
    recomputes from those bytes. The log leaf is ``0x05 || signed capture``.

Attribution
    The signer speaks for one prefix (its *authority*): the admin's prefix, or the capture key's own
    prefix. An edgeroot identifier of the event under that prefix (or below it) is stated by its
    owner (``owner``); any other identifier, an edgeroot one of another prefix or a foreign GS1 one, is
    only *asserted* by the capturing prefix (``asserted``).

Completeness index (decisions D-070)
    For every identifier an event mentions, the map holds an entry under the map key
    ``H("epcis-index:" || identifier)`` (no registry identifier contains ``:`` in its prefix, so
    the two key spaces never meet) whose value is ``H`` of the deterministic CBOR
    ``["edgeroot/epcis-index/v1", identifier, count, head]``: the number of events that mention it and
    the head of a hash chain over their log indices, ``head_0 = H(0x20 || identifier)``,
    ``head_k = H(0x21 || head_{k-1} || index_k as 8 bytes big-endian)``. ``H`` is the log's hash
    (:mod:`chain_lite.suite`: SHA-256, or SM3 in an SM3 log), as for the map itself. A map proof of that entry
    under a verified map head, with the list of indices, proves that the list is every event the log
    held for the identifier as of that map.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chain_lite import cbor
from chain_lite.cose import HDR_CONTENT_TYPE, CoseSigner, Sign1, parse_sign1
from chain_lite.errors import FormatError, IdentifierError, ProofError
from chain_lite.keys import PublicKey
from chain_lite.registry import Record, canonical_identifier, is_below, parse_admin_kid
from chain_lite.suite import SHA256, HashSuite

LEAF_EPCIS_EVENT = 0x05
CAPTURE_LABEL = "edgeroot/epcis-capture/v1"
CAPTURE_CONTENT_TYPE = "application/vnd.edgeroot.epcis-capture+cbor"
CAPTURE_KEY_TYPE = "EPCIS_CAPTURE"
"""The registry value type that makes a record's key a capture key for the record's prefix."""
INDEX_LABEL = "edgeroot/epcis-index/v1"
INDEX_KEY_PREFIX = "epcis-index:"
MAX_CAPTURE_SIZE = 65535 - 1
"""A signed capture is a log leaf after one type byte (tlog-tiles entries have a 16-bit length)."""
_CHAIN_START = b"\x20"
_CHAIN_STEP = b"\x21"
OWNER = "owner"
ASSERTED = "asserted"


class CaptureRefused(FormatError):
    """A capture breaks a rule of this module; ``reason`` names it."""

    def __init__(self, reason: str) -> None:
        super().__init__("epcis capture", reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Capture:
    origin: str
    hash_id: str
    event_json: bytes

    def encode(self) -> bytes:
        return cbor.encode([CAPTURE_LABEL, self.origin, self.hash_id, self.event_json])

    @classmethod
    def decode(cls, data: bytes) -> Capture:
        item = cbor.decode_deterministic(data, "epcis capture", max_size=MAX_CAPTURE_SIZE)
        if not isinstance(item, list) or len(item) != 4 or item[0] != CAPTURE_LABEL:
            raise FormatError("epcis capture", f"not a 4-item array labelled {CAPTURE_LABEL!r}")
        _, origin, hash_id, event_json = item
        if not isinstance(origin, str) or not origin:
            raise FormatError("epcis capture", "origin must be non-empty text")
        if not isinstance(hash_id, str) or not hash_id.startswith("ni:///sha-256;"):
            raise FormatError("epcis capture", "hash ID must be text of the form ni:///sha-256;...")
        if not isinstance(event_json, bytes) or not event_json:
            raise FormatError("epcis capture", "event must be non-empty JSON bytes")
        return cls(origin, hash_id, event_json)


@dataclass(frozen=True, slots=True)
class SignedCapture:
    capture: Capture
    raw: bytes
    sign1: Sign1

    @property
    def signer(self) -> str:
        return self.sign1.kid

    def leaf(self) -> bytes:
        return epcis_leaf(self.raw)


def epcis_leaf(signed_capture: bytes) -> bytes:
    return bytes([LEAF_EPCIS_EVENT]) + signed_capture


def sign_capture(capture: Capture, signer: CoseSigner) -> SignedCapture:
    signer_authority(signer.kid)
    raw = signer.sign(capture.encode(), {HDR_CONTENT_TYPE: CAPTURE_CONTENT_TYPE})
    return parse_capture(raw)


def parse_capture(data: bytes) -> SignedCapture:
    """Parse a signed capture; does *not* check the signature, the hash ID or the signer's authority."""
    msg = parse_sign1(data, "epcis capture", max_size=MAX_CAPTURE_SIZE)
    if msg.protected.get(HDR_CONTENT_TYPE) != CAPTURE_CONTENT_TYPE:
        raise FormatError("epcis capture", f"content type is not {CAPTURE_CONTENT_TYPE}")
    signer_authority(msg.kid)
    return SignedCapture(Capture.decode(msg.payload), data, msg)


@dataclass(frozen=True, slots=True)
class Authority:
    """Who signed: ``kind`` is ``admin`` (key ``index`` of ``0.na/prefix``) or ``capture-key`` (the
    record ``identifier``); ``prefix`` is what the signer speaks for."""

    kind: str
    prefix: str
    identifier: str
    index: int | None


@functools.lru_cache(maxsize=1 << 12)
def signer_authority(kid: str) -> Authority:
    """The authority a ``kid`` claims (whether its key is registered is the node's check). Memoised:
    a pure function of the text, asked once per event by capture and by every verifier."""
    if ":" in kid.partition("/")[0]:
        index, prefix = parse_admin_kid(kid)
        return Authority("admin", prefix, f"0.na/{prefix}", index)
    try:
        identifier = canonical_identifier(kid)
    except IdentifierError as exc:
        raise FormatError(
            "epcis capture", f"signer {kid!r} is neither INDEX:0.na/PREFIX nor an identifier"
        ) from exc
    if identifier.startswith("0.na/"):
        raise FormatError("epcis capture", f"signer {kid!r}: an admin signs as INDEX:0.na/PREFIX")
    return Authority("capture-key", identifier.partition("/")[0], identifier, None)


class NotACaptureKey(FormatError):
    """The signer's record gives it no capture authority (no such admin key, no capture value)."""

    def __init__(self, kid: str, reason: str) -> None:
        super().__init__("epcis capture", f"signer {kid}: {reason}")
        self.kid = kid
        self.reason = reason


def capture_key(authority: Authority, kid: str, record: Record | None) -> PublicKey:
    """The key ``record`` (the current record of ``authority.identifier``) gives the signer ``kid``:
    the admin key at ``authority.index`` of a prefix record, or the lowest-index ``HS_PUBKEY`` of a
    record carrying an ``EPCIS_CAPTURE`` value. The node and every verifier use this one rule."""
    if record is None:
        raise NotACaptureKey(kid, f"{authority.identifier} is not registered")
    if record.identifier != authority.identifier:
        raise NotACaptureKey(kid, f"the record shown is {record.identifier}, not {authority.identifier}")
    if authority.index is not None:
        key = record.public_key(authority.index)
    elif not record.has_type(CAPTURE_KEY_TYPE):
        raise NotACaptureKey(
            kid,
            f"not a capture key: its record has no {CAPTURE_KEY_TYPE} value "
            "(a prefix admin registers one with `edgeroot register capture-key`)",
        )
    else:
        key = record.signing_key()
    if key is None:
        raise NotACaptureKey(kid, "its record holds no such key")
    return key


def attribution(prefix_of: str | None, authority: Authority) -> str:
    """``owner`` when the identifier's edgeroot prefix (``None``: a foreign identifier) lies under the
    signer's authority, else ``asserted``."""
    if prefix_of is not None and is_below(prefix_of, authority.prefix):
        return OWNER
    return ASSERTED


# --- the completeness index -------------------------------------------------------------------------------


def index_key_name(identifier: str) -> str:
    """The string whose SHA-256 is the map key of ``identifier``'s event index."""
    return INDEX_KEY_PREFIX + identifier


def chain_start(identifier: str, *, suite: HashSuite = SHA256) -> bytes:
    return suite.digest(_CHAIN_START + identifier.encode())


def chain_step(head: bytes, index: int, *, suite: HashSuite = SHA256) -> bytes:
    return suite.digest(_CHAIN_STEP + head + index.to_bytes(8, "big"))


@dataclass(frozen=True, slots=True)
class IndexEntry:
    identifier: str
    count: int
    head: bytes

    def encode(self) -> bytes:
        return cbor.encode([INDEX_LABEL, self.identifier, self.count, self.head])

    def extended(self, index: int, *, suite: HashSuite = SHA256) -> IndexEntry:
        return IndexEntry(self.identifier, self.count + 1, chain_step(self.head, index, suite=suite))

    @classmethod
    def empty(cls, identifier: str, *, suite: HashSuite = SHA256) -> IndexEntry:
        return cls(identifier, 0, chain_start(identifier, suite=suite))

    @classmethod
    def decode(cls, data: bytes) -> IndexEntry:
        item = cbor.decode_deterministic(data, "epcis index entry", max_size=4096)
        if not isinstance(item, list) or len(item) != 4 or item[0] != INDEX_LABEL:
            raise FormatError("epcis index entry", f"not a 4-item array labelled {INDEX_LABEL!r}")
        _, identifier, count, head = item
        if not isinstance(identifier, str) or type(count) is not int or count < 1:
            raise FormatError("epcis index entry", "identifier must be text and count a positive integer")
        if not isinstance(head, bytes) or len(head) != 32:
            raise FormatError("epcis index entry", "head is not a 32-byte hash")
        return cls(identifier, count, head)


def index_of(identifier: str, indices: Iterable[int], *, suite: HashSuite = SHA256) -> IndexEntry:
    """The entry a list of event log indices (in log order) leaves, hashed with the log's ``suite``."""
    entry = IndexEntry.empty(identifier, suite=suite)
    previous = -1
    for index in indices:
        if type(index) is not int or index <= previous:
            raise IncompleteIndex(identifier, f"the index list is not strictly increasing at {index!r}")
        entry = entry.extended(index, suite=suite)
        previous = index
    return entry


class IncompleteIndex(ProofError):
    """The events shown for an identifier are not the list its map entry commits to."""

    def __init__(self, identifier: str, reason: str) -> None:
        super().__init__(f"event index of {identifier}: {reason}")
        self.identifier = identifier
        self.reason = reason


def check_index(
    identifier: str, entry_bytes: bytes | None, indices: Sequence[int], *, suite: HashSuite = SHA256
) -> IndexEntry | None:
    """Check that ``indices`` is exactly the list the (map-proven) entry commits to; ``None`` entry
    means the map proves the identifier has no events, so the list must be empty."""
    if entry_bytes is None:
        if indices:
            raise IncompleteIndex(identifier, f"the map has no entry, yet {len(indices)} events are shown")
        return None
    entry = IndexEntry.decode(entry_bytes)
    if entry.identifier != identifier:
        raise IncompleteIndex(identifier, f"the entry is for {entry.identifier!r}")
    if entry.count != len(indices):
        raise IncompleteIndex(identifier, f"the entry counts {entry.count} events, {len(indices)} are shown")
    if index_of(identifier, indices, suite=suite).head != entry.head:
        raise IncompleteIndex(identifier, "the shown event indices do not hash to the entry's chain head")
    return entry
