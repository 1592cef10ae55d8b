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

Who answers (referrals, D-076): an answer also proves, under the same map root, the record (or the
absence) of every prefix that decides which node is responsible for the identifier
(:func:`home_prefixes`): ``0.na/88``, ``0.na/88.123``, ``0.na/88.123.99`` for ``88.123.99/PUMP``. A
node therefore cannot hide a delegation nor invent one; :func:`referral_of` reads the proven chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from chain_lite.errors import ChainError, FormatError, ProofError
from chain_lite.identifier import normalize
from chain_lite.log_leaf import MapHead, parse_leaf
from chain_lite.merkle import leaf_hash
from chain_lite.policy import VerifiedCheckpoint
from chain_lite.receipt import Receipt, check_inclusion
from chain_lite.registry import (
    Delegation,
    Record,
    canonical_identifier,
    governed_prefix,
    is_below,
    parent_prefix,
    prefix_handle,
)
from chain_lite.sparse_map import MapProof, map_key, verify_map_proof
from chain_lite.suite import HashSuite


class StaleMap(ProofError):
    """The map head shown is not the newest one the checkpoint commits to."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"map head at index {index} is not the last leaf of the checkpoint (size {size})")
        self.index = index
        self.size = size


class PrefixProofError(ProofError):
    """The proof of a prefix record (who is responsible for the identifier) does not verify."""

    def __init__(self, prefix: str, reason: str) -> None:
        super().__init__(f"proof of the prefix record 0.na/{prefix}: {reason}")
        self.prefix = prefix
        self.reason = reason


class NotDelegatedHere(ChainError):
    """A node reached through a delegation of ``prefix`` does not hold that prefix, or passes on a
    prefix that is not strictly below it."""

    def __init__(self, prefix: str, reason: str) -> None:
        super().__init__(f"node answered for {prefix} without holding it: {reason}")
        self.prefix = prefix
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PrefixProof:
    """A prefix record's bytes (``None``: absent) and its map proof, under the answer's map root."""

    prefix: str
    record: bytes | None
    map_proof: bytes


@dataclass(frozen=True, slots=True)
class ResolutionProof:
    identifier: str
    record: bytes | None
    map_proof: bytes
    map_head: bytes
    receipt: Receipt
    prefixes: tuple[PrefixProof, ...] | None = None
    """The proofs of :func:`home_prefixes`, in that order; ``None`` when the answer has none."""


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
    prefixes: tuple[tuple[str, Record | None], ...] | None = None
    """The proven prefix records of :func:`home_prefixes` (``None``: the answer carried none)."""


def home_prefixes(identifier: str) -> tuple[str, ...]:
    """The prefixes whose records say which node answers for the canonical ``identifier``, shortest
    first: every prefix of ``P`` for ``P/S``; of the parent of ``Q`` for a prefix record ``0.na/Q``
    (kept by the node holding its parent; none for a top-level ``Q``)."""
    governed = governed_prefix(identifier)
    home = identifier.partition("/")[0] if governed is None else parent_prefix(governed)
    if home is None:
        return ()
    parts = home.split(".")
    return tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


_Key = tuple[object, ...]
T = TypeVar("T")


class ProofMemo:
    """What :func:`verify_resolution` has already checked, by the exact bytes it checked.

    Every answer as of one checkpoint shows the same map head with the same inclusion proof, and the
    same proofs of the prefix records above its identifier (D-076); only the identifier's own map
    proof differs. The checks are pure functions of their inputs, so a result is kept under a key made
    of *all* of them (hash profile, checkpoint, map root, record bytes, proof bytes): a repeat of the
    same bytes skips the hashing and decoding, and any other byte is checked afresh. Bounded to
    ``capacity`` results of each kind, the oldest dropped first. One memo per verifier of one log (a
    :class:`rootclient.pinned_log.PinnedLog`); not thread-safe.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._heads: dict[_Key, MapHead] = {}
        self._prefixes: dict[_Key, Record | None] = {}

    def head(self, key: _Key) -> MapHead | None:
        return self._heads.get(key)

    def prefix(self, key: _Key) -> tuple[bool, Record | None]:
        """(whether ``key`` was proven, the record it proved: ``None`` for a proven absence)."""
        if key in self._prefixes:
            return True, self._prefixes[key]
        return False, None

    def proven_head(self, key: _Key, head: MapHead) -> None:
        self._bounded(self._heads)[key] = head

    def proven_prefix(self, key: _Key, record: Record | None) -> None:
        self._bounded(self._prefixes)[key] = record

    def _bounded(self, table: dict[_Key, T]) -> dict[_Key, T]:
        if len(table) >= self.capacity:
            del table[next(iter(table))]
        return table


def _verify_prefixes(
    root: bytes,
    identifier: str,
    proofs: tuple[PrefixProof, ...],
    suite: HashSuite,
    memo: ProofMemo | None,
) -> tuple[tuple[str, Record | None], ...]:
    expected = home_prefixes(identifier)
    if tuple(p.prefix for p in proofs) != expected:
        shown = [p.prefix for p in proofs]
        last = expected[-1] if expected else "-"
        raise PrefixProofError(last, f"the answer proves {shown}, not {list(expected)}")
    out: list[tuple[str, Record | None]] = []
    for p in proofs:
        key = (suite.name, root, p.prefix, p.record, p.map_proof)
        if memo is not None:
            known, remembered = memo.prefix(key)
            if known:
                out.append((p.prefix, remembered))
                continue
        handle = prefix_handle(p.prefix)
        record = None
        try:
            if p.record is not None:
                record = Record.decode(p.record)
                if record.identifier != handle:
                    raise FormatError("prefix proof", f"record is for {record.identifier}, not {handle}")
                record.delegation()  # a malformed delegation is refused here, not at the next hop
            value = None if record is None else suite.digest(record.encode())
            map_proof = MapProof.from_bytes(p.map_proof)
            verify_map_proof(root, map_key(handle, suite=suite), value, map_proof, suite=suite)
        except ChainError as exc:
            raise PrefixProofError(p.prefix, str(exc)) from exc
        if memo is not None:
            memo.proven_prefix(key, record)
        out.append((p.prefix, record))
    return tuple(out)


def referral_of(proven: ProvenRecord, delegated: str | None) -> Delegation | None:
    """The delegation to follow next, or ``None`` when the node that gave ``proven`` answers for it.

    ``delegated`` is the prefix this node was reached for (``None`` at the trust anchor, which answers
    for everything). That node must hold ``0.na/<delegated>`` itself, undelegated; only prefix records
    strictly below it count, and the *shortest* delegated one among them wins: once a prefix is
    delegated, everything below it is the child's. Raises :class:`NotDelegatedHere`, or
    :class:`FormatError` when the answer carries no proven prefix chain.
    """
    if proven.prefixes is None:
        raise FormatError("resolution proof", "the answer proves no prefix records (who is responsible)")
    chain = proven.prefixes
    if delegated is not None:
        own = dict(chain).get(delegated)
        if own is None:
            raise NotDelegatedHere(delegated, f"its log proves 0.na/{delegated} absent")
        if own.delegation() is not None:
            raise NotDelegatedHere(delegated, f"it delegates 0.na/{delegated} onwards instead of serving it")
        chain = tuple((p, r) for p, r in chain if is_below(p, delegated) and p != delegated)
    for _prefix, record in chain:
        if record is not None:
            delegation = record.delegation()
            if delegation is not None:
                return delegation
    return None


def verify_resolution(
    proof: ResolutionProof,
    verified: VerifiedCheckpoint,
    *,
    as_of: bool = False,
    memo: ProofMemo | None = None,
) -> ProvenRecord:
    """Check ``proof`` against a checkpoint the caller has already verified (policy or light client).

    ``verified`` must be the receipt's own checkpoint, verified by the caller. With ``memo``, the parts
    this answer shares with earlier ones of the same checkpoint (the map head's inclusion, the prefix
    records) are not checked twice (:class:`ProofMemo`); the result is the same.
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
    head_key = (suite.name, cp.origin, cp.size, cp.root, index, proof.receipt.proof, proof.map_head)
    head = None if memo is None else memo.head(head_key)
    if head is None:
        head = _proven_head(proof, verified, index)
        if memo is not None:
            memo.proven_head(head_key, head)
    record = None
    value = None
    if proof.record is not None:
        record = Record.decode(proof.record)
        if record.identifier != identifier:
            raise FormatError("resolution proof", f"record is for {record.identifier}, not {identifier}")
        value = suite.digest(record.encode())  # Record.value_hash, in the log's profile
    prefixes = None
    if proof.prefixes is not None:
        prefixes = _verify_prefixes(head.root, identifier, proof.prefixes, suite, memo)
    map_proof = MapProof.from_bytes(proof.map_proof)
    verify_map_proof(head.root, map_key(identifier, suite=suite), value, map_proof, suite=suite)
    # A prefix record's suffix is itself a prefix, stored lowercase: show it as the registry keys it.
    shown = identifier if governed_prefix(identifier) is not None else asked
    return ProvenRecord(shown, record, head.epoch, verified, prefixes)


def _proven_head(proof: ResolutionProof, verified: VerifiedCheckpoint, index: int) -> MapHead:
    """The map head the receipt proves included at ``index`` of the verified checkpoint."""
    check_inclusion(proof.receipt, leaf_hash(proof.map_head, suite=verified.checkpoint.suite), verified)
    head = parse_leaf(proof.map_head)
    if not isinstance(head, MapHead):
        raise FormatError("resolution proof", "the proven leaf is not a map head")
    if head.epoch != index + 1:
        raise FormatError("resolution proof", f"map head epoch {head.epoch} does not match its index {index}")
    return head
