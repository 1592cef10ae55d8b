"""The serial HELLO frame: an identifier that breaks the namespace policy is refused with an ERROR frame
and never reaches a log line or ``hello.jsonl`` verbatim (issue 12 item 11)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from chain_lite import cbor
from firmware_bridge.frame_bridge import Bridge
from firmware_bridge.frames import FrameType

KEY = b"\x04" + bytes(range(64))


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[FrameType, bytes]] = []

    def send(self, kind: FrameType, body: bytes) -> None:
        self.sent.append((kind, body))


def _bridge(tmp_path: Path) -> Bridge:
    return Bridge("/dev/ttyTEST", forwarder=None, state=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "identifier",
    [
        "88.123.99/MCU-1\nERROR forged line",
        "88.123.99/\u202eMCU-1",
        "88.123.99/x/../MCU-1",
        " 88.123.99/MCU-1",
    ],
)
def test_hello_with_a_refused_identifier_gets_an_error_frame_and_no_record(
    tmp_path: Path, identifier: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A control, bidi or dot-segment identifier in HELLO: ERROR frame, counted, nothing recorded, and
    the log line shows it escaped."""
    bridge, link = _bridge(tmp_path), RecordingLink()
    with caplog.at_level(logging.INFO):
        bridge._hello(link, cbor.encode([identifier, KEY]))  # type: ignore[arg-type]
    [(kind, body)] = link.sent
    assert kind is FrameType.ERROR and body.startswith(b"bad HELLO: malformed identifier")
    assert bridge.stats.bad_hellos == 1 and bridge.stats.hellos == 0
    assert not (tmp_path / "hello.jsonl").exists()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "bad HELLO" in messages
    assert "\n" not in messages and "\u202e" not in messages  # escaped, never raw


def test_a_valid_hello_is_recorded_in_normal_form(tmp_path: Path) -> None:
    """A valid HELLO is recorded with the identifier's normal form (prefix lowercased)."""
    bridge, link = _bridge(tmp_path), RecordingLink()
    bridge._hello(link, cbor.encode(["88.123.99/MCU-1", KEY]))  # type: ignore[arg-type]
    assert link.sent == [] and bridge.stats.hellos == 1
    [line] = (tmp_path / "hello.jsonl").read_text().splitlines()
    assert json.loads(line)["identifier"] == "88.123.99/MCU-1"
