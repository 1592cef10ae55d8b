"""Gateway blocks: deterministic headers, signatures, linkage, bodies and reading proofs."""

from __future__ import annotations

import cbor2
import pytest

from chain_lite import keys, merkle
from chain_lite.block import (
    GENESIS_PREV,
    BlockHeader,
    build_header,
    check_body,
    open_block,
    reading_proof,
    sign_block,
    verify_chain,
    verify_reading,
)
from chain_lite.cose import CoseSigner
from chain_lite.envelope import N, V, decode_envelope, encode_envelope
from chain_lite.errors import BadSignature, ChainError, ChainLinkError, FormatError

GATEWAY = "88.123.99/gw-1"
DEVICES = ["88.123.99/a", "88.123.99/b"]


@pytest.fixture(scope="module")
def setup() -> dict[str, object]:
    gw_key = keys.generate_p256()
    signers = {d: CoseSigner(d, keys.generate_p256()) for d in DEVICES}
    envelopes = [
        decode_envelope(encode_envelope(signers[DEVICES[i % 2]], [{N: "x", V: i}], i // 2 + 1))
        for i in range(10)
    ]
    gw = CoseSigner(GATEWAY, gw_key)
    blocks = []
    prev = GENESIS_PREV
    for height, start in enumerate(range(0, 10, 4)):
        block = sign_block(
            build_header(GATEWAY, height, prev, envelopes[start : start + 4], 1000 + height), gw
        )
        blocks.append(block)
        prev = block.block_id
    return {"gw": gw, "envelopes": envelopes, "blocks": blocks, "lookup": {GATEWAY: gw.public_key}.get}


def test_header_is_deterministic_and_round_trips(setup: dict) -> None:  # type: ignore[type-arg]
    """Decoding then encoding a header gives the same bytes and the same block id."""
    header = setup["blocks"][0].header
    assert BlockHeader.decode(header.encode()) == header
    assert header.counters[0].signer == DEVICES[0] and header.counters[0].count == 2
    assert header.reading_count == 4


def test_chain_verifies_and_reading_proofs_check(setup: dict) -> None:  # type: ignore[type-arg]
    """The whole chain verifies; each reading is provably in its block."""
    raws = [b.raw for b in setup["blocks"]]
    chain = verify_chain(raws, setup["lookup"])
    assert [b.header.height for b in chain] == [0, 1, 2]
    body = [e.raw for e in setup["envelopes"][4:8]]
    check_body(chain[1].header, body)
    for i, env in enumerate(body):
        verify_reading(chain[1].header, env, i, reading_proof(body, i))
    with pytest.raises(ChainError):
        verify_reading(chain[1].header, body[0], 1, reading_proof(body, 1))


def test_gaps_forks_reordering_and_foreign_signatures_break_the_chain(setup: dict) -> None:  # type: ignore[type-arg]
    """Skipping, swapping or re-signing blocks with another key is detected."""
    raws = [b.raw for b in setup["blocks"]]
    with pytest.raises(ChainLinkError):
        verify_chain([raws[0], raws[2]], setup["lookup"])
    with pytest.raises(ChainLinkError):
        verify_chain([raws[1], raws[0]], setup["lookup"])
    with pytest.raises(ChainLinkError):
        verify_chain(raws[1:], setup["lookup"])  # must start at genesis unless `after` is given
    assert len(verify_chain(raws[1:], setup["lookup"], after=setup["blocks"][0].header)) == 2
    forged = sign_block(setup["blocks"][1].header, CoseSigner(GATEWAY, keys.generate_p256()))
    with pytest.raises(BadSignature):
        open_block(forged.raw, setup["lookup"])
    other = setup["blocks"][1].header
    rewritten = BlockHeader(
        other.gateway, 1, other.prev, merkle.leaf_hash(b"x"), 4, other.counters, other.time_ms
    )
    with pytest.raises(ChainLinkError):
        verify_chain([raws[0], sign_block(rewritten, setup["gw"]).raw, raws[2]], setup["lookup"])


def test_body_must_match_root(setup: dict) -> None:  # type: ignore[type-arg]
    """Replicated bodies with a missing, extra or changed reading are refused."""
    header = setup["blocks"][0].header
    body = [e.raw for e in setup["envelopes"][:4]]
    with pytest.raises(ChainLinkError):
        check_body(header, body[:3])
    with pytest.raises(ChainLinkError):
        check_body(header, [body[1], body[0], *body[2:]])


@pytest.mark.parametrize(
    "item",
    [
        ["edgeroot/block/v2", GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 0, [], 0],
        ["edgeroot/block/v1", GATEWAY, 0, b"\x01" * 32, merkle.EMPTY_ROOT, 0, [], 0],  # genesis prev
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, b"\x00" * 31, 0, [], 0],
        ["edgeroot/block/v1", GATEWAY, -1, GENESIS_PREV, merkle.EMPTY_ROOT, 0, [], 0],
        ["edgeroot/block/v1", "no-slash", 0, GENESIS_PREV, merkle.EMPTY_ROOT, 0, [], 0],
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 1, [["88.1/a", 5, 4, 1]], 0],
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 2, [["88.1/a", 1, 1, 1]], 0],
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, merkle.leaf_hash(b""), 0, [], 0],
        [
            "edgeroot/block/v1",
            GATEWAY,
            0,
            GENESIS_PREV,
            merkle.EMPTY_ROOT,
            2,
            [["88.1/b", 1, 1, 1], ["88.1/a", 1, 1, 1]],
            0,
        ],
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 0, [[1, 2, 3, 4]], 0],
        ["edgeroot/block/v1", GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 0, [], 0, "extra"],
    ],
)
def test_malformed_headers_are_rejected(item: list[object]) -> None:
    """Each header rule has a negative case."""
    with pytest.raises(FormatError):
        BlockHeader.decode(cbor2.dumps(item, canonical=True))


def test_non_deterministic_encoding_is_refused() -> None:
    """A header whose integers are not in shortest form decodes to the same value but is refused."""
    good = BlockHeader(GATEWAY, 0, GENESIS_PREV, merkle.EMPTY_ROOT, 0, (), 5).encode()
    assert good.endswith(b"\x05")
    padded = good[:-1] + b"\x18\x05"  # 5 encoded in two bytes
    assert cbor2.loads(padded) == cbor2.loads(good)
    with pytest.raises(FormatError, match="deterministic"):
        BlockHeader.decode(padded)
