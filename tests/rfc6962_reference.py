"""A naive RFC 6962 §2.1 reference, written straight from the RFC text, to cross-check chain_lite.merkle.

Deliberately recursive and slow: it shares no code with the implementation under test. The two
verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, bit shifts and all.
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


def _lsb(x: int) -> bool:
    return bool(x & 1)


def inclusion_root(
    index: int, size: int, leaf_hash: bytes, path: list[bytes], h: Callable[[bytes], bytes] = sha256
) -> bytes | None:
    """RFC 9162 §2.1.3.2 up to the comparison: the root that ``path`` yields, or None where the
    algorithm fails the proof on its structure (index out of range, or ``sn`` not 0 at the right step)."""
    if index >= size:  # step 1
        return None
    fn, sn = index, size - 1  # step 2
    r = leaf_hash  # step 3
    for p in path:  # step 4
        if sn == 0:  # 4a
            return None
        if _lsb(fn) or fn == sn:  # 4b
            r = h(b"\x01" + p + r)
            while not _lsb(fn) and fn != 0:  # ii (iii for consistency): only when LSB(fn) was not set
                fn, sn = fn >> 1, sn >> 1
        else:
            r = h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1  # 4c
    return r if sn == 0 else None  # step 5, the size half


def consistency_roots(
    first: int, second: int, path: list[bytes], first_hash: bytes, h: Callable[[bytes], bytes] = sha256
) -> tuple[bytes, bytes] | None:
    """RFC 9162 §2.1.4.2 up to the comparisons, for ``0 < first < second``: the old and new roots
    (``fr``, ``sr``) that ``path`` yields, or None where the algorithm fails the proof on its structure."""
    if not path:  # step 1
        return None
    if first & (first - 1) == 0:  # step 2: first is an exact power of 2
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # step 3
    while _lsb(fn):  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            return None
        if _lsb(fn) or fn == sn:  # 6b
            fr = h(b"\x01" + c + fr)
            sr = h(b"\x01" + c + sr)
            while not _lsb(fn) and fn != 0:  # ii (iii for consistency): only when LSB(fn) was not set
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = h(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1  # 6c
    return (fr, sr) if sn == 0 else None  # step 7, the size half


def _steps_until_sn_is_zero(fn: int, sn: int) -> int:
    """How many proof hashes the loops above consume before ``sn`` reaches 0 (no hashing)."""
    steps = 0
    while sn != 0:
        if _lsb(fn) or fn == sn:
            while not _lsb(fn) and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
        steps += 1
    return steps


def inclusion_path_length(index: int, size: int) -> int:
    """The only length RFC 9162 §2.1.3.2 accepts for leaf ``index < size``."""
    return _steps_until_sn_is_zero(index, size - 1)


def consistency_path_length(first: int, second: int) -> int:
    """The one proof length RFC 9162 §2.1.4.2 accepts for ``0 < first < second`` (as sent: before step 2)."""
    fn, sn = first - 1, second - 1
    while _lsb(fn):
        fn, sn = fn >> 1, sn >> 1
    return _steps_until_sn_is_zero(fn, sn) + (0 if first & (first - 1) == 0 else 1)
