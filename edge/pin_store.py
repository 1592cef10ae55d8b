"""The gateway's pin store: the light client's state and equivocation evidence in ``gateway.db``.

:class:`rootclient.pinned_log.PinnedLog` does the light-client work (DESIGN §5); this adapter only
keeps its state under ``meta['light_client']`` and evidence under ``meta['evidence']`` (which stops
sync and shows in status, health and metrics). The syncer and the registry cache share this store's
connection for their own tables, so one pin and one connection serve both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
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

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None

    async def db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with this component's own SQLite connection, in a worker thread (it blocks)."""

        def call() -> T:
            if self._conn is None:
                self._conn = store.connect(self.db_path)
            return fn(self._conn)

        return await asyncio.to_thread(call)

    async def load_pin(self) -> dict[str, Any] | None:
        saved = await self.db(lambda c: store.read_meta(c, PIN_KEY))
        if saved is None:
            return None
        try:
            state = json.loads(saved)
        except ValueError as exc:
            raise PinError(f"{self.db_path} meta['{PIN_KEY}'] is not JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise PinError(f"{self.db_path} meta['{PIN_KEY}'] is not a JSON object")
        return state

    async def save_pin(self, state: dict[str, Any]) -> None:
        text = json.dumps(state)
        await self.db(lambda c: store.write_meta(c, PIN_KEY, text))

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        text = json.dumps(evidence)
        await self.db(lambda c: store.write_meta(c, EVIDENCE_KEY, text))
        log.error("EQUIVOCATION EVIDENCE stored (gateway status shows it): %s", evidence.get("reason"))
        return f"{self.db_path} meta['{EVIDENCE_KEY}']"

    async def has_evidence(self) -> bool:
        return await self.db(lambda c: store.read_meta(c, EVIDENCE_KEY)) is not None
