"""EPCIS 2.0 capture documents: read, bounded and validated once, for the root's capture route and the CLI.

A capture document is an ``EPCISDocument`` whose ``epcisBody.eventList`` holds the events (EPCIS 2.0
§8.2.6, the REST binding's ``POST /capture`` body). :func:`read_capture_document` takes the request bytes
(or an already parsed object) and returns a :class:`CaptureDocument`, or raises :class:`EpcisDocumentError`
naming the JSON pointer of the first thing wrong. The work is bounded before it starts: a byte budget,
then a parser that refuses duplicate keys and non-JSON numbers, then a nesting bound, an event count
bound, and only then the schema (rootclient/schemas/epcis-capture.schema.json, D-067), compiled once.

Shared by the server (capture) and the clients (``edgeroot event capture`` checks before it signs),
so both refuse the same documents with the same words.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from chain_lite import epcis
from rootclient.errors import ProtocolError

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_EVENTS = 10_000
# The deepest standard field is 5 below the document (epcisBody/eventList/i/sensorElementList/j/...);
# extensions get room, hostile nesting does not (chain_lite.epcis refuses deeper trees too).
MAX_DEPTH = epcis.MAX_DEPTH


class EpcisDocumentError(ProtocolError):
    """A capture document that cannot be taken: ``path`` is the JSON pointer of the first violation."""

    status = 400

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"EPCIS document at {path or '/'}", reason)
        self.path = path or "/"


@dataclass(frozen=True, slots=True)
class CaptureDocument:
    """A validated capture document: its JSON-LD ``@context`` and its events, in document order."""

    context: object
    events: tuple[Mapping[str, Any], ...]

    def hash_ids(self) -> list[str]:
        """The CBV event hash ID of each event (chain_lite.epcis), in document order."""
        return [epcis.event_hash_id(event, self.context) for event in self.events]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: two parsers must never see two different events."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise EpcisDocumentError("", f"key {key[:80]!r} appears twice in one object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> object:
    raise EpcisDocumentError("", f"{name} is not a JSON number")


def _parse(data: bytes | str, max_bytes: int) -> object:
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise EpcisDocumentError("", f"document is {size} bytes, the limit is {max_bytes}")
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise EpcisDocumentError("", f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise EpcisDocumentError("", f"not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise EpcisDocumentError("", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _check_depth(document: object) -> None:
    """Iteratively (no recursion for hostile input), refuse containers nested deeper than MAX_DEPTH.
    The walk keeps depths only; the JSON pointer is found by a second walk when the first one fails
    (building a path string per container cost about as much as the rest of the walk)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_DEPTH:
            _too_deep(document)
        children = value.values() if isinstance(value, Mapping) else value
        # Only containers are pushed: a huge array of numbers costs one pass, no strings.
        stack.extend((child, depth + 1) for child in children if isinstance(child, (Mapping, list)))


def _too_deep(document: object) -> None:
    """Raise the error of :func:`_check_depth`, with the pointer of the first container too deep."""
    stack: list[tuple[object, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise EpcisDocumentError(path, f"nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, Mapping) else enumerate(value)  # type: ignore[arg-type]
        stack.extend(
            (child, f"{path}/{key}", depth + 1) for key, child in items if isinstance(child, (Mapping, list))
        )


@functools.cache
def _validator() -> Callable[[object], object]:
    text = (
        importlib.resources.files("rootclient")
        .joinpath("schemas/epcis-capture.schema.json")
        .read_text("utf-8")
    )
    validate: Callable[[object], object] = fastjsonschema.compile(json.loads(text))
    return validate


def _pointer(error: fastjsonschema.JsonSchemaValueException) -> str:
    """fastjsonschema's path (``['data', 'epcisBody', 'eventList', '0']``) as a JSON pointer."""
    parts = list(error.path or [])[1:]
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def read_capture_document(
    data: bytes | str | Mapping[str, Any],
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_events: int = MAX_EVENTS,
) -> CaptureDocument:
    """The validated capture document in ``data`` (request bytes or a parsed object).

    Raises :class:`EpcisDocumentError` with the JSON pointer of the first violation: too large, not
    JSON, a duplicate key, NaN or Infinity, nested deeper than MAX_DEPTH, more than ``max_events``
    events, or a schema rule of rootclient/schemas/epcis-capture.schema.json.
    """
    document = _parse(data, max_bytes) if isinstance(data, (bytes, str)) else data
    if not isinstance(document, Mapping):
        raise EpcisDocumentError("", f"a capture document is a JSON object, not {type(document).__name__}")
    body = document.get("epcisBody")
    events = body.get("eventList") if isinstance(body, Mapping) else None
    if isinstance(events, list) and len(events) > max_events:
        raise EpcisDocumentError("/epcisBody/eventList", f"{len(events)} events, the limit is {max_events}")
    _check_depth(document)
    try:
        _validator()(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        # The generated message starts with fastjsonschema's "data.x.y" name; the pointer says where.
        reason = exc.message.removeprefix(str(exc.name)).strip() or exc.message
        raise EpcisDocumentError(_pointer(exc), reason) from None
    assert isinstance(events, list)
    return CaptureDocument(context=document.get("@context"), events=tuple(events))
