"""The gateway's pin store: the light client's state and equivocation evidence in ``gateway.db``.

:class:`rootclient.pinned_log.PinnedLog` does the light-client work (DESIGN §5); this adapter only
keeps its state under ``meta['light_client']`` and evidence under ``meta['evidence']`` (which stops
sync and shows in status, health and metrics). The syncer and the registry cache share this store's
connection for their own tables, so one pin and one connection serve both.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edge import store
from rootclient.errors import PinError

log = logging.getLogger(__name__)
T = TypeVar("T")
PIN_KEY = "light_client"
EVIDENCE_KEY = "evidence"


class SqlitePinStore:
    """A :class:`rootclient.pinned_log.PinStore` over the gateway's SQLite store at ``db_path``."""

    def __init__(
        self, db_path: Path, *, pin_key: str = PIN_KEY, shared: SqlitePinStore | None = None
    ) -> None:
        self.db_path = db_path
        self.pin_key = pin_key
        self._shared = shared
        self._conn: sqlite3.Connection | None = None
        self._conn_lock = threading.Lock()
        self._evidence_lock = asyncio.Lock()

    def for_log(self, origin: str) -> SqlitePinStore:
        """The pin of another log in the same file (a delegated node's, reached through a referral:
        D-076), under ``meta['pin.<origin>']``, sharing this store's connection and evidence."""
        return SqlitePinStore(self.db_path, pin_key=f"{PIN_KEY}.{origin}", shared=self)

    async def db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with this component's own SQLite connection, in a worker thread (it blocks)."""
        if self._shared is not None:
            return await self._shared.db(fn)

        def call() -> T:
            # One function at a time on the connection: lookups run in several worker threads, and a
            # read left open by one while another writes made SQLite answer "database is locked" at
            # once (a write on a stale WAL snapshot is refused, not waited for).
            with self._conn_lock:
                if self._conn is None:
                    self._conn = store.connect(self.db_path)
                return fn(self._conn)

        return await asyncio.to_thread(call)

    async def load_pin(self) -> dict[str, Any] | None:
        saved = await self.db(lambda c: store.read_meta(c, self.pin_key))
        if saved is None:
            return None
        try:
            state = json.loads(saved)
        except ValueError as exc:
            raise PinError(f"{self.db_path} meta['{self.pin_key}'] is not JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise PinError(f"{self.db_path} meta['{self.pin_key}'] is not a JSON object")
        return state

    async def save_pin(self, state: dict[str, Any]) -> None:
        text = json.dumps(state)
        await self.db(lambda c: store.write_meta(c, self.pin_key, text))

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        """Keep ``evidence``: the first under ``meta['evidence']`` (what status reads), any later one
        under ``meta['evidence.2']``, ``'evidence.3'``...; nothing is overwritten."""
        if self._shared is not None:
            return await self._shared.save_evidence(evidence)
        text = json.dumps(evidence)

        def keep(conn: sqlite3.Connection) -> str:
            for n in itertools.count(1):
                key = EVIDENCE_KEY if n == 1 else f"{EVIDENCE_KEY}.{n}"
                if store.read_meta(conn, key) is None:
                    store.write_meta(conn, key, text)
                    return key
            raise AssertionError("unreachable: itertools.count never ends")

        # The syncer and the registry cache both save evidence, each call in a worker thread of its
        # own: the lock makes the look-for-a-free-key-then-write one step.
        async with self._evidence_lock:
            key = await self.db(keep)
        log.error("EQUIVOCATION EVIDENCE stored (gateway status shows it): %s", evidence.get("reason"))
        return f"{self.db_path} meta['{key}']"

    async def has_evidence(self) -> bool:
        return await self.db(lambda c: store.read_meta(c, EVIDENCE_KEY)) is not None
