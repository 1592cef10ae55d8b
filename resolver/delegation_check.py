"""Whether each prefix this node serves is delegated to it by a parent (issue 14 item 1, D-127).

A node under a parent (``parent`` in ``root.toml``) serves prefixes that only its parents can send
clients to: a prefix whose delegation is missing, points at another log, or was never written is
served here in vain. For each served prefix ``P`` the node asks ``parent`` for ``0.na/P`` and follows the
answers' referral hints (:func:`rootclient.client.follow_hints`) to the node that holds that record, so
``parent`` may be the node that delegated ``P`` or any node above it: one URL covers prefixes delegated
by different parents under one top node. ``P`` is *delegated* when that record's ``HS_SITE`` delegation
(D-075) names this node's log key; *missing* when the record is absent, holds no delegation or names
another log; *unknown* when no answer could be had. Checked at start, every ``parent_check_s`` seconds
and at once after a reload; each prefix is judged on its own, so ``/healthz`` names the prefix that
lacks its delegation while the node goes on serving the others.

An operational check, not a proof: the answers are read without verifying them (this node holds no
policy for its parent). What protects clients is that they verify every hop themselves (D-076); this
tells the operator early that clients starting at the top will not reach a prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Gauge

from chain_lite.errors import ChainError
from chain_lite.note import VerifierKey
from chain_lite.registry import Record, prefix_handle
from rootclient import codecs
from rootclient.client import NodeClients, follow_hints
from rootclient.errors import ClientError, ProtocolError

log = logging.getLogger(__name__)

State = Literal["top", "pending", "delegated", "missing", "unknown"]
"""``top``: no parent, nothing to check; ``pending``: not checked yet; then the outcome of the last check."""
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PrefixStatus:
    prefix: str
    state: State
    detail: str

    @property
    def problem(self) -> str | None:
        """The ``/healthz`` problem line, for a prefix clients cannot be sent to (or may not be)."""
        if self.state in ("missing", "unknown"):
            return f"prefix {self.prefix}: {self.detail}"
        return None

    def as_json(self) -> dict[str, str]:
        return {"prefix": self.prefix, "delegation": self.state, "detail": self.detail}


async def check_prefix(  # noqa: PLR0911 (one return per verdict)
    nodes: NodeClients, parent: str, prefix: str, log_vkey: VerifierKey
) -> PrefixStatus:
    """The delegation of ``prefix`` as found from ``parent`` (module docstring); never raises for what the
    nodes answer."""
    handle = prefix_handle(prefix)
    try:
        client, answer, _ = await follow_hints(await nodes.get(parent), handle, nodes)
        proof = codecs.resolution_from_json(answer)
        record = None if proof.record is None else Record.decode(proof.record)
    except ClientError as exc:
        return PrefixStatus(prefix, "unknown", f"cannot ask the parent: {exc.message}")
    except (ProtocolError, ChainError) as exc:
        return PrefixStatus(prefix, "unknown", f"the answer for {handle} is unreadable: {exc}")
    where = f"{client.base_url} (log {proof.receipt.checkpoint.checkpoint.origin})"
    if record is None:
        return PrefixStatus(prefix, "missing", f"{where} holds no {handle}: not delegated to this node")
    try:
        delegation = record.delegation()
    except ChainError as exc:
        return PrefixStatus(prefix, "missing", f"{handle} at {where} holds a malformed delegation: {exc}")
    if delegation is None:
        return PrefixStatus(prefix, "missing", f"{handle} at {where} is not delegated (it has no HS_SITE)")
    if VerifierKey.parse(delegation.vkey) != log_vkey:
        return PrefixStatus(
            prefix, "missing",
            f"{handle} at {where} delegates it to log {delegation.vkey}, not to this node's log {log_vkey}",
        )  # fmt: skip
    return PrefixStatus(prefix, "delegated", f"delegated by {where} to {', '.join(delegation.urls)}")


class DelegationCheck:
    """The served prefixes and the last verdict on each (module docstring); :meth:`run` is the node's
    background task when it has a parent. ``gauge`` (labelled ``prefix``) is 1 while a prefix is
    delegated here and 0 while it is missing or unknown."""

    def __init__(
        self,
        parent: str,
        prefixes: Sequence[str],
        log_vkey: VerifierKey,
        interval_s: float,
        gauge: Gauge | None = None,
    ) -> None:
        self.parent = parent
        self.log_vkey = log_vkey
        self.interval_s = interval_s
        self.gauge = gauge
        self._statuses: dict[str, PrefixStatus] = {}
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.set_prefixes(prefixes)

    def set_prefixes(self, prefixes: Sequence[str]) -> None:
        """Serve ``prefixes`` from now on (a reload): new ones are checked at once. May be called from
        another thread than the one running :meth:`run` (the reload runs in a worker thread)."""
        start: State = "pending" if self.parent else "top"
        detail = "not checked yet" if self.parent else "no parent: this is a top node"
        kept = {p: self._statuses.get(p) or PrefixStatus(p, start, detail) for p in prefixes}
        for gone in self._statuses.keys() - kept.keys():
            if self.gauge is not None:
                with contextlib.suppress(KeyError):
                    self.gauge.remove(gone)
        self._statuses = kept  # one assignment: readers see the old dict or the new one
        if self._loop is not None:
            # Thread crossing: the reload's worker thread wakes the check loop on its event loop.
            self._loop.call_soon_threadsafe(self._kick.set)

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._statuses)

    def statuses(self) -> list[PrefixStatus]:
        return list(self._statuses.values())

    def problems(self) -> list[str]:
        return [p for s in self._statuses.values() if (p := s.problem) is not None]

    async def check_all(self, nodes: NodeClients) -> None:
        """One round: every served prefix checked, each verdict kept (a change is logged once)."""
        for prefix in self.prefixes:
            status = await check_prefix(nodes, self.parent, prefix, self.log_vkey)
            old = self._statuses.get(prefix)
            if prefix not in self._statuses:
                continue  # dropped by a reload meanwhile
            self._statuses[prefix] = status
            if self.gauge is not None:
                self.gauge.labels(prefix=prefix).set(1 if status.state == "delegated" else 0)
            if old is None or (old.state, old.detail) != (status.state, status.detail):
                if status.state == "delegated":
                    log.info("prefix %s: %s", prefix, status.detail)
                else:
                    log.warning("prefix %s is not delegated to this node: %s", prefix, status.detail)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``interval_s`` seconds, and at once when :meth:`set_prefixes` is called, until
        ``stop``; a round under way is abandoned then (a parent that does not answer never holds up the
        shutdown). The node runs it only when it has a parent."""
        self._loop = asyncio.get_running_loop()
        nodes = NodeClients(timeout=TIMEOUT_S)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self._kick.clear()
                checking = asyncio.ensure_future(self._round(nodes))
                await asyncio.wait([checking, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not checking.done():
                    checking.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await checking
                    return
                kicked = asyncio.ensure_future(self._kick.wait())
                await asyncio.wait(
                    [kicked, stopping], timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                kicked.cancel()
        finally:
            stopping.cancel()
            self._loop = None
            await nodes.aclose()

    async def _round(self, nodes: NodeClients) -> None:
        try:
            await self.check_all(nodes)
        except Exception:
            # Our own failure (every answer of a node is a verdict): logged, and tried again next round.
            log.exception("checking the delegations failed; trying again in %g s", self.interval_s)
