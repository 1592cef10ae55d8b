"""The root node's registry over real HTTP: writes, refusals, proofs, history and as-of answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from chain_lite import b64
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.keys import generate_p256
from chain_lite.registry import Value, admin_kid, build_write, prefix_handle, pubkey_value, sign_write
from chain_lite.resolution import StaleMap, verify_resolution
from rootclient.codecs import proof_from_json, resolution_from_json
from rootclient.errors import ClientError
from rootclient.pin_file import FilePinStore, pin_file
from tests.root_harness import RootUnderTest

URL_VALUE = [Value(1, "URL", "string", "https://plant.example/pump42")]


def _leaves(root: RootUnderTest) -> int:
    return root.settle()


def test_device_registered_and_resolved_with_verified_proof(root: RootUnderTest, tmp_path: Path) -> None:
    """A prefix admin registers a device; resolution proves its record against policy and pin."""
    admin = root.add_prefix("88.123.99")
    device = generate_p256()
    with root.client() as c:
        c.write(root.write("create", "88.123.99/PUMP-0042", [pubkey_value(300, device.public_key())], admin))
        root.settle()
        # Suffixes are ASCII case-insensitive (issue 12 item 8): another spelling finds the same record,
        # and the answer echoes the spelling asked.
        answer = c.resolve("88.123.99/pump-0042")
        assert answer["found"] is True and answer["identifier"] == "88.123.99/pump-0042"
        answer = c.resolve("88.123.99/PUMP-0042")
        assert answer["found"] is True
        result = c.verify_resolution(
            resolution_from_json(answer), root.policy, FilePinStore(root.origin, tmp_path)
        )
    record = result.proven.record
    assert record is not None
    assert record.signing_key() is not None
    assert result.proven.checkpoint.cosigners == ("witness.test",)
    assert json.loads(pin_file(root.origin, tmp_path).read_text())["pinned"]


def test_absent_identifier_is_proven_absent(root: RootUnderTest, tmp_path: Path) -> None:
    """An unknown identifier gets a verifiable non-membership proof."""
    with root.client() as c:
        answer = c.resolve("88.123/NOBODY")
        result = c.verify_resolution(
            resolution_from_json(answer), root.policy, FilePinStore(root.origin, tmp_path)
        )
    assert answer["found"] is False
    assert result.proven.record is None


def test_update_delete_history_and_as_of(root: RootUnderTest, tmp_path: Path) -> None:
    """Updates and deletes are logged; history lists them; ?at=N proves the older record."""
    admin = root.admin_signer()
    with root.client() as c:
        c.write(root.write("create", "88.123/X", URL_VALUE, admin))
        size_after_create = root.settle()
        c.write(root.write("update", "88.123/X", [Value(1, "URL", "string", "https://new.example")], admin))
        root.settle()
        c.write(root.write("delete", "88.123/X", None, admin))
        root.settle()
        history = c.get_json("/v1/history/88.123/X")["changes"]
        assert [h["op"] for h in history] == ["set", "set", "delete"]
        assert history[0]["log_index"] < history[1]["log_index"] < history[2]["log_index"]
        now = c.resolve("88.123/X")
        assert now["found"] is False
        then = c.resolve("88.123/X", at=size_after_create)
        store = FilePinStore(root.origin, tmp_path)
        proven = c.verify_resolution(resolution_from_json(then), root.policy, store, as_of=True).proven
    assert proven.record is not None
    assert proven.record.values[0].value == "https://plant.example/pump42"
    assert proven.epoch == size_after_create


def test_older_map_head_is_refused_as_a_current_answer(root: RootUnderTest) -> None:
    """An as-of proof (older map head) does not pass as proof of the current record."""
    admin = root.admin_signer()
    with root.client() as c:
        c.write(root.write("create", "88.123/Y", URL_VALUE, admin))
        first = root.settle()
        c.write(root.write("delete", "88.123/Y", None, admin))
        root.settle()
        old = c.resolve("88.123/Y", at=first)
    proof = proof_from_json(old["identifier"], old["proof"])
    verified = root.policy.verify_checkpoint(proof.receipt.checkpoint)
    with pytest.raises(StaleMap):
        verify_resolution(proof, verified)


def test_tampered_record_in_answer_is_rejected(root: RootUnderTest, tmp_path: Path) -> None:
    """Changing the record bytes (or claiming absence) in an answer breaks verification."""
    with root.client() as c:
        c.write(root.write("create", "88.123/Z", URL_VALUE, root.admin_signer()))
        root.settle()
        answer = c.resolve("88.123/Z")
        store = FilePinStore(root.origin, tmp_path)
        forged = json.loads(json.dumps(answer))
        forged["proof"]["record"] = None
        with pytest.raises(ChainError):
            c.verify_resolution(resolution_from_json(forged), root.policy, store)
        # Another identifier's map proof; in a map this small an absent key's proof can be the very same
        # bytes (its path ends at 88.123/z's entry), so take one that differs.
        others = (c.resolve(f"88.123/{name}")["proof"]["map_proof"] for name in ("0.na", "a", "b", "c", "d"))
        other_proof = next(p for p in others if p != answer["proof"]["map_proof"])
        forged = json.loads(json.dumps(answer))
        forged["proof"]["map_proof"] = other_proof
        with pytest.raises(ChainError):
            c.verify_resolution(resolution_from_json(forged), root.policy, store)


def _status(root: RootUnderTest, body: bytes) -> tuple[int, dict[str, object]]:
    r = httpx.post(f"{root.url}/v1/registry", content=body)
    return r.status_code, r.json()


def test_refused_writes_change_nothing(root: RootUnderTest) -> None:
    """Unsigned, badly signed, replayed, out-of-prefix, not served here, stale, foreign and malformed
    writes: refused."""
    admin = root.admin_signer()
    good = root.write("create", "88.123/OK", URL_VALUE, admin)
    assert _status(root, good)[0] == 201
    sub_admin = root.add_prefix("88.123.6")  # an admin whose prefix is served here, 88.123 not its own
    size = root.settle()

    wrong_key = CoseSigner(admin_kid("88.123"), generate_p256())
    stale = sign_write(
        build_write(
            root.origin, "create", "88.123/OLD", URL_VALUE, timestamp_ms=1_000_000, nonce=os.urandom(16)
        ),
        admin,
    ).raw
    foreign = sign_write(
        build_write(
            "other.root",
            "create",
            "88.123/F",
            URL_VALUE,
            timestamp_ms=time.time_ns() // 10**6,
            nonce=os.urandom(16),
        ),
        admin,
    ).raw
    cases = {
        "unsigned": (b"", 401, 402),
        "garbage": (b"\xa1\x01\x02", 400, 202),
        "wrong key": (root.write("create", "88.123/W", URL_VALUE, wrong_key), 403, 403),
        "replay": (good, 403, 403),
        "outside prefix": (root.write("create", "88.123/SUB", URL_VALUE, sub_admin), 403, 401),
        "not served here": (root.write("create", "88/ROOTY", URL_VALUE, admin), 400, 301),
        "parent's own record": (root.write("delete", prefix_handle("88.123"), None, admin), 403, 401),
        "stale timestamp": (stale, 403, 403),
        "other node": (foreign, 403, 403),
        "exists": (root.write("create", "88.123/OK", URL_VALUE, admin), 409, 101),
        "missing": (root.write("update", "88.123/NONE", URL_VALUE, admin), 404, 100),
        "unregistered prefix": (root.write("create", "88.123.5/X", URL_VALUE, admin), 400, 301),
        "unknown admin": (
            root.write("create", "88.123/U", URL_VALUE, CoseSigner(admin_kid("88.123", 301), root.admin)),
            403,
            403,
        ),
    }
    for name, (body, status, code) in cases.items():
        got_status, got = _status(root, body)
        assert (got_status, got["responseCode"]) == (status, code), (name, got)
        assert isinstance(got["message"], str) and got["message"], name
    time.sleep(0.2)
    assert root.settle() == size, "a refused write reached the log"


def test_bad_admin_key_value_is_refused(root: RootUnderTest) -> None:
    """A prefix record whose HS_PUBKEY is not a key is refused, so admins cannot lock themselves out."""
    bad = [Value(300, "HS_PUBKEY", "base64", "AAAA")]
    status, body = _status(root, root.write("create", prefix_handle("88.123.7"), bad, root.admin_signer()))
    assert (status, body["responseCode"]) == (400, 202)


def test_child_admin_cannot_write_parent_or_sibling(root: RootUnderTest) -> None:
    """The admin of 88.123.99 writes under 88.123.99 only."""
    child = root.add_prefix("88.123.99")
    root.add_prefix("88.123.98")
    root.settle()
    assert _status(root, root.write("create", "88.123.99/A", URL_VALUE, child))[0] == 201
    for target in ("88.123/A", "88.123.98/A", prefix_handle("88.123.98")):
        status, body = _status(root, root.write("create", target, URL_VALUE, child))
        assert (status, body["responseCode"]) == (403, 401), target


def test_handle_api_shape_filters_and_codes(root: RootUnderTest) -> None:
    """/api/handles answers in the exact Handle JSON shape, with type/index filters and codes."""
    values = [
        *URL_VALUE,
        Value(2, "EMAIL", "string", "ops@plant.example"),
        Value(3, "HS_SITE.X", "hex", "00ff"),
    ]
    with root.client() as c:
        c.write(root.write("create", "88.123/H", values, root.admin_signer()))
    root.settle()
    r = httpx.get(f"{root.url}/api/handles/88.123/H")
    body = r.json()
    assert r.status_code == 200
    assert list(body) == ["responseCode", "handle", "values"]
    assert body["responseCode"] == 1 and body["handle"] == "88.123/H"
    first = body["values"][0]
    assert list(first) == ["index", "type", "data", "ttl", "timestamp"]
    assert first["data"] == {"format": "string", "value": "https://plant.example/pump42"}
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    by_type = httpx.get(f"{root.url}/api/handles/88.123/H", params={"type": "EMAIL"}).json()
    assert [v["index"] for v in by_type["values"]] == [2]
    by_index = httpx.get(f"{root.url}/api/handles/88.123/H?index=1&index=3").json()
    assert [v["index"] for v in by_index["values"]] == [1, 3]
    subtype = httpx.get(f"{root.url}/api/handles/88.123/H", params={"type": "HS_SITE."}).json()
    assert [v["index"] for v in subtype["values"]] == [3]
    none = httpx.get(f"{root.url}/api/handles/88.123/H", params={"type": "NOPE"})
    assert none.status_code == 200 and none.json()["responseCode"] == 200
    missing = httpx.get(f"{root.url}/api/handles/88.123/MISSING")
    assert missing.status_code == 404 and missing.json()["responseCode"] == 100
    proof = httpx.get(f"{root.url}/api/handles/88.123/H?proof=true").json()
    assert set(proof["proof"]) == {"epoch", "record", "map_proof", "map_head", "receipt", "prefixes"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/handles/88.123/%ZZ", 400, 102),
        ("/api/handles/88.123/%FF", 400, 102),
        ("/api/handles/88.123/", 400, 102),
        ("/api/handles/88..1/x", 400, 102),
        ("/api/handles/nosuffix", 400, 102),
        ("/api/handles/88.123/a%00b", 400, 102),
        # The namespace policy (docs/formats.md §10) at resolution: dot segments that a path-normalising
        # client would remove, invisible and bidi characters, trailing whitespace.
        ("/api/handles/88.123/x%2F..%2FPUMP-0048", 400, 102),
        ("/api/handles/88.123/PUMP%E2%80%8B-7", 400, 102),
        ("/v1/resolve/88.123/%E2%80%AEPUMP-7", 400, 102),
        ("/api/handles/88.123/PUMP-7%20", 400, 102),
        ("/v1/resolve/88.123/x?at=0", 400, 2),
        ("/v1/resolve/88.123/x?at=abc", 400, 2),
        ("/v1/nothing-here", 404, 2),
    ],
)
def test_malformed_reads_get_json_errors(root: RootUnderTest, path: str, status: int, code: int) -> None:
    """Every malformed read is a JSON error with a Handle response code and a reason."""
    r = httpx.get(root.url + path)
    assert r.status_code == status
    body = r.json()
    assert body["responseCode"] == code and body["message"]


def test_percent_encoded_unicode_suffix_resolves(root: RootUnderTest) -> None:
    """Suffixes are UTF-8 and NFC-normalised; percent-encoded requests find them."""
    with root.client() as c:
        c.write(root.write("create", "88.123/Pumpe-Überdruck", URL_VALUE, root.admin_signer()))
    root.settle()
    r = httpx.get(f"{root.url}/api/handles/88.123/Pumpe-%C3%9Cberdruck")
    assert r.status_code == 200 and r.json()["handle"] == "88.123/Pumpe-Überdruck"
    decomposed = "88.123/Pumpe-U\u0308berdruck"
    with root.client() as c:
        assert c.resolve(decomposed)["found"] is True


def test_request_bodies_are_capped(root: RootUnderTest) -> None:
    """A body above the cap gets 413 with a JSON reason, declared or streamed."""
    big = b"x" * (1024 * 1024 + 1)
    r = httpx.post(f"{root.url}/v1/registry", content=big)
    assert r.status_code == 413 and "limit" in r.json()["message"]

    def chunks() -> object:
        for _ in range(1100):
            yield b"y" * 1024

    r = httpx.post(f"{root.url}/v1/registry", content=chunks())  # type: ignore[arg-type]
    assert r.status_code == 413


def test_openapi_docs_and_web_page_are_published(root: RootUnderTest) -> None:
    """/openapi.json lists the API; /docs and / serve pages."""
    spec = httpx.get(f"{root.url}/openapi.json").json()
    for path in ("/api/handles/{handle}", "/v1/resolve/{identifier}", "/v1/registry", "/v1/gateways/blocks"):
        assert path in spec["paths"], path
    assert httpx.get(f"{root.url}/docs").status_code == 200
    page = httpx.get(f"{root.url}/")
    assert page.status_code == 200 and root.origin in page.text


def test_client_error_carries_handle_code(root: RootUnderTest) -> None:
    """The client raises ClientError with the node's status, code and message."""
    with root.client() as c, pytest.raises(ClientError) as info:
        c.write(root.write("update", "88.123/NOT-THERE", URL_VALUE, root.admin_signer()))
    assert (info.value.status, info.value.handle_code) == (404, 100)


def test_unmodified_handle_client_library_reads_records(root: RootUnderTest) -> None:
    """pyhandle (the EUDAT Handle REST client), unmodified, reads records and sees absent ones."""
    from pyhandle.handleclient import PyHandleClient

    values = [*URL_VALUE, Value(2, "EMAIL", "string", "ops@plant.example")]
    with root.client() as c:
        c.write(root.write("create", "88.123/PYHANDLE", values, root.admin_signer()))
    root.settle()
    client = PyHandleClient("rest").instantiate_for_read_access(handle_server_url=root.url)
    record = client.retrieve_handle_record("88.123/PYHANDLE")
    assert record == {"URL": "https://plant.example/pump42", "EMAIL": "ops@plant.example"}
    as_json = client.retrieve_handle_record_json("88.123/PYHANDLE")
    assert as_json["handle"] == "88.123/PYHANDLE" and len(as_json["values"]) == 2
    assert client.retrieve_handle_record("88.123/ABSENT") is None


def test_refusals_are_counted_in_metrics_and_health_is_reported(root: RootUnderTest) -> None:
    """/metrics counts refusals by reason and accepted writes; /healthz reports the published size."""
    assert httpx.post(f"{root.url}/v1/registry", content=b"").status_code == 401
    good = root.write("create", "88.123/M", URL_VALUE, root.admin_signer())
    assert httpx.post(f"{root.url}/v1/registry", content=good).status_code == 201
    assert httpx.post(f"{root.url}/v1/registry", content=good).status_code == 403
    text = httpx.get(f"{root.url}/metrics").text
    assert 'edgeroot_root_refused_total{reason="AuthenticationNeeded"} 1.0' in text
    assert 'edgeroot_root_refused_total{reason="AuthenticationFailed"} 1.0' in text
    assert "edgeroot_root_writes_accepted_total 1.0" in text
    size = root.settle()
    health = httpx.get(f"{root.url}/healthz").json()
    assert health == {
        "status": "ok", "origin": root.origin, "published_size": size, "sequencer": "sequencing",
        "prefixes": [{"prefix": "88.123", "delegation": "top", "detail": "no parent: this is a top node"}],
        "witnesses_failing": {}, "problems": [],
    }  # fmt: skip
    assert "edgeroot_root_sequencing 1.0" in httpx.get(f"{root.url}/metrics").text


def test_case_variants_are_one_record_and_answers_echo_the_spelling(
    root: RootUnderTest, tmp_path: Path
) -> None:
    """Case variants resolve and verify to one record, echoed as asked; creating a variant is refused."""
    with root.client() as c:
        c.write(root.write("create", "88.123/PUMP-7", URL_VALUE, root.admin_signer()))
        root.settle()
        for spelling in ("88.123/pump-7", "88.123/PUMP-7", "88.123/Pump-7"):
            r = httpx.get(f"{root.url}/api/handles/{spelling}")
            assert r.status_code == 200 and r.json()["handle"] == spelling
            assert r.json()["values"][0]["data"]["value"] == "https://plant.example/pump42"
        answer = c.resolve("88.123/Pump-7")
        assert answer["identifier"] == "88.123/Pump-7"
        result = c.verify_resolution(
            resolution_from_json(answer), root.policy, FilePinStore(root.origin, tmp_path)
        )
    assert result.proven.identifier == "88.123/Pump-7"
    assert result.proven.record is not None and result.proven.record.identifier == "88.123/pump-7"
    status, body = _status(root, root.write("create", "88.123/pump-7", URL_VALUE, root.admin_signer()))
    assert (status, body["responseCode"]) == (409, 101)
    look_alike = root.write("create", "88.123/\u0420UM\u0420-7", URL_VALUE, root.admin_signer())
    status, body = _status(root, look_alike)
    assert (status, body["responseCode"]) == (409, 101) and "88.123/pump-7" in str(body["message"])


def test_hs_pubkey_on_an_unsupported_curve_is_refused_with_code_202(root: RootUnderTest) -> None:
    """A device key on a curve OpenSSL does not implement is 400 / Handle 202, not a 500."""
    spki = bytes.fromhex("3036301006072a8648ce3d020106052b81040006032200") + bytes(range(1, 34))
    values = [Value(1, "HS_PUBKEY", "base64", b64.encode(spki)), Value(2, "DEVICE", "string", "pump")]
    status, body = _status(root, root.write("create", "88.123/DEV-9", values, root.admin_signer()))
    assert (status, body["responseCode"]) == (400, 202) and "HS_PUBKEY" in str(body["message"])
