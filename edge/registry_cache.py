"""Device keys from the root's registry, verified and cached with their proofs.

A reading from a signer the gateway does not know makes it ask the root (``/v1/resolve``), verify the
answer as a light client (map proof, map-head receipt, checkpoint consistent with the pin; see
:mod:`chain_lite.resolution`) and store the key in ``devices`` (origin ``registry``) with the whole
answer in ``resolutions``, so the local API can serve resolution *with proofs* while the root is down.
Keys fetched this way are re-checked every ``refresh_s``; a record that is gone (or lost its key)
removes the key, so a revoked device stops being accepted. Locally provisioned keys are never touched.

A lookup ends one of three ways (:class:`Lookup`): the key is **found**; its absence is **proven** (a
verified answer without a key: the only thing that makes ``unknown-device`` final, and cached for
``absent_ttl_s``); or it **failed** (root away, an answer that does not verify under the trust policy).
A failure is a health problem of the gateway, not a verdict on the reading: it is reported
(:attr:`RegistryCache.failing`, one ERROR line when lookups start failing, one INFO line when they work
again) and the signer is not asked about again for ``retry_s``. The problem lasts until a lookup
succeeds, or :data:`FAILING_FOR_S` after the last failure: a device that keeps sending is asked about
every ``retry_s``, so a lasting cause (a wrong policy) stays reported, and a blip of the root is not
reported forever when no device needs a lookup any more.

A key registered at a delegated node is fetched by following the delegations the root's proven answer
gives (D-076), each child log verified under the policy its delegation commits to, with a pin of its
own in ``gateway.db`` (:meth:`edge.pin_store.SqlitePinStore.for_log`). The cache is a warm client for
the gateway's lifetime (:attr:`RegistryCache.referrals`, closed by :meth:`RegistryCache.aclose`,
D-130): one connection pool per delegated node, each child log's pin loaded from ``gateway.db`` once
and saved there whenever it moves, and the delegations proven on the way reused for their TTL (D-091),
so a lookup under a known delegation asks the root and the node that answers, nothing in between.

Lookups made for incoming readings (:meth:`RegistryCache.lookup`) are bounded per gateway, so readings
from made-up signers cannot turn the gateway into a load generator against the root nor delay anyone:
at most ``max_concurrent`` at once and ``lookups_per_s`` on average (a token bucket of ``burst``); one
over the bound is *deferred*. Either way the reading stays held in the gateway's ``held`` table and the
gateway asks again (:meth:`RegistryCache.may_retry`, :meth:`RegistryCache.has_room`: its retry task,
:mod:`edge.ingest`), within the same bounds, until the lookup finds the key or proves absence (D-059).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from chain_lite.errors import ChainError
from chain_lite.keys import public_der
from chain_lite.resolution import referral_of
from edge.pin_store import SqlitePinStore
from rootclient.client import AsyncRootClient, NodeClients
from rootclient.codecs import proof_from_json
from rootclient.errors import ProtocolError, RootClientError
from rootclient.pinned_log import Older, PinnedLog
from runtime.clock import now_ms

log = logging.getLogger(__name__)
REFRESH_S = 3600.0
RETRY_UNKNOWN_S = 30.0
"""After a failed lookup, the signer is not asked about again for this long (its readings stay held and
are retried after it)."""
FAILING_FOR_S = 4 * RETRY_UNKNOWN_S
"""How long a failed lookup keeps the gateway's health degraded when no lookup follows."""
ABSENT_TTL_S = 600.0
"""A proven absence is trusted this long: a device registered meanwhile is accepted after at most this."""
MAX_CONCURRENT = 4
LOOKUPS_PER_S = 10.0
BURST = 20


class Lookup(enum.Enum):
    FOUND = "found"
    ABSENT = "absent"
    """A verified answer proves the registry has no key for the signer."""
    FAILED = "failed"


class RegistryCache:
    def __init__(
        self,
        root: AsyncRootClient,
        pinned: PinnedLog,
        pins: SqlitePinStore,
        *,
        refresh_s: float = REFRESH_S,
        max_concurrent: int = MAX_CONCURRENT,
        lookups_per_s: float = LOOKUPS_PER_S,
        burst: int = BURST,
        absent_ttl_s: float = ABSENT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1 or burst < 1 or lookups_per_s <= 0:
            raise ValueError(f"lookup bounds must be positive: {max_concurrent}, {burst}, {lookups_per_s}")
        self.root = root
        self.pinned = pinned
        self.pins = pins
        self.referrals = NodeClients(pins=pins.for_log, clock=clock)
        """The warm client of the delegated nodes (their connections, pins and proven delegations)."""
        self.refresh_s = refresh_s
        self.max_concurrent = max_concurrent
        self.lookups_per_s = lookups_per_s
        self.burst = burst
        self.absent_ttl_s = absent_ttl_s
        self.clock = clock
        self._inflight: dict[str, asyncio.Future[Lookup]] = {}
        self._failed_until: dict[str, float] = {}
        self._absent_until: dict[str, float] = {}
        self._active = 0
        self._tokens = float(burst)
        self._filled_at = clock()
        self.retry_s = RETRY_UNKNOWN_S
        self.protocol_errors = 0
        """Root answers of the wrong shape in this run (e.g. a malformed proof): retried, never evidence."""
        self.lookups = 0
        """Lookups sent to the root in this run."""
        self.deferred = 0
        """Lookups not made in this run because the bound was reached (the reading stayed held)."""
        self._failing: tuple[str, float] | None = None

    async def aclose(self) -> None:
        """Close the connections to the delegated nodes (the gateway's shutdown, once no lookup runs)."""
        await self.referrals.aclose()

    @property
    def failing(self) -> str | None:
        """Why lookups fail (readings of new devices are held), until one succeeds or for
        :data:`FAILING_FOR_S` after the last failure; None when they work."""
        if self._failing is None or self.clock() - self._failing[1] > FAILING_FOR_S:
            return None
        return self._failing[0]

    def proven_absent(self, identifier: str) -> bool:
        """True while a verified answer said the registry has no key for ``identifier`` (negative cache).

        Called on the writer thread too (to judge a reading without a key): one dict read, atomic under
        the GIL; a stale answer costs one more hold or one more lookup, never a wrong verdict."""
        return self._absent_until.get(identifier, float("-inf")) > self.clock()

    async def fetch(self, identifier: str) -> bool:
        """Fetch and verify ``identifier``'s key, unbounded (the hourly refresh, tests); True when a key
        is now cached. One lookup per signer at a time: concurrent callers share it."""
        return await self._shared(identifier) is Lookup.FOUND

    async def lookup(self, identifier: str) -> bool:
        """A bounded lookup for an incoming reading; True when its signer can now be judged (key found,
        or absence proven), False when the lookup failed, was tried moments ago without success, or
        was deferred by the bound (the reading stays held)."""
        if self.proven_absent(identifier):
            return True
        running = self._inflight.get(identifier)
        if running is not None:
            return await running is not Lookup.FAILED
        if self.clock() < self._failed_until.get(identifier, float("-inf")):
            return False  # failed moments ago: do not ask the root again for every reading
        if self._active >= self.max_concurrent or not self._take_token():
            self.deferred += 1
            return False
        self._active += 1
        try:
            return await self._shared(identifier) is not Lookup.FAILED
        finally:
            self._active -= 1

    def may_retry(self, identifier: str) -> bool:
        """Whether asking about ``identifier`` again now may settle its held readings: no lookup of it
        runs, and none failed within ``retry_s`` (a proven absence settles them at once)."""
        if identifier in self._inflight:
            return False
        return self.clock() >= self._failed_until.get(identifier, float("-inf"))

    def has_room(self) -> bool:
        """Whether a :meth:`lookup` started now would be made, not deferred by the bounds."""
        return self._active < self.max_concurrent and self._refill() >= 1.0

    def _refill(self) -> float:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * self.lookups_per_s)
        self._filled_at = now
        return self._tokens

    def _take_token(self) -> bool:
        if self._refill() < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _shared(self, identifier: str) -> Lookup:
        running = self._inflight.get(identifier)
        if running is not None:
            return await running
        future: asyncio.Future[Lookup] = asyncio.get_running_loop().create_future()
        self._inflight[identifier] = future
        self.lookups += 1
        try:
            result = await self._fetch(identifier)
        except (RootClientError, ChainError) as exc:
            if isinstance(exc, ProtocolError):
                self.protocol_errors += 1
            result = Lookup.FAILED
            self._failed(identifier, exc)
        except BaseException as exc:
            # Whoever shares this lookup must not wait forever: they see what happened to it.
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
            raise
        finally:
            del self._inflight[identifier]
        if result is not Lookup.FAILED and self.failing is not None:
            log.info("registry lookups work again (%s answered verifiably)", identifier)
            self._failing = None
        future.set_result(result)
        return result

    def _failed(self, identifier: str, exc: Exception) -> None:
        """One ERROR line when lookups start failing (not one per reading or signer), then DEBUG."""
        self._failed_until[identifier] = self.clock() + self.retry_s
        if self.failing is None:
            log.error(
                "registry lookups failing (lookup of %s: %s): readings of devices without a key here are "
                "held, not accepted, until the root answers verifiably",
                identifier,
                exc,
            )
        else:
            log.debug("registry lookup of %s failed: %s", identifier, exc)
        self._failing = (f"lookup of {identifier}: {exc}", self.clock())

    async def _fetch(self, identifier: str) -> Lookup:
        answer = await self.root.resolve(identifier)
        proof = proof_from_json(identifier, answer.get("proof"))
        # Older.USE: the syncer moves the same pin concurrently, so an answer made just before the pin
        # moved carries an older checkpoint; it is still proven consistent with the pin before use (a
        # fork is evidence), and revocations are caught by refresh_loop.
        proven = (await self.pinned.verify_resolution(proof, older=Older.USE)).proven
        delegation = referral_of(proven, None)
        if delegation is not None:
            # Registered at a delegated node: follow the proven delegation, each child log verified
            # under the policy the delegation commits to, with a pin of its own (D-076, issue 14 item 5).
            hops = await self.referrals.resolve(
                None, identifier, None, start=delegation, visited=(self.pinned.origin,)
            )
            proven = hops[-1].verified.proven
            answer = {**answer, "hops": [hop.as_json() for hop in hops]}
        key = None if proven.record is None else proven.record.signing_key()
        now = now_ms()
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
            self._absent_until[identifier] = self.clock() + self.absent_ttl_s
            # DEBUG: made-up signers are a peer's doing; they are counted as unknown-device rejects.
            log.debug("%s has no key in the registry (proven as of log size %d)", identifier, proven.epoch)
            return Lookup.ABSENT
        self._absent_until.pop(identifier, None)
        log.info("key of %s fetched from the registry (proven as of log size %d)", identifier, proven.epoch)
        return Lookup.FOUND

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
