"""Gateway chain sync: accept signed block headers (and, in replicate mode, their bodies) in order.

Checks per block, in order: it parses; its gateway is a registered record with a ``GATEWAY`` value and
a key; the gateway's signature; then against what this node already holds for that gateway:

* the same block again → accepted idempotently (same block id, same log index, same receipt);
* a different block at a height already taken → stored in ``fork_evidence`` and refused (409): a
  gateway rewriting its own history is exactly what the log exists to expose;
* otherwise it must extend the gateway's head (:func:`chain_lite.block.check_successor`).

In replicate mode every reading's device (or bridge) signature and the readings root are checked too.
A batch is processed in order and stops at the first refused block; the blocks before it stay accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chain_lite import cbor
from chain_lite.block import BlockHeader, SignedBlock, check_body, check_successor, check_suite, parse_block
from chain_lite.cose import Sign1, verify_sign1
from chain_lite.envelope import decode_with_key
from chain_lite.errors import ChainError
from chain_lite.keys import PublicKey
from chain_lite.log_leaf import MAX_LEAF_SIZE, block_leaf
from chain_lite.registry import canonical_identifier
from resolver.db import Database, Tx
from resolver.errors import BadRequest, ChainRejected, Conflict, ResolverError, StorageError
from resolver.log_store import log_suite
from resolver.registry import load_record

MAX_BLOCKS_PER_BATCH = 256


@dataclass(frozen=True, slots=True)
class BlockResult:
    block_id: bytes
    height: int
    duplicate: bool


def _gateway_key(tx: Tx, gateway: str) -> PublicKey:
    record = load_record(tx, gateway)
    if record is None or not record.has_type("GATEWAY"):
        raise ChainRejected(f"gateway {gateway} is not registered (no record with a GATEWAY value)")
    key = record.signing_key()
    if key is None:
        raise ChainRejected(f"gateway {gateway} has no HS_PUBKEY value")
    return key


def _check_readings(tx: Tx, block: SignedBlock, body: Sequence[bytes]) -> None:
    header = block.header
    try:
        check_body(header, body)
    except ChainError as exc:
        raise ChainRejected(str(exc)) from exc
    keys: dict[str, PublicKey | None] = {}

    def lookup(kid: str) -> PublicKey | None:
        if kid not in keys:
            record = load_record(tx, kid)
            keys[kid] = None if record is None else record.signing_key()
        return keys[kid]

    # Every reading decoded and its key found first, then every signature checked: verifications one
    # after another keep OpenSSL's P-256 tables in the cache, which the Python work of a decode between
    # two of them evicts (decisions D-147, D-153). A reading that does not decode or whose signer has no
    # key is named before any signature is checked; then the first with a bad signature.
    signed: list[tuple[Sign1, PublicKey]] = []
    for i, raw in enumerate(body):
        try:
            env, key = decode_with_key(raw, lookup)
        except ChainError as exc:
            raise ChainRejected(f"block {header.height} reading {i}: {exc}") from exc
        signed.append((env.sign1, key))
    for i, (sign1, key) in enumerate(signed):
        try:
            verify_sign1(sign1, key)
        except ChainError as exc:
            raise ChainRejected(f"block {header.height} reading {i}: {exc}") from exc


def _accept_one(tx: Tx, raw: bytes, body: Sequence[bytes] | None, now_ms: int) -> BlockResult:
    try:
        block = parse_block(raw)
    except ChainError as exc:
        raise ChainRejected(f"malformed block: {exc}") from exc
    header = block.header
    try:
        check_suite(header, log_suite(tx))  # a block hashed with another profile than this log's
    except ChainError as exc:
        raise ChainRejected(str(exc)) from exc
    # One chain per gateway whatever the spelling of its id in the header (the namespace is ASCII
    # case-insensitive): a second spelling must not start a second chain beside the first.
    gateway = canonical_identifier(header.gateway)
    if len(raw) + 1 > MAX_LEAF_SIZE:
        raise ChainRejected(
            f"block {header.height} is {len(raw)} bytes; a log leaf holds at most {MAX_LEAF_SIZE}"
        )
    key = _gateway_key(tx, header.gateway)
    try:
        verify_sign1(block.sign1, key)
    except ChainError as exc:
        raise ChainRejected(f"block {header.height}: {exc}") from exc
    block_id = block.block_id
    existing = tx.one(
        "SELECT block_id FROM blocks WHERE gateway = ? AND height = ? FOR UPDATE",
        (gateway, header.height),
    )
    if existing is not None:
        if bytes(existing[0]) == block_id:
            return BlockResult(block_id, header.height, duplicate=True)
        tx.execute(
            "INSERT INTO fork_evidence (block_id, gateway, height, raw, conflicts_with, received_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (block_id) DO NOTHING",
            (block_id, gateway, header.height, raw, bytes(existing[0]), now_ms),
        )
        raise Conflict(
            f"gateway {header.gateway} already has a different block at height {header.height}: "
            "kept as fork evidence"
        )
    head_row = tx.one("SELECT raw FROM blocks WHERE gateway = ? ORDER BY height DESC LIMIT 1", (gateway,))
    head: BlockHeader | None = None if head_row is None else parse_block(bytes(head_row[0])).header
    try:
        check_successor(head, header)
    except ChainError as exc:
        raise ChainRejected(str(exc)) from exc
    if body is not None:
        _check_readings(tx, block, body)
    tx.execute(
        "INSERT INTO blocks (block_id, gateway, height, raw, body, received_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (
            block_id,
            gateway,
            header.height,
            raw,
            None if body is None else cbor.encode(list(body)),
            now_ms,
        ),
    )
    tx.execute(
        "INSERT INTO pending (leaf, ref, received_ms) VALUES (?, ?, ?)", (block_leaf(raw), block_id, now_ms)
    )
    return BlockResult(block_id, header.height, duplicate=False)


def submit_blocks(
    db: Database, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]], *, now_ms: int
) -> tuple[list[BlockResult], ResolverError | None]:
    """Accept ``(signed header, body or None)`` pairs in order; returns the accepted ones and the error
    that stopped the batch, if any. Fork evidence is committed even though its block is refused."""
    if len(blocks) > MAX_BLOCKS_PER_BATCH:
        raise BadRequest(f"at most {MAX_BLOCKS_PER_BATCH} blocks per request")
    results: list[BlockResult] = []
    for raw, body in blocks:
        conflict: Conflict | None = None
        try:
            with db.transaction() as tx:
                try:
                    results.append(_accept_one(tx, raw, body, now_ms))
                except Conflict as exc:
                    conflict = exc  # leave the block normally, so the fork evidence is committed
        except ResolverError as exc:
            return results, exc
        if conflict is not None:
            return results, conflict
    return results, None


# --- the blocks covering a time window (issue 15 item 4, D-074) -------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowBlock:
    block_id: bytes
    header: BlockHeader
    raw: bytes
    log_index: int | None
    replicated: bool
    """Whether the readings themselves are here (replicate mode) or stayed at the gateway (anchor mode)."""


MAX_BLOCKS_PER_WINDOW = 256


def _block_at(tx: Tx, gateway: str, height: int) -> WindowBlock:
    row = tx.one(
        "SELECT block_id, raw, idx, body IS NOT NULL FROM blocks WHERE gateway = ? AND height = ?",
        (gateway, height),
    )
    if row is None:  # heights of one gateway are contiguous from 0 (check_successor on intake)
        raise StorageError(f"gateway {gateway} has no block at height {height}: the chain has a hole")
    raw = bytes(row[1])
    return WindowBlock(bytes(row[0]), parse_block(raw).header, raw, row[2], bool(row[3]))


def blocks_in_window(
    tx: Tx, gateway: str, from_ms: int, to_ms: int, *, after: int = -1, limit: int = MAX_BLOCKS_PER_WINDOW
) -> tuple[list[WindowBlock], int | None]:
    """The gateway's blocks that can hold readings it received in ``[from_ms, to_ms)``: every block
    whose signed time is at or after ``from_ms``, up to and including the first whose time is at or
    after ``to_ms`` (a reading is chained into a block closed after it arrived, and block times never
    run backwards). Only blocks above height ``after``; at most ``limit``; returns them in height order
    and the height to continue after, or None when the window is exhausted.

    ``gateway`` is canonical (:func:`chain_lite.registry.canonical_identifier`). The first block is
    found by binary search on height (one header parsed per step), so a long chain costs log2(n) reads.
    """
    top = tx.one("SELECT MAX(height) FROM blocks WHERE gateway = ?", (gateway,))
    if top is None or top[0] is None:
        return [], None
    lo, hi = max(after + 1, 0), int(top[0]) + 1  # first height in [lo, hi) with time >= from_ms; hi: none
    while lo < hi:
        mid = (lo + hi) // 2
        if _block_at(tx, gateway, mid).header.time_ms >= from_ms:
            hi = mid
        else:
            lo = mid + 1
    found: list[WindowBlock] = []
    height = lo
    while height <= int(top[0]) and len(found) < limit:
        block = _block_at(tx, gateway, height)
        found.append(block)
        if block.header.time_ms >= to_ms:
            return found, None
        height += 1
    more = height <= int(top[0])
    return found, (found[-1].header.height if more and found else None)
