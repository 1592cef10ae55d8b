"""Gateway blocks: hash-linked, signed batches of readings (DESIGN §3).

The header is deterministic CBOR (RFC 8949 §4.2.1)::

    [ "edgeroot/block/v1",      domain-separation label; "edgeroot/block/v1/sm3" in an SM3 log
      gateway,                  gateway identifier (text, canonical)
      height,                   0 for the first block
      prev,                     block id of the previous block (32 zero bytes at height 0)
      readings_root,            RFC 6962 root over the envelopes' exact bytes, in block order
      reading_count,
      [[signer, first, last, count], ...],   counter range per signer, sorted by signer
      time ]                    milliseconds since the Unix epoch, gateway clock

The label names the header's hash profile (:mod:`chain_lite.suite`): the readings root and the block id
use SHA-256 under ``edgeroot/block/v1`` and SM3 under ``edgeroot/block/v1/sm3``, so a block cannot be
taken for the other profile's. The block id is H of the header bytes. The header travels as the payload
of a COSE_Sign1 signed by the gateway key (kid = gateway identifier, content type
``application/vnd.edgeroot.block+cbor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chain_lite import cbor, merkle
from chain_lite.cose import HDR_CONTENT_TYPE, CoseSigner, KeyLookup, Sign1, parse_sign1, verify_with
from chain_lite.envelope import Envelope
from chain_lite.errors import ChainLinkError, FormatError, IdentifierError
from chain_lite.identifier import normalize
from chain_lite.suite import SHA256, SM3, HashSuite, HashSuiteMismatch

BLOCK_LABEL = "edgeroot/block/v1"
BLOCK_LABELS = {SHA256: BLOCK_LABEL, SM3: BLOCK_LABEL + "/sm3"}
"""The header's first item for each hash profile."""
_SUITE_OF_LABEL = {label: suite for suite, label in BLOCK_LABELS.items()}
BLOCK_CONTENT_TYPE = "application/vnd.edgeroot.block+cbor"
GENESIS_PREV = bytes(32)
MAX_BLOCK_HEADER_SIZE = 256 * 1024
_U63 = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class CounterRange:
    signer: str
    first: int
    last: int
    count: int


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U63:
        raise FormatError("block header", f"{what} is not an unsigned 63-bit integer")
    return value


def _ident(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError("block header", f"{what} is not text")
    try:
        if normalize(value) != value:
            raise FormatError("block header", f"{what} {value!r} is not in canonical form")
    except IdentifierError as exc:
        raise FormatError("block header", f"{what}: {exc.reason}") from exc
    return value


@dataclass(frozen=True, slots=True)
class BlockHeader:
    gateway: str
    height: int
    prev: bytes
    readings_root: bytes
    reading_count: int
    counters: tuple[CounterRange, ...]
    time_ms: int
    suite: HashSuite = SHA256
    """The hash profile of the readings root and the block id (named by the header's label)."""

    def __post_init__(self) -> None:
        if self.suite not in BLOCK_LABELS:
            raise FormatError("block header", f"no block format for hash {self.suite.name}")
        _ident(self.gateway, "gateway")
        _uint(self.height, "height")
        _uint(self.reading_count, "reading count")
        _uint(self.time_ms, "time")
        for digest, what in ((self.prev, "prev"), (self.readings_root, "readings root")):
            if not isinstance(digest, bytes) or len(digest) != merkle.HASH_SIZE:
                raise FormatError("block header", f"{what} is not a 32-byte hash")
        if self.height == 0 and self.prev != GENESIS_PREV:
            raise FormatError("block header", "the first block's prev must be 32 zero bytes")
        for c in self.counters:
            _ident(c.signer, "counter signer")
            _uint(c.first, "first counter")
            _uint(c.last, "last counter")
            _uint(c.count, "count")
            if not (c.first <= c.last and 1 <= c.count <= c.last - c.first + 1):
                raise FormatError("block header", f"counter range of {c.signer} is inconsistent")
        signers = [c.signer for c in self.counters]
        if signers != sorted(set(signers)):
            raise FormatError("block header", "counter ranges must be sorted by signer, one per signer")
        if sum(c.count for c in self.counters) != self.reading_count:
            raise FormatError("block header", "counter range counts do not add up to the reading count")
        if self.reading_count == 0 and self.readings_root != self.suite.empty_root:
            raise FormatError("block header", "an empty block must carry the empty-tree root")

    def encode(self) -> bytes:
        return cbor.encode(
            [
                BLOCK_LABELS[self.suite],
                self.gateway,
                self.height,
                self.prev,
                self.readings_root,
                self.reading_count,
                [[c.signer, c.first, c.last, c.count] for c in self.counters],
                self.time_ms,
            ]
        )

    @property
    def block_id(self) -> bytes:
        return self.suite.digest(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        item = cbor.decode_deterministic(data, "block header", max_size=MAX_BLOCK_HEADER_SIZE)
        suite = _SUITE_OF_LABEL.get(item[0]) if isinstance(item, list) and item else None
        if not isinstance(item, list) or len(item) != 8 or suite is None:
            labels = " or ".join(repr(label) for label in _SUITE_OF_LABEL)
            raise FormatError("block header", f"not an 8-item array labelled {labels}")
        _, gateway, height, prev, root, count, ranges, time_ms = item
        if not isinstance(ranges, list) or not all(isinstance(r, list) and len(r) == 4 for r in ranges):
            raise FormatError("block header", "counter ranges are not [signer, first, last, count] arrays")
        return cls(
            _ident(gateway, "gateway"),
            _uint(height, "height"),
            prev,
            root,
            _uint(count, "reading count"),
            tuple(CounterRange(*r) for r in ranges),
            _uint(time_ms, "time"),
            suite,
        )


def build_header(
    gateway: str,
    height: int,
    prev: bytes,
    envelopes: Sequence[Envelope],
    time_ms: int,
    *,
    suite: HashSuite = SHA256,
) -> BlockHeader:
    """The header for ``envelopes`` (in block order) as the block after ``prev`` at ``height``."""
    readings = [(e.signer, e.counter, e.raw) for e in envelopes]
    return header_for(gateway, height, prev, readings, time_ms, suite=suite)


def header_for(
    gateway: str,
    height: int,
    prev: bytes,
    readings: Sequence[tuple[str, int, bytes]],
    time_ms: int,
    *,
    suite: HashSuite = SHA256,
) -> BlockHeader:
    """Like :func:`build_header` from ``(signer, counter, envelope bytes)`` of already verified
    readings, so a gateway need not decode each envelope again."""
    ranges: dict[str, list[int]] = {}
    for signer, counter, _ in readings:
        r = ranges.get(signer)
        if r is None:
            ranges[signer] = [counter, counter, 1]
        else:
            r[0] = min(r[0], counter)
            r[1] = max(r[1], counter)
            r[2] += 1
    counters = tuple(CounterRange(s, *ranges[s]) for s in sorted(ranges))
    root = merkle.root_of((raw for _, _, raw in readings), suite=suite)
    return BlockHeader(gateway, height, prev, root, len(readings), counters, time_ms, suite)


@dataclass(frozen=True, slots=True)
class SignedBlock:
    header: BlockHeader
    raw: bytes
    sign1: Sign1

    @property
    def block_id(self) -> bytes:
        return self.header.suite.digest(self.sign1.payload)


def sign_block(header: BlockHeader, signer: CoseSigner) -> SignedBlock:
    if signer.kid != header.gateway:
        raise FormatError("block header", f"signer {signer.kid!r} is not the gateway {header.gateway!r}")
    raw = signer.sign(header.encode(), {HDR_CONTENT_TYPE: BLOCK_CONTENT_TYPE})
    return parse_block(raw)


def parse_block(data: bytes) -> SignedBlock:
    """Parse a signed block header; does *not* check the signature."""
    msg = parse_sign1(data, "block", max_size=MAX_BLOCK_HEADER_SIZE + 1024)
    if msg.protected.get(HDR_CONTENT_TYPE) != BLOCK_CONTENT_TYPE:
        raise FormatError("block", f"content type is not {BLOCK_CONTENT_TYPE}")
    header = BlockHeader.decode(msg.payload)
    if msg.kid != header.gateway:
        raise FormatError("block", f"signed by {msg.kid!r}, not by its gateway {header.gateway!r}")
    return SignedBlock(header, data, msg)


def check_suite(header: BlockHeader, suite: HashSuite) -> None:
    """Raise :class:`HashSuiteMismatch` unless ``header`` hashes with ``suite`` (the log's profile)."""
    if header.suite is not suite:
        what = f"gateway {header.gateway} block {header.height}"
        raise HashSuiteMismatch(what, suite.name, header.suite.name)


def open_block(data: bytes, lookup: KeyLookup, *, suite: HashSuite = SHA256) -> SignedBlock:
    """Parse a signed block header of hash profile ``suite`` and verify the gateway's signature."""
    block = parse_block(data)
    check_suite(block.header, suite)
    verify_with(block.sign1, lookup)
    return block


def check_successor(prev: BlockHeader | None, header: BlockHeader) -> None:
    """Raise :class:`ChainLinkError` unless ``header`` directly extends ``prev`` (None: genesis)."""
    if prev is None:
        if header.height != 0:
            raise ChainLinkError(header.gateway, header.height, "chain does not start at height 0")
        return
    if header.gateway != prev.gateway:
        raise ChainLinkError(header.gateway, header.height, f"follows a block of gateway {prev.gateway}")
    if header.height != prev.height + 1:
        raise ChainLinkError(header.gateway, header.height, f"does not follow height {prev.height}")
    if header.prev != prev.block_id:
        raise ChainLinkError(header.gateway, header.height, "prev is not the previous block's id")
    if header.time_ms < prev.time_ms:
        raise ChainLinkError(header.gateway, header.height, "time runs backwards")


def verify_chain(
    blocks: Sequence[bytes],
    lookup: KeyLookup,
    after: BlockHeader | None = None,
    *,
    suite: HashSuite = SHA256,
) -> list[SignedBlock]:
    """Verify signatures and linkage of consecutive signed blocks (of profile ``suite``) after ``after``."""
    out = []
    prev = after
    for data in blocks:
        block = open_block(data, lookup, suite=suite)
        check_successor(prev, block.header)
        out.append(block)
        prev = block.header
    return out


def check_body(header: BlockHeader, envelopes: Sequence[bytes]) -> None:
    """The envelopes are exactly the block's readings, in order (replicate mode)."""
    if len(envelopes) != header.reading_count:
        raise ChainLinkError(header.gateway, header.height, "body has a different number of readings")
    root = merkle.root_of(envelopes, suite=header.suite)
    if root != header.readings_root:
        raise ChainLinkError(header.gateway, header.height, "body does not match the readings root")


def reading_proof(envelopes: Sequence[bytes], index: int, *, suite: HashSuite = SHA256) -> list[bytes]:
    """Inclusion proof of ``envelopes[index]`` in its block's readings tree (hashed with ``suite``)."""
    tree = merkle.MerkleTree(suite=suite)
    tree.append_entries(envelopes)
    return tree.inclusion_proof(index)


def verify_reading(header: BlockHeader, envelope: bytes, index: int, proof: Sequence[bytes]) -> None:
    """Raise unless ``envelope`` is reading ``index`` of the block ``header`` commits to."""
    leaf = merkle.leaf_hash(envelope, suite=header.suite)
    merkle.verify_inclusion(
        index, header.reading_count, leaf, proof, header.readings_root, suite=header.suite
    )
