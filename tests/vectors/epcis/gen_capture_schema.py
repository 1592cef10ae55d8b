"""Writes edgeroot's own schema of the EPCIS 2.0 capture shape (D-067).

Usage, from the repository root:
    python -m tests.vectors.epcis.gen_capture_schema > rootclient/schemas/epcis-capture.schema.json
tests/test_epcis_document.py checks the committed file is what this prints. The rules are written from the
EPCIS 2.0 standard's text; GS1's own schema (tests/vectors/epcis/gs1-schema/) is only the tests' oracle.
"""

from __future__ import annotations

import json
from typing import Any

from chain_lite import cbv_vocabulary as vocab_tables
from chain_lite.epcis import SENSOR_METADATA_FIELDS, SENSOR_REPORT_FIELDS


def vocab(table: dict[str, str], other: str) -> dict[str, Any]:
    return {"anyOf": [{"enum": sorted(table)}, {"$ref": f"#/definitions/{other}"}]}


URI = {"$ref": "#/definitions/uri"}
TIME = {"$ref": "#/definitions/time"}
NUM = {"type": "number"}
STR = {"type": "string"}
EXT = {"$ref": "#/definitions/extensionName"}


def names(*standard: str) -> dict[str, Any]:
    return {"anyOf": [{"enum": list(standard)}, EXT]}


COMMON = [
    "@context",
    "type",
    "eventTime",
    "recordTime",
    "eventTimeZoneOffset",
    "eventID",
    "certificationInfo",
    "errorDeclaration",
]
common_props = {
    "@context": {"$ref": "#/definitions/context"},
    "eventTime": TIME,
    "recordTime": TIME,
    "eventTimeZoneOffset": {"type": "string", "pattern": "^[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)$"},
    "eventID": URI,
    "certificationInfo": {"anyOf": [URI, {"type": "array", "items": URI}]},
    "errorDeclaration": {"$ref": "#/definitions/errorDeclaration"},
}
what_props = {
    "bizStep": vocab(vocab_tables.BIZ_STEP, "otherUri"),
    "disposition": vocab(vocab_tables.DISPOSITION, "otherUri"),
    "persistentDisposition": {"$ref": "#/definitions/persistentDisposition"},
    "readPoint": {"$ref": "#/definitions/location"},
    "bizLocation": {"$ref": "#/definitions/location"},
    "bizTransactionList": {"type": "array", "items": {"$ref": "#/definitions/bizTransaction"}},
    "sourceList": {"type": "array", "items": {"$ref": "#/definitions/source"}},
    "destinationList": {"type": "array", "items": {"$ref": "#/definitions/destination"}},
    "sensorElementList": {"type": "array", "items": {"$ref": "#/definitions/sensorElement"}},
}
EPCS = {"$ref": "#/definitions/epcList"}
QTYS = {"$ref": "#/definitions/quantityList"}
ACTION = {"enum": ["OBSERVE", "ADD", "DELETE"]}


def _one_of_lists(names_: list[str]) -> dict[str, Any]:
    """At least one of these lists, non-empty."""
    return {"anyOf": [{"required": [r], "properties": {r: {"minItems": 1}}} for r in names_]}


ITEMS_OR_QUANTITY = [
    {"required": ["epcList"]},
    {"required": ["quantityList"], "properties": {"quantityList": {"minItems": 1}}},
]
DELETE = {"required": ["action"], "properties": {"action": {"const": "DELETE"}}}
INPUTS = ["inputEPCList", "inputQuantityList"]
OUTPUTS = ["outputEPCList", "outputQuantityList"]


def event(
    type_name: str, props: dict[str, Any], required: list[str], what: list[dict[str, Any]]
) -> dict[str, Any]:
    """An event type: the common fields and ``props``, ``required``, and ``what`` (EPCIS 2.0 §7.4: which
    identifiers it must name; every schema in the list must hold)."""
    return {
        "type": "object",
        "properties": {**common_props, "type": {"const": type_name}, **props},
        "required": ["type", "eventTime", "eventTimeZoneOffset", *required],
        "propertyNames": names(*COMMON, *props),
        "allOf": what,
    }


CHILDREN = {"anyOf": [_one_of_lists(["childEPCs", "childQuantityList"]), DELETE]}
EVENTS = {
    "ObjectEvent": event(
        "ObjectEvent",
        {
            "action": ACTION,
            "epcList": EPCS,
            "quantityList": QTYS,
            **what_props,
            "ilmd": {"$ref": "#/definitions/ilmd"},
        },
        ["action"],
        [
            # Items, a quantity, or sensor data at a read point.
            {
                "anyOf": [
                    *ITEMS_OR_QUANTITY,
                    {
                        "required": ["sensorElementList", "readPoint"],
                        "properties": {"sensorElementList": {"minItems": 1}},
                    },
                ]
            },
            # Instance/lot master data only when the objects come into being.
            {"anyOf": [{"not": {"required": ["ilmd"]}}, {"properties": {"action": {"const": "ADD"}}}]},
        ],
    ),
    "AggregationEvent": event(
        "AggregationEvent",
        {"action": ACTION, "parentID": URI, "childEPCs": EPCS, "childQuantityList": QTYS, **what_props},
        ["action"],
        [CHILDREN],
    ),
    "AssociationEvent": event(
        "AssociationEvent",
        {"action": ACTION, "parentID": URI, "childEPCs": EPCS, "childQuantityList": QTYS, **what_props},
        ["action", "parentID"],
        [CHILDREN],
    ),
    "TransactionEvent": event(
        "TransactionEvent",
        {
            "action": ACTION,
            "parentID": URI,
            "epcList": EPCS,
            "quantityList": QTYS,
            **what_props,
            "bizTransactionList": {
                "type": "array",
                "items": {"$ref": "#/definitions/bizTransaction"},
                "minItems": 1,
            },
        },
        ["action", "bizTransactionList"],
        [{"anyOf": [*ITEMS_OR_QUANTITY, DELETE]}],
    ),
    "TransformationEvent": event(
        "TransformationEvent",
        {
            "inputEPCList": EPCS,
            "inputQuantityList": QTYS,
            "outputEPCList": EPCS,
            "outputQuantityList": QTYS,
            "transformationID": URI,
            **what_props,
            "ilmd": {"$ref": "#/definitions/ilmd"},
        },
        [],
        # Inputs and outputs, or a transformationID and at least one list.
        [
            {
                "anyOf": [
                    {"allOf": [_one_of_lists(INPUTS), _one_of_lists(OUTPUTS)]},
                    {"allOf": [{"required": ["transformationID"]}, _one_of_lists(INPUTS + OUTPUTS)]},
                ]
            }
        ],
    ),
}

# The sensor report's fields (the hash's order) and bizRules, which EPCIS 2.0 also allows there.
SENSOR_REPORT_NAMES = [*SENSOR_REPORT_FIELDS, "bizRules"]
sensor_report_props = dict.fromkeys(
    [
        "deviceID",
        "deviceMetadata",
        "rawData",
        "dataProcessingMethod",
        "bizRules",
        "microorganism",
        "chemicalSubstance",
        "coordinateReferenceSystem",
        "uriValue",
    ],
    URI,
)
sensor_report_props.update(
    dict.fromkeys(["value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue"], NUM)
)
sensor_report_props.update(
    {
        "type": vocab(vocab_tables.MEASUREMENT_TYPE, "nonGs1VocUri"),
        "exception": vocab(vocab_tables.SENSOR_EXCEPTION, "nonGs1VocUri"),
        "time": TIME,
        "component": vocab(vocab_tables.COMPONENT, "otherUri"),
        "stringValue": STR,
        "booleanValue": {"type": "boolean"},
        "hexBinaryValue": {"type": "string", "pattern": "^[A-Fa-f0-9]+$"},
        "uom": STR,
    }
)
SENSOR_META = list(SENSOR_METADATA_FIELDS)

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://edgeroot.example/schemas/epcis-capture.schema.json",
    "title": "edgeroot's schema of an EPCIS 2.0 capture document (EPCISDocument with epcisBody.eventList)",
    "$comment": "Written for edgeroot from the EPCIS 2.0 standard (GS1, 2022) §7-9 and its JSON binding; "
    "rootclient/epcis_document.py validates with it. tests/test_epcis_document.py checks that "
    "it accepts the standard's examples and accepts nothing GS1's own JSON schema refuses.",
    "type": "object",
    "properties": {
        "@context": {"$ref": "#/definitions/context"},
        "type": {"const": "EPCISDocument"},
        "schemaVersion": {"type": "string", "pattern": "^2(\\.\\d+)*$"},
        "creationDate": TIME,
        "id": URI,
        "instanceIdentifier": STR,
        "sender": STR,
        "receiver": STR,
        "epcisHeader": {"type": "object"},
        "epcisBody": {
            "type": "object",
            "properties": {"eventList": {"type": "array", "items": {"$ref": "#/definitions/event"}}},
            "required": ["eventList"],
            "propertyNames": names("eventList"),
        },
    },
    "required": ["@context", "type", "schemaVersion", "creationDate", "epcisBody"],
    "propertyNames": names(
        "@context",
        "type",
        "schemaVersion",
        "creationDate",
        "id",
        "instanceIdentifier",
        "sender",
        "receiver",
        "epcisHeader",
        "epcisBody",
    ),
    "definitions": {
        # RFC 3986 §3.1: a scheme, a colon, no whitespace.
        "uri": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$"},
        # An extension field is named by a namespace prefix or an absolute URI (EPCIS 2.0 §9.1.3).
        "extensionName": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$"},
        # A URI outside the CBV's own namespaces (a CBV value is written as its bare term in JSON).
        "otherUri": {
            "type": "string",
            "pattern": "^(?!(urn:epcglobal:cbv|https?://ns\\.gs1\\.org/cbv/))[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$",
        },
        # A URI outside GS1's Web vocabulary (whose terms are written bare).
        "nonGs1VocUri": {
            "type": "string",
            "pattern": "^(?!(https?://(www\\.)?gs1\\.org/voc/))[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$",
        },
        # RFC 3339 date-time with its offset (xsd:dateTimeStamp).
        "time": {
            "type": "string",
            "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})$",
        },
        "context": {
            "anyOf": [
                {"$ref": "#/definitions/uri"},
                {"type": "object"},
                {"type": "array", "items": {"anyOf": [{"$ref": "#/definitions/uri"}, {"type": "object"}]}},
            ]
        },
        "epcList": {"type": "array", "items": URI, "uniqueItems": True},
        "quantityList": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "epcClass": URI,
                    "quantity": NUM,
                    "uom": {"type": "string", "pattern": "^[A-Z0-9]{2,3}$"},
                },
                "required": ["epcClass"],
                "additionalProperties": False,
            },
        },
        "location": {
            "type": "object",
            "properties": {"id": URI},
            "required": ["id"],
            "propertyNames": names("id"),
        },
        "persistentDisposition": {
            "type": "object",
            "properties": {
                "set": {
                    "type": "array",
                    "items": vocab(vocab_tables.DISPOSITION, "otherUri"),
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "unset": {
                    "type": "array",
                    "items": vocab(vocab_tables.DISPOSITION, "otherUri"),
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
            "additionalProperties": False,
            "anyOf": [{"required": ["set"]}, {"required": ["unset"]}],
        },
        "bizTransaction": {
            "type": "object",
            "properties": {
                "type": vocab(vocab_tables.BIZ_TRANSACTION_TYPE, "otherUri"),
                "bizTransaction": URI,
            },
            "required": ["bizTransaction"],
            "additionalProperties": False,
        },
        "source": {
            "type": "object",
            "properties": {"type": vocab(vocab_tables.SOURCE_DESTINATION_TYPE, "otherUri"), "source": URI},
            "required": ["type", "source"],
            "additionalProperties": False,
        },
        "destination": {
            "type": "object",
            "properties": {
                "type": vocab(vocab_tables.SOURCE_DESTINATION_TYPE, "otherUri"),
                "destination": URI,
            },
            "required": ["type", "destination"],
            "additionalProperties": False,
        },
        "sensorElement": {
            "type": "object",
            "properties": {
                "sensorMetadata": {
                    "type": "object",
                    "properties": {n: (TIME if "ime" in n else URI) for n in SENSOR_META},
                    "propertyNames": names(*SENSOR_META),
                },
                "sensorReport": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": sensor_report_props,
                        "required": ["type"],
                        "propertyNames": names(*SENSOR_REPORT_NAMES),
                    },
                },
            },
            "required": ["sensorReport"],
            "propertyNames": names("sensorMetadata", "sensorReport"),
        },
        "ilmd": {"type": "object", "propertyNames": {"$ref": "#/definitions/extensionName"}},
        "errorDeclaration": {
            "type": "object",
            "properties": {
                "declarationTime": TIME,
                "reason": {
                    "anyOf": [
                        {"enum": ["did_not_occur", "incorrect_data"]},
                        {"$ref": "#/definitions/otherUri"},
                    ]
                },
                "correctiveEventIDs": {"type": "array", "items": URI},
            },
            "required": ["declarationTime"],
            "propertyNames": names("declarationTime", "reason", "correctiveEventIDs"),
        },
        "event": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": sorted(EVENTS)}},
            "allOf": [
                {"if": {"properties": {"type": {"const": name}}}, "then": {"$ref": f"#/definitions/{name}"}}
                for name in sorted(EVENTS)
            ],
        },
        **EVENTS,
    },
}


def render() -> str:
    return json.dumps(SCHEMA, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
