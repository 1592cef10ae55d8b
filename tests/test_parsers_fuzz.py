"""Every parser gets random and mutated bytes: only chain_lite's own typed errors may come out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import keys
from chain_lite.block import BlockHeader, build_header, parse_block, sign_block
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.envelope import N, V, decode_envelope, encode_envelope
from chain_lite.errors import ChainError
from chain_lite.keys import NoteKey
from chain_lite.note import VerifierKey, parse_note
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt

from .helpers import LogBuilder

_log = LogBuilder()
_log.add(9)
_device = CoseSigner("88.1/dev", keys.generate_p256())
_envelope = encode_envelope(_device, [{N: "t", V: 1.5}], 1)
_block = sign_block(
    build_header("88.1/gw", 0, bytes(32), [decode_envelope(_envelope)], 5),
    CoseSigner("88.1/gw", keys.generate_p256()),
)
SEEDS: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "note": (_log.checkpoint(), parse_note),
    "checkpoint": (_log.checkpoint(), SignedCheckpoint.parse),
    "policy": (_log.policy().to_text().encode(), Policy.parse),
    "receipt": (
        Receipt(3, tuple(_log.tree.inclusion_proof(3)), SignedCheckpoint.parse(_log.checkpoint())).to_bytes(),
        Receipt.parse,
    ),
    "envelope": (_envelope, decode_envelope),
    "block": (_block.raw, parse_block),
    "block header": (_block.header.encode(), BlockHeader.decode),
    "vkey": (_log.log_key.vkey().encode(), lambda b: VerifierKey.parse(b.decode("utf-8", "replace"))),
    "skey": (_log.log_key.skey().encode(), lambda b: NoteKey.parse_skey(b.decode("utf-8", "replace"))),
}


def _only_chain_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ChainError):
        parse(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_inputs_parse(name: str) -> None:
    """The unmutated seeds are valid, so the mutations below start from real structure."""
    data, parse = SEEDS[name]
    parse(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_chain_errors(name: str, data: bytes) -> None:
    """Arbitrary bytes: a value or a ChainError."""
    _only_chain_errors(SEEDS[name][1], data)


@pytest.mark.parametrize("name", sorted(SEEDS))
@given(st.data())
def test_mutated_inputs_raise_only_chain_errors(name: str, data: st.DataObject) -> None:
    """Valid inputs with bytes flipped, cut, duplicated or inserted: a value or a ChainError."""
    seed, parse = SEEDS[name]
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos : pos + data.draw(st.integers(1, 16))]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            buf[pos:pos] = buf[pos : pos + data.draw(st.integers(1, 32))]
    _only_chain_errors(parse, bytes(buf))
