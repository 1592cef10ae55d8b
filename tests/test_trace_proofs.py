"""EPCIS capture, query and trace over real HTTP: a three-level genealogy across two enterprises' prefixes
(raw batches from two suppliers → intermediate → finished goods → cases → pallet), traced back and
forward with every proof verified; tampered and unauthorised events refused; a hidden event caught by
the completeness proof."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest

from chain_lite import b64
from chain_lite.cose import CoseSigner
from chain_lite.epcis import event_hash_id
from chain_lite.epcis_capture import Capture, IncompleteIndex, epcis_leaf, parse_capture, sign_capture
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE, event_facts, identifier_key
from chain_lite.epcis_identifiers import identifier_uri
from chain_lite.epcis_proof import verify_index
from chain_lite.errors import ChainError
from chain_lite.keys import PrivateKey, generate_p256, load_private_pem, private_pem, public_pem
from chain_lite.receipt import Receipt, verify_receipt
from chain_lite.registry import Value, admin_kid, prefix_handle, pubkey_value
from edgeroot.cli import main
from edgeroot.event_commands import sign_document
from edgeroot.system import wait_until
from resolver import config as root_config
from resolver import epcis_intake, epcis_query
from resolver.api import create_app
from resolver.assembly import init_root
from resolver.db import Database
from resolver.reads import RootNode
from rootclient import codecs, epcis_trace, routes
from rootclient.client import AsyncRootClient, RootClient
from rootclient.epcis_trace import Verifier, fetch_events_for, trace
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog
from runtime.keyfiles import load_private_key
from tests.root_harness import RootUnderTest

SUPPLIER = "88.123.50"
FACTORY = "88.123.99"
BASES = [DEFAULT_IDENTIFIER_BASE]
FOREIGN_BATCH = "urn:epc:id:sgtin:4012345.011111.B1"
"""Supplier B's raw batch: a GS1 identifier, foreign to edgeroot."""
FOREIGN_KEY = identifier_key(FOREIGN_BATCH, BASES)
"""Its comparison key: the canonical GS1 Digital Link (the EPC URI and the Digital Link meet)."""
NAMES = {
    name: f"{prefix}/{name}"
    for prefix, names in (
        (SUPPLIER, ("RAW-A",)),
        (FACTORY, ("INT-1", "FG-1", "FG-2", "CASE-1", "CASE-2", "PALLET-1")),
    )
    for name in names
}
U = {name: identifier_uri(ident, DEFAULT_IDENTIFIER_BASE) for name, ident in NAMES.items()}
"""Each identifier's URI, as the events write it."""
K = {name: identifier_key(ident, BASES) for name, ident in NAMES.items()}
"""Each identifier's comparison key, as the trace reports it (the registry's canonical identifier)."""


def _event(kind: str, when: str, step: str, **lists: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "eventTime": f"2026-11-30T{when}:00.000Z",
        "eventTimeZoneOffset": "+00:00",
        "bizStep": step,
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
    }
    if kind in ("ObjectEvent", "AggregationEvent"):
        event["action"] = lists.pop("action", "ADD")
    event.update(lists)
    return event


def _document(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T12:00:00.000Z",
        "epcisBody": {"eventList": list(events)},
    }


def _keyfile(tmp: Path, name: str) -> tuple[Path, Path]:
    key = generate_p256()
    priv, pub = tmp / f"{name}.key", tmp / f"{name}.pub"
    priv.write_bytes(private_pem(key))
    pub.write_bytes(public_pem(key.public_key()))
    return priv, pub


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*map(str, args), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


def _add_prefix(root: RootUnderTest, prefix: str) -> tuple[CoseSigner, PrivateKey]:
    """Register ``prefix`` under the root prefix with a new admin key (kept, to write key files)."""
    key = generate_p256()
    raw = root.write(
        "create", prefix_handle(prefix), [pubkey_value(300, key.public_key())], root.admin_signer()
    )
    with root.client() as c:
        c.write(raw)
    return CoseSigner(admin_kid(prefix), key), key


class Genealogy:
    def __init__(self, root: RootUnderTest, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.tmp, self.capsys = root, tmp, capsys
        self.supplier_admin, supplier_key = _add_prefix(root, SUPPLIER)
        self.factory_admin, factory_key = _add_prefix(root, FACTORY)
        # The factory's admin key on disk, to register two capture keys with the CLI.
        admin_key = tmp / "factory-admin.key"
        admin_key.write_bytes(private_pem(factory_key))
        self.line_key, line_pub = _keyfile(tmp, "line")
        self.pack_key, pack_pub = _keyfile(tmp, "pack")
        for name, pub in ((f"{FACTORY}/LINE-1", line_pub), (f"{FACTORY}/PACK-1", pack_pub)):
            code, answer = _cli(
                capsys, "register", "capture-key", name, "--root", root.url, "--key", admin_key, "--pub", pub
            )
            assert code == 0, answer
        self.supplier_key = tmp / "supplier-admin.key"
        self.supplier_key.write_bytes(private_pem(supplier_key))

    def capture(self, key: Path, signer: str, *events: dict[str, Any]) -> dict[str, Any]:
        path = self.tmp / f"doc-{len(list(self.tmp.glob('doc-*')))}.json"
        path.write_text(json.dumps(_document(*events)))
        code, answer = _cli(
            self.capsys, "event", "capture", path, "--root", self.root.url, "--key", key, "--signer", signer,
            "--wait",
        )  # fmt: skip
        assert code == 0, answer
        return answer

    def build(self) -> None:
        self.capture(
            self.supplier_key, f"300:0.na/{SUPPLIER}",
            _event("ObjectEvent", "06:00", "commissioning", epcList=[U["RAW-A"]]),
        )  # fmt: skip
        line = str(self.line_key), f"{FACTORY}/LINE-1"
        pack = str(self.pack_key), f"{FACTORY}/PACK-1"
        self.capture(
            Path(line[0]), line[1],
            _event("ObjectEvent", "07:00", "receiving", epcList=[U["RAW-A"], FOREIGN_BATCH]),
            _event("TransformationEvent", "08:00", "commissioning",
                   inputEPCList=[U["RAW-A"], FOREIGN_BATCH], outputEPCList=[U["INT-1"]]),
            _event("TransformationEvent", "09:00", "commissioning",
                   inputEPCList=[U["INT-1"]], outputEPCList=[U["FG-1"], U["FG-2"]]),
        )  # fmt: skip
        self.capture(
            Path(pack[0]), pack[1],
            _event("AggregationEvent", "10:00", "packing", parentID=U["CASE-1"], childEPCs=[U["FG-1"]]),
            _event("AggregationEvent", "10:05", "packing", parentID=U["CASE-2"], childEPCs=[U["FG-2"]]),
            _event("AggregationEvent", "11:00", "packing", parentID=U["PALLET-1"],
                   childEPCs=[U["CASE-1"], U["CASE-2"]]),
        )  # fmt: skip


@pytest.fixture
def genealogy(root: RootUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Genealogy:
    g = Genealogy(root, tmp_path, capsys)
    g.build()
    return g


def _flatten(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {node["identifier"]: node}
    for child in node["from"]:
        out.update(_flatten(child))
    return out


def test_genealogy_traced_back_from_the_pallet_with_every_proof(genealogy: Genealogy, tmp_path: Path) -> None:
    """From the pallet back to both suppliers' raw batches, each event verified, each list proven complete."""
    root = genealogy.root
    code, answer = _cli(
        genealogy.capsys, "trace", U["PALLET-1"], "--root", root.url, "--verify",
        "--policy", root.policy_path,
        "--back", "--config-dir", tmp_path / "pins",
    )  # fmt: skip
    assert code == 0, answer
    nodes = _flatten(answer["tree"])
    everything = {K[name] for name in ("PALLET-1", "CASE-1", "CASE-2", "FG-1", "FG-2", "INT-1", "RAW-A")}
    assert set(nodes) == everything | {FOREIGN_KEY}
    for node in nodes.values():
        assert node["complete_as_of"] is not None
        assert all(e["verified"] for e in node["events"])
    raw = nodes[K["RAW-A"]]
    by_signer = {e["signer"]: e["attribution"] for e in raw["events"]}
    # The supplier's own commissioning is the owner's word; the factory only asserts about its input.
    assert by_signer == {f"300:0.na/{SUPPLIER}": "owner", f"{FACTORY}/LINE-1": "asserted"}
    assert [e["type"] for e in nodes[FOREIGN_KEY]["events"]] == ["ObjectEvent", "TransformationEvent"]
    assert all(e["attribution"] == "asserted" for e in nodes[FOREIGN_KEY]["events"])
    assert [e["attribution"] for e in nodes[K["PALLET-1"]]["events"]] == ["owner"]
    # The human tree: every identifier with its completeness line, every event with its signer.
    genealogy.capsys.readouterr()
    argv = ["trace", "88.123.99/PALLET-1", "--root", root.url, "--verify", "--policy", str(root.policy_path),
            "--config-dir", str(tmp_path / "pins")]  # fmt: skip
    assert main(argv) == 0
    text = genealogy.capsys.readouterr().out
    assert "every event and completeness proof VERIFIED" in text
    assert text.count("PROVEN COMPLETE as of log size") == len(nodes)
    assert f"signed by {FACTORY}/LINE-1 (asserted, verified)" in text


def test_genealogy_traced_forward_from_a_raw_batch(genealogy: Genealogy, tmp_path: Path) -> None:
    """A recall: from supplier A's batch forward to every case and the pallet."""
    root = genealogy.root
    code, answer = _cli(
        genealogy.capsys, "trace", U["RAW-A"], "--root", root.url, "--verify", "--policy", root.policy_path,
        "--forward", "--config-dir", tmp_path / "pins",
    )  # fmt: skip
    assert code == 0, answer
    nodes = _flatten(answer["tree"])
    assert set(nodes) == {K[n] for n in ("RAW-A", "INT-1", "FG-1", "FG-2", "CASE-1", "CASE-2", "PALLET-1")}
    code, answer = _cli(
        genealogy.capsys, "trace", U["RAW-A"], "--root", root.url, "--verify", "--policy", root.policy_path,
        "--forward", "--depth", "1", "--config-dir", tmp_path / "pins",
    )  # fmt: skip
    assert set(_flatten(answer["tree"])) == {K["RAW-A"], K["INT-1"]}
    # Without --verify: the same tree, each event marked unverified and no completeness claimed.
    code, answer = _cli(genealogy.capsys, "trace", NAMES["RAW-A"], "--root", root.url, "--forward")
    assert code == 0, answer
    unverified = _flatten(answer["tree"])
    assert set(unverified) == set(nodes)
    assert all(n["complete_as_of"] is None for n in unverified.values())
    assert not any(e["verified"] for n in unverified.values() for e in n["events"])


def test_event_query_parameters_and_paging(genealogy: Genealogy) -> None:
    """MATCH_*, EQ_bizStep, the time window and nextPageToken paging (a Link rel=next header)."""
    url = genealogy.root.url + routes.EPCIS_EVENTS

    def types(**params: str) -> list[str]:
        body = httpx.get(url, params=params).json()
        return [e["type"] for e in body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]]

    assert types(MATCH_inputEPC=U["INT-1"]) == ["TransformationEvent"]
    assert types(MATCH_outputEPC=U["INT-1"]) == ["TransformationEvent"]
    assert types(MATCH_parentID=U["PALLET-1"]) == ["AggregationEvent"]
    assert types(MATCH_anyEPC=U["FG-1"]) == ["TransformationEvent", "AggregationEvent"]
    assert types(MATCH_anyEPC=f"{U['CASE-1']}|{U['CASE-2']}") == ["AggregationEvent"] * 3
    # Supplier B's batch by its EPC URI and by its GS1 Digital Link: one identifier (one comparison key).
    assert types(MATCH_anyEPC=FOREIGN_BATCH) == ["ObjectEvent", "TransformationEvent"]
    assert types(MATCH_anyEPC=FOREIGN_KEY) == ["ObjectEvent", "TransformationEvent"]
    assert FOREIGN_KEY.startswith("https://id.gs1.org/")
    assert types(MATCH_anyEPC=NAMES["INT-1"]) == types(MATCH_anyEPC=U["INT-1"])
    assert types(EQ_bizStep="receiving") == ["ObjectEvent"]
    assert types(EQ_bizStep="https://ref.gs1.org/cbv/BizStep-receiving") == ["ObjectEvent"]
    assert (
        types(GE_eventTime="2026-11-30T10:00:00Z", LT_eventTime="2026-11-30T11:00:00Z")
        == ["AggregationEvent"] * 2
    )
    assert types(MATCH_anyEPC=U["CASE-1"], EQ_bizStep="receiving") == []
    seen, params = [], {"perPage": "2"}
    while True:
        response = httpx.get(url, params=params)
        assert response.status_code == 200
        page = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        seen += [e["edgeroot:proof"]["logIndex"] for e in page]
        link = response.headers.get("link")
        if link is None:
            break
        match = re.match(r'<([^>]+)>; rel="next"', link)
        assert match is not None
        params = dict(httpx.URL(match.group(1)).params)
    assert len(seen) == 7 and seen == sorted(seen)
    bad = httpx.get(url, params={"MATCH_anything": "x"})
    assert bad.status_code == 400 and "MATCH_anything" in bad.json()["message"]
    assert httpx.get(url, params={"GE_eventTime": "yesterday"}).status_code == 400
    assert httpx.get(url, params={"nextPageToken": "garbage"}).status_code == 400


def test_recapture_is_a_duplicate_and_the_job_reports_receipts(genealogy: Genealogy) -> None:
    """The same signed document again adds nothing; its capture job gives each event's log index and a
    receipt that verifies offline under the policy for the exact leaf 0x05 || signed capture."""
    signer = genealogy.supplier_admin
    doc = _document(
        _event(
            "ObjectEvent",
            "05:00",
            "commissioning",
            epcList=[identifier_uri(f"{SUPPLIER}/RAW-Z", DEFAULT_IDENTIFIER_BASE)],
        )
    )
    with RootClient(genealogy.root.url) as client:
        signed = sign_document(doc, signer, client.origin())
        first = client.epcis_capture(signed)
        again = client.epcis_capture(signed)
        assert [d for _, _, d in first.events] == [False]
        assert [d for _, _, d in again.events] == [True]
        assert first.location == routes.epcis_capture_job(first.capture_id)
    genealogy.root.settle()
    job = httpx.get(genealogy.root.url + first.location).json()
    assert job["success"] is True
    (entry,) = job["edgeroot:events"]
    raw = b64.decode(signed["epcisBody"]["eventList"][0]["edgeroot:signedCapture"])
    assert raw is not None
    receipt = Receipt.parse(entry["receipt"].encode())
    assert receipt.index == entry["logIndex"]
    verify_receipt(receipt, epcis_leaf(raw), genealogy.root.policy, is_hash=False)
    with pytest.raises(ChainError):
        verify_receipt(
            receipt, epcis_leaf(raw[:-1] + bytes([raw[-1] ^ 1])), genealogy.root.policy, is_hash=False
        )


def _post(root: RootUnderTest, document: dict[str, Any]) -> httpx.Response:
    return httpx.post(root.url + routes.EPCIS_CAPTURE, json=document)


def _refused(root: RootUnderTest) -> dict[str, float]:
    text = httpx.get(root.url + routes.METRICS).text
    out = {}
    for reason in ("EventTampered", "EventUnauthorised", "EventInvalid"):
        m = re.search(rf'edgeroot_root_refused_total\{{reason="{reason}"\}} (\S+)', text)
        out[reason] = float(m.group(1)) if m else 0.0
    return out


def test_tampered_events_are_refused_with_a_reason_and_counted(root: RootUnderTest) -> None:
    """An event changed after signing, a flipped signature, or a false hash ID: 422, nothing captured."""
    admin, _ = _add_prefix(root, FACTORY)
    with RootClient(root.url) as client:
        origin = client.origin()
    event = _event(
        "ObjectEvent",
        "06:00",
        "commissioning",
        epcList=[identifier_uri(f"{FACTORY}/X-1", DEFAULT_IDENTIFIER_BASE)],
    )
    signed = sign_document(_document(event), admin, origin)
    before = _refused(root)
    changed = json.loads(json.dumps(signed))
    changed["epcisBody"]["eventList"][0]["bizStep"] = "shipping"
    r = _post(root, changed)
    assert r.status_code == 422 and "event 0" in r.json()["message"] and "differs" in r.json()["message"]
    flipped = json.loads(json.dumps(signed))
    raw = bytearray(b64.decode(flipped["epcisBody"]["eventList"][0]["edgeroot:signedCapture"]) or b"")
    raw[-1] ^= 1
    flipped["epcisBody"]["eventList"][0]["edgeroot:signedCapture"] = b64.encode(bytes(raw))
    r = _post(root, flipped)
    assert r.status_code == 422 and "signature" in r.json()["message"]
    wrong_hash = Capture(origin, "ni:///sha-256;" + "00" * 32 + "?ver=CBV2.0", json.dumps(event).encode())
    lying = _document({**event, "edgeroot:signedCapture": b64.encode(sign_capture(wrong_hash, admin).raw)})
    r = _post(root, lying)
    assert r.status_code == 422 and "hash ID" in r.json()["message"]
    assert _refused(root)["EventTampered"] == before["EventTampered"] + 3
    assert (
        httpx.get(root.url + routes.EPCIS_EVENTS).json()["epcisBody"]["queryResults"]["resultsBody"][
            "eventList"
        ]
        == []
    )


def test_unauthorised_events_are_refused_with_a_reason(root: RootUnderTest) -> None:
    """Unsigned, an unregistered signer, a device key (not a capture key), another node's capture: 403."""
    admin, _ = _add_prefix(root, FACTORY)
    device = generate_p256()
    raw = root.write(
        "create", f"{FACTORY}/PUMP-1",
        [Value(1, "DEVICE", "string", "pump"), pubkey_value(300, device.public_key())],
        admin,
    )  # fmt: skip
    with root.client() as c:
        c.write(raw)
        origin = c.origin()
    event = _event(
        "ObjectEvent",
        "06:00",
        "commissioning",
        epcList=[identifier_uri(f"{FACTORY}/X-2", DEFAULT_IDENTIFIER_BASE)],
    )
    before = _refused(root)
    cases = [
        (_document(event), "not signed"),
        (
            sign_document(_document(event), CoseSigner(f"{FACTORY}/ROGUE", generate_p256()), origin),
            "not registered",
        ),
        (
            sign_document(_document(event), CoseSigner(f"{FACTORY}/PUMP-1", device), origin),
            "not a capture key",
        ),
        (sign_document(_document(event), admin, "root.elsewhere"), "signed for node"),
    ]
    for document, reason in cases:
        r = _post(root, document)
        assert r.status_code == 403, r.text
        assert reason in r.json()["message"]
    assert _refused(root)["EventUnauthorised"] == before["EventUnauthorised"] + len(cases)
    # One bad event refuses the whole document (EPCIS 2.0's default "rollback" behaviour).
    good = sign_document(_document(event), admin, origin)["epcisBody"]["eventList"][0]
    mixed = _document(good, event)
    r = _post(root, mixed)
    assert r.status_code == 403 and r.json()["message"].startswith("event 1:")
    root.settle()
    assert (
        httpx.get(root.url + routes.EPCIS_EVENTS).json()["epcisBody"]["queryResults"]["resultsBody"][
            "eventList"
        ]
        == []
    )


class HidingClient(AsyncRootClient):
    """A node (or a man in the middle) that leaves one event out of its answers."""

    hide: int = -1

    async def epcis_events_all(self, params: dict[str, str]) -> list[codecs.EventsPage]:
        pages = await super().epcis_events_all(params)
        return [
            codecs.EventsPage(p.checkpoint, [e for e in p.events if e.index != self.hide], p.next_token)
            for p in pages
        ]


def test_completeness_proof_fails_when_an_event_is_hidden(genealogy: Genealogy, tmp_path: Path) -> None:
    """Every event shown verifies, yet the map's index entry exposes the one left out."""
    root = genealogy.root

    async def fetch(client: AsyncRootClient, identifier: str) -> Any:
        store = FilePinStore(root.origin, tmp_path / "pins")
        pinned = await PinnedLog.open(root.policy, root.origin, client, store)
        return (await fetch_events_for(client, [identifier], Verifier(client, pinned)))[identifier]

    async def scenario() -> None:
        async with AsyncRootClient(root.url) as honest:
            found = await fetch(honest, K["FG-1"])
            assert found.complete_as_of is not None and len(found.events) == 2
        async with HidingClient(root.url) as hiding:
            hiding.hide = found.events[-1].index  # the packing into CASE-1: where FG-1 went
            with pytest.raises(IncompleteIndex, match="not shown"):
                await fetch(hiding, K["FG-1"])

    asyncio.run(scenario())


def test_hash_id_in_answers_matches_the_event(genealogy: Genealogy) -> None:
    """What the query shows re-hashes to the hash ID the capture answered with."""
    body = httpx.get(genealogy.root.url + routes.EPCIS_EVENTS, params={"MATCH_anyEPC": U["INT-1"]}).json()
    for shown in body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]:
        plain = {k: v for k, v in shown.items() if not k.startswith("edgeroot:")}
        assert event_facts(plain, BASES).hash_id.startswith("ni:///sha-256;")


def test_hostile_capture_and_query_input_gets_a_clear_400(root: RootUnderTest) -> None:
    """Not JSON, repeated keys, deep nesting, not a document, a misspelt identifier URI, out-of-range
    paging or too many ids: each a 400 naming the problem, counted, nothing captured."""
    admin, _ = _add_prefix(root, FACTORY)
    with root.client() as c:
        origin = c.origin()
    capture_url = root.url + routes.EPCIS_CAPTURE
    before = _refused(root)["EventInvalid"]
    bodies = [
        (b"{not json", "JSON"),
        (b'{"type": "EPCISDocument", "type": "EPCISDocument"}', "type"),
        (b"[" * 5000 + b"]" * 5000, "/"),
        (json.dumps({"type": "EPCISQueryDocument"}).encode(), "/"),
    ]
    for body, hint in bodies:
        r = httpx.post(capture_url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (body[:40], r.text)
        assert hint in r.json()["message"]
    # An identifier URI under the network's base, spelt another way (upper-case prefix): not its one
    # spelling, so two names for one batch are refused at the door.
    misspelt = DEFAULT_IDENTIFIER_BASE + "/88.123.ABC/X-1"
    event = _event("ObjectEvent", "06:00", "commissioning", epcList=[misspelt])
    capture = Capture(origin, event_hash_id(event), json.dumps(event).encode())
    signed = _document({**event, "edgeroot:signedCapture": b64.encode(sign_capture(capture, admin).raw)})
    r = _post(root, signed)
    assert r.status_code == 400 and "event 0" in r.json()["message"] and "spelling" in r.json()["message"]
    assert _refused(root)["EventInvalid"] == before + len(bodies) + 1
    events_url = root.url + routes.EPCIS_EVENTS
    for params in (
        {"perPage": "0"},
        {"perPage": "1001"},
        {"perPage": "x"},
        {"MATCH_anyEPC": "88.123.99/\u202e"},
    ):
        r = httpx.get(events_url, params=params)
        assert r.status_code == 400, (params, r.text)
    index_url = root.url + routes.EPCIS_INDEX
    assert httpx.get(index_url, params=[("id", f"{FACTORY}/X-{i}") for i in range(101)]).status_code == 400
    assert httpx.get(index_url).status_code == 400
    # An identifier with no events: proven absent (null entry, no indices), not an error.
    root.settle()
    answer = httpx.get(index_url, params={"id": f"{FACTORY}/NEVER"}).json()
    assert answer["proofs"][0]["entry"] is None
    assert answer["proofs"][0]["indices"] == []
    (proof,) = codecs.index_proofs_from_json(answer)
    verified = root.policy.verify_checkpoint(proof.receipt.checkpoint, root.origin)
    assert verify_index(proof, verified) is None
    # The same absence proof with an index slipped in is refused: the map has no entry to commit to it.
    forged = codecs.IndexProof(proof.identifier, (3,), None, proof.map_proof, proof.map_head, proof.receipt)
    with pytest.raises(IncompleteIndex, match="no entry"):
        verify_index(forged, verified)


def test_query_caches_change_no_answer(genealogy: Genealogy) -> None:
    """Answers built through tiny caches (constant eviction) and through none are byte for byte equal."""
    db = Database(root_config.load(genealogy.root.state).database)
    try:
        node = RootNode(db, genealogy.root.origin)
        node.refresh()
        view = node.view()
        tiny = epcis_query.QueryCaches(events=2, nodes=5)
        for name in ("PALLET-1", "FG-1", "RAW-A", "INT-1", "FG-1", "PALLET-1"):
            params = {"MATCH_anyEPC": U[name]}
            plain = epcis_query.query_events(db, view, params, BASES)
            cached = epcis_query.query_events(db, view, params, BASES, tiny)
            assert plain.events and plain == cached
        assert len(tiny.nodes._items) == 5 and len(tiny.events._items) == 2
    finally:
        db.close()


def test_capture_trace_and_completeness_in_both_log_suites(
    any_suite_root: RootUnderTest, tmp_path: Path
) -> None:
    """In a SHA-256 and in an SM3 log: a transformation traced back with every proof verified (leaf,
    map and chain hashed with the log's hash), and a hidden event caught."""
    root = any_suite_root
    admin, _ = _add_prefix(root, FACTORY)
    batch, product = (identifier_uri(f"{FACTORY}/{n}", DEFAULT_IDENTIFIER_BASE) for n in ("B-1", "P-1"))
    with root.client() as c:
        origin = c.origin()
        document = _document(
            _event("ObjectEvent", "06:00", "commissioning", epcList=[batch]),
            _event(
                "TransformationEvent", "07:00", "commissioning", inputEPCList=[batch], outputEPCList=[product]
            ),
        )
        c.epcis_capture(sign_document(document, admin, origin))
    root.settle()

    async def scenario() -> None:
        async def fetch(client: AsyncRootClient, keys: list[str]) -> Any:
            pinned = await PinnedLog.open(
                root.policy, root.origin, client, FilePinStore(root.origin, tmp_path)
            )
            return await fetch_events_for(client, keys, Verifier(client, pinned))

        async with AsyncRootClient(root.url) as honest:
            tree = await trace(f"{FACTORY}/p-1", lambda keys: fetch(honest, keys), direction="back", depth=5)
            assert [child.identifier for _, child in tree.children] == [f"{FACTORY}/b-1"]
            (_, child) = tree.children[0]
            assert child.events is not None and child.events.complete_as_of is not None
            assert [e.facts.event_type for e in child.events.events] == ["ObjectEvent", "TransformationEvent"]
            hide = child.events.events[0].index
        async with HidingClient(root.url) as hiding:
            hiding.hide = hide
            with pytest.raises(IncompleteIndex):
                await fetch(hiding, [f"{FACTORY}/b-1"])

    asyncio.run(scenario())


@pytest.mark.parametrize("change", ["rotate", "revoke"])
def test_events_still_verify_after_their_capture_key_is_rotated_or_revoked(
    genealogy: Genealogy, tmp_path: Path, change: str
) -> None:
    """A key replaced or deleted after the events does not unsign them: the trace proves the key the
    registry held when they were logged, and says so (signer_key_as_of)."""
    root = genealogy.root
    args: list[str | Path] = ["register", "capture-key", f"{FACTORY}/LINE-1", "--root", root.url,
                              "--key", genealogy.tmp / "factory-admin.key"]  # fmt: skip
    if change == "rotate":
        _, new_pub = _keyfile(tmp_path, "line-new")
        args += ["--update", "--pub", new_pub]
    else:
        args += ["--delete"]
    code, answer = _cli(genealogy.capsys, *args)
    assert code == 0, answer
    root.settle()
    code, answer = _cli(
        genealogy.capsys, "trace", NAMES["INT-1"], "--root", root.url, "--verify", "--policy",
        root.policy_path, "--back", "--config-dir", tmp_path / "pins",
    )  # fmt: skip
    assert code == 0, answer
    events = [e for n in _flatten(answer["tree"]).values() for e in n["events"]]
    assert all(e["verified"] for e in events)
    by_line = [e for e in events if e["signer"] == f"{FACTORY}/LINE-1"]
    assert by_line and all(isinstance(e["signer_key_as_of"], int) for e in by_line)
    assert all(e["signer_key_as_of"] is None for e in events if e["signer"] != f"{FACTORY}/LINE-1")
    # And a new capture with the old key is refused at the door.
    event = _event("ObjectEvent", "12:00", "inspecting", epcList=[U["INT-1"]])
    old = CoseSigner(f"{FACTORY}/LINE-1", load_private_key(genealogy.line_key))
    r = _post(root, sign_document(_document(event), old, root.origin))
    assert r.status_code in (403, 422), r.text


def test_extension_prefixes_of_the_document_travel_with_each_event(root: RootUnderTest) -> None:
    """An event with an extension field whose prefix only the document declares: `event capture` puts
    the document's @context into the signed event, so the logged hash ID is the standard's ID of the
    event in its document (the reference's); an event signed without it is refused, not mis-hashed."""
    admin, _ = _add_prefix(root, FACTORY)
    with RootClient(root.url) as client:
        origin = client.origin()
    context = [
        "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
        {"example": "https://ns.example.com/epcis/"},
    ]
    event = {
        **_event("ObjectEvent", "07:00", "commissioning", epcList=[U["FG-1"]]),
        "example:ovenProgram": "cure-180C",
    }
    document = {**_document(event), "@context": context}
    standard_id = event_hash_id(event, context)
    assert standard_id != event_hash_id(event)  # the prefix changes the ID: the case this test is about

    bare = Capture(origin, event_hash_id(event), json.dumps(event).encode())
    unsafe = {**document, "epcisBody": {"eventList": [
        {**event, "edgeroot:signedCapture": b64.encode(sign_capture(bare, admin).raw)}
    ]}}  # fmt: skip
    r = _post(root, unsafe)
    assert r.status_code == 400 and "@context" in r.json()["message"], r.text

    r = _post(root, sign_document(document, admin, origin))
    assert r.status_code == 202, r.text

    def published() -> list[dict[str, Any]]:
        body = httpx.get(root.url + routes.EPCIS_EVENTS).json()
        events: list[dict[str, Any]] = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        return events

    logged_ids = [
        parse_capture(b64.decode(e["edgeroot:signedCapture"]) or b"").capture.hash_id
        for e in wait_until("the captured event published", published)
    ]
    assert logged_ids == [standard_id]


def test_capture_verifies_again_when_the_signers_key_changes_during_its_checks(
    root: RootUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks run before the write transaction: a key rotated (or revoked) meanwhile is read again
    inside it, the events are verified with the key registered then, and refused naming the event."""
    admin, _ = _add_prefix(root, FACTORY)
    with RootClient(root.url) as client:
        origin = client.origin()
    uris = [identifier_uri(f"{FACTORY}/R-{i}", DEFAULT_IDENTIFIER_BASE) for i in range(2)]
    document = sign_document(
        _document(*(_event("ObjectEvent", "06:00", "commissioning", epcList=[u]) for u in uris)),
        admin,
        origin,
    )
    real = epcis_intake.signer_key
    rotated = generate_p256().public_key()
    lookups: list[str] = []

    def rotating(tx: Any, kid: str) -> Any:
        lookups.append(kid)
        return real(tx, kid) if len(lookups) == 1 else rotated  # the second look-up: in the write

    monkeypatch.setattr(epcis_intake, "signer_key", rotating)
    r = _post(root, document)
    assert r.status_code == 422 and "event 0" in r.json()["message"] and "signature" in r.json()["message"]
    assert lookups == [admin.kid, admin.kid]

    def revoking(tx: Any, kid: str) -> Any:
        lookups.append(kid)
        if len(lookups) == 3:
            return real(tx, kid)
        raise epcis_intake.EventUnauthorised(f"{kid} revoked")

    monkeypatch.setattr(epcis_intake, "signer_key", revoking)
    r = _post(root, document)
    assert r.status_code == 403 and "revoked" in r.json()["message"]
    monkeypatch.setattr(epcis_intake, "signer_key", real)
    root.settle()
    shown = httpx.get(root.url + routes.EPCIS_EVENTS).json()["epcisBody"]["queryResults"]["resultsBody"]
    assert shown["eventList"] == []  # nothing of either refused document was queued
    assert _post(root, document).status_code == 202  # unchanged key: captured


def test_captures_waiting_for_their_turn_hold_no_thread_the_other_endpoints_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One capture document is checked at a time (D-095); the others wait for their turn on the event
    loop, not in the thread pool (D-122): with a check held in progress and more captures queued than
    the pool has threads, an endpoint that runs in the pool (a capture job's status) still answers."""
    origin = "capture.test"
    result = init_root(tmp_path / "root", origin, FACTORY)
    db = Database(root_config.load(tmp_path / "root").database)
    admin = CoseSigner(admin_kid(FACTORY), load_private_pem(result.admin_key.read_bytes()))
    node = RootNode(db, origin)
    assert node.refresh()
    app = create_app(node)
    item = identifier_uri(f"{FACTORY}/QUEUED-1", DEFAULT_IDENTIFIER_BASE)
    document = sign_document(
        _document(_event("ObjectEvent", "06:00", "commissioning", epcList=[item])), admin, origin
    )
    checking, release = threading.Event(), threading.Event()
    real = epcis_intake.read_capture_document

    def held(*args: Any, **kwargs: Any) -> Any:  # the first check of a document: held until released
        checking.set()
        assert release.wait(60), "the test never released the held check"
        return real(*args, **kwargs)

    monkeypatch.setattr(epcis_intake, "read_capture_document", held)
    threads = 3  # the pool's size in this test (anyio's default is 40)

    async def run() -> tuple[httpx.Response, list[httpx.Response]]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://root.test", timeout=60) as client:
            captures = [
                asyncio.create_task(client.post(routes.EPCIS_CAPTURE, json=document))
                for _ in range(threads + 1)
            ]
            try:
                assert await asyncio.to_thread(checking.wait, 30), "no capture reached its checks"
                status = await asyncio.wait_for(client.get(routes.epcis_capture_job("0" * 64)), 20)
            finally:
                release.set()
            return status, list(await asyncio.gather(*captures))

    try:
        status, captured = asyncio.run(run())
    finally:
        release.set()
        db.close()
    assert status.status_code == 404 and "no capture job" in status.json()["message"], status.text
    assert [c.status_code for c in captured] == [202] * (threads + 1), [c.text for c in captured]
    assert sum(not c.json()["events"][0]["duplicate"] for c in captured) == 1  # one document, stored once


def test_a_long_lived_verifier_keeps_a_bounded_number_of_map_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier that meets checkpoint after checkpoint keeps the last MAP_HEADS_KEPT map heads it used
    (the least recently used forgotten first): one in use all along is never checked again, a forgotten
    one is checked again when it comes back."""
    checked: list[bytes] = []

    def verify(head: bytes, _receipt: object, _verified: object) -> str:
        checked.append(head)
        return f"map head {head!r}"

    monkeypatch.setattr(epcis_trace, "verify_map_head", verify)
    verifier = Verifier(None, None)  # type: ignore[arg-type]  # neither the node nor the pin is asked

    def head_of(n: int) -> object:
        receipt = SimpleNamespace(to_bytes=lambda: b"receipt %d" % n)
        proof = SimpleNamespace(map_head=b"head %d" % n, receipt=receipt)
        checkpoint = SimpleNamespace(checkpoint=SimpleNamespace(root=b"root %d" % n))
        return verifier.map_head(proof, checkpoint)  # type: ignore[arg-type]

    kept = epcis_trace.MAP_HEADS_KEPT
    for n in range(1, 3 * kept):
        assert head_of(n) == f"map head {b'head %d' % n!r}"
        head_of(0)  # in use all along
    assert len(verifier._map_heads) == kept
    assert checked.count(b"head 0") == 1 and checked.count(b"head 1") == 1
    head_of(3 * kept - 1)  # among the last used: not checked again
    assert checked.count(b"head %d" % (3 * kept - 1)) == 1
    head_of(1)  # forgotten long ago: checked again
    assert checked.count(b"head 1") == 2 and len(verifier._map_heads) == kept


class StaleClient(AsyncRootClient):
    """A node whose event pages lag its completeness proofs: the first ``stale`` answers are pages as of
    an older checkpoint (``size``; a node that published in between answering the two)."""

    size = 0
    stale = 1
    calls = 0

    async def epcis_events_all(self, params: dict[str, str]) -> list[codecs.EventsPage]:
        self.calls += 1
        if self.calls > self.stale:
            return await super().epcis_events_all(params)
        return [await self.epcis_events({**params, "nextPageToken": f"v1.{self.size}.0"})]


def test_trace_asks_again_for_pages_older_than_the_completeness_proof(
    genealogy: Genealogy, tmp_path: Path
) -> None:
    """Proofs and pages are asked side by side: pages as of an older checkpoint (missing the newest
    event) are asked again once and the list proven complete; pages that stay older fail, named."""
    root = genealogy.root
    older = root.settle()
    genealogy.capture(
        genealogy.pack_key, f"{FACTORY}/PACK-1",
        _event("ObjectEvent", "12:00", "shipping", epcList=[U["PALLET-1"]]),
    )  # fmt: skip

    async def fetch(stale: int) -> tuple[Any, int]:
        async with StaleClient(root.url) as client:
            client.size, client.stale = older, stale
            store = FilePinStore(root.origin, tmp_path / "pins")
            pinned = await PinnedLog.open(root.policy, root.origin, client, store)
            found = await fetch_events_for(client, [K["PALLET-1"]], Verifier(client, pinned))
            return found[K["PALLET-1"]], client.calls

    found, calls = asyncio.run(fetch(stale=1))
    assert calls == 2 and found.complete_as_of is not None and len(found.events) == 2
    with pytest.raises(IncompleteIndex, match="not shown"):
        asyncio.run(fetch(stale=2))


class TamperingClient(AsyncRootClient):
    """A node (or a man in the middle) that flips one bit of one event's inclusion proof in a page."""

    target = -1

    async def epcis_events_all(self, params: dict[str, str]) -> list[codecs.EventsPage]:
        pages = await super().epcis_events_all(params)
        out = []
        for p in pages:
            events = []
            for e in p.events:
                if e.index == self.target:
                    first = bytes([e.inclusion[0][0] ^ 1]) + e.inclusion[0][1:]
                    e = codecs.ShownEvent(e.signed_capture, e.index, [first, *e.inclusion[1:]])  # noqa: PLW2901
                events.append(e)
            out.append(codecs.EventsPage(p.checkpoint, events, p.next_token))
        return out


def test_a_tampered_inclusion_proof_inside_a_page_is_caught_and_named(
    genealogy: Genealogy, tmp_path: Path
) -> None:
    """One event's proof altered among the page's others: the trace fails, naming that event's index."""
    root = genealogy.root

    async def scenario() -> None:
        async with TamperingClient(root.url) as client:
            store = FilePinStore(root.origin, tmp_path / "pins")
            pinned = await PinnedLog.open(root.policy, root.origin, client, store)
            honest = await fetch_events_for(client, [K["FG-1"]], Verifier(client, pinned))
            indices = [e.index for e in honest[K["FG-1"]].events]
            assert len(indices) == 2
            client.target = indices[1]
            with pytest.raises(ChainError, match=f"log index {indices[1]}"):
                await fetch_events_for(client, [K["FG-1"]], Verifier(client, pinned))

    asyncio.run(scenario())
