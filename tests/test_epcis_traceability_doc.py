"""docs/traceability.md stays true: its worked examples are valid capture documents whose hash IDs equal
GS1's reference implementation's, and the identifiers and hash it quotes are what the code computes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chain_lite.epcis import event_hash_id
from chain_lite.epcis_identifiers import classify, event_identifiers, identifier_uri
from chain_lite.gs1_link import canonical_digital_link
from rootclient.epcis_document import read_capture_document
from tests.epcis_oracle import reference_documents

DOC = Path(__file__).resolve().parent.parent / "docs" / "traceability.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```json\n(.*?)^```", TEXT, re.DOTALL | re.MULTILINE)
BASE = "https://id.edgeroot.example"


def test_the_page_has_its_three_worked_examples() -> None:
    """A transformation line, packing, and a supplier handover: three capture documents."""
    assert len(BLOCKS) == 3


@pytest.mark.parametrize("block", BLOCKS, ids=["transformation", "packing", "handover"])
def test_worked_example_is_a_valid_capture_document_hashed_as_the_reference_hashes_it(block: str) -> None:
    """Each example passes capture validation; each event's hash ID equals the reference's."""
    document = read_capture_document(block.encode())
    reference = reference_documents(json.loads(block))
    assert document.hash_ids() == [hash_id for _, hash_id in reference]
    for event in document.events:
        for found in event_identifiers(event, [BASE]):
            if found.kind == "edgeroot":
                assert found.identifier is not None
                assert identifier_uri(str(found.identifier), BASE) == found.uri


def test_examples_cover_the_steps_the_page_names() -> None:
    """Transformation with oven readings, aggregation into case and pallet, shipping and receiving."""
    events = [e for block in BLOCKS for e in read_capture_document(block.encode()).events]
    kinds = {(e["type"], e.get("bizStep")) for e in events}
    assert {
        ("TransformationEvent", "commissioning"),
        ("AggregationEvent", "packing"),
        ("ObjectEvent", "shipping"),
        ("ObjectEvent", "receiving"),
    } <= kinds
    oven = [e for e in events if "sensorElementList" in e]
    assert oven[0]["sensorElementList"][0]["sensorMetadata"]["deviceID"] == identifier_uri(
        "88.123.99/OVEN-3", BASE
    )


def test_quoted_values_are_what_the_code_computes() -> None:
    """The identifier URI, the SSCC's Digital Link and the example hash ID quoted in the text."""
    assert f"`{identifier_uri('88.123.99/批次-7', BASE)}`" in TEXT
    assert f"`{canonical_digital_link('urn:epc:id:sscc:6901234.0000000017')}`" in TEXT
    assert classify(
        "https://id.gs1.org/00/069012340000000177", "parent", [BASE]
    ).key == canonical_digital_link("urn:epc:id:sscc:6901234.0000000017")
    example = Path(__file__).parent / "vectors" / "epcis" / "gs1" / "Example_9.6.4-TransformationEvent.jsonld"
    document = json.loads(example.read_text(encoding="utf-8-sig"))
    quoted = event_hash_id(document["epcisBody"]["eventList"][0], document["@context"])
    assert f"`{quoted}`" in TEXT
