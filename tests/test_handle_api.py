"""Handle reads through an unmodified Handle client library (pyhandle) against a real root node."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pyhandle.handleclient import PyHandleClient
from pyhandle.handleexceptions import GenericHandleError

from chain_lite.keys import generate_p256
from chain_lite.registry import Value, prefix_handle, pubkey_value
from tests.root_harness import RootUnderTest

PREFIX_ADMIN = "011111111111"


def _client(root: RootUnderTest) -> Any:
    return PyHandleClient("rest").instantiate_for_read_access(handle_server_url=root.url)


def _admin(handle: str, index: int) -> dict[str, Any]:
    return {"format": "admin", "value": {"handle": handle, "index": index, "permissions": PREFIX_ADMIN}}


def test_prefix_handle_spelled_in_capitals_is_read_and_echoed_as_asked(root: RootUnderTest) -> None:
    """``0.NA/88.123.99`` reads the prefix record ``0.na/88.123.99`` and answers under the spelling asked."""
    root.add_prefix("88.123.99")
    root.settle()
    client = _client(root)
    for spelling in ("0.NA/88.123.99", "0.na/88.123.99", "0.Na/88.123.99"):
        record = client.retrieve_handle_record_json(spelling)
        assert record["responseCode"] == 1 and record["handle"] == spelling
        assert [v["type"] for v in record["values"]] == ["HS_ADMIN", "HS_PUBKEY"]


def test_identifier_under_a_prefix_this_node_does_not_serve_answers_301(root: RootUnderTest) -> None:
    """Outside the node's prefixes the answer is Handle's 301 "server not responsible" (HTTP 400); an
    unknown identifier under a served prefix, or an unregistered child prefix, is 100 (HTTP 404)."""
    client = _client(root)
    for handle in ("99.1/PUMP-1", "88/PUMP-1", "88.123.77/PUMP-1", "0.NA/88", "0.na/99.1"):
        r = httpx.get(f"{root.url}/api/handles/{handle}")
        assert (r.status_code, r.json()) == (
            400,
            {"responseCode": 301, "handle": handle, "message": "Server not responsible for handle"},
        ), handle
        with pytest.raises(GenericHandleError) as info:
            client.retrieve_handle_record(handle)
        assert info.value.response.status_code == 400
    for handle in ("88.123/ABSENT", "0.NA/88.123.77"):
        assert client.retrieve_handle_record(handle) is None
        r = httpx.get(f"{root.url}/api/handles/{handle}")
        assert (r.status_code, r.json()["responseCode"]) == (404, 100), handle
    with_proof = httpx.get(f"{root.url}/api/handles/99.1/PUMP-1?proof=true").json()
    assert with_proof["responseCode"] == 301 and with_proof["proof"]["record"] is None


def test_prefix_records_show_their_admins_as_hs_admin_values(root: RootUnderTest) -> None:
    """Each admin key of a prefix record is an HS_ADMIN value naming ``INDEX:0.na/P``, at the first free
    index from 100; ordinary records show only their own values."""
    admin = root.add_prefix("88.123.99")
    root.settle()
    client = _client(root)
    record = client.retrieve_handle_record_json("0.na/88.123.99")
    assert [(v["index"], v["type"]) for v in record["values"]] == [(100, "HS_ADMIN"), (300, "HS_PUBKEY")]
    assert record["values"][0]["data"] == _admin("0.na/88.123.99", 300)
    assert (
        client.get_value_from_handle("0.na/88.123.99", "HS_ADMIN") == _admin("0.na/88.123.99", 300)["value"]
    )
    # The root prefix record holds a DESC value at 100: its HS_ADMIN takes the next free index.
    root_record = client.retrieve_handle_record_json("0.NA/88.123")
    assert [(v["index"], v["type"]) for v in root_record["values"]] == [
        (100, "DESC"), (101, "HS_ADMIN"), (300, "HS_PUBKEY"),
    ]  # fmt: skip
    # A second admin key (rotation in progress): a second HS_ADMIN.
    second = generate_p256()
    keys = [pubkey_value(300, admin.public_key), pubkey_value(301, second.public_key())]
    with root.client() as c:
        c.write(root.write("update", prefix_handle("88.123.99"), keys, admin))
    root.settle()
    admins = client.retrieve_handle_record_json("0.na/88.123.99", type=["HS_ADMIN"])["values"]
    assert [(v["index"], v["data"]) for v in admins] == [
        (100, _admin("0.na/88.123.99", 300)), (101, _admin("0.na/88.123.99", 301)),
    ]  # fmt: skip
    with root.client() as c:
        c.write(
            root.write("create", "88.123.99/PUMP-1", [Value(1, "URL", "string", "https://p.example")], admin)
        )
    root.settle()
    assert client.retrieve_handle_record("88.123.99/PUMP-1") == {"URL": "https://p.example"}


def test_type_and_index_filters_follow_handle_semantics(root: RootUnderTest) -> None:
    """Types match ASCII case-insensitively; ``T.`` matches ``T`` and its subtypes; types and indexes
    together select every value matching either; derived HS_ADMIN values filter like stored ones."""
    values = [
        Value(1, "URL", "string", "https://plant.example/pump42"),
        Value(2, "EMAIL", "string", "ops@plant.example"),
        Value(3, "HS_SITE", "hex", "00ff"),
        Value(4, "HS_SITE.PREFIX", "hex", "01"),
        Value(5, "HS_SITEX", "hex", "02"),
    ]
    with root.client() as c:
        c.write(root.write("create", "88.123/F", values, root.admin_signer()))
    root.settle()
    client = _client(root)

    def indexes(handle: str, **options: Any) -> list[int]:
        return [v["index"] for v in client.retrieve_handle_record_json(handle, **options)["values"]]

    assert indexes("88.123/F", type=["email"]) == [2]
    assert indexes("88.123/F", type=["Url", "EMAIL"]) == [1, 2]
    assert indexes("88.123/F", type=["HS_SITE."]) == [3, 4]
    assert indexes("88.123/F", type=["hs_site"]) == [3]
    assert indexes("88.123/F", indices=[1, 5]) == [1, 5]
    assert indexes("88.123/F", indices=[1], type=["EMAIL"]) == [1, 2]
    assert indexes("0.NA/88.123", type=["hs_admin"]) == [101]
    assert indexes("0.NA/88.123", indices=[300], type=["HS_ADMIN"]) == [101, 300]
    none = httpx.get(f"{root.url}/api/handles/88.123/F?type=NOPE&index=9")
    assert (none.status_code, none.json()["responseCode"]) == (200, 200)
