"""A naive RFC 6962 §2.1 reference, written straight from the RFC text, to cross-check chain_lite.merkle.

Deliberately recursive and slow: it shares no code with the implementation under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def make_reference(  # type: ignore[no-untyped-def]
    leaves: tuple[bytes, ...], h: Callable[[bytes], bytes] = sha256
):
    """MTH, PATH and PROOF over a fixed list of leaf data (RFC 6962 §2.1, §2.1.1, §2.1.2), with the
    hash function ``h`` (bytes to digest; SHA-256 as in the RFC unless another profile is tested)."""

    @cache
    def mth(begin: int, end: int) -> bytes:
        n = end - begin
        if n == 0:
            return h(b"")
        if n == 1:
            return h(b"\x00" + leaves[begin])
        k = _largest_power_of_two_below(n)
        return h(b"\x01" + mth(begin, begin + k) + mth(begin + k, end))

    def path(m: int, begin: int, end: int) -> list[bytes]:
        n = end - begin
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*path(m, begin, begin + k), mth(begin + k, end)]
        return [*path(m - k, begin + k, end), mth(begin, begin + k)]

    def subproof(m: int, begin: int, end: int, b: bool) -> list[bytes]:
        n = end - begin
        if m == n:
            return [] if b else [mth(begin, end)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, begin, begin + k, b), mth(begin + k, end)]
        return [*subproof(m - k, begin + k, end, False), mth(begin, begin + k)]

    def proof(m: int, n: int) -> list[bytes]:
        return subproof(m, 0, n, True)

    return mth, path, proof
