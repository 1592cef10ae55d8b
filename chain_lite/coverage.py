"""Which blocks a set of shown readings covers whole: the one rule of an evidence bundle (D-073) and of
the readings ``trace --gateway`` fetches (D-101, D-120).

An answer (a bundle's manifest, a gateway's ``GET /v1/readings``) shows readings, each placed as
reading ``index`` of block ``height``. A block is **complete** for a device when the readings shown of
it are all signed by one signer, the block header's counter ranges name that signer as the device (one
range), and the range counts exactly as many readings as are shown: the block holds no reading the
device signed that the answer left out. The same reading shown twice would be counted twice (inflating
counts, values and completeness), so it is an error, naming the block and the index.

Pure: the caller has proven each reading (RFC 6962 inclusion at its index in the header, the signature)
and passes what it proved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from chain_lite.block import BlockHeader
from chain_lite.errors import ChainError
from chain_lite.registry import canonical_identifier


class DuplicateReading(ChainError):
    """One reading (block ``height``, position ``index``) is shown twice."""

    def __init__(self, height: int, index: int) -> None:
        super().__init__(f"reading {index} of block {height} is listed twice")
        self.height = height
        self.index = index


@dataclass(frozen=True, slots=True)
class ShownReading:
    """A reading an answer shows: reading ``index`` of block ``height``, signed by ``signer`` (as signed)."""

    height: int
    index: int
    signer: str


def complete_blocks(
    device: str, headers: Mapping[int, BlockHeader], shown: Iterable[ShownReading]
) -> tuple[int, ...]:
    """The heights of ``headers`` (ascending) that ``shown`` covers whole for ``device`` (canonical: the
    registry's case-folded form): every reading the device signed in the block is shown.

    Preconditions, the caller's to check first: each shown reading is proven to be reading ``index`` of
    the header at ``height`` (when ``headers`` has it) and is a reading of ``device``. Readings of other
    heights count for no block but are still checked for duplicates.

    Raises :class:`DuplicateReading` for a ``(height, index)`` shown twice.
    """
    seen: set[tuple[int, int]] = set()
    signers: dict[int, Counter[str]] = {}
    for reading in shown:
        place = (reading.height, reading.index)
        if place in seen:
            raise DuplicateReading(*place)
        seen.add(place)
        signers.setdefault(reading.height, Counter())[reading.signer] += 1

    def complete(height: int) -> bool:
        here = signers.get(height, Counter())
        mine = [c for c in headers[height].counters if canonical_identifier(c.signer) == device]
        return len(here) == 1 and len(mine) == 1 and here.get(mine[0].signer) == mine[0].count

    return tuple(h for h in sorted(headers) if complete(h))


def height_ranges(numbers: Sequence[int]) -> str:
    """``1..3, 7`` for 1, 2, 3, 7: block heights (or log sizes) as a person reads them."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)
