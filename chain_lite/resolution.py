"""Resolution proofs: "this is the record of ID (or: there is none) as of checkpoint N", offline.

A proof has four parts, all bytes the verifier re-derives everything from:

``record``     the record's deterministic CBOR (:class:`chain_lite.registry.Record`), or ``None``
``map_proof``  a :class:`chain_lite.sparse_map.MapProof` for SHA-256(identifier)
``map_head``   the map-head log leaf (type 0x03) holding the map root
``receipt``    a C2SP tlog-proof placing that leaf in a checkpoint the caller verifies

The sequencer makes a map head the *last* leaf of every checkpointed tree, so for a current answer the
receipt's index must be ``size - 1``: the map shown is the newest the checkpoint commits to, not an
older one replayed. For an as-of answer the map head may be older than the checkpoint; its epoch
(the log size it closed) is returned, and the caller compares it with the size asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain_lite.errors import FormatError, ProofError
from chain_lite.identifier import normalize
from chain_lite.log_leaf import MapHead, parse_leaf
from chain_lite.merkle import leaf_hash
from chain_lite.policy import VerifiedCheckpoint
from chain_lite.receipt import Receipt, check_inclusion
from chain_lite.registry import Record, canonical_identifier, governed_prefix
from chain_lite.sparse_map import MapProof, map_key, verify_map_proof


class StaleMap(ProofError):
    """The map head shown is not the newest one the checkpoint commits to."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"map head at index {index} is not the last leaf of the checkpoint (size {size})")
        self.index = index
        self.size = size


@dataclass(frozen=True, slots=True)
class ResolutionProof:
    identifier: str
    record: bytes | None
    map_proof: bytes
    map_head: bytes
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class ProvenRecord:
    """What a verified proof establishes.

    ``identifier`` is the identifier as asked, in its normalised spelling (a device's ``kid``, say
    ``88.123.99/PUMP-0042``); the record proven is the one under its namespace key
    (:func:`chain_lite.registry.canonical_identifier`, e.g. ``88.123.99/pump-0042``), which is what
    ``record.identifier`` holds.
    """

    identifier: str
    record: Record | None
    epoch: int
    """The log size as of which the record (or its absence) is proven."""
    checkpoint: VerifiedCheckpoint


def verify_resolution(
    proof: ResolutionProof, verified: VerifiedCheckpoint, *, as_of: bool = False
) -> ProvenRecord:
    """Check ``proof`` against a checkpoint the caller has already verified (policy or light client).

    ``verified`` must be the receipt's own checkpoint, verified by the caller.
    """
    cp = verified.checkpoint
    rcp = proof.receipt.checkpoint.checkpoint
    if (rcp.origin, rcp.size, rcp.root) != (cp.origin, cp.size, cp.root):
        raise FormatError("resolution proof", "the receipt's checkpoint is not the verified checkpoint")
    asked = normalize(proof.identifier)
    identifier = canonical_identifier(asked)
    index = proof.receipt.index
    if not as_of and index != cp.size - 1:
        raise StaleMap(index, cp.size)
    suite = cp.suite  # the log's hash profile, which the policy checked the checkpoint declares
    check_inclusion(proof.receipt, leaf_hash(proof.map_head, suite=suite), verified)
    head = parse_leaf(proof.map_head)
    if not isinstance(head, MapHead):
        raise FormatError("resolution proof", "the proven leaf is not a map head")
    if head.epoch != index + 1:
        raise FormatError("resolution proof", f"map head epoch {head.epoch} does not match its index {index}")
    record = None
    value = None
    if proof.record is not None:
        record = Record.decode(proof.record)
        if record.identifier != identifier:
            raise FormatError("resolution proof", f"record is for {record.identifier}, not {identifier}")
        value = suite.digest(record.encode())  # Record.value_hash, in the log's profile
    map_proof = MapProof.from_bytes(proof.map_proof)
    verify_map_proof(head.root, map_key(identifier, suite=suite), value, map_proof, suite=suite)
    # A prefix record's suffix is itself a prefix, stored lowercase: show it as the registry keys it.
    shown = identifier if governed_prefix(identifier) is not None else asked
    return ProvenRecord(shown, record, head.epoch, verified)
