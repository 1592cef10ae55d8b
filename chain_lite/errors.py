"""The one exception tree of chain_lite.

Every failure a caller can meet is a :class:`ChainError`. Children name the failure and carry the facts
as attributes, so callers branch on types and show the message, never parse it.
"""

from __future__ import annotations


class ChainError(Exception):
    """Base of every error raised by chain_lite."""


# --- malformed input -------------------------------------------------------------------------------------


class FormatError(ChainError):
    """Input bytes or text do not follow their format; ``what`` names the format."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"malformed {what}: {reason}")
        self.what = what
        self.reason = reason


class IdentifierError(FormatError):
    """An identifier or prefix is not of the form PREFIX/SUFFIX (DESIGN §2)."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__("identifier", f"{reason} ({value[:80]!r})")
        self.value = value


class KeyFormatError(FormatError):
    """A key (file, vkey, signer key) cannot be parsed."""

    def __init__(self, reason: str) -> None:
        super().__init__("key", reason)


class SuiteUnavailable(ChainError):
    """A signature suite cannot run on this machine (e.g. SM2 without OpenSSL 3's libcrypto)."""

    def __init__(self, suite: str, reason: str) -> None:
        super().__init__(f"{suite} is not available: {reason}")
        self.suite = suite
        self.reason = reason


# --- Merkle proofs ---------------------------------------------------------------------------------------


class ProofError(ChainError):
    """A Merkle proof does not prove what it claims."""


class HashSizeError(ProofError):
    def __init__(self, what: str, expected: int, got: int) -> None:
        super().__init__(f"{what} is {got} bytes, want {expected}")
        self.what = what
        self.expected = expected
        self.got = got


class ProofLengthError(ProofError):
    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"proof has {got} hashes, want {expected}")
        self.expected = expected
        self.got = got


class IndexOutOfRange(ProofError):
    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"index {index} is not below tree size {size}")
        self.index = index
        self.size = size


class SizeOrderError(ProofError):
    """Consistency needs 0 < size1 <= size2 (RFC 9162 §2.1.4); equal sizes need an empty proof."""

    def __init__(self, size1: int, size2: int, reason: str) -> None:
        super().__init__(f"no consistency proof from size {size1} to size {size2}: {reason}")
        self.size1 = size1
        self.size2 = size2


class RootMismatch(ProofError):
    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(f"computed root {computed.hex()} does not match expected {expected.hex()}")
        self.expected = expected
        self.computed = computed


class MissingNodes(ProofError):
    """The node store lacks hashes a proof needs (a storage fault, not a bad proof)."""

    def __init__(self, missing: list[tuple[int, int]]) -> None:
        super().__init__(f"node store lacks {len(missing)} node(s), first (level, index) {missing[0]}")
        self.missing = missing


# --- signatures and trust --------------------------------------------------------------------------------


class SignatureError(ChainError):
    """A signature is missing, unknown where one is required, or does not verify."""


class BadSignature(SignatureError):
    """A signature by a known key did not verify."""

    def __init__(self, signer: str, reason: str = "signature does not verify") -> None:
        super().__init__(f"{signer}: {reason}")
        self.signer = signer


class NoTrustedSignature(SignatureError):
    """No signature on a note came from a trusted key."""

    def __init__(self, needed: str) -> None:
        super().__init__(f"no valid signature from {needed}")
        self.needed = needed


class QuorumNotMet(SignatureError):
    def __init__(self, quorum: str, cosigners: list[str]) -> None:
        names = ", ".join(sorted(cosigners)) or "none"
        super().__init__(f"witness quorum {quorum!r} not met; valid cosignatures from: {names}")
        self.quorum = quorum
        self.cosigners = cosigners


class UnknownSigner(SignatureError):
    """A COSE message names a key id that the caller's lookup does not know."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key known for signer {kid!r}")
        self.kid = kid


# --- logs, checkpoints, chains ---------------------------------------------------------------------------


class OriginMismatch(ChainError):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"checkpoint origin {got!r} is not the expected {expected!r}")
        self.expected = expected
        self.got = got


class StaleCheckpoint(ChainError):
    """A checkpoint older than the pinned one: a light client never moves backwards."""

    def __init__(self, pinned_size: int, got_size: int) -> None:
        super().__init__(f"checkpoint size {got_size} is older than the pinned size {pinned_size}")
        self.pinned_size = pinned_size
        self.got_size = got_size


class UnverifiedCheckpoint(ChainError):
    """A receipt refers to a checkpoint the light client has not verified."""

    def __init__(self, size: int, root: bytes) -> None:
        super().__init__(f"checkpoint (size {size}, root {root.hex()[:16]}…) has not been verified")
        self.size = size
        self.root = root


class ChainLinkError(ChainError):
    """A gateway block does not extend the chain it claims to extend."""

    def __init__(self, gateway: str, height: int, reason: str) -> None:
        super().__init__(f"gateway {gateway} block {height}: {reason}")
        self.gateway = gateway
        self.height = height
        self.reason = reason
