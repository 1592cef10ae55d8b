"""C2SP tlog-checkpoint: the note text ``<origin>\\n<size>\\n<base64 root>\\n[extension lines]``.

A checkpoint is only ever trusted after its signed note has been verified; :mod:`chain_lite.policy`
does that against a trust policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain_lite import b64
from chain_lite.errors import FormatError
from chain_lite.merkle import HASH_SIZE
from chain_lite.note import Note, Signer, check_note_text, parse_note, sign_note


def parse_uint64(text: str) -> int | None:
    """An ASCII decimal below 2**64 with no leading zeros (``0`` itself allowed), else ``None``."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()) or (text[0] == "0" and text != "0"):
        return None
    value = int(text)
    return value if value < 1 << 64 else None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise FormatError("checkpoint", "origin must be one non-empty line")
        if self.size < 0:
            raise FormatError("checkpoint", "tree size is negative")
        if len(self.root) != HASH_SIZE:
            raise FormatError("checkpoint", f"root hash is {len(self.root)} bytes, want {HASH_SIZE}")
        if any(not ext or "\n" in ext for ext in self.extensions):
            raise FormatError("checkpoint", "extension lines must be non-empty single lines")

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), b64.encode(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        check_note_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("checkpoint", "needs origin, size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        size = parse_uint64(size_text)
        if size is None:
            raise FormatError("checkpoint", f"tree size {size_text[:24]!r} is not a 64-bit decimal")
        root = b64.decode(root_text)
        if root is None:
            raise FormatError("checkpoint", "root hash is not canonical base64")
        return cls(origin, size, root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with its signed note, parsed but *not verified*."""

    checkpoint: Checkpoint
    note: Note

    @classmethod
    def parse(cls, data: bytes) -> SignedCheckpoint:
        note = parse_note(data)
        return cls(Checkpoint.from_text(note.text), note)

    def to_bytes(self) -> bytes:
        return self.note.to_bytes()


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> SignedCheckpoint:
    """The log's signature over ``checkpoint``; the signer's key name should equal the origin."""
    return SignedCheckpoint(checkpoint, sign_note(checkpoint.to_text(), [signer]))
