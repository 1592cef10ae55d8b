"""Typed leaves of a root node's log (DESIGN §3): the first byte says what follows.

=====  ==================  =======================================================================
type   name                bytes after the type byte
=====  ==================  =======================================================================
0x01   gateway block       the gateway-signed block header, a COSE_Sign1 (``edgeroot/block/v1``)
0x02   registry change     the admin-signed write request, a COSE_Sign1 (``edgeroot/registry-write/v1``)
0x03   map head            deterministic CBOR ``["edgeroot/map-head/v1", epoch, map_root, entries]``
0x04   key transition      reserved for log key rotation; not written yet, refused by the parser
0x05   EPCIS event         the signer's COSE_Sign1 over one EPCIS 2.0 event (``edgeroot/epcis-capture/v1``,
                           :mod:`chain_lite.epcis_capture`)
=====  ==================  =======================================================================

Each body is itself labelled and versioned, so a leaf explains itself to an auditor who replays the
log: blocks and registry changes carry their original signatures, and the registry state after any
log prefix follows from the registry leaves in it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain_lite import cbor
from chain_lite.block import SignedBlock, parse_block
from chain_lite.epcis_capture import LEAF_EPCIS_EVENT, SignedCapture, parse_capture
from chain_lite.errors import FormatError
from chain_lite.registry import SignedWrite, parse_write

LEAF_BLOCK = 0x01
LEAF_REGISTRY = 0x02
LEAF_MAP_HEAD = 0x03
LEAF_KEY_TRANSITION = 0x04
LEAF_EPCIS = LEAF_EPCIS_EVENT
MAP_HEAD_LABEL = "edgeroot/map-head/v1"
MAX_LEAF_SIZE = 65535
"""tlog-tiles entry bundles prefix each entry with a 16-bit length."""


@dataclass(frozen=True, slots=True)
class MapHead:
    """The verifiable map's root after epoch ``epoch`` (one per sequencer batch that changed it)."""

    epoch: int
    root: bytes
    entries: int

    def leaf(self) -> bytes:
        return bytes([LEAF_MAP_HEAD]) + cbor.encode([MAP_HEAD_LABEL, self.epoch, self.root, self.entries])


def block_leaf(signed_block: bytes) -> bytes:
    return bytes([LEAF_BLOCK]) + signed_block


def registry_leaf(signed_write: bytes) -> bytes:
    return bytes([LEAF_REGISTRY]) + signed_write


Leaf = SignedBlock | SignedWrite | MapHead | SignedCapture


def parse_leaf(data: bytes) -> Leaf:
    """Decode a log leaf; signatures inside are *not* checked here."""
    if not data:
        raise FormatError("log leaf", "empty")
    if len(data) > MAX_LEAF_SIZE:
        raise FormatError("log leaf", f"{len(data)} bytes exceeds the {MAX_LEAF_SIZE}-byte limit")
    kind, body = data[0], data[1:]
    if kind == LEAF_BLOCK:
        return parse_block(body)
    if kind == LEAF_REGISTRY:
        return parse_write(body)
    if kind == LEAF_MAP_HEAD:
        item = cbor.decode_deterministic(body, "map head", max_size=MAX_LEAF_SIZE)
        if not isinstance(item, list) or len(item) != 4 or item[0] != MAP_HEAD_LABEL:
            raise FormatError("map head", f"not a 4-item array labelled {MAP_HEAD_LABEL!r}")
        _, epoch, root, entries = item
        if type(epoch) is not int or epoch < 0 or type(entries) is not int or entries < 0:
            raise FormatError("map head", "epoch and entries must be unsigned integers")
        if not isinstance(root, bytes) or len(root) != 32:
            raise FormatError("map head", "map root is not a 32-byte hash")
        return MapHead(epoch, root, entries)
    if kind == LEAF_EPCIS:
        return parse_capture(body)
    if kind == LEAF_KEY_TRANSITION:
        raise FormatError("log leaf", "key transition leaves (0x04) are reserved and not yet defined")
    raise FormatError("log leaf", f"unknown leaf type {kind:#04x}")
