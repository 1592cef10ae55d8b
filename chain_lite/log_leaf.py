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
0x06   child anchor        deterministic CBOR ``["edgeroot/anchor/v1", child_vkey, checkpoint, cosigned_at]``
=====  ==================  =======================================================================

Each body is itself labelled and versioned, so a leaf explains itself to an auditor who replays the
log: blocks and registry changes carry their original signatures, and the registry state after any
log prefix follows from the registry leaves in it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain_lite import cbor
from chain_lite.block import SignedBlock, parse_block
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cosignature import log_verifier
from chain_lite.epcis_capture import LEAF_EPCIS_EVENT, SignedCapture, parse_capture
from chain_lite.errors import ChainError, FormatError
from chain_lite.note import SIGTYPE_ED25519, SIGTYPE_SM2, Note, VerifierKey, open_note
from chain_lite.registry import SignedWrite, parse_write

LEAF_BLOCK = 0x01
LEAF_REGISTRY = 0x02
LEAF_MAP_HEAD = 0x03
LEAF_KEY_TRANSITION = 0x04
LEAF_EPCIS = LEAF_EPCIS_EVENT
LEAF_ANCHOR = 0x06
ANCHOR_LABEL = "edgeroot/anchor/v1"
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


@dataclass(frozen=True, slots=True)
class ChildAnchor:
    """A child log's checkpoint that this (parent) node cosigned as its witness (D-078).

    ``checkpoint`` holds exactly one signature line, the child log's own (cosignatures it carried when
    posted are dropped, so the leaf is the same whoever else witnessed the checkpoint); ``child_vkey``
    is the key the parent verified it with, so the leaf can be checked with nothing else at hand;
    ``cosigned_at`` is the timestamp of the parent's cosignature (POSIX seconds).
    """

    child_vkey: VerifierKey
    checkpoint: SignedCheckpoint
    cosigned_at: int

    def __post_init__(self) -> None:
        if self.child_vkey.sigtype not in (SIGTYPE_ED25519, SIGTYPE_SM2):
            raise FormatError("anchor", f"child key {self.child_vkey.name} is not a log (0x01 or SM2) key")
        if self.child_vkey.name != self.checkpoint.checkpoint.origin:
            raise FormatError(
                "anchor",
                f"child key {self.child_vkey.name!r} is not named for origin "
                f"{self.checkpoint.checkpoint.origin!r}",
            )
        if len(self.checkpoint.note.signatures) != 1:
            raise FormatError("anchor", "the anchored checkpoint must carry exactly the log's signature")
        if not 0 <= self.cosigned_at < 1 << 63:
            raise FormatError("anchor", f"cosigned_at {self.cosigned_at} out of range")

    @classmethod
    def of(cls, child_vkey: VerifierKey, checkpoint: SignedCheckpoint, cosigned_at: int) -> ChildAnchor:
        """The anchor of ``checkpoint``, keeping only the signature that verifies under ``child_vkey``
        (raises :class:`~chain_lite.errors.SignatureError` when there is none)."""
        verifier = log_verifier(child_vkey)
        open_note(checkpoint.note, [verifier])
        mine = (verifier.name, verifier.key_id)
        own = tuple(s for s in checkpoint.note.signatures if (s.name, s.key_id) == mine)[:1]
        return cls(
            child_vkey, SignedCheckpoint(checkpoint.checkpoint, Note(checkpoint.note.text, own)), cosigned_at
        )

    def leaf(self) -> bytes:
        body = [ANCHOR_LABEL, str(self.child_vkey), self.checkpoint.to_bytes(), self.cosigned_at]
        return bytes([LEAF_ANCHOR]) + cbor.encode(body)


def _parse_anchor(body: bytes) -> ChildAnchor:
    item = cbor.decode_deterministic(body, "anchor", max_size=MAX_LEAF_SIZE)
    if not isinstance(item, list) or len(item) != 4 or item[0] != ANCHOR_LABEL:
        raise FormatError("anchor", f"not a 4-item array labelled {ANCHOR_LABEL!r}")
    _, vkey_text, note, cosigned_at = item
    if not isinstance(vkey_text, str) or not isinstance(note, bytes):
        raise FormatError("anchor", "child key must be text and the checkpoint a byte string")
    if type(cosigned_at) is not int or cosigned_at < 0:
        raise FormatError("anchor", "cosigned_at must be an unsigned integer")
    try:
        vkey = VerifierKey.parse(vkey_text)
        checkpoint = SignedCheckpoint.parse(note)
    except ChainError as exc:
        raise FormatError("anchor", f"bad child key or checkpoint: {exc}") from exc
    # One encoding per anchor: an auditor re-encoding the parsed leaf gets the very bytes logged.
    if str(vkey) != vkey_text or checkpoint.to_bytes() != note:
        raise FormatError("anchor", "child key or checkpoint not in canonical form")
    return ChildAnchor(vkey, checkpoint, cosigned_at)


def block_leaf(signed_block: bytes) -> bytes:
    return bytes([LEAF_BLOCK]) + signed_block


def registry_leaf(signed_write: bytes) -> bytes:
    return bytes([LEAF_REGISTRY]) + signed_write


Leaf = SignedBlock | SignedWrite | MapHead | SignedCapture | ChildAnchor


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
    if kind == LEAF_ANCHOR:
        return _parse_anchor(body)
    if kind == LEAF_KEY_TRANSITION:
        raise FormatError("log leaf", "key transition leaves (0x04) are reserved and not yet defined")
    raise FormatError("log leaf", f"unknown leaf type {kind:#04x}")
