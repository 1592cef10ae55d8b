"""C2SP tlog-proof@v1 receipts: an offline-verifiable proof that an entry is in a log.

Text format::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, unauthenticated)
    index <decimal>
    <base64 hash>             (zero or more: the inclusion proof, leaf's sibling first)
                              (empty line)
    <signed checkpoint, verbatim>
"""

from __future__ import annotations

from dataclasses import dataclass

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint, parse_uint64
from chain_lite.errors import FormatError
from chain_lite.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from chain_lite.note import MAX_NOTE_SIZE
from chain_lite.policy import Policy, VerifiedCheckpoint

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
"""An RFC 6962 inclusion proof of a 64-bit tree has at most 64 hashes."""
MAX_RECEIPT_SIZE = MAX_NOTE_SIZE + 8 * 1024


@dataclass(frozen=True, slots=True)
class Receipt:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: SignedCheckpoint
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64.encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines += [b64.encode(h) for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint.to_bytes()

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        if len(data) > MAX_RECEIPT_SIZE:
            raise FormatError("receipt", f"{len(data)} bytes exceeds the {MAX_RECEIPT_SIZE}-byte limit")
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep:
            raise FormatError("receipt", "no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise FormatError("receipt", "proof lines are not ASCII") from exc
        if lines[0] != HEADER:
            raise FormatError("receipt", f"first line is not {HEADER!r}")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            extra = b64.decode(rest.pop(0)[len("extra ") :])
            if extra is None:
                raise FormatError("receipt", "extra data is not canonical base64")
        if not rest or not rest[0].startswith("index "):
            raise FormatError("receipt", "missing index line")
        index = parse_uint64(rest.pop(0)[len("index ") :])
        if index is None:
            raise FormatError("receipt", "index is not a 64-bit decimal without leading zeros")
        if len(rest) > MAX_PROOF_HASHES:
            raise FormatError("receipt", f"more than {MAX_PROOF_HASHES} proof hashes")
        proof = []
        for line in rest:
            h = b64.decode(line)
            if h is None or len(h) != HASH_SIZE:
                raise FormatError("receipt", "proof line is not a canonical base64 32-byte hash")
            proof.append(h)
        return cls(index, tuple(proof), SignedCheckpoint.parse(checkpoint), extra)


def verify_receipt(
    receipt: Receipt | bytes, leaf: bytes, policy: Policy, *, origin: str | None = None, is_hash: bool = True
) -> VerifiedCheckpoint:
    """Verify a receipt for an entry against a trust policy; returns the verified checkpoint.

    ``leaf`` is the entry's RFC 6962 leaf hash, or with ``is_hash=False`` the entry's bytes (hashed here
    with the log's profile, which the policy has checked the checkpoint declares).
    """
    r = receipt if isinstance(receipt, Receipt) else Receipt.parse(receipt)
    verified = policy.verify_checkpoint(r.checkpoint, origin)
    check_inclusion(r, leaf if is_hash else leaf_hash(leaf, suite=verified.checkpoint.suite), verified)
    return verified


def check_inclusion(receipt: Receipt, leaf: bytes, verified: VerifiedCheckpoint) -> None:
    """The receipt's inclusion proof against an already verified checkpoint, hashed with its profile."""
    cp = verified.checkpoint
    verify_inclusion(receipt.index, cp.size, leaf, receipt.proof, cp.root, suite=cp.suite)
