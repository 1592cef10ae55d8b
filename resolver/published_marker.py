"""The largest log size any worker of one ``root run --workers N`` serves, shared through memory.

Each worker builds its own published view and moves it forward on its own (woken by its sequencer, or
polling every :data:`resolver.reads.POLL_INTERVAL_S`), so without a shared marker two consecutive answers
from two workers could go back in time: the second worker may still serve the checkpoint before. The
marker closes that gap (decisions D-116):

* a worker raises the marker to a view's size *before* it swaps that view in (the view was read from a
  committed checkpoint, so any later read of the database sees it too);
* every request first compares its worker's view with the marker (one memory read) and, when behind,
  refreshes the view before answering (:meth:`resolver.reads.RootNode.caught_up`).

So an answer as of size S from any worker means the marker was at least S before it left, and every
later request, on any worker, is answered from a view of at least S.

The cell is an anonymous shared mapping made before the workers are forked (each inherits it). It holds
one aligned 64-bit integer, read and written through ``ctypes`` as one machine word (a single load or
store on x86-64 and AArch64, so a reader never sees half of an update); writers raise it under one lock
so two raises cannot leave the smaller value last.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing


class PublishedMarker:
    """A monotonic log size shared by the processes forked after it was made."""

    def __init__(self) -> None:
        # Anonymous and MAP_SHARED (mmap's default for -1): forked children share the same page.
        self._memory = mmap.mmap(-1, mmap.PAGESIZE)
        self._cell = ctypes.c_int64.from_buffer(self._memory)
        # A process-shared semaphore in inherited memory: the fork context makes it usable without pickling.
        self._lock = multiprocessing.get_context("fork").Lock()

    @property
    def size(self) -> int:
        """The largest size any worker has served or is about to serve (0 before the first view)."""
        return int(self._cell.value)

    def raise_to(self, size: int) -> None:
        """Make the marker at least ``size`` (never lower it). Blocking for a moment (a process-shared
        lock): call it where the caller may block (the view's builder runs in a worker thread)."""
        with self._lock:
            self._cell.value = max(self._cell.value, size)
