"""The root protocol's JSON codecs: round trips, and every hostile shape is a typed ProtocolError."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.receipt import Receipt
from chain_lite.resolution import PrefixProof
from resolver.api import create_app
from resolver.reads import RootNode
from rootclient import codecs, routes
from rootclient.client import AsyncRootClient
from rootclient.errors import ClientError, ProtocolError, RootClientError

from .helpers import LogBuilder

HASH = b64.encode(b"\x11" * 32)
HOSTILE: list[object] = [[], None, "text", 7, True, {}, {"proof": None}, [{}]]
"""Shapes a misbehaving root can send where an object is expected."""


@pytest.fixture(scope="module")
def receipt_text() -> str:
    log = LogBuilder()
    log.add(4)
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    return receipt.to_bytes().decode()


def good_proof(receipt_text: str) -> dict[str, Any]:
    return {
        "epoch": 4,
        "record": b64.encode(b"record"),
        "map_proof": b64.encode(b"map proof"),
        "map_head": b64.encode(b"map head"),
        "receipt": receipt_text,
    }


def test_resolution_proof_round_trips(receipt_text: str) -> None:
    """What the server encodes, the client decodes to the same bytes."""
    body = codecs.proof_json(
        epoch=4, record=b"record", map_proof=b"map proof", map_head_b64=b64.encode(b"map head"),
        receipt_text=receipt_text,
    )  # fmt: skip
    proof = codecs.proof_from_json("88.1/X", json.loads(json.dumps(body)))
    assert (proof.record, proof.map_proof, proof.map_head) == (b"record", b"map proof", b"map head")
    assert proof.receipt.to_bytes().decode() == receipt_text
    absent = codecs.proof_from_json("88.1/X", good_proof(receipt_text) | {"record": None})
    assert absent.record is None


@given(st.integers(0, 253_402_300_799_999))
def test_value_timestamps_read_as_datetime_reads_them(timestamp_ms: int) -> None:
    """The Handle timestamp of a value (gmtime, D-141) is datetime's strftime text for every millisecond
    up to the end of year 9999."""
    assert codecs._stamp(timestamp_ms) == codecs._stamp_reference(timestamp_ms)


EDGES = [0, 999, 1000, 951_782_400_000, 1_732_980_000_999, 253_402_300_799_999]


@pytest.mark.parametrize("timestamp_ms", EDGES)
def test_value_timestamps_at_the_edges(timestamp_ms: int) -> None:
    """The epoch, a second's last millisecond, a leap day, the last second datetime can show."""
    assert codecs._stamp(timestamp_ms) == codecs._stamp_reference(timestamp_ms)


def test_a_timestamp_beyond_year_9999_fails_as_datetime_fails() -> None:
    """Beyond year 9999 the same ValueError as before, not a made-up text."""
    with pytest.raises(ValueError, match="out of range"):
        codecs._stamp(253_402_300_800_000)


PREFIX_PROOFS = st.lists(
    st.builds(PrefixProof, st.text(max_size=12), st.none() | st.binary(max_size=40), st.binary(max_size=40)),
    max_size=3,
).map(tuple)


PROOF_FIELDS = st.fixed_dictionaries({
    "epoch": st.integers(0, 2**63),
    "record": st.none() | st.binary(max_size=60),
    "map_proof": st.binary(max_size=60),
    "map_head_b64": st.text(max_size=20),
    "receipt_text": st.text(max_size=200),
    "prefixes": PREFIX_PROOFS,
})  # fmt: skip


@given(PROOF_FIELDS)
def test_proof_bytes_are_the_json_of_the_proof_object(fields: dict[str, Any]) -> None:
    """proof_json_bytes, with its shared members from the memo (asked twice, then with a receipt that
    differs), is json.dumps of proof_json for the same inputs, in UTF-8."""
    receipt = fields["receipt_text"]
    for receipt_text in (receipt, receipt, receipt + "\n"):
        fields["receipt_text"] = receipt_text
        want = json.dumps(codecs.proof_json(**fields), ensure_ascii=False).encode()
        assert codecs.proof_json_bytes(**fields) == want


@pytest.mark.parametrize(
    "change",
    [
        {"map_proof": None},
        {"map_proof": 5},
        {"map_proof": "not base64!"},
        {"map_proof": "QQ"},  # unpadded: not canonical
        {"map_head": ["QUFB"]},
        {"record": 1},
        {"record": "QR=="},  # non-zero trailing bits: not canonical
        {"receipt": None},
        {"receipt": 12},
        {"receipt": "not a receipt"},
        {"receipt": "c2sp.org/tlog-proof@v1\nindex 1\n\nno checkpoint"},
        {"receipt": "\udcff"},
    ],
)
def test_hostile_resolution_proofs_are_protocol_errors(receipt_text: str, change: dict[str, Any]) -> None:
    """A missing, mistyped or non-canonical field never escapes as KeyError or TypeError."""
    with pytest.raises(ProtocolError):
        codecs.proof_from_json("88.1/X", good_proof(receipt_text) | change)


@pytest.mark.parametrize("missing", ["map_proof", "map_head", "receipt"])
def test_a_missing_proof_field_is_named(receipt_text: str, missing: str) -> None:
    """The error says which field is missing."""
    proof = good_proof(receipt_text)
    del proof[missing]
    with pytest.raises(ProtocolError, match=missing):
        codecs.proof_from_json("88.1/X", proof)


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_answer_shapes_are_protocol_errors(body: object) -> None:
    """Every decoder refuses a body of the wrong JSON type with a ProtocolError."""
    decoders: list[Callable[[object], object]] = [
        lambda b: codecs.proof_from_json("88.1/X", b),
        codecs.resolution_from_json,
        lambda b: codecs.consistency_from_json(b, 3, 7),
        codecs.block_batch_from_json,
        lambda b: codecs.block_info_from_json(b, b"\x01" * 32),
        codecs.window_blocks_from_json,
    ]
    for decode in decoders:
        with pytest.raises(ProtocolError):
            decode(body)


@pytest.mark.parametrize(
    "body",
    [
        {"old": 3, "new": 7, "proof": [HASH, b64.encode(b"\x11" * 31)]},
        {"old": 3, "new": 7, "proof": [HASH, b64.encode(b"\x11" * 33)]},
        {"old": 3, "new": 7, "proof": [HASH, "!!!!"]},
        {"old": 3, "new": 7, "proof": [HASH, None]},
        {"old": 3, "new": 7, "proof": HASH},
        {"old": 2, "new": 7, "proof": [HASH]},
        {"old": 3},
    ],
    ids=[
        "31-byte-hash",
        "33-byte-hash",
        "bad-base64",
        "null-hash",
        "string-not-list",
        "other-sizes",
        "no-proof",
    ],
)
def test_hostile_consistency_proofs_are_protocol_errors(body: object) -> None:
    """A consistency proof's hashes are canonical base64 of exactly 32 bytes, for the sizes asked."""
    with pytest.raises(ProtocolError):
        codecs.consistency_from_json(body, 3, 7)


def test_consistency_proof_round_trips() -> None:
    """The server's encoding decodes to the same hashes."""
    hashes = [b"\x01" * 32, b"\x02" * 32]
    assert codecs.consistency_from_json(codecs.consistency_json(3, 7, hashes), 3, 7) == hashes


def test_inclusion_proof_round_trips() -> None:
    """The server's inclusion answer decodes to the entry's bytes and the same hashes."""
    hashes = [b"\x01" * 32, b"\x02" * 32]
    assert codecs.inclusion_from_json(codecs.inclusion_json(2, 7, b"entry", hashes), 2, 7) == (
        b"entry",
        hashes,
    )


@pytest.mark.parametrize(
    "body",
    [
        [],
        None,
        {"index": 2, "size": 7, "proof": []},
        {"index": 2, "size": 7, "leaf": "!!", "proof": []},
        {"index": 2, "size": 7, "leaf": "AA==", "proof": [b64.encode(b"\x01" * 31)]},
        {"index": 3, "size": 7, "leaf": "AA==", "proof": []},
        {"index": 2, "size": 7, "leaf": "AA==", "proof": "x"},
    ],
    ids=["list", "null", "no-leaf", "bad-leaf", "31-byte-hash", "other-index", "string-not-list"],
)
def test_hostile_inclusion_proofs_are_protocol_errors(body: object) -> None:
    """An inclusion answer is the entry (canonical base64) and 32-byte hashes for the asked index, size."""
    with pytest.raises(ProtocolError):
        codecs.inclusion_from_json(body, 2, 7)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"height": 1},
        {"height": -1, "block_id": "00"},
        {"height": 1, "block_id": "zz"},
        {"block_id": "00"},
    ],
    ids=["list", "no-id", "negative-height", "not-hex", "no-height"],
)
def test_hostile_gateway_heads_are_protocol_errors(body: object) -> None:
    """A gateway head is a non-negative height and a hex block id; anything else is a protocol error."""
    with pytest.raises(ProtocolError):
        codecs.gateway_head_from_json(body, "88.1/GW")
    assert codecs.gateway_head_from_json({"height": 4, "block_id": "0a0b"}, "88.1/GW") == (4, b"\n\x0b")


def test_block_batch_round_trips() -> None:
    """Anchor and replicate bodies decode to what was encoded."""
    replicate = [(b"block-1", [b"e1", b"e2"]), (b"block-2", [])]
    assert codecs.block_batch_from_json(codecs.block_batch(replicate)) == replicate
    anchor: list[tuple[bytes, list[bytes] | None]] = [(b"block-1", None)]
    assert codecs.block_batch_from_json(codecs.block_batch(anchor)) == anchor


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "mirror", "blocks": [{"block": "QUFB"}]},
        {"mode": "anchor", "blocks": []},
        {"mode": "anchor", "blocks": "QUFB"},
        {"mode": "anchor", "blocks": [None]},
        {"mode": "anchor", "blocks": [{"block": None}]},
        {"mode": "anchor", "blocks": [{"block": "QUF"}]},
        {"mode": "replicate", "blocks": [{"block": "QUFB"}]},
        {"mode": "replicate", "blocks": [{"block": "QUFB", "body": ["QUFB", 3]}]},
    ],
)
def test_hostile_block_batches_are_protocol_errors(body: object) -> None:
    """The server's block-batch decoder refuses every malformed body with a ProtocolError."""
    with pytest.raises(ProtocolError):
        codecs.block_batch_from_json(body)


@pytest.mark.parametrize(
    "body",
    [
        {"accepted": "x"},
        {"accepted": [None]},
        {"accepted": [{"height": 1}]},
        {"accepted": [{"block_id": "zz", "height": 1}]},
        {"accepted": [{"block_id": 5, "height": 1}]},
        {"accepted": [{"block_id": "00", "height": -1}]},
        {"accepted": [{"block_id": "00", "height": "1"}]},
        [],
    ],
)
def test_hostile_block_batch_answers_are_protocol_errors(body: object) -> None:
    """The gateway's decoder of the root's block-batch answer refuses malformed answers."""
    with pytest.raises(ProtocolError):
        codecs.blocks_answer_from_json(body, 200)


def test_block_info_round_trips_and_refuses_hostile_fields(receipt_text: str) -> None:
    """A block's receipt is parsed once by the codec; a bad receipt or index is a ProtocolError."""
    receipt = Receipt.parse(receipt_text.encode())
    body = json.loads(json.dumps(codecs.block_info_json(b"\xab" * 32, "88.1/GW", 4, 3, receipt)))
    info = codecs.block_info_from_json(body, b"\xab" * 32)
    assert (info.gateway, info.height, info.log_index, info.receipt_text) == ("88.1/GW", 4, 3, receipt_text)
    assert info.receipt == receipt
    pending = codecs.block_info_from_json(body | {"receipt": None, "log_index": None}, b"\xab" * 32)
    assert pending.receipt is None and pending.log_index is None
    for change in ({"receipt": "junk"}, {"receipt": 3}, {"log_index": "3"}, {"height": None}, {"gateway": 1}):
        with pytest.raises(ProtocolError):
            codecs.block_info_from_json(body | change, b"\xab" * 32)


def _client(status: int, content: bytes, content_type: str = "application/json") -> AsyncRootClient:
    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"content-type": content_type})

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://root.invalid")
    return AsyncRootClient("http://root.invalid", http=http)


CALLS: dict[str, Callable[[AsyncRootClient], Awaitable[object]]] = {
    "resolve": lambda c: c.resolve("88.1/X"),
    "consistency": lambda c: c.consistency(3, 7),
    "write": lambda c: c.write(b"cose"),
    "submit_blocks": lambda c: c.submit_blocks([(b"block", None)]),
    "block": lambda c: c.block(b"\x01" * 32),
    "origin": lambda c: c.origin(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    "content", [b"[]", b"null", b"{}", b'"x"', b"not json", b"\xff\xfe", b'{"proof": [1], "accepted": {}}']
)
def test_the_client_turns_every_hostile_answer_into_a_typed_error(call: str, content: bytes) -> None:
    """Whatever a root answers with 200, each client call returns a value or raises a RootClientError."""

    async def attempt() -> None:
        async with _client(200, content) as client:
            with contextlib.suppress(RootClientError):
                await CALLS[call](client)

    asyncio.run(attempt())


def test_an_error_answer_becomes_a_client_error_with_its_status_and_code() -> None:
    """The root's JSON error body gives the message and Handle code; a non-JSON one its text."""

    async def attempt(status: int, content: bytes) -> ClientError:
        async with _client(status, content) as client:
            with pytest.raises(ClientError) as info:
                await client.resolve("88.1/X")
            return info.value

    refused = asyncio.run(attempt(404, json.dumps(codecs.error_json(100, "Handle Not Found")).encode()))
    assert (refused.status, refused.handle_code, refused.message) == (404, 100, "Handle Not Found")
    proxy = asyncio.run(attempt(502, b"bad gateway"))
    assert (proxy.status, proxy.handle_code, proxy.message) == (502, 2, "bad gateway")
    odd = asyncio.run(attempt(400, b"[1, 2]"))
    assert (odd.status, odd.handle_code) == (400, 2)


def test_routes_build_the_paths_the_server_declares() -> None:
    """Client paths fall under the server's route templates; identifiers keep their one slash."""
    assert routes.resolve("88.123/PUMP 1").startswith(routes.RESOLVE_PREFIX)
    assert routes.resolve("88.123/a/b") == "/v1/resolve/88.123/a%2Fb"
    assert routes.block(b"\xab\xcd") == "/v1/blocks/abcd"
    assert routes.gateway_head("88.1/GW") == "/v1/gateways/88.1/GW/head"
    assert routes.RESOLVE == routes.RESOLVE_PREFIX + "{identifier:path}"
    assert routes.HANDLE == routes.HANDLE_PREFIX + "{handle:path}"
    assert routes.HISTORY == routes.HISTORY_PREFIX + "{identifier:path}"


def test_the_root_app_serves_exactly_the_routes_rootclient_names() -> None:
    """Every route of the root's API comes from rootclient.routes, and every root route there is served."""
    app = create_app(cast(RootNode, None))  # routes are declared without touching the node
    served = {r.path for r in app.routes if isinstance(r, APIRoute)}
    declared = {
        routes.HANDLE, routes.RESOLVE, routes.HISTORY, routes.REGISTRY, routes.GATEWAY_BLOCKS, routes.BLOCK,
        routes.GATEWAY_HEAD, routes.CHECKPOINT, routes.CONSISTENCY, routes.INCLUSION, routes.TILES_CHECKPOINT,
        routes.TILE, routes.HEALTH, routes.METRICS, routes.WEB_PAGE, routes.POLICY, routes.CONSOLE_ASSET,
        routes.BLOCKS, routes.EPCIS_CAPTURE, routes.EPCIS_CAPTURE_JOB, routes.EPCIS_EVENTS,
        routes.EPCIS_INDEX,
    }  # fmt: skip
    assert served == declared


ANCHOR_OK = {
    "origin": "child.test",
    "tree_size": 9,
    "vkey": None,
    "url": "http://c",
    "anchor": {"index": 4, "size": 7, "cosigned_at": 1},
    "cosigned_size": 7,
    "evidence": [{"size": 7, "cosigned": "a\n", "refused": "b\n"}],
}


def test_anchor_pointer_decodes() -> None:
    """The parent's pointer decodes to its index, sizes, URL and evidence notes; no anchor is None."""
    info = codecs.anchor_from_json(ANCHOR_OK, "child.test")
    assert (info.index, info.size, info.tree_size, info.url) == (4, 7, 9, "http://c")
    assert info.evidence == ((7, b"a\n", b"b\n"),)
    empty = codecs.anchor_from_json({**ANCHOR_OK, "anchor": None, "evidence": []}, "child.test")
    assert (empty.index, empty.size, empty.evidence) == (None, None, ())


@pytest.mark.parametrize(
    "change",
    [
        {"origin": "other.test"},
        {"tree_size": -1},
        {"tree_size": True},
        {"url": 3},
        {"anchor": {"index": "4", "size": 7}},
        {"anchor": {"size": 7}},
        {"anchor": [4, 7]},
        {"cosigned_size": "7"},
        {"evidence": {"size": 7}},
        {"evidence": [{"size": 7, "cosigned": 1, "refused": "b"}]},
        {"evidence": [{"size": 7, "cosigned": "a"}]},
    ],
)
def test_hostile_anchor_pointers_are_protocol_errors(change: dict[str, Any]) -> None:
    """Every field of the pointer has its type, and the answer must be for the origin asked."""
    with pytest.raises(ProtocolError):
        codecs.anchor_from_json({**ANCHOR_OK, **change}, "child.test")
    for body in HOSTILE:
        with pytest.raises(ProtocolError):
            codecs.anchor_from_json(body, "child.test")


def test_window_blocks_round_trip_and_refuse_bad_fields() -> None:
    """GET /v1/blocks: what the server encodes decodes to the same facts; a wrong field is a ProtocolError."""
    body = codecs.window_blocks_json(
        "88.1/GW",
        5,
        9,
        [(b"\xab" * 32, 3, 7, b"header", 12, None, True), (b"\xcd" * 32, 4, 9, b"h2", None, None, False)],
        4,
    )
    blocks, more = codecs.window_blocks_from_json(json.loads(json.dumps(body)))
    assert more == 4
    assert [(b.block_id, b.height, b.time_ms, b.header, b.log_index, b.at_root) for b in blocks] == [
        (b"\xab" * 32, 3, 7, b"header", 12, True),
        (b"\xcd" * 32, 4, 9, b"h2", None, False),
    ]
    item = body["blocks"][0]
    for change in ({"block_id": "zz"}, {"readings": "somewhere"}, {"header": "!!"}, {"height": -1},
                   {"receipt": "not a receipt"}, {"log_index": "3"}):  # fmt: skip
        with pytest.raises(ProtocolError):
            codecs.window_blocks_from_json({**body, "blocks": [{**item, **change}]})
    with pytest.raises(ProtocolError):
        codecs.window_blocks_from_json({**body, "next": "4"})
