"""Syslog priority prefixes on the daemons' log lines when stdout is journald's stream, so that
``journalctl -p warning`` filters; plain lines anywhere else."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime.logsetup import JournalFormatter, line_handler, stream_is_journal, syslog_priority
from tests.gateway_harness import EDGEROOT
from tests.root_harness import free_port
from tests.serial_harness import pty

WARNING_LINE = "WARNING firmware_bridge.frame_bridge: serial port"
INFO_LINE = "INFO firmware_bridge.frame_bridge: serial port"


def journal_stream(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_levels_map_to_syslog_priorities() -> None:
    """critical 2, error 3, warning 4, info 6, debug 7; a level between two takes the milder one's."""
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]
    assert syslog_priority(35) == 4
    assert syslog_priority(5) == 7


def test_every_line_of_a_traceback_carries_the_priority() -> None:
    """journald makes one entry per line: a traceback's lines are errors too, not info."""
    fmt = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info())
    lines = fmt.format(record).split("\n")
    assert lines[0] == "<3>ERROR x: failed"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines), lines


def test_journal_detected_only_for_the_stream_it_names(tmp_path: Path) -> None:
    """$JOURNAL_STREAM counts only when stdout is that very file; inherited by a redirected child, it
    must not put prefixes into the file."""
    log, other = tmp_path / "a.log", tmp_path / "b.log"
    log.touch()
    other.touch()
    with log.open("w") as f:
        assert stream_is_journal(f, {"JOURNAL_STREAM": journal_stream(log)})
        assert not stream_is_journal(f, {"JOURNAL_STREAM": journal_stream(other)})
        assert not stream_is_journal(f, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(f, {})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": journal_stream(log)})


def test_line_handler_without_journal_writes_plain_lines(tmp_path: Path) -> None:
    """Outside journald the line format is unchanged (``LEVEL logger: message``); on its stream, prefixed."""
    log = tmp_path / "a.log"
    log.touch()
    record = logging.LogRecord("edgeroot.test", logging.WARNING, __file__, 1, "disk %d%% full", (91,), None)
    assert line_handler(io.StringIO()).format(record) == "WARNING edgeroot.test: disk 91% full"
    with log.open("w") as f, pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOURNAL_STREAM", journal_stream(log))
        assert line_handler(f).format(record) == "<4>WARNING edgeroot.test: disk 91% full"


@contextmanager
def _bridge(tmp_path: Path, journal: bool) -> Iterator[str]:
    """A real `edgeroot bridge run` whose port appears only after it started: it warns that the port is
    missing, then logs at info that it opened it. Yields the log's text once both lines are there."""
    port = tmp_path / "ttyDEVICE"
    log = tmp_path / "bridge.log"
    log.touch()
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if journal:
        env["JOURNAL_STREAM"] = journal_stream(log)
    with log.open("ab") as out:  # the child keeps its own descriptor: the same file (device, inode)
        proc = subprocess.Popen(
            [*EDGEROOT, "bridge", "run", "--port", str(port),
             "--gateway", f"coap://127.0.0.1:{free_port()}/readings"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    master = None
    try:
        deadline = time.monotonic() + 30
        while WARNING_LINE not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no warning about the missing port: {log.read_text()}"
            time.sleep(0.05)
        master, slave = pty()
        port.symlink_to(slave)
        while INFO_LINE not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the bridge did not open the port: {log.read_text()}"
            time.sleep(0.05)
        yield log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if master is not None:
            os.close(master)


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if start in line)


@pytest.mark.parametrize("journal", [True, False], ids=["journald", "plain"])
def test_daemon_prefixes_priorities_only_under_journald(tmp_path: Path, journal: bool) -> None:
    """With $JOURNAL_STREAM naming its stdout, the daemon writes ``<4>`` before a warning and ``<6>``
    before info, on every line; without it, no prefix at all."""
    with _bridge(tmp_path, journal) as text:
        pass
    warning, info = _line(text, WARNING_LINE), _line(text, INFO_LINE)
    lines = [line for line in text.splitlines() if line]
    if journal:
        assert warning.startswith("<4>" + WARNING_LINE), warning
        assert info.startswith("<6>" + INFO_LINE), info
        assert all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in lines), lines
    else:
        assert warning.startswith(WARNING_LINE), warning
        assert info.startswith(INFO_LINE), info
        assert not any(line.startswith("<") for line in lines), lines
