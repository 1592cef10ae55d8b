"""Device keys from the root's registry, verified and cached with their proofs.

A reading from a signer the gateway does not know makes it ask the root (``/v1/resolve``), verify the
answer as a light client (map proof, map-head receipt, checkpoint consistent with the pin; see
:mod:`chain_lite.resolution`) and store the key in ``devices`` (origin ``registry``) with the whole
answer in ``resolutions``, so the local API can serve resolution *with proofs* while the root is down.
Keys fetched this way are re-checked every ``refresh_s``; a record that is gone (or lost its key)
removes the key, so a revoked device stops being accepted. Locally provisioned keys are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from chain_lite.errors import ChainError
from chain_lite.keys import public_der
from edge.pin_store import SqlitePinStore
from rootclient.client import AsyncRootClient
from rootclient.codecs import proof_from_json
from rootclient.errors import ProtocolError, RootClientError
from rootclient.pinned_log import Older, PinnedLog

log = logging.getLogger(__name__)
REFRESH_S = 3600.0
RETRY_UNKNOWN_S = 30.0
"""After a failed lookup, readings of that signer are quarantined without asking again for this long."""


class RegistryCache:
    def __init__(
        self, root: AsyncRootClient, pinned: PinnedLog, pins: SqlitePinStore, *, refresh_s: float = REFRESH_S
    ) -> None:
        self.root = root
        self.pinned = pinned
        self.pins = pins
        self.refresh_s = refresh_s
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._failed_until: dict[str, float] = {}
        self.retry_s = RETRY_UNKNOWN_S
        self.protocol_errors = 0
        """Root answers of the wrong shape in this run (e.g. a malformed proof): retried, never evidence."""

    async def fetch(self, identifier: str) -> bool:
        """Fetch and verify ``identifier``'s key; True when a key is now cached. One lookup per signer
        at a time: concurrent callers share it (and then resubmit in their arrival order)."""
        running = self._inflight.get(identifier)
        if running is not None:
            return await running
        if time.monotonic() < self._failed_until.get(identifier, 0.0):
            return False  # looked up moments ago without success: do not stall every reading on it
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[identifier] = future
        try:
            result = await self._fetch(identifier)
        except (RootClientError, ChainError) as exc:
            if isinstance(exc, ProtocolError):
                self.protocol_errors += 1
            log.warning("registry lookup of %s failed: %s", identifier, exc)
            result = False
        finally:
            del self._inflight[identifier]
        if not result:
            self._failed_until[identifier] = time.monotonic() + self.retry_s
        future.set_result(result)
        return result

    async def _fetch(self, identifier: str) -> bool:
        answer = await self.root.resolve(identifier)
        proof = proof_from_json(identifier, answer.get("proof"))
        # Older.USE: the syncer moves the same pin concurrently, so an answer made just before the pin
        # moved carries an older checkpoint; it is still proven consistent with the pin before use (a
        # fork is evidence), and revocations are caught by refresh_loop.
        proven = (await self.pinned.verify_resolution(proof, older=Older.USE)).proven
        key = None if proven.record is None else proven.record.signing_key()
        now = time.time_ns() // 1_000_000
        text = json.dumps(answer)

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO resolutions (identifier, answer, fetched_ms) VALUES (?, ?, ?) ON CONFLICT "
                "(identifier) DO UPDATE SET answer = excluded.answer, fetched_ms = excluded.fetched_ms",
                (proven.identifier, text, now),
            )
            if key is None:
                conn.execute(
                    "DELETE FROM devices WHERE identifier = ? AND origin = 'registry'", (proven.identifier,)
                )
            else:
                conn.execute(
                    "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES (?, ?, 'registry', ?) "
                    "ON CONFLICT (identifier) DO UPDATE SET key = excluded.key, "
                    "fetched_ms = excluded.fetched_ms WHERE devices.origin = 'registry'",
                    (proven.identifier, public_der(key), now),
                )

        await self.pins.db(save)
        if key is None:
            log.warning("%s has no key in the registry (proven as of log size %d)", identifier, proven.epoch)
        else:
            log.info(
                "key of %s fetched from the registry (proven as of log size %d)", identifier, proven.epoch
            )
        return key is not None

    async def refresh_loop(self, stop: asyncio.Event, forget: Callable[[str], Awaitable[None]]) -> None:
        """Re-check registry-sourced keys every ``refresh_s`` (revocations and rotations)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh_s)
            if stop.is_set():
                return
            rows = await self.pins.db(
                lambda c: c.execute("SELECT identifier FROM devices WHERE origin = 'registry'").fetchall()
            )
            for (identifier,) in rows:
                await self.fetch(identifier)
                await forget(identifier)
