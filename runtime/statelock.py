"""State directories: one daemon each (:func:`hold`), and made all or nothing (:func:`initialising`).

One daemon per state directory: an exclusive ``flock`` on ``STATE/.lock``, held for the process's life.

A daemon's CLI takes it before anything else touches the directory or the network: a second
``edgeroot gateway run`` on the same state would otherwise open the store and connect to the broker
with the same MQTT client id, knocking the running gateway off before it died of something else.
The lock file holds the holder's PID, so the refusal can say who holds it; the lock itself is the
``flock`` (released by the kernel when the process dies, however it dies), never the file's presence,
so a PID left behind by a killed process is harmless.

Taken by ``gateway run``, ``witness run`` and ``bridge run --state``. Not by ``root run``: several
``root run`` processes may share one database and state directory on purpose (all serve the API, one
sequences; the sequencer's own lock, :class:`resolver.sequencer.SequencerLock`, keeps that role to one).

All or nothing: ``init`` commands and ``keygen`` write their files inside :func:`initialising`, which
checks the directory first (a file in its place, a parent that is a file, no write permission: one line
naming the path) and, when anything fails on the way, removes what it created, so a failed ``init`` never
leaves a half-made state that the next ``init`` would refuse as initialised.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class StateDirError(Exception):
    """A state (or key) directory cannot be used: missing, not a directory, not writable, or in use."""


class StateInUse(StateDirError):
    """Another process holds the state directory's lock; ``pid`` is the one written in the lock file."""

    def __init__(self, state: Path, daemon: str, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "another process"
        super().__init__(
            f"{state} is in use by {holder} (another `edgeroot {daemon} run`?): "
            "one daemon per state directory; stop it first"
        )
        self.state = state
        self.pid = pid


def _holder(fd: int) -> int | None:
    """The PID the holder wrote (None while it has not written it yet, or if it is not a number)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


@contextlib.contextmanager
def hold(state: Path, daemon: str) -> Iterator[None]:
    """Hold ``state``'s lock until the block ends (or the process dies); raises :class:`StateInUse` when
    another process holds it, :class:`StateDirError` when ``state`` is not a writable directory.

    Never creates ``state`` (a daemon runs on a directory its ``init`` made) and touches nothing in it
    but ``.lock``. ``daemon`` names the command for the message (``gateway``, ``witness``, ``bridge``).
    """
    path = state / LOCK_NAME
    try:
        # O_NOFOLLOW: the PID is written into the file, never through a planted symlink.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise StateDirError(f"{state} is not a directory (run `edgeroot {daemon} init` first?)") from exc
        raise StateDirError(f"cannot lock {state}: {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StateInUse(state, daemon, _holder(fd)) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the PID of a process that has let go would only mislead
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def initialising(directory: Path) -> Iterator[None]:
    """Create ``directory`` (and missing parents) if needed, check it is a writable directory, and run
    the block; if the block raises, remove every entry it added and the directories made here, then
    re-raise (an :class:`OSError` as :class:`StateDirError`). Entries that were there before are kept."""
    if directory.exists() and not directory.is_dir():
        raise StateDirError(f"{directory} is not a directory")
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for made in missing:  # deepest first: mkdir may have made the upper ones before it failed
            with contextlib.suppress(OSError):
                made.rmdir()
        raise StateDirError(f"cannot create {directory}: {_reason(exc)}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateDirError(f"{directory} is not writable by this user")
    before = set(os.listdir(directory))
    try:
        yield
    except BaseException as exc:
        for name in set(os.listdir(directory)) - before:
            entry = directory / name
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's refusal, not a message
            where = f"{exc.filename}: " if exc.filename else f"{directory}: "
            raise StateDirError(f"cannot write {where}{_reason(exc)}") from exc
        raise
