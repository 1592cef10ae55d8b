"""The root node's HTTP client: one async implementation, and a small synchronous face for the CLI.

:class:`AsyncRootClient` is the client: every request, every status check and every decode (through
:mod:`rootclient.codecs`) is written there once. The gateway uses it inside its event loop.
:class:`RootClient` is the same client for code that has no event loop (the CLI, test and benchmark
set-up): it owns a private loop (:class:`asyncio.Runner`) and runs the async methods on it, so there
is no second copy of the protocol. It must not be called from inside a running event loop.

Errors: :class:`~rootclient.errors.ClientError` when the node cannot be reached or answers with an
error (carrying the HTTP status and the Handle response code), :class:`~rootclient.errors.ProtocolError`
when an answer has the wrong shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import HttpxAiohttpClient

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.epcis_proof import IndexProof
from chain_lite.errors import ChainError, StaleCheckpoint
from chain_lite.policy import Policy
from chain_lite.registry import DELEGATION_TYPE, Delegation, canonical_identifier
from chain_lite.resolution import (
    NotDelegatedHere,
    PrefixProofError,
    ResolutionProof,
    home_prefixes,
    referral_of,
)
from rootclient import codecs, routes
from rootclient.errors import (
    ClientError,
    DeadChild,
    DelegationChanged,
    ForgedAnswer,
    ForgedDelegation,
    NotDelegated,
    PinError,
    ProtocolError,
    ReferralLoop,
    ReferralTooDeep,
)
from rootclient.pinned_log import Older, PinnedLog, PinStore, Verified

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    handle: str
    op: str
    request_id: str


def _json(response: httpx.Response, what: str) -> object:
    try:
        return response.json()
    except ValueError as exc:
        raise ProtocolError(what, f"answer ({response.status_code}) is not JSON") from exc


class AsyncRootClient:
    """A root node at ``base_url``; use as ``async with``. ``http`` may be supplied (its base URL must
    be the node's) so a caller can share or instrument the connection pool.

    By default the requests go through httpx's API over aiohttp's connection pool (D-090): with
    lookups in flight, httpx's own pool cost about 1.5 ms of CPU per request, aiohttp's about 0.4 ms.
    """

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, http: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or HttpxAiohttpClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRootClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(
        self, method: str, path: str, *, refusal_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send a request; an error status raises :class:`ClientError` unless ``refusal_ok``."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            # httpx-aiohttp maps only some of aiohttp's errors to httpx's (a malformed answer stays an
            # aiohttp.ClientResponseError): both are a node that cannot be asked, never an escape.
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400 and not refusal_ok:
            try:
                parsed = codecs.parse_error(response.json())
            except ValueError:
                parsed = None
            message, code = parsed or (response.text.strip()[:300], 2)
            raise ClientError(message, response.status_code, code)
        return response

    async def get_json(self, path: str, **params: Any) -> Any:
        """A GET answered with JSON, undecoded (for routes without a typed method, e.g. in tests)."""
        return _json(await self._send("GET", path, params=params or None), path)

    async def resolve(self, identifier: str, at: int | None = None) -> dict[str, Any]:
        """The ``/v1/resolve`` answer as JSON; :func:`codecs.resolution_from_json` decodes its proof."""
        params = None if at is None else {"at": at}
        answer = _json(
            await self._send("GET", routes.resolve(identifier), params=params), "resolution answer"
        )
        if not isinstance(answer, dict):
            raise ProtocolError("resolution answer", f"expected a JSON object, got {type(answer).__name__}")
        return answer

    async def history(self, identifier: str) -> dict[str, Any]:
        answer = _json(await self._send("GET", routes.history(identifier)), "history")
        if not isinstance(answer, dict):
            raise ProtocolError("history", f"expected a JSON object, got {type(answer).__name__}")
        return answer

    async def checkpoint(self) -> bytes:
        """The latest checkpoint's bytes as served (C2SP signed note with cosignatures)."""
        return (await self._send("GET", routes.CHECKPOINT)).content

    async def signed_checkpoint(self) -> SignedCheckpoint:
        """The latest checkpoint, parsed (its signatures are not verified here)."""
        return codecs.parse_checkpoint(await self.checkpoint(), f"checkpoint of {self.base_url}")

    async def origin(self) -> str:
        return (await self.signed_checkpoint()).checkpoint.origin

    async def policy(self) -> bytes:
        """The node's published C2SP tlog-policy, as served (parse it with :func:`codecs.parse_policy`)."""
        return (await self._send("GET", routes.POLICY)).content

    async def consistency(self, old: int, new: int) -> list[bytes]:
        response = await self._send("GET", routes.CONSISTENCY, params={"old": old, "new": new})
        return codecs.consistency_from_json(_json(response, "consistency proof"), old, new)

    async def inclusion(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """The entry at ``index`` (its bytes) and its inclusion proof in the tree of ``size``."""
        response = await self._send("GET", routes.INCLUSION, params={"index": index, "size": size})
        return codecs.inclusion_from_json(_json(response, "inclusion proof"), index, size)

    async def anchors(self, origin: str, size: int | None = None) -> codecs.AnchorInfo:
        """A parent node's newest anchor of child log ``origin`` under its checkpoint of ``size``."""
        params = None if size is None else {"size": size}
        response = await self._send("GET", routes.anchors(origin), params=params)
        return codecs.anchor_from_json(_json(response, f"anchor of {origin}"), origin)

    async def write(self, raw: bytes) -> WriteAnswer:
        """Apply one signed write request (COSE_Sign1)."""
        response = await self._send(
            "POST", routes.REGISTRY, content=raw, headers={"content-type": "application/cose"}
        )
        body = _json(response, "write answer")
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("handle", "op", "request_id")
        ):
            raise ProtocolError("write answer", "needs string fields handle, op and request_id")
        return WriteAnswer(body["handle"], body["op"], body["request_id"])

    async def submit_blocks(
        self, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]
    ) -> codecs.BlocksAnswer:
        """Submit blocks in order. A refusal (409 fork, 4xx invalid block) is returned, not raised, since
        the blocks accepted before it count: see :class:`codecs.BlocksAnswer`."""
        batch = codecs.block_batch(blocks)
        response = await self._send("POST", routes.GATEWAY_BLOCKS, refusal_ok=True, json=batch)
        return codecs.blocks_answer_from_json(_json(response, "block batch answer"), response.status_code)

    async def gateway_head(self, gateway: str) -> tuple[int, bytes]:
        """(height, block id) of the gateway's latest block the root accepted."""
        response = await self._send("GET", routes.gateway_head(gateway))
        return codecs.gateway_head_from_json(_json(response, f"head of {gateway}"), gateway)

    async def block(self, block_id: bytes) -> codecs.BlockInfo:
        response = await self._send("GET", routes.block(block_id))
        return codecs.block_info_from_json(_json(response, f"block {block_id.hex()}"), block_id)

    async def epcis_capture(self, document: dict[str, Any]) -> codecs.CaptureAnswer:
        """Capture an EPCISDocument whose events carry ``edgeroot:signedCapture`` (202 + ``Location``)."""
        response = await self._send("POST", routes.EPCIS_CAPTURE, json=document)
        location = response.headers.get("location")
        return codecs.capture_answer_from_json(_json(response, "capture answer"), location)

    async def epcis_capture_job(self, capture_id: str) -> dict[str, Any]:
        answer = _json(await self._send("GET", routes.epcis_capture_job(capture_id)), "capture job")
        if not isinstance(answer, dict):
            raise ProtocolError("capture job", f"expected a JSON object, got {type(answer).__name__}")
        return answer

    async def epcis_events(self, params: dict[str, str]) -> codecs.EventsPage:
        """One page of an EPCIS 2.0 event query; ``next_token`` is set when there are more."""
        response = await self._send("GET", routes.EPCIS_EVENTS, params=params)
        token = None
        link = response.links.get("next")
        if link is not None:
            token = httpx.URL(link["url"]).params.get("nextPageToken")
        return codecs.events_page_from_json(_json(response, "EPCIS query document"), token)

    async def epcis_events_all(self, params: dict[str, str]) -> list[codecs.EventsPage]:
        """Every page of an EPCIS 2.0 event query (all as of the first page's checkpoint)."""
        pages = [await self.epcis_events(params)]
        while pages[-1].next_token is not None:
            pages.append(await self.epcis_events({**params, "nextPageToken": pages[-1].next_token}))
        return pages

    async def epcis_index(self, identifiers: Sequence[str]) -> list[IndexProof]:
        """The completeness proofs of identifiers' events (decoded, not yet verified), one per id."""
        response = await self._send("GET", routes.EPCIS_INDEX, params=[("id", i) for i in identifiers])
        proofs = codecs.index_proofs_from_json(_json(response, "event index answer"))
        if [p.identifier for p in proofs] != list(identifiers):
            raise ProtocolError("event index answer", "the proofs are not for the identifiers asked")
        return proofs

    async def blocks_in_window(
        self, gateway: str, from_ms: int, to_ms: int, after: int | None = None
    ) -> tuple[list[codecs.WindowBlock], int | None]:
        """One page of the gateway's blocks covering ``[from_ms, to_ms)`` and the height to continue
        after (None: done); see :data:`rootclient.routes.BLOCKS`."""
        params: dict[str, Any] = {"gateway": gateway, "from": from_ms, "to": to_ms}
        if after is not None:
            params["after"] = after
        response = await self._send("GET", routes.BLOCKS, params=params)
        return codecs.window_blocks_from_json(_json(response, f"blocks of {gateway}"))


@dataclass(frozen=True, slots=True)
class Hop:
    """One node asked while following referrals, and what its answer proved (D-076)."""

    url: str
    delegated: str | None
    """The prefix this node was reached for (``None``: the trust anchor, asked first)."""
    verified: Verified
    referral: Delegation | None
    """Where its proven registry sends the client next (``None``: this node answers)."""
    proof: dict[str, Any]
    """The ``proof`` object of its answer as received, so the hop chain can be checked again offline."""

    @property
    def origin(self) -> str:
        return self.verified.proven.checkpoint.checkpoint.origin

    @property
    def served(self) -> str | None:
        """The prefix this node is proven to hold for the identifier: the delegated one, or at the trust
        anchor the longest prefix record it holds above the one it delegates (``None``: none)."""
        if self.delegated is not None:
            return self.delegated
        held = None
        for prefix, record in self.verified.proven.prefixes or ():
            if self.referral is not None and prefix == self.referral.prefix:
                break
            if record is not None:
                held = prefix
        return held

    @property
    def referral_ttl_s(self) -> int:
        """How long the delegation this hop proved may be reused: the ``ttl`` of the ``HS_SITE`` value
        carrying it (0: no delegation)."""
        if self.referral is None:
            return 0
        for prefix, record in self.verified.proven.prefixes or ():
            if prefix == self.referral.prefix and record is not None:
                return min((v.ttl for v in record.values if v.type == DELEGATION_TYPE), default=0)
        return 0

    def as_json(self) -> dict[str, Any]:
        """One hop of the hop chain (docs/formats.md §21)."""
        proven = self.verified.proven
        cp = proven.checkpoint
        outcome = "referral" if self.referral is not None else "absent" if proven.record is None else "record"
        return {
            "node": self.url,
            "log": cp.checkpoint.origin,
            "delegated_prefix": self.delegated,
            "served_prefix": self.served,
            "proven": outcome,
            "checkpoint_size": cp.checkpoint.size,
            "as_of_log_size": proven.epoch,
            "cosigned_by": list(cp.cosigners),
            "pinned_size": self.verified.pinned_size,
            "referral": None if self.referral is None else self.referral.as_json(),
            "proof": self.proof,
        }


PinStoreFor = Callable[[str], PinStore]
"""The pin store of the log named by its origin: one pin per log."""
HoldPin = Callable[[PinStore], AbstractContextManager[object]]
"""Held while one log's pin is loaded, judged and saved (the CLI's file lock); ``None``: nothing held."""
MAX_HOPS = 8
MAX_REFERRAL_TTL_S = 300.0
"""The longest a proven delegation is reused by a warm client, whatever its ``HS_SITE`` ttl says."""
LogKey = tuple[str, str, str]
"""A pinned log in :attr:`NodeClients.logs`: (origin, URL, the policy text a delegation commits to)."""


@dataclass(frozen=True, slots=True)
class _KnownReferral:
    hop: Hop
    log: LogKey
    """The pinned log that proved it: the delegation is used only while that log vouches for it."""
    expires: float


class NodeClients:
    """What a warm client keeps between lookups: a long-lived caller makes one, resolves every lookup
    with :meth:`resolve`, and closes it when it stops (``aclose``, or ``async with``); the one-shot
    :func:`resolve_referrals` makes one per lookup.

    The clients of the nodes asked, by URL, so their connections are reused (at most ``capacity``;
    the oldest is closed first); each log's :class:`PinnedLog` (:attr:`logs`), opened once from the
    pin store ``pins`` gives for its origin (under ``hold``) and kept, so a log's pin has one home: the
    store is where it is loaded from and saved to, the open :class:`PinnedLog` the one object that
    judges it; and the delegations the nodes proved (D-091), reused for ``min(ttl of the HS_SITE
    value, referral_ttl_s)`` seconds by ``clock`` for every identifier under the delegated prefix,
    while the log that proved a delegation still vouches for the checkpoint it was proven at
    (:meth:`PinnedLog.vouches_for`). A lookup under a known delegation asks only the node that
    answers; its hop chain still lists every hop with the proof it was proven by. One caller policy
    per instance: the first node's log and referrals are kept without it in their keys. ``pins``
    may be None for a caller that only opens clients (an unverified trace); :meth:`resolve` needs it.
    """

    def __init__(
        self,
        *,
        pins: PinStoreFor | None = None,
        hold: HoldPin | None = None,
        timeout: float = 10.0,
        capacity: int = 64,
        referral_ttl_s: float = MAX_REFERRAL_TTL_S,
        referral_capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pins = pins
        self.hold = hold
        self.timeout = timeout
        self.capacity = capacity
        self.referral_ttl_s = referral_ttl_s
        self.referral_capacity = referral_capacity
        self.clock = clock
        self._clients: dict[str, AsyncRootClient] = {}
        self.logs: dict[LogKey, PinnedLog] = {}
        """Open pinned logs by (origin, URL, the policy text a delegation commits to; "" for the first
        node, which the caller's one policy governs): a warm client judges each checkpoint once and
        keeps its pin in memory between lookups (saved through its store as usual)."""
        self._opening = asyncio.Lock()
        self._referrals: dict[tuple[bytes, str], _KnownReferral] = {}

    async def __aenter__(self) -> NodeClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, url: str) -> AsyncRootClient:
        client = self._clients.get(url)
        if client is None:
            if len(self._clients) >= self.capacity:
                oldest = next(iter(self._clients))
                await self._clients.pop(oldest).aclose()
                self.logs = {k: v for k, v in self.logs.items() if k[1] != oldest}
            client = self._clients[url] = AsyncRootClient(url, timeout=self.timeout)
        return client

    @property
    def open_clients(self) -> int:
        """How many node clients (each with its own connection pool) are open now."""
        return len(self._clients)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def pinned_log(
        self, key: LogKey, policy: Policy, root: AsyncRootClient, store: PinStore
    ) -> PinnedLog:
        """The pinned log of ``key``, opened from ``store`` at its first use and kept. Opened once even
        when the first lookups run concurrently: two objects judging one pin would each save their own
        view of it, and the later save could move the stored pin backwards."""
        pinned = self.logs.get(key)
        if pinned is not None:
            return pinned
        async with self._opening:
            pinned = self.logs.get(key)
            if pinned is None:
                pinned = self.logs[key] = await PinnedLog.open(policy, key[0], root, store)
            return pinned

    async def resolve(
        self,
        top: AsyncRootClient | None,
        identifier: str,
        policy: Policy | None,
        *,
        max_hops: int = MAX_HOPS,
        start: Delegation | None = None,
        visited: Sequence[str] = (),
    ) -> tuple[Hop, ...]:
        """:func:`resolve_referrals` with this warm client's connections, pins and proven delegations."""
        if self.pins is None:
            raise ValueError("this NodeClients has no pin stores: it cannot verify a lookup")
        return await _follow(
            self, self.pins, top, identifier, policy, max_hops=max_hops, start=start, visited=visited
        )

    def known_referral(self, node: bytes, prefixes: Sequence[str]) -> Hop | None:
        """The hop at ``node`` (:func:`_node_key`) that proved a delegation of one of ``prefixes`` (the
        identifier's :func:`~chain_lite.resolution.home_prefixes`, the shortest first), if it is still
        within its TTL and vouched for by its log; expired or unvouched ones are forgotten."""
        now = self.clock()
        for prefix in prefixes:
            known = self._referrals.get((node, prefix))
            if known is None:
                continue
            pinned = self.logs.get(known.log)
            if (
                known.expires > now
                and pinned is not None
                and pinned.vouches_for(known.hop.verified.proven.checkpoint)
            ):
                return known.hop
            del self._referrals[(node, prefix)]
        return None

    def still_reuses(self, start: Delegation, identifier: str, hops: Sequence[Hop]) -> bool:
        """Whether a lookup of ``identifier`` from ``start`` made now would go through the same proven
        delegations as ``hops`` (each the same hop, within its TTL, vouched for by its log): an answer
        kept from those hops (the Handle API's answer cache) may be served only while this holds, so
        it never outlives a delegation it relied on."""
        prefixes = _home_prefixes(identifier)
        delegation = start
        for hop in hops[:-1]:
            if hop.referral is None or self.known_referral(_node_key(None, delegation), prefixes) is not hop:
                return False
            delegation = hop.referral
        return True

    def remember_referral(self, node: bytes, hop: Hop, log: LogKey) -> None:
        """Keep the delegation ``hop`` proved at ``node`` for its TTL (nothing when that is 0)."""
        ttl = min(self.referral_ttl_s, hop.referral_ttl_s)
        if hop.referral is None or ttl <= 0:
            return
        if len(self._referrals) >= self.referral_capacity:
            del self._referrals[next(iter(self._referrals))]
        self._referrals[(node, hop.referral.prefix)] = _KnownReferral(hop, log, self.clock() + ttl)


def _node_key(top: AsyncRootClient | None, delegation: Delegation | None) -> bytes:
    """Which node a hop asks: the first one by its URL, a delegated one by its whole delegation."""
    if delegation is not None:
        return delegation.encode()
    assert top is not None
    return b"top\0" + top.base_url.encode()


def _home_prefixes(identifier: str) -> tuple[str, ...]:
    """The prefixes whose delegations decide who answers for ``identifier`` (none when it is invalid:
    the node asked refuses it)."""
    try:
        return home_prefixes(canonical_identifier(identifier))
    except ChainError:
        return ()


async def follow_hints(
    top: AsyncRootClient,
    identifier: str,
    nodes: NodeClients,
    *,
    max_hops: int = MAX_HOPS,
    answer: dict[str, Any] | None = None,
) -> tuple[AsyncRootClient, dict[str, Any], tuple[str, ...]]:
    """Without verification: ``identifier``'s ``/v1/resolve`` answer at ``top`` (``answer``, when it was
    already asked), then each answer's unverified ``referral`` hint followed (its first URL, through
    ``nodes``) to the node that answers. Returns that node's client, its answer and the URLs asked,
    ``top``'s first. Raises :class:`ProtocolError` for a hint that cannot be followed (malformed, or
    more than ``max_hops`` nodes to ask) and :class:`ClientError` (a delegated node's naming its URL)."""
    client = top
    if answer is None:
        answer = await top.resolve(identifier)
    asked = [top.base_url]
    while isinstance(hint := answer.get("referral"), dict):
        urls = hint.get("urls")
        if len(asked) >= max_hops or not isinstance(urls, list) or not urls or not isinstance(urls[0], str):
            raise ProtocolError(f"the referral of {identifier}", f"cannot be followed: {hint!r:.200}")
        client = await nodes.get(urls[0])
        try:
            answer = await client.resolve(identifier)
        except ClientError as exc:
            message = f"delegated node {urls[0]}: {exc.message}"
            raise ClientError(message, exc.status, exc.handle_code) from exc
        asked.append(client.base_url)
    return client, answer, tuple(asked)


async def _ask_child(
    urls: Sequence[str], identifier: str, nodes: NodeClients, hops: tuple[Hop, ...]
) -> tuple[AsyncRootClient, dict[str, Any], ResolutionProof]:
    """The first usable answer among ``urls`` (its client also serves the consistency proof)."""
    failures = []
    for url in urls:
        client = await nodes.get(url)
        try:
            answer = await client.resolve(identifier)
            return client, answer, codecs.resolution_from_json(answer)
        except (ClientError, ProtocolError) as exc:
            failures.append(f"{url}: {exc}")
    raise DeadChild(f"no URL of the delegated node answered: {'; '.join(failures)}", hops)


async def resolve_referrals(
    top: AsyncRootClient | None,
    identifier: str,
    policy: Policy | None,
    pins: PinStoreFor,
    *,
    hold: HoldPin | None = None,
    max_hops: int = MAX_HOPS,
    timeout: float = 10.0,
    start: Delegation | None = None,
    visited: Sequence[str] = (),
) -> tuple[Hop, ...]:
    """Resolve ``identifier`` from ``top`` (trusted under ``policy``), following delegations with proofs.

    Every answer is verified with its log's pin (:class:`PinnedLog`, ``Older.REFUSE``; the store of a
    log's pin is ``pins(origin)``, held with ``hold`` while it is loaded, judged and saved), including
    the proven prefix records that say who answers (:func:`chain_lite.resolution.referral_of`); a
    delegation is followed only to the log it names, whose answers are verified under the policy it
    commits to. Returns the hops, the last one answering. Errors at the first hop are the pinned log's
    own (ChainError, StaleCheckpoint, PinError, EquivocationDetected, ClientError); later ones raise a
    :class:`~rootclient.errors.ReferralError` subclass carrying the hops proven before, except a stale
    answer and equivocation (evidence), which are the same at every hop. At most ``max_hops`` nodes
    are asked (:class:`~rootclient.errors.ReferralTooDeep`).

    A node following referrals for its own clients (the Handle API, D-076) starts at ``start``, the
    delegation its own registry holds (``top`` and ``policy`` are then unused), with its own log in
    ``visited`` so that a delegation back to it is a loop.

    This is one lookup with clients and pinned logs of its own, closed after it (the one-shot CLI); a
    long-lived caller keeps a :class:`NodeClients` and calls :meth:`NodeClients.resolve` instead.
    """
    async with NodeClients(pins=pins, hold=hold, timeout=timeout) as nodes:
        return await nodes.resolve(top, identifier, policy, max_hops=max_hops, start=start, visited=visited)


async def _follow(
    nodes: NodeClients,
    pins: PinStoreFor,
    top: AsyncRootClient | None,
    identifier: str,
    policy: Policy | None,
    *,
    max_hops: int,
    start: Delegation | None,
    visited: Sequence[str],
) -> tuple[Hop, ...]:
    """The lookup of :func:`resolve_referrals` through the warm client ``nodes`` (its pin stores ``pins``)."""
    hops: tuple[Hop, ...] = ()
    seen: set[str] = set(visited)
    prefixes = _home_prefixes(identifier)
    delegation = start
    if delegation is not None:
        if delegation.origin in seen:
            raise ReferralLoop(f"{delegation.prefix} is delegated to log {delegation.origin}, this one", hops)
        hop_policy = delegation.trust_policy()
    elif top is None or policy is None:
        raise ValueError("resolve_referrals needs a top node and its policy, or a delegation to start at")
    else:
        hop_policy = policy
    while True:
        if len(hops) >= max_hops:
            raise ReferralTooDeep(f"more than {max_hops} nodes to ask (the limit of nodes per lookup)", hops)
        node = _node_key(top, delegation)
        known = nodes.known_referral(node, prefixes)
        if known is not None:
            hop = known
        else:
            if delegation is None:
                assert top is not None
                client, answer = top, await top.resolve(identifier)
                proof = codecs.resolution_from_json(answer)
            else:
                client, answer, proof = await _ask_child(delegation.urls, identifier, nodes, hops)
            hop = await _verify_hop(client, answer, proof, hop_policy, delegation, pins, hops, nodes)
            if hop.referral is not None:
                nodes.remember_referral(node, hop, _log_key(hop.origin, hop.url, delegation))
        seen.add(hop.origin)
        hops = (*hops, hop)
        delegation = hop.referral
        if delegation is None:
            return hops
        if delegation.origin in seen:
            raise ReferralLoop(
                f"{hop.origin} delegates {delegation.prefix} to log {delegation.origin}, already visited "
                f"({' -> '.join(h.origin for h in hops)})",
                hops,
            )
        hop_policy = delegation.trust_policy()


def _log_key(origin: str, url: str, delegation: Delegation | None) -> LogKey:
    return (origin, url, "" if delegation is None else delegation.policy)


async def _verify_hop(  # noqa: PLR0917 (the hop's answer and everything it is judged by)
    client: AsyncRootClient,
    answer: dict[str, Any],
    proof: ResolutionProof,
    policy: Policy,
    delegation: Delegation | None,
    pins: PinStoreFor,
    hops: tuple[Hop, ...],
    nodes: NodeClients,
) -> Hop:
    origin = proof.receipt.checkpoint.checkpoint.origin
    if delegation is not None and origin != delegation.origin:
        raise ForgedAnswer(
            f"{client.base_url} answered with log {origin}, but {delegation.prefix} is delegated to log "
            f"{delegation.origin}",
            hops,
        )
    store = pins(origin)
    key = _log_key(origin, client.base_url, delegation)
    with nodes.hold(store) if nodes.hold is not None else contextlib.nullcontext():
        try:
            pinned = await nodes.pinned_log(key, policy, client, store)
        except PinError as exc:
            if delegation is None:
                raise
            raise DelegationChanged(
                f"the delegation of {delegation.prefix} now commits to a policy under which the pinned "
                f"checkpoint of log {origin} does not verify ({exc}): it changed after the pin",
                hops,
            ) from exc
        try:
            verified = await pinned.verify_resolution(proof, older=Older.REFUSE)
        except PrefixProofError as exc:
            raise ForgedDelegation(f"{client.base_url} (log {origin}): {exc}", hops) from exc
        except StaleCheckpoint:
            raise
        except ChainError as exc:
            if delegation is None:
                raise
            raise ForgedAnswer(
                f"the answer of {client.base_url} for {delegation.prefix} does NOT verify under the policy "
                f"its delegation commits to: {exc}",
                hops,
            ) from exc
    try:
        referral = referral_of(verified.proven, None if delegation is None else delegation.prefix)
    except NotDelegatedHere as exc:
        raise NotDelegated(f"{client.base_url} (log {origin}): {exc}", hops) from exc
    except ChainError as exc:
        raise ForgedDelegation(f"{client.base_url} (log {origin}): {exc}", hops) from exc
    proof_obj = answer.get("proof")
    return Hop(
        client.base_url,
        None if delegation is None else delegation.prefix,
        verified,
        referral,
        proof_obj if isinstance(proof_obj, dict) else {},
    )


class RootClient:
    """The synchronous face of :class:`AsyncRootClient` (same requests, same decoding), for callers
    without an event loop. ``run`` executes any coroutine on the client's loop, e.g. a
    :class:`rootclient.pinned_log.PinnedLog` update that uses :attr:`aio`."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._runner = asyncio.Runner()
        # The async client is made on the runner's loop: httpx binds its connection pool to that loop.
        self.aio = self._runner.run(self._make(base_url, timeout))
        self.base_url = self.aio.base_url

    @staticmethod
    async def _make(base_url: str, timeout: float) -> AsyncRootClient:
        return AsyncRootClient(base_url, timeout=timeout)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        try:
            self._runner.run(self.aio.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> RootClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_json(self, path: str, **params: Any) -> Any:
        return self.run(self.aio.get_json(path, **params))

    def resolve(self, identifier: str, at: int | None = None) -> dict[str, Any]:
        return self.run(self.aio.resolve(identifier, at))

    def policy(self) -> bytes:
        return self.run(self.aio.policy())

    def history(self, identifier: str) -> dict[str, Any]:
        return self.run(self.aio.history(identifier))

    def checkpoint(self) -> bytes:
        return self.run(self.aio.checkpoint())

    def origin(self) -> str:
        return self.run(self.aio.origin())

    def consistency(self, old: int, new: int) -> list[bytes]:
        return self.run(self.aio.consistency(old, new))

    def inclusion(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        return self.run(self.aio.inclusion(index, size))

    def anchors(self, origin: str, size: int | None = None) -> codecs.AnchorInfo:
        return self.run(self.aio.anchors(origin, size))

    def write(self, raw: bytes) -> WriteAnswer:
        return self.run(self.aio.write(raw))

    def submit_blocks(self, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]) -> codecs.BlocksAnswer:
        return self.run(self.aio.submit_blocks(blocks))

    def gateway_head(self, gateway: str) -> tuple[int, bytes]:
        return self.run(self.aio.gateway_head(gateway))

    def block(self, block_id: bytes) -> codecs.BlockInfo:
        return self.run(self.aio.block(block_id))

    def epcis_capture(self, document: dict[str, Any]) -> codecs.CaptureAnswer:
        return self.run(self.aio.epcis_capture(document))

    def epcis_capture_job(self, capture_id: str) -> dict[str, Any]:
        return self.run(self.aio.epcis_capture_job(capture_id))

    def epcis_events_all(self, params: dict[str, str]) -> list[codecs.EventsPage]:
        return self.run(self.aio.epcis_events_all(params))

    def epcis_index(self, identifiers: Sequence[str]) -> list[IndexProof]:
        return self.run(self.aio.epcis_index(identifiers))

    def blocks_in_window(
        self, gateway: str, from_ms: int, to_ms: int, after: int | None = None
    ) -> tuple[list[codecs.WindowBlock], int | None]:
        return self.run(self.aio.blocks_in_window(gateway, from_ms, to_ms, after))

    def resolve_referrals(
        self,
        identifier: str,
        policy: Policy,
        pins: PinStoreFor,
        *,
        hold: HoldPin | None = None,
        max_hops: int = MAX_HOPS,
    ) -> tuple[Hop, ...]:
        """:func:`resolve_referrals` from this node."""
        return self.run(resolve_referrals(self.aio, identifier, policy, pins, hold=hold, max_hops=max_hops))

    def verify_resolution(
        self, proof: ResolutionProof, policy: Policy, store: PinStore, *, as_of: bool = False
    ) -> Verified:
        """Verify a decoded ``/v1/resolve`` proof (:func:`codecs.resolution_from_json`) with the pinned
        log kept in ``store`` (see :class:`rootclient.pinned_log.PinnedLog`); the pin moves forward
        when the answer is newer. An answer older than the pin is checked against it first (a fork is
        evidence), then used as of its size for an ``as_of`` answer, and refused as stale
        (``StaleCheckpoint``) for a current one (``Older``)."""
        origin = proof.receipt.checkpoint.checkpoint.origin
        older = Older.USE if as_of else Older.REFUSE

        async def verify() -> Verified:
            pinned = await PinnedLog.open(policy, origin, self.aio, store)
            return await pinned.verify_resolution(proof, older=older, as_of=as_of)

        return self.run(verify())
