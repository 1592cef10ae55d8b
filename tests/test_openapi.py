"""The published OpenAPI documents match the live answers, and the API docs work with no network."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from chain_lite import b64
from chain_lite.registry import Value
from edgeroot.event_commands import sign_document
from rootclient import codecs, routes
from tests.root_harness import RootUnderTest, running_root

PUMP = "88.123/PUMP-0042"
DOC_PAGES = ["/docs", "/redoc"]
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootUnderTest]:
    tmp = tmp_path_factory.mktemp("openapi")
    with running_root(tmp, f"sqlite:///{tmp / 'root.db'}") as root:
        yield root


class Published:
    """An app's OpenAPI document, checking answers against the schema of their route and status."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.doc: dict[str, Any] = httpx.get(base + "/openapi.json").json()
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, method: str, template: str, answer: httpx.Response) -> httpx.Response:
        template = template.replace(":path", "")  # FastAPI publishes {name:path} as {name}
        operation = self.doc["paths"][template][method]
        status = str(answer.status_code)
        documented = operation["responses"]
        assert status in documented, f"{method} {template} answered undocumented {status}: {answer.text:.200}"
        media = answer.headers["content-type"].split(";")[0].strip()
        bodies = {k.split(";")[0].strip(): v for k, v in documented[status].get("content", {}).items()}
        assert media in bodies, f"{method} {template} {status}: {media} not in {sorted(bodies)}"
        if media == "application/json":
            schema = {**bodies[media]["schema"], "components": self.doc["components"]}
            errors = [e.message for e in Draft202012Validator(schema).iter_errors(answer.json())]
            assert not errors, f"{method} {template} {status}: {errors} in {answer.text:.300}"
        self.checked.add((method, template, answer.status_code))
        return answer

    def get(self, template: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.check("get", template, httpx.get(self.base + path, **kwargs))

    def post(self, template: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.check("post", template, httpx.post(self.base + path, **kwargs))


def test_root_answers_match_the_published_schema(node: RootUnderTest) -> None:
    """Every root route, on success and on error, answers a body its documented status and schema allow."""
    api = Published(node.url)
    values = [Value(1, "URL", "string", "https://plant.example/p")]
    write = node.write("create", PUMP, values, node.admin_signer())
    cose = {"content-type": "application/cose"}
    assert api.post(routes.REGISTRY, routes.REGISTRY, content=write, headers=cose).status_code == 201
    replayed = api.post(routes.REGISTRY, routes.REGISTRY, content=write, headers=cose)
    assert replayed.status_code == 403
    assert api.post(routes.REGISTRY, routes.REGISTRY, content=b"\x00", headers=cose).status_code == 400
    too_big = b"x" * (2 * 1024 * 1024)
    assert api.post(routes.REGISTRY, routes.REGISTRY, content=too_big, headers=cose).status_code == 413
    size = node.settle()

    handle = routes.handle(PUMP)
    assert api.get(routes.HANDLE, handle).json()["responseCode"] == 1
    assert "proof" in api.get(routes.HANDLE, handle, params={"proof": "true"}).json()
    assert api.get(routes.HANDLE, handle, params={"type": "EMAIL"}).json()["responseCode"] == 200
    assert api.get(routes.HANDLE, routes.handle("88.123/NONE"), params={"proof": "true"}).status_code == 404
    assert api.get(routes.HANDLE, routes.HANDLE_PREFIX + "88.123/%zz").status_code == 400
    # Handle's own answers: a prefix this node does not serve (301), and a prefix record with HS_ADMIN.
    assert api.get(routes.HANDLE, routes.handle("77.1/ELSEWHERE")).json()["responseCode"] == 301
    admin = api.get(routes.HANDLE, routes.handle("0.NA/88.123")).json()
    assert "HS_ADMIN" in {v["type"] for v in admin["values"]}
    assert api.get(routes.HANDLE, handle, params={"proof": "maybe"}).status_code == 400  # validation: not 422
    assert api.get(routes.HANDLE, handle, params={"index": "x"}).status_code == 400

    assert api.get(routes.RESOLVE, routes.resolve(PUMP)).json()["found"] is True
    assert api.get(routes.RESOLVE, routes.resolve("88.123/NONE")).json()["found"] is False
    assert api.get(routes.RESOLVE, routes.resolve(PUMP), params={"at": size}).status_code == 200
    assert api.get(routes.RESOLVE, routes.resolve(PUMP), params={"at": 0}).status_code == 400
    assert api.get(routes.HISTORY, routes.history(PUMP)).json()["changes"]
    assert api.get(routes.HISTORY, routes.HISTORY_PREFIX + "no-slash").status_code == 400

    blocks = routes.GATEWAY_BLOCKS
    assert api.post(blocks, blocks, content=b"{").status_code == 400
    assert api.post(blocks, blocks, json={"blocks": []}).status_code == 400
    forged = {"mode": "anchor", "blocks": [{"block": b64.encode(b"\x01" * 64)}]}
    refused = api.post(blocks, blocks, json=forged)
    assert refused.status_code == 422, refused.text
    assert refused.json()["accepted"] == []  # the refusal body of a batch, not the plain error body
    assert api.get(routes.BLOCK, routes.block(b"\x00" * 32)).status_code == 404
    assert api.get(routes.BLOCK, "/v1/blocks/zz").status_code == 400
    assert api.get(routes.GATEWAY_HEAD, routes.gateway_head("88.123/gw-1")).status_code == 404
    window = {"gateway": "88.123/gw-1", "from": 0, "to": 10}
    assert api.get(routes.BLOCKS, routes.BLOCKS, params=window).json()["blocks"] == []
    assert api.get(routes.BLOCKS, routes.BLOCKS, params={**window, "from": 11}).status_code == 400

    for checkpoint in (routes.CHECKPOINT, routes.TILES_CHECKPOINT):
        assert api.get(checkpoint, checkpoint).text.startswith(node.origin)
    proof = routes.CONSISTENCY
    assert api.get(proof, proof, params={"old": 1, "new": size}).status_code == 200
    assert api.get(proof, proof, params={"old": size, "new": size + 5}).status_code == 400
    assert api.get(proof, proof, params={"old": "x", "new": 1}).status_code == 400
    inclusion = routes.INCLUSION
    assert api.get(inclusion, inclusion, params={"index": 0, "size": size}).status_code == 200
    assert api.get(inclusion, inclusion, params={"index": size, "size": size}).status_code == 400
    assert api.get(routes.TILE, f"/log/tile/0/000.p/{size}").status_code == 200  # size < 256: partial
    assert api.get(routes.TILE, "/log/tile/0/x999").status_code == 404
    assert api.get(routes.TILE, "/log/tile/5/000").status_code == 404

    assert api.get(routes.HEALTH, routes.HEALTH).json()["status"] == "ok"
    assert api.get(routes.METRICS, routes.METRICS).status_code == 200
    assert api.get(routes.POLICY, routes.POLICY).status_code == 200

    # EPCIS (formats.md, "EPCIS events on the log"): refused captures, an accepted one, its job, a query,
    # an index.
    capture = routes.EPCIS_CAPTURE
    assert api.post(capture, capture, content=b"{").status_code == 400
    admin = node.admin_signer()
    event = {"type": "ObjectEvent", "action": "ADD", "eventTime": "2026-11-30T06:00:00Z",
             "eventTimeZoneOffset": "+00:00", "epcList": ["urn:epc:id:sgtin:4012345.011111.7"]}  # fmt: skip
    document = sign_document(
        {"@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
         "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-30T12:00:00Z",
         "epcisBody": {"eventList": [event]}},
        admin, node.origin,
    )  # fmt: skip
    unsigned = {**document, "epcisBody": {"eventList": [event]}}
    assert api.post(capture, capture, json=unsigned).status_code == 403
    tampered = {
        **document,
        "epcisBody": {"eventList": [{**document["epcisBody"]["eventList"][0], "action": "DELETE"}]},
    }
    assert api.post(capture, capture, json=tampered).status_code == 422
    accepted = api.post(capture, capture, json=document)
    assert accepted.status_code == 202
    job = accepted.headers["location"]
    assert api.get(routes.EPCIS_CAPTURE_JOB, job).json()["captureID"] == accepted.json()["captureID"]
    assert api.get(routes.EPCIS_CAPTURE_JOB, routes.epcis_capture_job("00")).status_code == 404
    node.settle()
    events = routes.EPCIS_EVENTS
    assert api.get(events, events, params={"MATCH_anyEPC": event["epcList"][0]}).status_code == 200
    assert api.get(events, events, params={"perPage": "0"}).status_code == 400
    index = routes.EPCIS_INDEX
    assert api.get(index, index, params={"id": event["epcList"][0]}).json()["proofs"][0]["indices"]
    assert api.get(index, index).status_code == 400

    # Every node may delegate, so every node is a witness of its child logs (D-085): none here.
    add = routes.WITNESS_ADD_CHECKPOINT
    assert api.post(add, add, content=b"not a request").status_code == 400
    own = httpx.get(node.url + routes.CHECKPOINT).content
    assert api.post(add, add, content=b"old 0\n\n" + own).status_code == 404  # not a child of itself
    assert api.get(routes.ANCHORS, routes.anchors("stranger.test")).status_code == 404

    documented = {(m, p) for p, ops in api.doc["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in api.checked}, "a documented route was not exercised"


def test_no_route_documents_a_422_it_does_not_give(node: RootUnderTest) -> None:
    """FastAPI's generated 422 validation answer is gone; only the gateway-block, EPCIS capture and
    add-checkpoint routes, which do answer 422 (a badly signed block, a tampered event, a consistency
    proof that does not verify), document one."""
    doc = httpx.get(node.url + "/openapi.json").json()
    with_422 = {p for p, ops in doc["paths"].items() for op in ops.values() if "422" in op["responses"]}
    assert with_422 == {routes.GATEWAY_BLOCKS, routes.EPCIS_CAPTURE, routes.WITNESS_ADD_CHECKPOINT}
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_published_block_batch_schema_accepts_what_clients_send(node: RootUnderTest) -> None:
    """The documented request body of a block batch is the one rootclient encodes, in both modes."""
    doc = httpx.get(node.url + "/openapi.json").json()
    body = doc["paths"][routes.GATEWAY_BLOCKS]["post"]["requestBody"]["content"]["application/json"]
    validator = Draft202012Validator({**body["schema"], "components": doc["components"]})
    for batch in ([(b"header", [b"envelope"])], [(b"header", None)]):
        assert not [e.message for e in validator.iter_errors(codecs.block_batch(batch))]
    assert not validator.is_valid({"mode": "anchor", "blocks": []})


def test_witness_answers_match_the_published_schema(node: RootUnderTest) -> None:
    """The witness's add-checkpoint and metrics answers are the documented ones, media types included."""
    api = Published(node.witness_url)
    add = routes.WITNESS_ADD_CHECKPOINT
    assert api.post(add, add, content=b"not a request").status_code == 400
    checkpoint = httpx.get(node.url + routes.CHECKPOINT).content
    size = int(checkpoint.split(b"\n")[1])
    stale = api.post(add, add, content=b"old 0\n\n" + checkpoint)  # the witness is past 0: its size
    assert (stale.status_code, stale.text) == (409, f"{size}\n")
    same = api.post(add, add, content=f"old {size}\n\n".encode() + checkpoint)  # equal sizes, no proof
    assert same.status_code == 200 and same.text.startswith("\u2014 witness.test "), same.text
    assert api.post(add, add, content=f"old {size + 1}\n\n".encode() + checkpoint).status_code == 400
    assert api.get(routes.METRICS, routes.METRICS).status_code == 200
    documented = {(m, p) for p, ops in api.doc["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in api.checked}


def _assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("which", ["root", "witness"])
def test_api_docs_load_only_assets_the_node_serves(node: RootUnderTest, which: str) -> None:
    """/docs and /redoc reference only same-origin assets, and each answers 200 with its content type."""
    base = node.url if which == "root" else node.witness_url
    for page in DOC_PAGES:
        answer = httpx.get(base + page)
        assert answer.status_code == 200, page
        assert "://" not in answer.text.replace("/openapi.json", ""), f"{page} names another origin"
        assets = _assets(answer.text)
        assert assets, f"{page} loads no script or style"
        for asset in assets:
            assert asset.startswith("/") and not asset.startswith("//"), f"{page}: {asset} is not same-origin"
            fetched = httpx.get(base + asset)
            assert fetched.status_code == 200, asset
            expected = ASSET_TYPES[Path(asset).suffix]
            assert fetched.headers["content-type"].startswith(expected), (asset, fetched.headers)
            assert len(fetched.content) > 1000, f"{asset} is empty"
    assert "/openapi.json" in httpx.get(base + "/docs").text


def test_api_docs_render_with_no_network(node: RootUnderTest) -> None:
    """Swagger UI lists the root's operations in a headless Chromium that can reach nothing but loopback."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install -e '.[test]'")
    # Here, not at the top: test_console skips itself whole without playwright, and the schema tests
    # above must run anyway. It is the one place the headless Chromium is looked for.
    from tests.test_console import CHROMIUM, INSTALL_HINT

    if CHROMIUM is None:
        pytest.skip(f"no headless Chromium: {INSTALL_HINT}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        foreign: list[str] = []

        def only_loopback(route: Any) -> None:
            url = route.request.url
            if url.startswith(("http://127.0.0.1:", "data:")):
                route.continue_()
            else:
                foreign.append(url)
                route.abort()

        page.route("**/*", only_loopback)
        page.goto(node.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = page.eval_on_selector_all(
            ".opblock-summary-path", "els => els.map(e => e.getAttribute('data-path'))"
        )
        browser.close()
    assert routes.HANDLE.replace(":path", "") in paths, paths
    assert foreign == []
