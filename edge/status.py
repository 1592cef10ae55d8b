"""The gateway's status snapshot: one frozen value holding every fact the gateway reports.

The gateway produces it (``Gateway.snapshot()``) and hands the producer to its readers as a plain
``Callable[[], GatewayStatus]``: the local API renders ``/healthz`` and ``/metrics`` from it and the main
loop its ``STATUS=`` line, so none of them reaches into the ingest door, the writer or the syncer.
``edgeroot gateway status`` reads the stored part (:class:`StoreFacts`, :func:`edge.store.read_status`)
from the file directly, so it works while the gateway is stopped too.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOCK_STATES = ("chained", "submitted", "anchored")
"""A block's life in the store: signed locally, accepted by the root, receipt verified."""
PROBLEM_STORE_FULL = "disk budget reached: input refused"
PROBLEM_EVIDENCE = "equivocation evidence stored: sync stopped"
PROBLEM_LOOKUPS = "registry lookups failing: readings of devices without a key here are held, not accepted"
PROBLEM_BLOCKS_REFUSED = "blocks cannot be anchored"
PROBLEM_HELD_TOO_LONG = "readings held too long: their signers' keys could not be looked up"
HELD_TOO_LONG_S = 600.0
"""A reading held (acknowledged, waiting for its signer's key) longer than this is a health problem: a
signer whose lookups keep failing (root away for long, a wrong trust policy)."""


@dataclass(frozen=True, slots=True)
class AnchoredBlock:
    height: int
    log_index: int


@dataclass(frozen=True, slots=True)
class CounterReset:
    """An operator's ``edgeroot gateway device reset-counter``, as the store keeps it for audit (D-053)."""

    id: int
    signer: str
    to: int | None
    """The signer's new last counter; None: forgotten, its next reading is judged as a first one."""
    previous: int | None
    """The counter it replaced (as stored when requested; as the writer held it once applied)."""
    requested_ms: int
    requested_by: str
    reason: str
    applied_ms: int | None
    """None while pending: the writer applies it before it judges its next batch, or when it starts."""

    def as_json(self) -> dict[str, Any]:
        return {
            "signer": self.signer,
            "to": self.to,
            "previous": self.previous,
            "requested_ms": self.requested_ms,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "applied_ms": self.applied_ms,
        }


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the gateway's SQLite file says, whether or not the gateway runs."""

    readings: int
    unchained_readings: int
    """Readings not yet in a block."""
    blocks: Mapping[str, int]
    """Blocks by state, every one of :data:`BLOCK_STATES` present."""
    last_anchored: AnchoredBlock | None
    rejects: Mapping[str, int]
    """Quarantined inputs by reason, since the store was created."""
    gaps: int
    evidence: bool
    """The light client stored two inconsistent signed checkpoints: sync has stopped."""
    duplicates: int = 0
    """Resends of stored readings (acknowledged, not stored again), since the store was created."""
    counter_resets: tuple[CounterReset, ...] = ()
    """The newest operator counter resets first, pending or applied."""
    held: int = 0
    """Readings acknowledged as held, waiting in the ``held`` table for their signers' keys (D-068)."""
    held_oldest_age_s: float | None = None
    """How long the oldest of them has waited, when the facts were read; None when none is held."""

    @property
    def unanchored_blocks(self) -> int:
        return self.blocks["chained"] + self.blocks["submitted"]

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``/healthz``'s ``store`` and of ``edgeroot gateway status --json``."""
        last = self.last_anchored
        return {
            "readings": self.readings,
            "unchained_readings": self.unchained_readings,
            "blocks": dict(self.blocks),
            "unanchored_blocks": self.unanchored_blocks,
            "last_anchored": None if last is None else {"height": last.height, "log_index": last.log_index},
            "rejects": dict(self.rejects),
            "gaps": self.gaps,
            "evidence": self.evidence,
            "duplicates": self.duplicates,
            "counter_resets": [r.as_json() for r in self.counter_resets],
            "held": self.held,
            "held_oldest_age_s": self.held_oldest_age_s,
        }


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Every fact the gateway reports, taken at one instant.

    The counters are those of this run (since the daemon started); ``store`` holds the durable ones.
    """

    gateway: str
    accepted: int
    rejected: Mapping[str, int]
    """Inputs quarantined in this run, by reason."""
    refused: int
    """Inputs refused unacknowledged in this run (disk budget)."""
    store_full: bool
    sync: str
    """The syncer's state: ``starting``, ``synced``, ``backing off``, ``stopped: ...``."""
    connectors: Mapping[str, str]
    """``<class>[<index>]`` → the connector's state, in configuration order."""
    store: StoreFacts
    duplicates: int = 0
    """Resends of stored readings in this run: acknowledged, not stored again, not quarantined."""
    root_protocol_errors: int = 0
    """Answers from the root that broke its protocol in this run (a malformed consistency proof, a
    hostile JSON shape): counted and retried, never equivocation evidence."""
    held: int = 0
    """Readings answered as held in this run while their signer's key was looked up (no reject)."""
    lookups: int = 0
    """Registry lookups sent to the root in this run."""
    lookups_deferred: int = 0
    """Registry lookups not made in this run because the per-gateway bound was reached."""
    lookup_problem: str | None = None
    """Why registry lookups fail (root away, answers that do not verify under the policy); None when
    they work. While set, readings of devices without a key here are held, so nothing new is accepted."""
    sync_problem: str | None = None
    """Why blocks cannot be anchored (the root refuses them, or its answers do not verify); None when
    sync works or the root is merely unreachable (blocks wait, as designed for offline days)."""
    sync_failures: int = 0
    """Sync attempts that failed in this run, for any reason (each retried with backoff)."""
    reject_history: tuple[RejectSample, ...] = ()
    """This run's reject counters as sampled by :class:`RejectHistory`, oldest first (the gateway page's
    chart of rejects by reason over time)."""

    @property
    def problem_kinds(self) -> list[tuple[str, str | None]]:
        """:attr:`problems` as ``(kind, detail)``: ``store-full``, ``evidence``, ``lookups``,
        ``blocks-refused`` and ``held-too-long``, the detail (from the root or the network, untranslated)
        or None; the gateway page shows the kind in the reader's language."""
        kinds: list[tuple[str, str | None]] = []
        if self.store_full:
            kinds.append(("store-full", None))
        if self.store.evidence:
            kinds.append(("evidence", None))
        if self.lookup_problem is not None:
            kinds.append(("lookups", self.lookup_problem))
        if self.sync_problem is not None:
            kinds.append(("blocks-refused", self.sync_problem))
        age = self.store.held_oldest_age_s
        if age is not None and age > HELD_TOO_LONG_S:
            kinds.append(("held-too-long", f"{self.store.held} held, the oldest for {age:.0f} s"))
        return kinds

    @property
    def problems(self) -> list[str]:
        """Why the gateway is degraded, anything that stops readings from being accepted or anchored;
        empty when healthy."""
        text = {
            "store-full": PROBLEM_STORE_FULL,
            "evidence": PROBLEM_EVIDENCE,
            "lookups": PROBLEM_LOOKUPS + " ({})",
            "blocks-refused": PROBLEM_BLOCKS_REFUSED + ": {}",
            "held-too-long": PROBLEM_HELD_TOO_LONG + " ({})",
        }
        return [text[kind].format(detail) for kind, detail in self.problem_kinds]

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` body (served with 503 while :attr:`problems` is not empty)."""
        problems = self.problems
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "gateway": self.gateway,
            "connectors": dict(self.connectors),
            "sync": self.sync,
            "ingest": {
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "rejected": dict(self.rejected),
            },
            "store": self.store.as_json(),
        }

    def status_line(self) -> str:
        """The figures of systemd's ``STATUS=`` line (``systemctl status`` shows it)."""
        counts = f"accepted={self.accepted} rejected={sum(self.rejected.values())} refused={self.refused}"
        full = " STORE FULL: refusing input" if self.store_full else ""
        return f"{counts} unanchored_blocks={self.store.unanchored_blocks} sync={self.sync}{full}"


@dataclass(frozen=True, slots=True)
class RejectSample:
    """The run's reject counters by reason (cumulative, as in :attr:`GatewayStatus.rejected`) at one time."""

    time_ms: int
    rejected: Mapping[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"time_ms": self.time_ms, "rejected": dict(self.rejected)}


class RejectHistory:
    """A ring of the snapshots' reject counters: at most one sample per ``every_ms``, the newest ``keep``
    (by default one per 10 s for the last hour: 360 small dicts). In memory only: it starts empty with
    each run, like the counters it samples; the store keeps the all-time totals.

    Fed by the snapshots the gateway takes anyway (the ``STATUS=`` line every 5 to 15 s, scrapes, the
    page), so sampling costs no read of its own; those run on several threads, hence the lock.
    """

    def __init__(self, every_ms: int = 10_000, keep: int = 360) -> None:
        self.every_ms = every_ms
        self._ring: deque[RejectSample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def observe(self, time_ms: int, rejected: Mapping[str, int]) -> tuple[RejectSample, ...]:
        """Record ``rejected`` unless the last sample is under ``every_ms`` old; the samples, oldest first."""
        with self._lock:
            if not self._ring or time_ms - self._ring[-1].time_ms >= self.every_ms:
                self._ring.append(RejectSample(time_ms, dict(rejected)))
            return tuple(self._ring)


@dataclass(frozen=True, slots=True)
class DeviceOverview:
    """One row of the gateway page's device table (:func:`edge.store.devices_overview`)."""

    identifier: str
    key_source: str | None
    """``local`` (``[devices]`` in gateway.toml), ``registry`` (fetched from the root), None: no key here."""
    key_fetched_ms: int | None
    """When a registry key was fetched (last checked); None for local keys."""
    last_counter: int | None
    """The last counter accepted from this signer; None if it never signed an accepted reading."""
    last_reading_ms: int | None
    """When the newest stored reading about this device arrived; None: none stored (or all pruned)."""
    last_reading_counter: int | None
    last_reading_block: int | None
    """The block height holding that reading; None while it is not chained yet."""
    last_reading_raw: bytes | None

    def as_json(self, records: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The ``/v1/devices`` row; ``records``: the last reading's SenML records, resolved (None: none)."""
        last = None
        if self.last_reading_ms is not None:
            last = {
                "received_ms": self.last_reading_ms,
                "counter": self.last_reading_counter,
                "block": self.last_reading_block,
                "records": records,
            }
        return {
            "identifier": self.identifier,
            "key_source": self.key_source,
            "key_fetched_ms": self.key_fetched_ms,
            "last_counter": self.last_counter,
            "last_reading": last,
        }
