"""The gateway's status snapshot: one frozen value holding every fact the gateway reports.

The gateway produces it (``Gateway.snapshot()``) and hands the producer to its readers as a plain
``Callable[[], GatewayStatus]``: the local API renders ``/healthz`` and ``/metrics`` from it and the main
loop its ``STATUS=`` line, so none of them reaches into the ingest door, the writer or the syncer.
``edgeroot gateway status`` reads the stored part (:class:`StoreFacts`, :func:`edge.store.read_status`)
from the file directly, so it works while the gateway is stopped too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOCK_STATES = ("chained", "submitted", "anchored")
"""A block's life in the store: signed locally, accepted by the root, receipt verified."""
PROBLEM_STORE_FULL = "disk budget reached: input refused"
PROBLEM_EVIDENCE = "equivocation evidence stored: sync stopped"


@dataclass(frozen=True, slots=True)
class AnchoredBlock:
    height: int
    log_index: int


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

    @property
    def problems(self) -> list[str]:
        """Why the gateway is degraded; empty when healthy."""
        problems = []
        if self.store_full:
            problems.append(PROBLEM_STORE_FULL)
        if self.store.evidence:
            problems.append(PROBLEM_EVIDENCE)
        return problems

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` body (served with 503 while :attr:`problems` is not empty)."""
        problems = self.problems
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "gateway": self.gateway,
            "connectors": dict(self.connectors),
            "sync": self.sync,
            "ingest": {"accepted": self.accepted, "rejected": dict(self.rejected)},
            "store": self.store.as_json(),
        }

    def status_line(self) -> str:
        """The figures of systemd's ``STATUS=`` line (``systemctl status`` shows it)."""
        counts = f"accepted={self.accepted} rejected={sum(self.rejected.values())} refused={self.refused}"
        full = " STORE FULL: refusing input" if self.store_full else ""
        return f"{counts} unanchored_blocks={self.store.unanchored_blocks} sync={self.sync}{full}"
