"""The CLI's pin file under concurrent edgeroot processes: one judge at a time, atomic replacement."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from rootclient.pin_file import FilePinStore

PROBE = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("held")
    else:
        print("free")
"""


def _probe(lock: Path) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, str(lock)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_locked_excludes_another_process_until_released(tmp_path: Path) -> None:
    """While a command holds the pin's lock, another process cannot take it; afterwards it can."""
    store = FilePinStore("root.example", tmp_path)
    lock = store.path.with_suffix(".lock")
    with store.locked():
        assert _probe(lock) == "held"
    assert _probe(lock) == "free"


def test_save_pin_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Many saves in a row (as from concurrent commands): the pin is always whole JSON, no .tmp left."""
    store = FilePinStore("root.example", tmp_path)

    async def saves() -> None:
        await asyncio.gather(*(store.save_pin({"size": n, "pad": "x" * 1000}) for n in range(50)))

    asyncio.run(saves())
    state = asyncio.run(store.load_pin())
    assert state is not None and state["pad"] == "x" * 1000
    assert [p.name for p in store.path.parent.iterdir() if p.suffix == ".tmp"] == []
