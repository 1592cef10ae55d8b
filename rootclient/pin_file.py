"""The CLI's pin store: one JSON file per log under the user's config directory.

The directory is ``$EDGEROOT_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/edgeroot``, else
``~/.config/edgeroot``; the pin of a log is ``pinned/<first 16 hex of SHA-256(origin)>.json`` and
evidence goes to ``evidence/<origin>-<unix time>.json`` beside ``pinned/`` (``-2``, ``-3``... before
``.json`` for more in the same second: evidence is never overwritten).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rootclient.errors import PinError


def config_dir() -> Path:
    explicit = os.environ.get("EDGEROOT_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "edgeroot"


def pin_file(origin: str, directory: Path | None = None) -> Path:
    name = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return (directory or config_dir()) / "pinned" / f"{name}.json"


class FilePinStore:
    """A :class:`rootclient.pinned_log.PinStore` for the log ``origin``, in ``directory`` (default
    :func:`config_dir`).

    The CLI runs one command at a time with nothing else on its loop, so the small file writes are
    done in place rather than in a worker thread. Two CLI processes may judge the same log at once: a
    command holds :meth:`locked` from loading the pin to saving it, so one process's update is never
    written over by another's older one (the pin never moves backwards) and each judges the other's pin.
    """

    def __init__(self, origin: str, directory: Path | None = None) -> None:
        self.origin = origin
        self.path = pin_file(origin, directory)

    async def load_pin(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise PinError(f"{self.path}: {exc}") from exc
        if not isinstance(state, dict):
            raise PinError(f"{self.path}: not a JSON object")
        return state

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the pin's lock file (``<pin>.lock``, an exclusive flock) for a whole load → judge → save."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    async def save_pin(self, state: dict[str, Any]) -> None:
        """Replace the pin atomically: a private temporary file, flushed to disk, renamed over it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(state, indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        """Write ``evidence`` to a new file (never over an earlier one, even from the same second)."""
        directory = self.path.parent.parent / "evidence"
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{self.origin.replace('/', '_')}-{int(time.time())}"
        for n in itertools.count(1):
            path = directory / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
            try:
                with path.open("x") as f:
                    f.write(json.dumps(evidence, indent=1))
            except FileExistsError:
                continue
            return str(path)
        raise AssertionError("unreachable: itertools.count never ends")
