"""Regenerates chain_lite/cbv_vocabulary.py from the EPCIS 2.0 JSON-LD context (the bare-string terms).

Usage: python tests/vectors/epcis/gen_vocabulary.py CONTEXT.jsonld > chain_lite/cbv_vocabulary.py
The context read is the one GS1's reference hash generator ships (https://ref.gs1.org/standards/epcis/
2.0.0/epcis-context.jsonld); tests/test_epcis_hash.py checks the module still equals what this prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PREFIXES = {"cbv:": "https://ref.gs1.org/cbv/", "gs1:": "https://gs1.org/voc/"}

# (table name, path of context keys to the term's scoped context)
TABLES = (
    ("BIZ_STEP", ("bizStep",)),
    ("DISPOSITION", ("disposition",)),
    ("BIZ_TRANSACTION_TYPE", ("bizTransactionList", "type")),
    ("SOURCE_DESTINATION_TYPE", ("sourceList", "type")),
    ("MEASUREMENT_TYPE", ("sensorElementList", "sensorReport", "type")),
    ("SENSOR_EXCEPTION", ("sensorElementList", "sensorReport", "exception")),
    ("COMPONENT", ("sensorElementList", "sensorReport", "component")),
)


def _scoped(ctx: Any, path: tuple[str, ...]) -> dict[str, str]:
    node = ctx
    for key in path:
        scope = node if isinstance(node, dict) and key in node else node.get("@context", {})
        if isinstance(scope, list):
            scope = next(s for s in scope if isinstance(s, dict) and key in s)
        node = scope[key]
    inner = node["@context"]
    if isinstance(inner, list):
        inner = inner[0]
    out = {}
    for term, value in inner.items():
        if term.startswith("@") or not isinstance(value, str):
            continue
        for prefix, iri in PREFIXES.items():
            if value.startswith(prefix):
                out[term] = iri + value[len(prefix) :]
    return out


def render(context_doc: Any) -> str:
    ctx = context_doc["@context"]
    lines = [
        '"""CBV 2.0 bare-string vocabulary of the EPCIS 2.0 JSON-LD context: term -> Web URI.',
        "",
        "Generated from the EPCIS 2.0 JSON-LD context (GS1) by tests/vectors/epcis/gen_vocabulary.py.",
        "The event hash ID (CBV 2.0 §8.9 rule 16) expands a bare term to its URI in the field it belongs to.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    for name, path in TABLES:
        table = _scoped(ctx, path)
        lines.append(f"{name}: dict[str, str] = {{")
        lines.extend(f"    {term!r}: {iri!r}," for term, iri in sorted(table.items()))
        lines.append("}")
        lines.append("")
    return "\n".join(lines).replace("'", '"')


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f)))
