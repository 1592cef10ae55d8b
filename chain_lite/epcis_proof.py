"""Checking what a node shows about EPCIS events, offline: each event's inclusion, signature and hash
ID (:func:`verify_event`), and the completeness of an identifier's event list (:func:`verify_index`,
decisions D-070). Pure: the caller verifies the checkpoint (policy, pin) and proves the signer's key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite.cose import verify_sign1
from chain_lite.epcis_capture import (
    Authority,
    IncompleteIndex,
    IndexEntry,
    SignedCapture,
    attribution,
    check_index,
    epcis_leaf,
    index_key_name,
    parse_capture,
    signer_authority,
)
from chain_lite.epcis_facts import EventFacts, Mention, event_facts
from chain_lite.errors import ChainError, FormatError
from chain_lite.keys import PublicKey
from chain_lite.log_leaf import MapHead, parse_leaf
from chain_lite.merkle import leaf_hash, verify_inclusion
from chain_lite.policy import VerifiedCheckpoint
from chain_lite.receipt import Receipt, check_inclusion
from chain_lite.resolution import StaleMap
from chain_lite.sparse_map import MapProof, map_key, verify_map_proof


class EventNotProven(FormatError):
    """An event a node showed failed a check (inclusion, signature, hash ID...): names the event by
    its log index, with the failure as ``cause``."""

    def __init__(self, index: int, cause: ChainError) -> None:
        super().__init__("epcis event", f"the event at log index {index} does not verify: {cause}")
        self.index = index
        self.cause = cause


@dataclass(frozen=True, slots=True)
class ProvenEvent:
    """An event shown by a node and checked: in the log at ``index`` of the verified checkpoint,
    signed by ``signer`` (whose key the caller proved), with the CBV hash ID it claims."""

    index: int
    signed: SignedCapture
    event: dict[str, Any]
    facts: EventFacts
    authority: Authority

    def attribution_of(self, mention: Mention) -> str:
        return attribution(mention.prefix, self.authority)


def verify_event(  # noqa: PLR0917 (what is shown, where, and the keys to check it with)
    raw: bytes,
    index: int,
    inclusion: Sequence[bytes],
    verified: VerifiedCheckpoint,
    key: PublicKey,
    bases: Sequence[str],
    *,
    parsed: SignedCapture | None = None,
) -> ProvenEvent:
    """Check a signed capture shown at log ``index`` with an inclusion proof in ``verified`` (a
    checkpoint the caller verified), signed with ``key`` (the signer's key the caller proved, e.g. with
    :func:`capture_key` over a proven record): inclusion, origin, signature, hash ID. ``parsed``: the
    caller's :func:`parse_capture` of ``raw``, if it has one (parsed once, not twice)."""
    cp = verified.checkpoint
    suite = cp.suite  # the log's hash profile, which the policy checked the checkpoint declares
    verify_inclusion(
        index, cp.size, leaf_hash(epcis_leaf(raw), suite=suite), list(inclusion), cp.root, suite=suite
    )
    signed = parsed if parsed is not None and parsed.raw == raw else parse_capture(raw)
    if signed.capture.origin != cp.origin:
        raise FormatError(
            "epcis capture", f"signed for node {signed.capture.origin!r}, shown by {cp.origin!r}"
        )
    verify_sign1(signed.sign1, key)
    try:
        event = json.loads(signed.capture.event_json)
    except (ValueError, RecursionError) as exc:
        raise FormatError("epcis capture", f"the signed event is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise FormatError("epcis capture", "the signed event is not a JSON object")
    facts = event_facts(event, bases)
    if facts.hash_id != signed.capture.hash_id:
        raise FormatError(
            "epcis capture", f"signed hash ID {signed.capture.hash_id} is not the event's {facts.hash_id}"
        )
    return ProvenEvent(index, signed, event, facts, signer_authority(signed.signer))


@dataclass(frozen=True, slots=True)
class IndexProof:
    """A node's completeness answer for ``identifier``: the event indices, and the map proof of the
    entry committing to them under the map head the receipt's checkpoint ends with."""

    identifier: str
    indices: tuple[int, ...]
    entry: bytes | None
    map_proof: bytes
    map_head: bytes
    receipt: Receipt


def verify_index(
    proof: IndexProof, verified: VerifiedCheckpoint, *, head: MapHead | None = None
) -> IndexEntry | None:
    """Check that ``proof.indices`` is every event of the identifier as of ``verified`` (the receipt's
    checkpoint, verified by the caller): the map head is the checkpoint's last leaf, the entry is in
    its map (or proven absent), and the indices hash to the entry. ``head``: what
    :func:`verify_map_head` returned for this proof's map head, receipt and checkpoint (the proofs of
    one answer share them: checked once, not once per identifier)."""
    if head is None:
        head = verify_map_head(proof.map_head, proof.receipt, verified)
    cp = verified.checkpoint
    suite = cp.suite
    value = None if proof.entry is None else suite.digest(proof.entry)
    key = map_key(index_key_name(proof.identifier), suite=suite)
    verify_map_proof(head.root, key, value, MapProof.from_bytes(proof.map_proof), suite=suite)
    if any(i >= cp.size for i in proof.indices):
        raise IncompleteIndex(proof.identifier, "an index lies beyond the checkpoint")
    return check_index(proof.identifier, proof.entry, proof.indices, suite=suite)


def verify_map_head(map_head: bytes, receipt: Receipt, verified: VerifiedCheckpoint) -> MapHead:
    """The map head an index answer is under, checked: ``receipt`` is for ``verified`` (a checkpoint
    the caller verified) and puts ``map_head`` at its last leaf, the map of that very size."""
    cp = verified.checkpoint
    rcp = receipt.checkpoint.checkpoint
    if (rcp.origin, rcp.size, rcp.root) != (cp.origin, cp.size, cp.root):
        raise FormatError("epcis index proof", "the receipt's checkpoint is not the verified checkpoint")
    if receipt.index != cp.size - 1:
        raise StaleMap(receipt.index, cp.size)
    check_inclusion(receipt, leaf_hash(map_head, suite=cp.suite), verified)
    head = parse_leaf(map_head)
    if not isinstance(head, MapHead) or head.epoch != cp.size:
        raise FormatError("epcis index proof", "the proven leaf is not the checkpoint's map head")
    return head
