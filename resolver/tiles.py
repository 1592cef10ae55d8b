"""C2SP tlog-tiles paths: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``.

``N`` is written in groups of three decimal digits, every group but the last prefixed with ``x``
(``1234067`` → ``x001/x234/067``). Tiles are 8 levels high (256 hashes wide); a partial tile ``.p/W``
holds the first ``W`` (1..255) hashes. An entry bundle is each entry prefixed by its length as a
big-endian uint16.
"""

from __future__ import annotations

from dataclasses import dataclass

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT


@dataclass(frozen=True, slots=True)
class TilePath:
    level: int | None
    """Tile level, or ``None`` for an entry bundle."""
    index: int
    width: int
    """256 for a full tile, 1..255 for a partial one."""


def _parse_index(groups: list[str]) -> int | None:
    if not groups:
        return None
    digits = []
    for i, g in enumerate(groups):
        last = i == len(groups) - 1
        body = g if last else g.removeprefix("x")
        if (not last and not g.startswith("x")) or len(body) != 3 or not body.isdigit():
            return None
        digits.append(body)
    value = int("".join(digits))
    # Canonical: no leading all-zero groups.
    return value if encode_index(value).split("/") == groups else None


def encode_index(n: int) -> str:
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def parse_tile_path(path: str) -> TilePath | None:
    """Parse the part after ``tile/``; ``None`` when it is not a canonical tile path."""
    parts = path.split("/")
    if not parts:
        return None
    head, rest = parts[0], parts[1:]
    if head == "entries":
        level = None
    elif head.isdigit() and len(head) <= 2 and str(int(head)) == head:
        level = int(head)
    else:
        return None
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not w.isdigit() or str(int(w)) != w or not 1 <= int(w) < TILE_WIDTH:
            return None
        width = int(w)
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    index = _parse_index(rest)
    if index is None:
        return None
    return TilePath(level, index, width)


def tile_path(level: int | None, index: int, width: int = TILE_WIDTH) -> str:
    name = "entries" if level is None else str(level)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{name}/{encode_index(index)}{suffix}"


def bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def unbundle(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("truncated entry length")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise ValueError("truncated entry")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out
