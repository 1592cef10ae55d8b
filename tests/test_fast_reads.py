"""The hot reads as precomputed bytes: byte for byte FastAPI's answers, bounded, never from an older view."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.keys import NoteKey, load_private_pem
from chain_lite.note import SIGTYPE_ED25519, VerifierKey
from chain_lite.receipt import Receipt
from chain_lite.registry import MAX_UINT31, Delegation, Record, Value, admin_kid, build_write, sign_write
from chain_lite.resolution import PrefixProof, ResolutionProof
from resolver import config as root_config
from resolver.api import create_app, resolve_answer, resolve_body
from resolver.assembly import init_root, node_policy
from resolver.db import Database
from resolver.fast_reads import FastReads
from resolver.reads import AnswerCache, Resolution, RootNode
from resolver.sequencer import Sequencer
from rootclient import routes
from runtime.clock import now_ms

from .helpers import LogBuilder

ORIGIN = "fast.test"


@contextlib.contextmanager
def _node(tmp: Path) -> Iterator[tuple[RootNode, Any]]:
    """A root (batches publish at once) with its first view; yields the node and ``publish(identifier,
    url)``, which creates or updates the identifier and publishes it in its own checkpoint."""
    result = init_root(tmp / "root", ORIGIN, "88.123")
    cfg = root_config.load(tmp / "root")
    db = Database(cfg.database)
    admin = CoseSigner(admin_kid("88.123"), load_private_pem(result.admin_key.read_bytes()))
    node = RootNode(db, ORIGIN)
    sequencer = Sequencer(db, NoteKey.parse_skey(cfg.log_skey.read_text()).log_signer(), ORIGIN, publish=True)

    def publish(identifier: str, url: str, op: str = "create") -> None:
        values = [Value(1, "URL", "string", url), Value(2, "EMAIL", "string", "ops@example.com")]
        request = build_write(ORIGIN, op, identifier, values, timestamp_ms=now_ms(), nonce=os.urandom(16))
        node.write(sign_write(request, admin).raw)
        assert sequencer.integrate(now_ms()) is not None
        assert node.refresh()

    try:
        assert node.refresh()
        yield node, publish
    finally:
        sequencer.close()
        db.close()


def _get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://root.test") as client:
            return await client.get(path)

    return asyncio.run(go())


PATHS = [
    routes.resolve("88.123/PUMP-1"),
    "/v1/resolve/88.123/pump-1",  # echoed as asked
    routes.resolve("88.123/ABSENT"),
    "/v1/resolve/88.123/",  # invalid: empty suffix
    "/v1/resolve/88.123/a%00b",  # percent-encoded (and invalid)
    "/v1/resolve/88.123/PUMP-1?at=1",
    "/v1/resolve/88.123/PUMP-1?at=abc",
    routes.handle("88.123/PUMP-1"),
    routes.handle("88.123/ABSENT"),
    "/api/handles/88.123/PUMP-1?proof=true",
    "/api/handles/88.123/ABSENT?proof=true",
    "/api/handles/88.123/PUMP-1?proof=false",
    "/api/handles/88.123/PUMP-1?proof=yes",
    "/api/handles/88.123/PUMP-1?proof=maybe",
    "/api/handles/88.123/PUMP-1?type=URL",
    "/api/handles/88.123/PUMP-1?type=URL&type=EMAIL&proof=true",
    "/api/handles/88.123/PUMP-1?type=NOPE",
    "/api/handles/88.123/PUMP-1?type=",
    "/api/handles/88.123/PUMP-1?index=2",
    "/api/handles/88.123/PUMP-1?index=02",
    "/api/handles/88.123/PUMP-1?index=x",
    "/api/handles/88.123/PUMP-1?index=1&type=EMAIL",
    "/api/handles/88.123/PUMP-1?unknown=1",
    "/api/handles/88.123/PUMP-1?type=url&type=Email",  # Handle types match case-insensitively
    "/api/handles/88.123/PUMP-1?type=URL.",  # a parent type matches itself
    "/api/handles/0.NA/88.123",  # a prefix record, echoed as asked, with its HS_ADMIN values
    "/api/handles/0.na/88.123?type=HS_ADMIN&index=300&proof=true",
    "/api/handles/0.na/88.123.77",  # an unregistered child prefix: not found
    "/api/handles/99.1/PUMP-1",  # a prefix this node does not serve: 301
    "/api/handles/99.1/PUMP-1?proof=true",
    "/api/handles/0.na/99",
    "/api/handles/bad prefix/x",
    "/api/handles/88.123/%E2%82%AC",
    routes.TILES_CHECKPOINT,
    routes.CHECKPOINT,
    "/log/tile/0/000.p/3",
    "/log/tile/entries/000.p/3",
    "/log/tile/0/001",
    "/log/tile/nonsense",
    routes.HEALTH,
]


def test_fast_reads_answer_byte_for_byte_as_fastapi(tmp_path: Path) -> None:
    """Every hot read, present, absent, invalid and with each query variant, is FastAPI's answer to
    the byte: status, headers and body, asked once (encoded) and again (from the cache)."""
    with _node(tmp_path) as (node, publish):
        publish("88.123/PUMP-1", "https://plant.example/1")
        plain = create_app(node)
        fast = FastReads(create_app(node), node)
        for path in PATHS:
            want = _get(plain, path)
            for attempt in ("encoded", "cached"):
                got = _get(fast, path)
                assert (got.status_code, got.headers.raw, got.content) == (
                    want.status_code,
                    want.headers.raw,
                    want.content,
                ), f"{path} ({attempt})"
        assert len(node.view().answers) > 0


def test_fast_reads_answer_from_the_cache_without_the_app(tmp_path: Path) -> None:
    """A hot read is answered by the fast path itself (the app behind it is never called); the rest
    goes to the app."""
    with _node(tmp_path) as (node, publish):
        publish("88.123/PUMP-1", "https://plant.example/1")
        called: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            called.append(scope["path"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        fast = FastReads(app, node)
        assert _get(fast, routes.resolve("88.123/PUMP-1")).status_code == 200
        assert _get(fast, routes.handle("88.123/ABSENT")).status_code == 404
        assert _get(fast, routes.TILES_CHECKPOINT).status_code == 200
        assert called == []
        assert _get(fast, routes.HEALTH).status_code == 204
        assert _get(fast, "/v1/resolve/88.123/PUMP-1?at=1").status_code == 204
        assert called == [routes.HEALTH, "/v1/resolve/88.123/PUMP-1"]


def test_a_new_checkpoint_answers_the_new_record_never_an_older_one(tmp_path: Path) -> None:
    """Once a newer view is published, the cached answer of the older one is never served again."""
    with _node(tmp_path) as (node, publish):
        publish("88.123/PUMP-1", "https://old.example")
        fast = FastReads(create_app(node), node)
        path = routes.resolve("88.123/PUMP-1")
        sizes = []
        for version in range(3):
            first = _get(fast, path).json()
            again = _get(fast, path).json()
            assert first == again
            sizes.append(first["proof"]["epoch"])
            assert first["proof"]["epoch"] == node.view().size
            expected = "https://old.example" if version == 0 else f"https://v{version}.example"
            assert first["values"][0]["data"]["value"] == expected
            publish("88.123/PUMP-1", f"https://v{version + 1}.example", op="update")
        assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_answer_cache_is_bounded_by_bytes_least_recently_used_out_first() -> None:
    """The cache never holds more than its byte budget; the least recently used answer leaves first."""
    cache = AnswerCache(max_bytes=300)
    body = b"x" * 90
    for key in (b"a", b"b", b"c"):
        cache.put(key, (200, [], body))
    assert cache.get(b"a") is not None  # now the most recently used
    cache.put(b"d", (200, [], body))
    assert cache.bytes <= 300 and len(cache) == 3
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"d") is not None
    cache.put(b"huge", (200, [], b"y" * 400))
    assert cache.get(b"huge") is None and cache.bytes <= 300


@pytest.mark.parametrize("path", ["/v1/resolve/88.123/PUMP-1", routes.TILES_CHECKPOINT])
def test_a_request_with_a_body_goes_to_fastapi(tmp_path: Path, path: str) -> None:
    """A GET declaring a body over the cap gets FastAPI's 413, as without the fast path."""
    with _node(tmp_path) as (node, _publish):
        plain = create_app(node, max_body=10)
        fast = FastReads(create_app(node, max_body=10), node)

        async def go(app: Any) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://root.test") as client:
                return await client.request("GET", path, content=b"z" * 100)

        want, got = asyncio.run(go(plain)), asyncio.run(go(fast))
        assert want.status_code == 413
        assert (got.status_code, got.headers.raw, got.content) == (
            want.status_code,
            want.headers.raw,
            want.content,
        )


def _reference_body(text: str, res: Resolution) -> bytes:
    """``/v1/resolve``'s body written straight from its shape (docs/formats.md): one dict through
    ``json.dumps``, as the endpoint encoded it before D-141. The naive reference of resolve_body."""

    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()

    def stamp(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    values = [] if res.record is None else res.record.values
    body: dict[str, Any] = {
        "identifier": text,
        "found": res.record is not None,
        "values": [
            {"index": v.index, "type": v.type, "data": {"format": v.format, "value": v.value}, "ttl": v.ttl,
             "timestamp": stamp(v.timestamp_ms)}
            for v in values
        ],
        "proof": {
            "epoch": res.epoch,
            "record": b64(res.proof.record),
            "map_proof": b64(res.proof.map_proof),
            "map_head": res.map_head_b64,
            "receipt": res.receipt_text,
            "prefixes": [
                {"prefix": p.prefix, "record": b64(p.record), "map_proof": b64(p.map_proof)}
                for p in res.prefixes
            ],
        },
    }  # fmt: skip
    for p in res.prefixes:
        delegation = None if p.record is None else Record.decode(p.record).delegation()
        if delegation is not None:
            body["referral"] = delegation.as_json()
            break
    return json.dumps(body, ensure_ascii=False).encode()


def _receipt() -> tuple[Receipt, str]:
    log = LogBuilder()
    log.add(4)
    receipt = Receipt(3, tuple(log.tree.inclusion_proof(3)), SignedCheckpoint.parse(log.checkpoint()))
    return receipt, receipt.to_bytes().decode()


RECEIPT, RECEIPT_TEXT = _receipt()
_CHILD = VerifierKey.parse(NoteKey.generate("child.test", SIGTYPE_ED25519).vkey())
DELEGATION = Delegation(
    "88.123.5", ("https://child.example",), str(_CHILD), node_policy(_CHILD, [], 0).to_text()
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # a str that encodes as UTF-8
VALUES = st.lists(
    st.builds(
        Value,
        index=st.integers(1, MAX_UINT31),
        type=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64),
        format=st.just("string"),
        value=TEXT,
        ttl=st.integers(0, MAX_UINT31),
        timestamp_ms=st.integers(0, 253_402_300_799_999),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda v: v.index,
).map(lambda values: tuple(sorted(values, key=lambda v: v.index)))
_CONTACT = Value(1, "EMAIL", "string", 'ops "at" plant\\n', 60, 1_700_000_000_123)
PREFIX_RECORDS = st.sampled_from([
    None,
    Record("0.na/88.123", (_CONTACT,)).encode(),
    Record("0.na/88.123.5", (DELEGATION.value(),)).encode(),
])  # fmt: skip


@given(
    text=TEXT,
    values=st.none() | VALUES,
    epoch=st.integers(1, 2**40),
    map_proof=st.binary(max_size=80),
    prefix_records=st.lists(PREFIX_RECORDS, max_size=3),
)
def test_resolve_body_is_the_json_of_the_answer_object(
    text: str,
    values: tuple[Value, ...] | None,
    epoch: int,
    map_proof: bytes,
    prefix_records: list[bytes | None],
) -> None:
    """resolve_body (pre-encoded proof members, D-141) gives exactly json.dumps of the answer object,
    for any echoed text (quotes, backslashes, control and non-ASCII characters), any values, absent or
    present records, prefix proofs with and without a delegation (the referral hint), asked twice."""
    record = None if values is None else Record("88.123/x", values)
    prefixes = tuple(PrefixProof(f"88.{i}", r, map_proof[i:]) for i, r in enumerate(prefix_records))
    raw = None if record is None else record.encode()
    proof = ResolutionProof("88.123/x", raw, map_proof, b"head", RECEIPT, prefixes)
    res = Resolution("88.123/x", record, proof, epoch, "aGVhZA==", RECEIPT_TEXT)
    want = _reference_body(text, res)
    assert resolve_body(text, res) == want
    assert resolve_body(text, res) == want  # the shared members from the memo
    answer = resolve_answer(text, res)
    assert answer.body == want and answer.media_type == "application/json"
