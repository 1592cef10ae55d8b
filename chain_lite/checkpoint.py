"""C2SP tlog-checkpoint: the note text ``<origin>\\n<size>\\n<base64 root>\\n[extension lines]``.

A checkpoint is only ever trusted after its signed note has been verified; :mod:`chain_lite.policy`
does that against a trust policy.

The log's hash profile (:mod:`chain_lite.suite`) is declared by the first extension line: none for
SHA-256 (so a SHA-256 checkpoint is byte for byte a plain C2SP one), ``hash sm3`` for an SM3 log. The
line is signed by the log and by every v1 cosignature, and a verifier compares it with the profile its
policy pins for the log (D-064), so a checkpoint of one profile is never checked with the other's hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chain_lite import b64
from chain_lite.errors import FormatError
from chain_lite.merkle import HASH_SIZE
from chain_lite.note import Note, Signer, check_note_text, parse_note, sign_note
from chain_lite.suite import SHA256, HashSuite, hash_suite

HASH_LINE = "hash "
"""Start of the extension line that names a non-default hash profile: ``hash <name>``."""


def suite_extensions(suite: HashSuite) -> tuple[str, ...]:
    """The extension lines that declare ``suite``: none for SHA-256, ``("hash <name>",)`` otherwise."""
    return () if suite is SHA256 else (HASH_LINE + suite.name,)


def _declared_suite(extensions: tuple[str, ...]) -> HashSuite:
    """The profile the extension lines declare; refuses a misplaced, repeated or redundant hash line."""
    if any(ext.startswith(HASH_LINE) for ext in extensions[1:]):
        raise FormatError("checkpoint", "a hash line must be the first extension line, and only one")
    if not extensions or not extensions[0].startswith(HASH_LINE):
        return SHA256
    try:
        suite = hash_suite(extensions[0][len(HASH_LINE) :])
    except FormatError as exc:
        raise FormatError("checkpoint", exc.reason) from exc
    if suite is SHA256:
        raise FormatError("checkpoint", "sha256 is declared by having no hash line, never spelt out")
    return suite


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
    suite: HashSuite = field(init=False, repr=False, compare=False)
    """The hash profile of ``root``, as the extension lines declare it (SHA-256 without a hash line)."""

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise FormatError("checkpoint", "origin must be one non-empty line")
        if self.size < 0:
            raise FormatError("checkpoint", "tree size is negative")
        if len(self.root) != HASH_SIZE:
            raise FormatError("checkpoint", f"root hash is {len(self.root)} bytes, want {HASH_SIZE}")
        if any(not ext or "\n" in ext for ext in self.extensions):
            raise FormatError("checkpoint", "extension lines must be non-empty single lines")
        object.__setattr__(self, "suite", _declared_suite(self.extensions))

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
