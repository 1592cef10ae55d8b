"""GS1's reference EPCIS event hash generator (epcis-event-hash-generator 1.9.3), the test oracle of
chain_lite.epcis (D-066). Never imported by runtime code."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

from epcis_event_hash_generator import hash_generator, json_to_py


def reference_documents(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(pre-hash string, hash ID) of each event of an EPCIS document, as the reference computes them."""
    # The reference keeps the namespaces of every document it has read in a module global.
    json_to_py._namespaces.clear()
    with warnings.catch_warnings():
        # Its document loader reads the bundled JSON-LD context with importlib.resources.open_text,
        # deprecated since Python 3.11; pytest turns that warning into an error (pyproject.toml).
        warnings.simplefilter("ignore", DeprecationWarning)
        events = json_to_py.event_list_from_epcis_document_json(copy.deepcopy(dict(document)))
    pre = hash_generator.derive_prehashes_from_events(events, "")
    return list(zip(pre, hash_generator.calculate_hashes_from_pre_hashes(pre), strict=True))


def reference_event(event: Mapping[str, Any], context: Any = None) -> tuple[str, str]:
    """(pre-hash string, hash ID) of one event, wrapped in a document with ``context``."""
    document = {
        "@context": context
        if context is not None
        else ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T08:00:00Z",
        "epcisBody": {"eventList": [dict(event)]},
    }
    out = reference_documents(document)
    assert len(out) == 1, "the reference dropped the event (it logs why)"
    return out[0]
