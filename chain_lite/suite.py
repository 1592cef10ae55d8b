"""Hash profiles: the one hash function a log uses for its Merkle tree, its map and its gateway blocks.

A log hashes with SHA-256 (the default, RFC 6962) or with SM3 (GB/T 32905, the 国密 profile, issue 16).
The structure around the hash never changes: RFC 6962's 0x00 / 0x01 prefixes, the split at the largest
power of two, proofs, tiles, the empty root ``H("")``, the map's 0x10 / 0x11 prefixes. Only the function
is swapped, so every tree, map and block module takes a :class:`HashSuite` argument defaulting to
:data:`SHA256` instead of existing twice.

A log's profile is fixed for its lifetime and declared where a verifier cannot miss it: an extension line
of every checkpoint and the log's line in the trust policy (docs/formats.md §3, §5; D-064).

SM3 comes from OpenSSL (D-063): Python's ``hashlib`` when the OpenSSL it links provides ``sm3``,
otherwise ``cryptography``'s ``hashes.SM3`` from the OpenSSL its wheel bundles. Both are checked against
the GB/T 32905 examples and an independent implementation in tests. Either way a one-shot hash copies a
prepared hash object instead of looking the algorithm up by name each time: ``hashlib.new("sm3", data)``
goes through a Python wrapper and an OpenSSL fetch per call, which halved the rate (D-063).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import hashes

from chain_lite.errors import ChainError, FormatError
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE

DIGEST_SIZE = 32


class Digest(Protocol):
    """The part of a ``hashlib`` hash object the trees use: ``new(data).digest()`` for one hash, and
    ``copy()`` + ``update()`` to start many hashes from one prepared prefix (:mod:`chain_lite.merkle`)."""

    def update(self, data: bytes, /) -> None: ...

    def copy(self) -> Digest: ...

    def digest(self) -> bytes: ...


HashFactory = Callable[[bytes], Digest]
"""A hash constructor in ``hashlib``'s shape: ``factory(data).digest()`` is the hash of data."""


class CryptographySM3:
    """SM3 through ``cryptography`` (the OpenSSL its wheel bundles), in ``hashlib``'s shape."""

    __slots__ = ("_ctx",)
    _base = hashes.Hash(hashes.SM3())  # never updated: each hash starts from a copy of it

    def __init__(self, data: bytes = b"") -> None:
        self._ctx = self._base.copy()
        self._ctx.update(data)

    def update(self, data: bytes, /) -> None:
        self._ctx.update(data)

    def copy(self) -> CryptographySM3:
        twin = object.__new__(CryptographySM3)
        twin._ctx = self._ctx.copy()
        return twin

    def digest(self) -> bytes:
        # hashlib's digest() leaves the object usable; finalize() would not.
        return self._ctx.copy().finalize()


def hashlib_sm3() -> HashFactory | None:
    """``hashlib``'s SM3 as a one-shot constructor, or None when the OpenSSL Python links lacks it."""
    if "sm3" not in hashlib.algorithms_available:
        return None
    try:
        base = hashlib.new("sm3")
    except ValueError:  # listed but disabled (e.g. an OpenSSL in FIPS mode)
        return None
    copy = base.copy  # ``base`` is never updated, so copies start empty; copying is thread-safe

    def new(data: bytes) -> Digest:
        h = copy()
        h.update(data)
        return h

    return new


@dataclass(frozen=True, slots=True, eq=False)
class HashSuite:
    """One hash profile. ``name`` is how checkpoints, policies and configuration spell it."""

    name: str
    new: HashFactory
    empty_root: bytes = field(init=False)
    """Root of the empty RFC 6962 tree, ``H("")``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty_root", self.new(b"").digest())

    def digest(self, data: bytes) -> bytes:
        return self.new(data).digest()

    def __repr__(self) -> str:
        return f"HashSuite({self.name!r})"


SHA256 = HashSuite("sha256", hashlib.sha256)
SM3 = HashSuite("sm3", hashlib_sm3() or CryptographySM3)
DEFAULT = SHA256
SUITES: dict[str, HashSuite] = {s.name: s for s in (SHA256, SM3)}


def hash_suite(name: str) -> HashSuite:
    """The profile called ``name`` (``sha256`` or ``sm3``)."""
    suite = SUITES.get(name)
    if suite is None:
        known = ", ".join(SUITES)
        raise FormatError("hash suite", f"unknown hash {name[:32]!r}; known: {known}")
    return suite


@dataclass(frozen=True, slots=True)
class LogProfile:
    """What ``edgeroot root init --suite NAME`` fixes for a log's lifetime: its hash and its key types."""

    name: str
    hash: HashSuite
    log_sigtype: int
    """Signed-note signature type of the log's checkpoint key."""
    cosign_sigtype: int
    """Signed-note signature type of the node's own witness key, with which it cosigns the child logs it
    anchors (``STATE/witness.skey``, D-105)."""


LOG_PROFILES: dict[str, LogProfile] = {
    "default": LogProfile("default", SHA256, SIGTYPE_ED25519, SIGTYPE_COSIGNATURE_V1),
    # 国密, SM2 + SM3 throughout: SM3 for the tree, the map and the blocks; the log signs its checkpoints
    # with an SM2 key (signed-note type 0xff || "edgeroot/sm2/v1", D-062; D-084) and cosigns its children
    # with an SM2 witness key (0xff || "edgeroot/sm2-cosignature/v1", D-105).
    "sm": LogProfile("sm", SM3, SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE),
}


class HashSuiteMismatch(ChainError):
    """Two things that must hash alike do not: e.g. an SM3 checkpoint given to a SHA-256 verifier."""

    def __init__(self, what: str, expected: str, got: str) -> None:
        super().__init__(f"{what} uses hash {got}, but {expected} is required")
        self.what = what
        self.expected = expected
        self.got = got
