"""Which blocks shown readings cover whole (chain_lite.coverage): the count rule of the evidence bundle and
``trace --gateway`` against a naive reference that compares the readings' positions themselves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.block import GENESIS_PREV, BlockHeader, header_for
from chain_lite.coverage import DuplicateReading, ShownReading, complete_blocks, height_ranges
from chain_lite.registry import canonical_identifier

DEVICE = "88.1/PUMP-1"
SIGNERS = (DEVICE, "88.1/PUMP-2", "88.1/BRIDGE-1")


def _header(height: int, signers: list[str]) -> BlockHeader:
    readings = [(s, n, f"{height}/{n}/{s}".encode()) for n, s in enumerate(signers)]
    return header_for("88.1/GW-1", height, GENESIS_PREV, readings, 1000 + height)


_blocks = st.lists(st.lists(st.sampled_from(SIGNERS), max_size=6), max_size=4)


@given(_blocks, st.data())
def test_complete_blocks_match_a_reference_that_compares_positions(
    bodies: list[list[str]], data: st.DataObject
) -> None:
    """Complete, by the counts in the header, exactly when the device's readings shown are all those it
    signed in the block (and there is at least one): the positions themselves, compared naively."""
    headers = {h: _header(h, body) for h, body in enumerate(bodies)}
    theirs = {h: {i for i, s in enumerate(body) if s == DEVICE} for h, body in enumerate(bodies)}
    shown_at = {
        h: data.draw(st.sets(st.sampled_from(sorted(mine)))) if mine else set() for h, mine in theirs.items()
    }
    shown = [ShownReading(h, i, DEVICE) for h, places in shown_at.items() for i in sorted(places)]
    shown = data.draw(st.permutations(shown))
    expected = tuple(h for h in sorted(headers) if theirs[h] and shown_at[h] == theirs[h])
    assert complete_blocks(canonical_identifier(DEVICE), headers, shown) == expected


def test_a_reading_shown_twice_is_refused_naming_it_even_where_it_would_complete_a_block() -> None:
    """Twice the same (block, index) would count twice: the header's count of 2 met by one reading shown
    twice. Refused with the block and the index, also for a block outside those judged."""
    headers = {0: _header(0, [DEVICE, DEVICE])}
    device = canonical_identifier(DEVICE)
    assert complete_blocks(device, headers, [ShownReading(0, 0, DEVICE), ShownReading(0, 1, DEVICE)]) == (0,)
    for twice in (
        [ShownReading(0, 1, DEVICE), ShownReading(0, 1, DEVICE)],
        [ShownReading(0, 0, DEVICE), ShownReading(9, 4, DEVICE), ShownReading(9, 4, DEVICE)],
    ):
        with pytest.raises(DuplicateReading, match=r"reading (1|4) of block (0|9) is listed twice") as caught:
            complete_blocks(device, headers, twice)
        assert (caught.value.height, caught.value.index) == (twice[-1].height, twice[-1].index)


def test_a_block_with_a_bridges_reading_of_the_device_or_no_reading_of_it_is_not_complete() -> None:
    """Two signers shown for one block (the device and a bridge attesting for it), or a block where the
    device signed nothing: not proven complete (the header counts only per signer)."""
    headers = {0: _header(0, [DEVICE, "88.1/BRIDGE-1"]), 1: _header(1, ["88.1/PUMP-2"])}
    shown = [ShownReading(0, 0, DEVICE), ShownReading(0, 1, "88.1/BRIDGE-1")]
    assert complete_blocks(canonical_identifier(DEVICE), headers, shown) == ()
    assert complete_blocks(canonical_identifier(DEVICE), headers, shown[:1]) == (0,)
    assert height_ranges([7, 1, 2, 3, 3, 9, 8]) == "1..3, 7..9" and height_ranges([]) == ""
