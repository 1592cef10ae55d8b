"""Following delegations for clients that cannot (issue 14 item 3, D-076): the Handle proxy role.

A Handle client reading ``/api/handles/88.123.99.7/PUMP-1`` from the top node gets the enterprise
node's record, as Handle's proxy servers resolve for web clients. The node starts from the delegation
its own published registry holds for the identifier and follows it with the one root client: every
hop verified under the policy its delegation commits to. The follower is a warm client for the node's
lifetime (one :class:`rootclient.client.NodeClients`, closed with the app, D-130): its connections to
the delegated nodes, one pinned log per child log (in memory: a restart pins afresh, as a first lookup
does) and the delegations they proved, reused for their TTL (D-091), so a lookup under a known
delegation asks only the node that answers.

Bounds: ``max_hops`` nodes and ``timeout_s`` for the whole lookup; each result is cached by the TTL of
what it proved (the smallest ``ttl`` of the record's values, capped by ``max_ttl_s``; an absence or
a failure for ``NEGATIVE_TTL_S``), least recently used out beyond ``capacity`` entries, and a result
reached through delegations is served only while the follower would still use those delegations
(:meth:`~rootclient.client.NodeClients.still_reuses`), so a changed delegation is seen within its TTL
(at most ``max_ttl_s``) however long the record's own TTL is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from chain_lite.registry import Delegation
from resolver.errors import ResolverError
from rootclient.client import MAX_HOPS, Hop, NodeClients
from rootclient.errors import RootClientError

log = logging.getLogger(__name__)
NEGATIVE_TTL_S = 30.0
"""How long an absence or a failed lookup is remembered (a dead child is not asked for every request)."""


class ReferralFailed(ResolverError):
    """The delegated node could not be followed or did not prove its answer (Handle code 2, HTTP 502)."""

    status = 502
    handle_code = 2

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class MemoryPinStore:
    """A :class:`rootclient.pinned_log.PinStore` in memory. Concurrent lookups may save in any order:
    a state whose pinned checkpoint is smaller than the kept one is ignored, so the pin never moves
    backwards. Evidence is logged at ERROR and kept for ``/healthz``-style inspection."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.evidence: list[dict[str, Any]] = []

    async def load_pin(self) -> dict[str, Any] | None:
        return self.state

    async def save_pin(self, state: dict[str, Any]) -> None:
        if self.state is None or _pinned_size(state) >= _pinned_size(self.state):
            self.state = state

    async def save_evidence(self, evidence: dict[str, Any]) -> str:
        self.evidence.append(evidence)
        log.error("a delegated log showed two inconsistent checkpoints: %s", evidence.get("reason"))
        return f"memory (evidence {len(self.evidence)})"


def _pinned_size(state: dict[str, Any]) -> int:
    pinned = state.get("pinned")
    if not isinstance(pinned, str):
        return 0
    try:
        return SignedCheckpoint.parse(pinned.encode()).checkpoint.size
    except ChainError:
        return 0


class ReferralFollower:
    """Follows a node's own delegations for its Handle API, bounded and cached (module docstring); its
    owner closes it (:meth:`aclose`) when the node stops."""

    def __init__(
        self,
        origin: str,
        *,
        max_hops: int = MAX_HOPS,
        timeout_s: float = 10.0,
        max_ttl_s: float = 300.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin
        self.max_hops = max_hops
        self.timeout_s = timeout_s
        self.max_ttl_s = max_ttl_s
        self.capacity = capacity
        self.clock = clock
        self._pins: dict[str, MemoryPinStore] = {}
        self.nodes = NodeClients(pins=self._pin, timeout=timeout_s, referral_ttl_s=max_ttl_s, clock=clock)
        """The warm client: connections, the child logs' pins (from :attr:`_pins`), proven delegations."""
        self._cache: OrderedDict[bytes, tuple[float, tuple[Hop, ...] | ReferralFailed]] = OrderedDict()

    def _pin(self, origin: str) -> MemoryPinStore:
        return self._pins.setdefault(origin, MemoryPinStore())

    async def aclose(self) -> None:
        """Close the connections to the delegated nodes."""
        await self.nodes.aclose()

    async def follow(self, delegation: Delegation, identifier: str) -> tuple[Hop, ...]:
        """The hops from ``delegation`` (this node's own, proven in its published view) to the node that
        answers for ``identifier`` (canonical); raises :class:`ReferralFailed`."""
        key = hashlib.sha256(delegation.encode() + b"\0" + identifier.encode()).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            if isinstance(cached[1], ReferralFailed):
                raise ReferralFailed(cached[1].message, cached[1].kind)
            if self.nodes.still_reuses(delegation, identifier, cached[1]):
                return cached[1]
        try:
            hops = await asyncio.wait_for(
                self.nodes.resolve(
                    None, identifier, None, max_hops=self.max_hops, start=delegation, visited=(self.origin,)
                ),
                self.timeout_s,
            )
        except TimeoutError:
            took = f"following the delegation of {delegation.prefix} took more than {self.timeout_s:g} s"
            failed = ReferralFailed(took, "timeout")
            self._remember(key, now + NEGATIVE_TTL_S, failed)
            raise failed from None
        except (RootClientError, ChainError) as exc:
            kind = getattr(exc, "kind", type(exc).__name__)
            failed = ReferralFailed(f"following the delegation of {delegation.prefix} failed: {exc}", kind)
            log.warning("referral for %s failed (%s): %s", identifier, kind, exc)
            self._remember(key, now + NEGATIVE_TTL_S, failed)
            raise failed from exc
        self._remember(key, now + self._ttl(hops), hops)
        return hops

    def _ttl(self, hops: tuple[Hop, ...]) -> float:
        record = hops[-1].verified.proven.record
        if record is None:
            return NEGATIVE_TTL_S
        return min(self.max_ttl_s, *(float(v.ttl) for v in record.values))

    def _remember(self, key: bytes, expires: float, value: tuple[Hop, ...] | ReferralFailed) -> None:
        self._cache[key] = (expires, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
