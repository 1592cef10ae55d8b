"""Evidence bundles: a directory of public-format files that proves a device's readings offline (D-073).

An auditor holds a directory written by ``edgeroot proof export`` and a C2SP tlog-policy of their own.
Everything is re-derived from the files' bytes with the project's one verifier of each kind: COSE_Sign1
signatures (:mod:`chain_lite.cose`), RFC 6962 inclusion in a block's readings tree
(:func:`chain_lite.block.verify_reading`), C2SP tlog-proof receipts (:func:`chain_lite.receipt.
verify_receipt`), the verifiable map (:func:`chain_lite.resolution.verify_resolution`) and the policy
(:meth:`chain_lite.policy.Policy.verify_checkpoint`). ``docs/formats.md`` documents every file.

The manifest (``manifest.json``) lists each file with its SHA-256, so a changed or missing file is named
before anything else; the hashes are a convenience, not the proof: the manifest is not signed, and
every claim in it that matters is checked against signed or proven bytes.

Pure: the caller reads the files (:attr:`Manifest.paths`) and passes their bytes in.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chain_lite import b64
from chain_lite.block import SignedBlock, check_successor, open_block, verify_reading
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.coverage import DuplicateReading, ShownReading, complete_blocks, height_ranges
from chain_lite.envelope import Envelope, open_envelope
from chain_lite.errors import ChainError
from chain_lite.keys import PublicKey
from chain_lite.log_leaf import block_leaf
from chain_lite.merkle import HASH_SIZE
from chain_lite.policy import Policy, VerifiedCheckpoint
from chain_lite.receipt import Receipt, verify_receipt
from chain_lite.registry import Record, canonical_identifier
from chain_lite.resolution import ResolutionProof, verify_resolution
from chain_lite.sparse_map import MapProof

BUNDLE_FORMAT = "edgeroot/evidence-bundle/v1"
MANIFEST = "manifest.json"
MAX_MANIFEST_SIZE = 64 * 1024 * 1024
MAX_PROOF_FILE_SIZE = 64 * 46
"""64 hashes of base64 (44 characters) and a newline each, with room to spare."""
_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,3}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BundleError(ChainError):
    """The bundle does not prove what it claims; ``file`` names the file at fault (relative path)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


# --- the manifest --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockEntry:
    height: int
    header: str  # the gateway-signed block header (COSE_Sign1)
    receipt: str  # its C2SP tlog-proof; the logged entry is 0x01 || header


@dataclass(frozen=True, slots=True)
class ReadingEntry:
    block: int
    index: int  # its position in the block's readings tree
    envelope: str  # the device-signed COSE_Sign1, exact bytes
    proof: str  # RFC 6962 inclusion proof in the block: one base64 hash a line
    received_ms: int  # the gateway's arrival time (as the gateway says: not signed)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    identifier: str
    record: str  # the record's deterministic CBOR
    map_proof: str
    map_head: str  # the map-head log leaf (type 0x03)
    receipt: str  # C2SP tlog-proof placing the map head in the log


@dataclass(frozen=True, slots=True)
class Manifest:
    device: str
    gateway: str
    from_ms: int
    to_ms: int
    files: Mapping[str, str]  # path -> SHA-256 hex of its bytes
    policy: str
    checkpoints: tuple[str, ...]
    blocks: tuple[BlockEntry, ...]
    readings: tuple[ReadingEntry, ...]
    keys: tuple[KeyEntry, ...]

    @property
    def paths(self) -> list[str]:
        """Every file the manifest lists, for the caller to read."""
        return sorted(self.files)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "device": self.device,
            "gateway": self.gateway,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "files": dict(self.files),
            "policy": self.policy,
            "checkpoints": list(self.checkpoints),
            "blocks": [{"height": b.height, "header": b.header, "receipt": b.receipt} for b in self.blocks],
            "readings": [
                {
                    "block": r.block,
                    "index": r.index,
                    "envelope": r.envelope,
                    "proof": r.proof,
                    "received_ms": r.received_ms,
                }
                for r in self.readings
            ],
            "keys": [
                {
                    "identifier": k.identifier,
                    "record": k.record,
                    "map_proof": k.map_proof,
                    "map_head": k.map_head,
                    "receipt": k.receipt,
                }
                for k in self.keys
            ],
        }

    def encode(self) -> bytes:
        return canonical_json(self.as_json())


def canonical_json(value: object) -> bytes:
    """The manifest's one byte form: keys sorted, no whitespace, ASCII with ``\\uXXXX`` escapes, one
    trailing newline (docs/formats.md)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_lines(hashes: Iterable[bytes]) -> bytes:
    """A proof file: one canonical base64 hash a line (as ``edgeroot verify consistency --proof``)."""
    return "".join(b64.encode(h) + "\n" for h in hashes).encode()


def parse_hash_lines(data: bytes, file: str) -> list[bytes]:
    if len(data) > MAX_PROOF_FILE_SIZE:
        raise BundleError(file, f"{len(data)} bytes is too long for a proof")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BundleError(file, "not ASCII") from exc
    if text and not text.endswith("\n"):
        raise BundleError(file, "the last line does not end with a newline")
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        h = b64.decode(line)
        if h is None or len(h) != HASH_SIZE:
            raise BundleError(file, f"line {number} is not a canonical base64 SHA-256 hash")
        out.append(h)
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


class _Reader:
    """Typed access to the decoded manifest; every failure is a :class:`BundleError` on the manifest."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files

    @staticmethod
    def fail(reason: str) -> BundleError:
        return BundleError(MANIFEST, reason)

    def obj(self, value: object, what: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict) or set(value) != keys:
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise self.fail(f"{what} must be an object with exactly {sorted(keys)}, got {got}")
        return value

    def uint(self, value: object, what: str) -> int:
        if type(value) is not int or not 0 <= value < 1 << 63:
            raise self.fail(f"{what} is not an unsigned 63-bit integer")
        return value

    def text(self, value: object, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{what} is not text")
        return value

    def items(self, value: object, what: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{what} is not a list")
        return value

    def path(self, value: object, what: str) -> str:
        p = self.text(value, what)
        if p not in self.files:
            raise self.fail(f"{what} {p!r} is not among the listed files")
        return p


def parse_manifest(data: bytes) -> Manifest:
    """Decode ``manifest.json`` strictly: its canonical byte form, exactly the documented keys, safe
    relative paths (no ``..``, no absolute paths) and every referenced file listed with a hash."""
    fail = _Reader.fail
    if len(data) > MAX_MANIFEST_SIZE:
        raise fail(f"{len(data)} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit")
    try:
        top = json.loads(
            data, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float
        )
    except (ValueError, RecursionError) as exc:
        raise fail(f"not JSON: {exc}") from exc
    if canonical_json(top) != data:
        raise fail("not in the canonical form (sorted keys, no spaces, ASCII, one final newline)")
    keys = {"format", "device", "gateway", "from_ms", "to_ms", "files", "policy", "checkpoints", "blocks",
            "readings", "keys"}  # fmt: skip
    if not isinstance(top, dict) or top.get("format") != BUNDLE_FORMAT:
        raise fail(f"format is not {BUNDLE_FORMAT!r}")
    files = top.get("files")
    if not isinstance(files, dict):
        raise fail("files is not an object")
    for p, digest in files.items():
        if not _PATH.fullmatch(p) or p == MANIFEST:
            raise fail(f"file name {p[:80]!r} is not a safe relative path")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise fail(f"the hash of {p} is not 64 lowercase hex digits")
    r = _Reader(files)
    top = r.obj(top, "the manifest", keys)
    blocks = []
    for i, item in enumerate(r.items(top["blocks"], "blocks")):
        e = r.obj(item, f"blocks[{i}]", {"height", "header", "receipt"})
        blocks.append(
            BlockEntry(
                r.uint(e["height"], f"blocks[{i}].height"),
                r.path(e["header"], f"blocks[{i}].header"),
                r.path(e["receipt"], f"blocks[{i}].receipt"),
            )
        )
    readings = []
    for i, item in enumerate(r.items(top["readings"], "readings")):
        e = r.obj(item, f"readings[{i}]", {"block", "index", "envelope", "proof", "received_ms"})
        readings.append(
            ReadingEntry(
                r.uint(e["block"], f"readings[{i}].block"),
                r.uint(e["index"], f"readings[{i}].index"),
                r.path(e["envelope"], f"readings[{i}].envelope"),
                r.path(e["proof"], f"readings[{i}].proof"),
                r.uint(e["received_ms"], f"readings[{i}].received_ms"),
            )
        )
    key_files = ("record", "map_proof", "map_head", "receipt")
    keys_ = []
    for i, item in enumerate(r.items(top["keys"], "keys")):
        e = r.obj(item, f"keys[{i}]", {"identifier", *key_files})
        paths = [r.path(e[name], f"keys[{i}].{name}") for name in key_files]
        keys_.append(KeyEntry(r.text(e["identifier"], f"keys[{i}].identifier"), *paths))
    return Manifest(
        device=r.text(top["device"], "device"),
        gateway=r.text(top["gateway"], "gateway"),
        from_ms=r.uint(top["from_ms"], "from_ms"),
        to_ms=r.uint(top["to_ms"], "to_ms"),
        files=files,
        policy=r.path(top["policy"], "policy"),
        checkpoints=tuple(r.path(c, "checkpoints[]") for c in r.items(top["checkpoints"], "checkpoints")),
        blocks=tuple(blocks),
        readings=tuple(readings),
        keys=tuple(keys_),
    )


def _no_float(text: str) -> Any:
    raise ValueError(f"{text} is not an integer (the manifest holds none but integers)")


# --- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvenKey:
    identifier: str
    epoch: int  # the log size as of which the record is proven
    gateway: bool  # the record has a GATEWAY value


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What a verified bundle proves (and :attr:`not_proven`, what it does not)."""

    device: str
    gateway: str
    readings: int
    counters: tuple[int, int] | None  # the first and last counter of the device's readings
    signers: tuple[str, ...]
    blocks: tuple[int, ...]  # heights
    block_times: tuple[int, int] | None  # the first and last block's signed time (gateway clock)
    contiguous: bool  # the blocks are consecutive heights, each linked to the one before
    complete_blocks: tuple[int, ...]
    """Blocks whose header's counter range for the device (as signer) counts exactly the readings here:
    every reading the device signed in those blocks is in the bundle (:func:`chain_lite.coverage.
    complete_blocks`, the rule ``trace --gateway`` applies too)."""
    origin: str
    checkpoint_sizes: tuple[int, ...]
    cosigners: tuple[str, ...]
    keys: tuple[ProvenKey, ...]
    policy_matches: bool  # the bundle's policy.txt says what the auditor's policy says
    arrivals_consistent: bool
    """Every reading's arrival time (the manifest's, unsigned) is in the window and at or before the
    signed time of the block holding it; False is worth a question to the gateway's operator (or its
    clock), not a forgery: nothing signed depends on it."""
    not_proven: tuple[str, ...] = field(
        default=(
            "the arrival times (received_ms) are the gateway's word, not signed",
            "that the gateway exported every reading of the window (only the blocks listed as complete "
            "are proven to hold no other reading of the device)",
            "that what the readings say is true on the floor: the log proves what was signed and by whom",
        )
    )

    def summary(self) -> list[str]:
        """The verdict in plain sentences, one a line."""
        keys = ", ".join(f"{k.identifier} (as of log size {k.epoch})" for k in self.keys)
        span = "" if self.counters is None else f", counters {self.counters[0]}..{self.counters[1]}"
        times = (
            "" if self.block_times is None else f", signed at {self.block_times[0]}..{self.block_times[1]} ms"
        )
        lines = [
            f"{self.readings} reading(s) of {self.device}{span}, each signed by the key registered for "
            f"{', '.join(self.signers) or '(none)'}",
            f"each is in a block of gateway {self.gateway} signed by its registered key: "
            f"height(s) {height_ranges(self.blocks)}{times}"
            + (", consecutive and hash-linked" if self.contiguous and len(self.blocks) > 1 else ""),
            f"every block is in log {self.origin} under checkpoint size(s) "
            f"{height_ranges(self.checkpoint_sizes)}, "
            f"verified under your policy (log key; cosigned by {', '.join(self.cosigners) or 'no witness'})",
            f"keys proven by the log's map: {keys}",
            f"complete: block(s) {height_ranges(self.complete_blocks) or 'none'} hold no other reading of "
            f"{self.device} than those here",
        ]
        if not self.arrivals_consistent:
            lines.append("note: some arrival times are outside the window or after their block was signed")
        if not self.policy_matches:
            lines.append("note: the bundle's policy.txt differs from yours; yours was used")
        return lines


class _Verifier:
    """The receipts of one bundle, each checked against the bundle's verified checkpoints."""

    def __init__(self, files: Mapping[str, bytes], policy: Policy) -> None:
        self.files = files
        self.policy = policy
        self.checkpoints: dict[tuple[str, int, bytes], VerifiedCheckpoint] = {}

    def receipt(self, path: str, entry: str, data: bytes) -> Receipt:
        """The receipt in ``path`` proves the entry in file ``entry`` (the logged bytes ``data``, hashed
        with the log's own hash profile) under the policy, against one of the bundle's checkpoints."""
        try:
            receipt = Receipt.parse(self.files[path])
        except ChainError as exc:
            raise BundleError(path, str(exc)) from exc
        try:
            verified = verify_receipt(receipt, data, self.policy, is_hash=False)
        except ChainError as exc:
            raise BundleError(path, f"does not prove {entry} is in the log: {exc}") from exc
        cp = verified.checkpoint
        if (cp.origin, cp.size, cp.root) not in self.checkpoints:
            raise BundleError(
                path, f"its checkpoint (size {cp.size}) is not one of the manifest's checkpoints"
            )
        return receipt


def verify_bundle(manifest: Manifest, files: Mapping[str, bytes | None], policy: Policy) -> BundleReport:  # noqa: PLR0915 (one pass, each check named)
    """Check every file of a bundle against the auditor's ``policy``; raise :class:`BundleError` naming
    the first file at fault, or return what was proven.

    ``files`` maps every path of :attr:`Manifest.paths` to its bytes, or None if it could not be read.
    """
    # 1. every listed file is present and unchanged (names a tampered or missing file before any proof)
    present: dict[str, bytes] = {}
    for path in manifest.paths:
        data = files.get(path)
        if data is None:
            raise BundleError(path, "missing")
        got = sha256_hex(data)
        if got != manifest.files[path]:
            raise BundleError(
                path, f"SHA-256 {got} is not {manifest.files[path]} ({MANIFEST}): one of them was changed"
            )
        present[path] = data
    v = _Verifier(present, policy)
    try:
        device = canonical_identifier(manifest.device)
        gateway = canonical_identifier(manifest.gateway)
    except ChainError as exc:
        raise BundleError(MANIFEST, str(exc)) from exc

    # 2. the policy shipped (informative: the auditor's own policy is the one used) and the checkpoints
    try:
        shipped = Policy.parse(present[manifest.policy])
    except ChainError as exc:
        raise BundleError(manifest.policy, str(exc)) from exc
    for path in manifest.checkpoints:
        try:
            verified = policy.verify_checkpoint(SignedCheckpoint.parse(present[path]))
        except ChainError as exc:
            raise BundleError(path, str(exc)) from exc
        cp = verified.checkpoint
        v.checkpoints[(cp.origin, cp.size, cp.root)] = verified
    if not v.checkpoints:
        raise BundleError(MANIFEST, "lists no checkpoint")
    # The log's hash (SHA-256, or SM3): the policy checked each checkpoint declares its log's (D-064).
    suites = {vc.checkpoint.suite for vc in v.checkpoints.values()}
    if len(suites) != 1:
        raise BundleError(MANIFEST, "its checkpoints declare different hashes: not one log")
    (suite,) = suites

    # 3. keys: each record proven by the map as of a logged map head
    keys: dict[str, PublicKey] = {}
    proven_keys = []
    for key_entry in manifest.keys:
        for path, parse in ((key_entry.record, Record.decode), (key_entry.map_proof, MapProof.from_bytes)):
            try:
                parse(present[path])
            except ChainError as exc:
                raise BundleError(path, str(exc)) from exc
        receipt = v.receipt(key_entry.receipt, key_entry.map_head, present[key_entry.map_head])
        cp = receipt.checkpoint.checkpoint
        proof = ResolutionProof(
            key_entry.identifier,
            present[key_entry.record],
            present[key_entry.map_proof],
            present[key_entry.map_head],
            receipt,
        )
        try:
            proven = verify_resolution(proof, v.checkpoints[(cp.origin, cp.size, cp.root)], as_of=True)
        except ChainError as exc:
            raise BundleError(
                key_entry.record,
                f"the map proof {key_entry.map_proof} under the map head {key_entry.map_head} does not prove "
                f"this record of {key_entry.identifier}: {exc}",
            ) from exc
        record = proven.record
        key = None if record is None else record.signing_key()
        if record is None or key is None:
            raise BundleError(key_entry.record, f"{key_entry.identifier} has no registered signing key")
        keys[record.identifier] = key
        proven_keys.append(ProvenKey(key_entry.identifier, proven.epoch, record.has_type("GATEWAY")))
    try:
        gateway_record = next(k for k in proven_keys if canonical_identifier(k.identifier) == gateway)
    except StopIteration:
        raise BundleError(MANIFEST, f"lists no key record of the gateway {manifest.gateway}") from None
    if not gateway_record.gateway:
        raise BundleError(MANIFEST, f"the record of {manifest.gateway} has no GATEWAY value")

    def lookup(kid: str) -> PublicKey | None:
        try:
            return keys.get(canonical_identifier(kid))
        except ChainError:
            return None

    # 4. blocks: the gateway's signature, each one in the log, consecutive ones linked
    blocks: dict[int, SignedBlock] = {}
    for block_entry in manifest.blocks:
        raw = present[block_entry.header]
        try:
            block = open_block(raw, lookup, suite=suite)
        except ChainError as exc:
            raise BundleError(block_entry.header, str(exc)) from exc
        header = block.header
        if canonical_identifier(header.gateway) != gateway or header.height != block_entry.height:
            raise BundleError(
                block_entry.header,
                f"is block {header.height} of {header.gateway}, not {block_entry.height} of {gateway}",
            )
        if header.height in blocks:
            raise BundleError(MANIFEST, f"block {header.height} is listed twice")
        v.receipt(block_entry.receipt, block_entry.header, block_leaf(raw))
        blocks[header.height] = block
    heights = sorted(blocks)
    contiguous = heights == list(range(heights[0], heights[-1] + 1)) if heights else False
    header_file = {e.height: e.header for e in manifest.blocks}
    for a, b in itertools.pairwise(heights):
        if b == a + 1:
            try:
                check_successor(blocks[a].header, blocks[b].header)
            except ChainError as exc:
                raise BundleError(header_file[b], str(exc)) from exc

    # 5. readings: the device's signature, and inclusion in the block the manifest names
    shown: list[ShownReading] = []
    counters: list[int] = []
    signers: set[str] = set()
    arrivals_consistent = True
    for item in manifest.readings:
        raw = present[item.envelope]
        try:
            env: Envelope = open_envelope(raw, lookup)
        except ChainError as exc:
            raise BundleError(item.envelope, str(exc)) from exc
        if canonical_identifier(env.subject) != device:
            raise BundleError(item.envelope, f"is a reading of {env.subject}, not of {manifest.device}")
        holder = blocks.get(item.block)
        if holder is None:
            raise BundleError(
                MANIFEST, f"{item.envelope} names block {item.block}, which is not in the bundle"
            )
        hashes = parse_hash_lines(present[item.proof], item.proof)
        try:
            verify_reading(holder.header, raw, item.index, hashes)
        except ChainError as exc:
            raise BundleError(
                item.proof,
                f"does not prove {item.envelope} is reading {item.index} of block {item.block}: {exc}",
            ) from exc
        shown.append(ShownReading(item.block, item.index, env.signer))
        counters.append(env.counter)
        time_ms = holder.header.time_ms
        arrivals_consistent &= (
            manifest.from_ms <= item.received_ms < manifest.to_ms and item.received_ms <= time_ms
        )
        signers.add(env.signer)

    # The one rule of completeness (and of a reading listed twice), shared with `trace --gateway` (D-120).
    try:
        complete = complete_blocks(device, {h: b.header for h, b in blocks.items()}, shown)
    except DuplicateReading as exc:
        raise BundleError(MANIFEST, str(exc)) from exc

    verified_all = list(v.checkpoints.values())
    times = [blocks[h].header.time_ms for h in heights]
    return BundleReport(
        device=manifest.device,
        gateway=manifest.gateway,
        readings=len(manifest.readings),
        counters=(min(counters), max(counters)) if counters else None,
        signers=tuple(sorted(signers)),
        blocks=tuple(heights),
        block_times=(times[0], times[-1]) if times else None,
        contiguous=contiguous,
        complete_blocks=complete,
        origin=", ".join(sorted({c.checkpoint.origin for c in verified_all})),
        checkpoint_sizes=tuple(sorted({c.checkpoint.size for c in verified_all})),
        cosigners=tuple(sorted({w for c in verified_all for w in c.cosigners})),
        keys=tuple(proven_keys),
        policy_matches=shipped.to_text() == policy.to_text(),
        arrivals_consistent=arrivals_consistent,
    )
