"""A trace shows the readings behind an event (issue 15 item 4, D-086), over real HTTP: a gateway's blocks
synced to the root (replicated and anchored), an event whose ``sensorElementList`` names the device, its
gateway and a window, and the trace listing the blocks covering that window with verified receipts and
where the readings are; a window with no blocks, and an event that names no gateway, said plainly."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest

from chain_lite import b64, envelope
from chain_lite.block import GENESIS_PREV, build_header, reading_proof, sign_block
from chain_lite.cose import CoseSigner
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE
from chain_lite.epcis_identifiers import identifier_uri
from chain_lite.errors import ChainError
from chain_lite.keys import generate_p256
from chain_lite.registry import canonical_identifier
from edgeroot.cli import main
from edgeroot.event_commands import sign_document
from edgeroot.trace_commands import _readings_lines
from rootclient.client import AsyncRootClient
from rootclient.epcis_trace import (
    EDGEROOT_NS,
    EvidenceBlock,
    ReadingsEvidence,
    ReadingsRef,
    Verifier,
    _check_block,
    check_fetched_readings,
    readings_refs,
)
from rootclient.pin_file import FilePinStore
from rootclient.pinned_log import PinnedLog
from tests.root_harness import RootUnderTest
from tests.test_root_gateway_sync import DEVICE, GATEWAY, Plant, _post

DEV_ID, GW_ID = canonical_identifier(DEVICE), canonical_identifier(GATEWAY)
"""As the trace names them: the registry's canonical (case-folded) identifiers."""

T = 1_700_000_000_000  # block h is signed at T + h (tests.test_root_gateway_sync.Plant)
BASE = DEFAULT_IDENTIFIER_BASE
CURER = "88.123.77"
"""The enterprise that captures the curing events (any registered signer may name another's device)."""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cure(batch: str, start_ms: int, end_ms: int, *, gateway: str | None = GATEWAY) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "deviceID": identifier_uri(DEVICE, BASE),
        "startTime": _iso(start_ms),
        "endTime": _iso(end_ms),
    }
    if gateway is not None:
        metadata["er:gateway"] = identifier_uri(gateway, BASE)
    return {
        "type": "ObjectEvent",
        "eventTime": _iso(end_ms),
        "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE",
        "bizStep": "inspecting",
        "epcList": [identifier_uri(f"{CURER}/{batch}", BASE)],
        "sensorElementList": [
            {
                "sensorMetadata": metadata,
                "sensorReport": [{"type": "Temperature", "value": 180.0, "uom": "CEL"}],
            }
        ],
    }


def _document(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"er": EDGEROOT_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T12:00:00.000Z",
        "epcisBody": {"eventList": list(events)},
    }


def _trace(capsys: pytest.CaptureFixture[str], root: RootUnderTest, pins: Path, batch: str) -> dict[str, Any]:
    capsys.readouterr()
    argv = ["trace", identifier_uri(f"{CURER}/{batch}", BASE), "--root", root.url, "--verify",
            "--policy", str(root.policy_path), "--config-dir", str(pins), "--json"]  # fmt: skip
    code = main(argv)
    answer: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, answer
    return answer


def _readings(answer: dict[str, Any]) -> list[dict[str, Any]]:
    events = answer["tree"]["events"]
    assert len(events) == 1 and events[0]["verified"]
    found: list[dict[str, Any]] = events[0]["sensor_readings"]
    return found


def test_trace_lists_the_blocks_behind_an_event_with_verified_receipts(
    root: RootUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant = Plant(root)
    replicated = [plant.next_block(2) for _ in range(3)]  # heights 0-2, readings at the root
    assert _post(root, [(b.raw, body) for b, body in replicated]).status_code == 200
    anchored = [plant.next_block(2)[0] for _ in range(3)]  # heights 3-5, readings stay at the gateway
    assert _post(root, [(b.raw, None) for b in anchored]).status_code == 200
    curer = root.add_prefix(CURER)
    with root.client() as client:
        origin = client.origin()
        document = _document(
            _cure("BATCH-1", T + 1, T + 3),  # blocks 1, 2, 3 (the first signed at or after the end)
            _cure("BATCH-2", T + 60_000, T + 120_000),  # after the chain's last block: none
            _cure("BATCH-3", T + 1, T + 3, gateway=None),
        )
        client.epcis_capture(sign_document(document, curer, origin))
    root.settle()
    pins = tmp_path / "pins"

    readings = _readings(_trace(capsys, root, pins, "BATCH-1"))
    assert len(readings) == 1
    found = readings[0]
    assert (found["device"], found["gateway"], found["note"]) == (DEV_ID, GW_ID, None)
    assert (found["from_ms"], found["to_ms"]) == (T + 1, T + 4)  # endTime inclusive
    blocks = found["blocks"]
    assert [b["height"] for b in blocks] == [1, 2, 3, 4]
    assert [b["readings"] for b in blocks] == ["at-root", "at-root", "at-gateway", "at-gateway"]
    assert all(b["verified"] and b["receipt"] and b["log_index"] is not None for b in blocks)
    assert [b["device_readings"] for b in blocks] == [2, 2, 2, 2]
    assert [b["block_id"] for b in blocks] == [plant.blocks[h].block_id.hex() for h in (1, 2, 3, 4)]

    none = _readings(_trace(capsys, root, pins, "BATCH-2"))[0]
    assert none["blocks"] == [] and "NO BLOCKS" in none["note"] and GW_ID in none["note"]
    unnamed = _readings(_trace(capsys, root, pins, "BATCH-3"))[0]
    assert unnamed["blocks"] == [] and unnamed["gateway"] is None and "edgeroot:gateway" in unnamed["note"]

    # The human tree says the same under the event.
    capsys.readouterr()
    argv = ["trace", identifier_uri(f"{CURER}/BATCH-1", BASE), "--root", root.url, "--verify",
            "--policy", str(root.policy_path), "--config-dir", str(pins)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"readings of {DEV_ID} via {GW_ID}" in text
    assert text.count("readings at the root, receipt verified") == 2
    assert text.count("readings stay at the gateway, receipt verified") == 2


def test_a_block_the_root_answers_falsely_does_not_verify(
    root: RootUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Blocks as the root answered them verify; the same answer with another block's receipt, a changed
    inclusion proof, another block's header, or no receipt yet is refused, naming what failed."""
    plant = Plant(root)
    assert (
        _post(root, [(b.raw, body) for b, body in (plant.next_block(2) for _ in range(2))]).status_code == 200
    )
    root.settle()

    async def check() -> None:
        async with AsyncRootClient(root.url) as aio:
            origin = await aio.origin()
            pinned = await PinnedLog.open(root.policy, origin, aio, FilePinStore(origin, tmp_path / "pins"))
            verifier = Verifier(aio, pinned)
            blocks, _ = await aio.blocks_in_window(GATEWAY, 0, T + 60)
            first, second = blocks
            assert first.receipt is not None and second.receipt is not None
            flipped = (
                bytes([second.receipt.proof[0][0] ^ 1]) + second.receipt.proof[0][1:],
                *second.receipt.proof[1:],
            )
            for good in blocks:
                await _check_block(aio, verifier, GATEWAY, good)
            for bad, why in (
                (replace(second, receipt=first.receipt), "another log index"),
                (replace(second, receipt=replace(second.receipt, proof=flipped)), "does not match"),
                (replace(second, header=first.header), "not the block listed"),
                (replace(first, receipt=None), "no receipt"),
            ):
                with pytest.raises(ChainError, match=why):
                    await _check_block(aio, verifier, GATEWAY, bad)

    asyncio.run(check())


def test_readings_refs_reads_the_window_and_the_gateway_and_names_what_is_wrong() -> None:
    ctx = {"@context": [{"x": EDGEROOT_NS}, {"other": "https://example.com/ns#"}]}
    device, gw = identifier_uri(DEVICE, BASE), identifier_uri(GATEWAY, BASE)

    def refs(metadata: dict[str, Any], **event: Any) -> list[Any]:
        return readings_refs({**ctx, **event, "sensorElementList": [{"sensorMetadata": metadata}]}, [BASE])

    [ref] = refs({"deviceID": device, "time": "2023-11-14T22:13:20.005Z", "x:gateway": gw})
    assert (ref.device, ref.gateway, ref.from_ms, ref.to_ms, ref.problem) == (
        DEV_ID,
        GW_ID,
        T + 5,
        T + 6,
        None,
    )
    [ref] = refs({"deviceID": device, "x:gateway": gw}, eventTime="2023-11-14T23:13:20+01:00")
    assert (ref.from_ms, ref.to_ms) == (T, T + 1)
    # Only a prefix declared as edgeroot's namespace names the gateway.
    [ref] = refs({"deviceID": device, "other:gateway": gw, "time": "2023-11-14T22:13:20Z"})
    assert ref.gateway is None and "edgeroot:gateway" in (ref.problem or "")
    for bad, why in (
        ({"startTime": "2023-11-14T22:13:20Z"}, "endTime"),
        ({"startTime": "2023-11-14T22:13:21Z", "endTime": "2023-11-14T22:13:20Z"}, "before"),
        ({"time": "2023-11-14T22:13:20"}, "offset"),
        ({"time": 7}, "not a timestamp"),
        ({"time": "2023-11-14T22:13:20Z", "x:gateway": "urn:epc:id:sgln:1.2.3"}, "not an identifier URI"),
        ({"time": "2023-11-14T22:13:20Z", "x:gateway": 5}, "not a string"),
    ):
        [ref] = refs({"deviceID": device, "x:gateway": gw, **bad})
        assert ref.gateway is None and why in (ref.problem or ""), (bad, ref)
    # Devices that are not edgeroot identifiers, and hostile shapes, point at no readings of ours.
    assert refs({"deviceID": "urn:epc:id:giai:4000001.111", "time": "2023-11-14T22:13:20Z"}) == []
    assert readings_refs({"sensorElementList": "x"}, [BASE]) == []
    assert readings_refs({"sensorElementList": [7, {"sensorMetadata": []}, {}]}, [BASE]) == []


def _gateway_answer(body: list[bytes], height: int) -> list[dict[str, Any]]:
    """``GET /v1/readings`` items for a block's readings, as the gateway's local API writes them."""
    return [
        {"envelope": b64.encode(env), "block": height, "index": i,
         "proof": [b64.encode(h) for h in reading_proof(body, i)]}
        for i, env in enumerate(body)
    ]  # fmt: skip


def test_readings_fetched_from_the_gateway_are_checked_against_the_logged_block() -> None:
    """`trace --gateway` (D-101): each reading the gateway answers must be its logged block's reading at
    its index and be signed by the device; a reading of a block the root did not list is counted, not
    judged; a changed reading, a wrong proof or another signer is refused, naming the reading."""
    device, gateway = CoseSigner(DEVICE, generate_p256()), CoseSigner(GATEWAY, generate_p256())
    body = [
        envelope.encode_envelope(
            device, [{envelope.N: "temp", envelope.U: "Cel", envelope.V: 180.0 + n}], n + 1
        )
        for n in range(3)
    ]
    header = build_header(GATEWAY, 0, GENESIS_PREV, [envelope.decode_envelope(e) for e in body], T)
    block = sign_block(header, gateway)
    ref = ReadingsRef(DEV_ID, GW_ID, T, T + 1)
    listed = EvidenceBlock(0, T, block.block_id.hex(), 7, False, 3, "receipt", True, block.raw)
    found = ReadingsEvidence(ref, [listed], None)
    key = device.public_key
    answer = _gateway_answer(body, 0)

    got = check_fetched_readings(found, "http://gw", answer, key)
    assert (got.fetched, got.verified, got.elsewhere, got.values, got.unit) == (
        3,
        3,
        0,
        (180.0, 181.0, 182.0),
        "Cel",
    )
    later = [{**answer[0], "block": 1}]  # a block the root did not list for the window
    assert check_fetched_readings(found, "http://gw", [*answer, *later], key).elsewhere == 1

    changed = _tamper_value(body[1])
    with pytest.raises(ChainError, match="reading 1 of block 0: not in the logged block"):
        check_fetched_readings(
            found, "http://gw", [answer[0], {**answer[1], "envelope": b64.encode(changed)}], key
        )
    with pytest.raises(ChainError, match="reading 2 of block 0: not in the logged block"):
        check_fetched_readings(found, "http://gw", [{**answer[2], "proof": answer[1]["proof"]}], key)
    with pytest.raises(ChainError, match="signature"):  # the device's proven key is not this one
        check_fetched_readings(found, "http://gw", answer, generate_p256().public_key())
    other = CoseSigner("88.123.99/OTHER-1", generate_p256())
    forged = [envelope.encode_envelope(other, [{envelope.N: "temp", envelope.V: 1.0}], 1)]
    header2 = build_header(GATEWAY, 0, GENESIS_PREV, [envelope.decode_envelope(forged[0])], T)
    block2 = sign_block(header2, gateway)
    found2 = ReadingsEvidence(ref, [replace(listed, header=block2.raw)], None)
    with pytest.raises(ChainError, match=r"signed by 88\.123\.99/OTHER-1, not"):
        check_fetched_readings(found2, "http://gw", _gateway_answer(forged, 0), None)


def test_fetched_readings_are_judged_by_the_bundles_rule_no_reading_twice_and_complete_blocks() -> None:
    """`trace --gateway` applies the evidence bundle's rule (chain_lite.coverage, D-120): a reading shown
    twice is refused naming its block and index; a block is complete only when every reading the device
    signed in it is shown (a block shared with another device included); another device's reading, a
    reading of a block outside the window and a missing one make nothing complete; an unverified trace
    counts nothing as verified and says "not verified"."""
    device, gateway = CoseSigner(DEVICE, generate_p256()), CoseSigner(GATEWAY, generate_p256())
    other = CoseSigner("88.123.99/OTHER-1", generate_p256())

    def reading(signer: CoseSigner, n: int) -> bytes:
        return envelope.encode_envelope(
            signer, [{envelope.N: "temp", envelope.U: "Cel", envelope.V: 1.0 * n}], n
        )

    # Block 0: three readings of the device; block 1: two of the device around one of another device.
    bodies = [
        [reading(device, 1), reading(device, 2), reading(device, 3)],
        [reading(device, 4), reading(other, 1), reading(device, 5)],
    ]
    blocks = []
    for height, body in enumerate(bodies):
        prev = GENESIS_PREV if height == 0 else blocks[-1].block_id
        header = build_header(GATEWAY, height, prev, [envelope.decode_envelope(e) for e in body], T + height)
        blocks.append(sign_block(header, gateway))
    listed = [
        EvidenceBlock(h, T + h, b.block_id.hex(), 7 + h, False, 3 - h, "receipt", True, b.raw)
        for h, b in enumerate(blocks)
    ]
    found = ReadingsEvidence(ReadingsRef(DEV_ID, GW_ID, T, T + 2), listed, None)
    first, second = _gateway_answer(bodies[0], 0), _gateway_answer(bodies[1], 1)
    mine = [*first, second[0], second[2]]
    key = device.public_key

    got = check_fetched_readings(found, "http://gw", mine, key)
    assert (got.fetched, got.included, got.verified, got.elsewhere) == (5, 5, 5, 0)
    assert got.complete_blocks == (0, 1)  # block 1 holds another device's reading, none more of ours
    assert check_fetched_readings(found, "http://gw", [*first, second[0]], key).complete_blocks == (0,)
    partial = check_fetched_readings(found, "http://gw", [first[0], first[2], *second[::2]], key)
    assert (partial.verified, partial.complete_blocks) == (4, (1,))  # reading 1 of block 0 left out

    # The same reading twice would count twice (and complete a block it does not): refused, named.
    for twice in ([*mine, first[1]], [first[0], first[1], first[1]], [second[0], second[0], *mine[:3]]):
        with pytest.raises(
            ChainError, match=r"reading \d of block \d is listed twice in the gateway's answer"
        ):
            check_fetched_readings(found, "http://gw", twice, key)
    with pytest.raises(ChainError, match="reading 1 of block 0 is listed twice"):
        check_fetched_readings(found, "http://gw", [first[0], first[1], first[1]], None)
    # Another device's reading, though its block commits to it: refused (its key is not the device's;
    # unverified, its signer is not the device).
    with pytest.raises(ChainError, match="signature"):
        check_fetched_readings(found, "http://gw", [*mine, second[1]], key)
    with pytest.raises(ChainError, match=r"reading 1 of block 1 is signed by 88\.123\.99/OTHER-1, not"):
        check_fetched_readings(found, "http://gw", [*mine, second[1]], None)
    # A block the root did not list for the window: counted, not judged, and it completes nothing (here
    # it stands in for the reading of block 0 that the answer leaves out).
    window = ReadingsEvidence(found.ref, listed[:1], None)
    outside = check_fetched_readings(window, "http://gw", [first[0], first[2], *second], key)
    assert (outside.included, outside.verified, outside.elsewhere) == (2, 2, 3)
    assert outside.complete_blocks == () and outside.values == (1.0, 3.0)

    # Unverified (no proven key, blocks not verified): placed in the headers shown, verified: none.
    plain = ReadingsEvidence(found.ref, [replace(b, verified=False) for b in listed], None)
    loose = check_fetched_readings(plain, "http://gw", mine, None)
    assert (loose.fetched, loose.included, loose.verified, loose.complete_blocks) == (5, 5, 0, (0, 1))
    text = "\n".join(_readings_lines(replace(plain, fetched=loose), ""))
    assert "5 reading(s), not verified" in text and "each signed by the device" not in text, text
    text = "\n".join(_readings_lines(replace(found, fetched=got), ""))
    assert "5 of 5 reading(s) each signed by the device (key proven)" in text and "not verified" not in text
    assert f"complete: block(s) 0..1 hold no other reading of {DEV_ID} than these" in text, text


def _tamper_value(raw: bytes) -> bytes:
    """The same signed envelope with its value changed (signature untouched)."""
    tag = cbor2.loads(raw)
    protected, unprotected, payload, signature = tag.value
    pack = cbor2.loads(payload)
    pack[0][envelope.V] = 999.0
    return cbor2.dumps(cbor2.CBORTag(tag.tag, [protected, unprotected, cbor2.dumps(pack), signature]))
