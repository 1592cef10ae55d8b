"""The root's blocks of a gateway in a time window (GET /v1/blocks, D-074), over real HTTP on SQLite and
PostgreSQL: the edges, paging, receipts, and where the readings are (replicate vs anchor)."""

from __future__ import annotations

import httpx

from chain_lite.log_leaf import block_leaf
from chain_lite.merkle import leaf_hash
from chain_lite.receipt import verify_receipt
from rootclient import routes
from tests.root_harness import RootUnderTest
from tests.test_root_gateway_sync import GATEWAY, Plant, _post

T = 1_700_000_000_000  # block h is signed at T + h (tests.test_root_gateway_sync.Plant)


def test_window_lists_blocks_signed_in_it_and_the_first_after_with_receipts_and_where_readings_are(
    root: RootUnderTest,
) -> None:
    """[from, to) on the blocks' signed time plus the block that closed the window; replicated blocks
    say at-root, anchored-only ones at-gateway; every receipt verifies under the root's policy."""
    plant = Plant(root)
    replicated = [plant.next_block(2) for _ in range(3)]
    assert _post(root, [(b.raw, body) for b, body in replicated]).status_code == 200
    anchored = [plant.next_block(2)[0] for _ in range(3)]
    assert _post(root, [(b.raw, None) for b in anchored]).status_code == 200
    root.settle()

    with root.client() as client:

        def heights(from_ms: int, to_ms: int, after: int | None = None) -> list[int]:
            found, more = client.blocks_in_window(GATEWAY, from_ms, to_ms, after)
            assert more is None
            return [b.height for b in found]

        assert heights(T + 1, T + 3) == [1, 2, 3]  # from inclusive; 3 is the first signed at or after to
        assert heights(T + 1, T + 2) == [1, 2]
        assert heights(0, T) == [0]
        assert heights(T + 6, T + 60) == []
        assert heights(0, T + 60, after=2) == [3, 4, 5]
        found, _ = client.blocks_in_window(GATEWAY, 0, T + 60)
        assert [b.at_root for b in found] == [True] * 3 + [False] * 3
        for b in found:
            assert b.receipt is not None and b.receipt.index == b.log_index
            verify_receipt(b.receipt, leaf_hash(block_leaf(b.header)), root.policy)
        assert client.blocks_in_window("88.123.99/GW-NONE", 0, T + 60) == ([], None)
    bad = httpx.get(f"{root.url}{routes.BLOCKS}", params={"gateway": GATEWAY, "from": 5, "to": 4})
    assert bad.status_code == 400
