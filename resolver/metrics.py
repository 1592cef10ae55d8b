"""The root node's Prometheus metrics and its rate-limited log of refused input.

Each app has its own registry (several nodes can live in one test process). Refusals are counted by
reason (the error class: ``AuthenticationFailed``, ``Conflict``, ...) and logged at WARNING (ERROR for
a refusal that is the node's own failure, ``ViewBehind``), at most once per reason every
:data:`LOG_EVERY_S` seconds with the number held back, so a misbehaving client (or a burst of requests
during an outage) cannot flood the journal.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from runtime.ratelimit import RateLimitedLog

log = logging.getLogger("resolver.refused")
LOG_EVERY_S = 10.0


class RootMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.refused = Counter(
            "edgeroot_root_refused", "Requests refused, by reason", ["reason"], registry=self.registry
        )
        self.writes = Counter(
            "edgeroot_root_writes_accepted", "Registry writes accepted", registry=self.registry
        )
        self.blocks = Counter(
            "edgeroot_root_blocks_accepted",
            "Gateway blocks accepted (duplicates excluded)",
            registry=self.registry,
        )
        self.epcis_events = Counter(
            "edgeroot_root_epcis_events_accepted",
            "EPCIS events captured (duplicates excluded); refused ones count in edgeroot_root_refused",
            registry=self.registry,
        )
        self.published_size = Gauge(
            "edgeroot_root_published_tree_size",
            "Size of the latest published checkpoint",
            registry=self.registry,
        )
        self.witness_failing = Gauge(
            "edgeroot_root_witness_failing_checkpoints",
            "Consecutive checkpoints a witness did not cosign (0 = healthy)",
            ["witness"],
            registry=self.registry,
        )
        # Anchoring, the child's side (D-080): a parent is one of the witnesses.
        self.witness_cosigned_size = Gauge(
            "edgeroot_root_witness_cosigned_size",
            "Size of the latest checkpoint the witness cosigned (a parent: the latest anchored size)",
            ["witness"],
            registry=self.registry,
        )
        self.witness_cosign_lag = Gauge(
            "edgeroot_root_witness_cosign_lag_seconds",
            "Seconds from signing the checkpoint to the witness's cosignature, for its latest one",
            ["witness"],
            registry=self.registry,
        )
        self.prefix_delegated = Gauge(
            "edgeroot_root_prefix_delegated",
            "1 while a parent delegates this served prefix to this node, 0 while missing or unknown (D-127)",
            ["prefix"],
            registry=self.registry,
        )
        self.sequencing = Gauge(
            "edgeroot_root_sequencing",
            "1 when this process sequences the database, 0 while it stands by",
            registry=self.registry,
        )
        self._log = RateLimitedLog(log, LOG_EVERY_S)

    def witnesses_failing(self) -> dict[str, int]:
        """Witness name -> consecutive checkpoints it did not cosign, for the failing ones."""
        samples = (s for metric in self.witness_failing.collect() for s in metric.samples)
        return {s.labels["witness"]: int(s.value) for s in samples if s.value > 0}

    def refuse(self, reason: str, message: str, *, ours: bool = False) -> None:
        """Count a refused request by ``reason`` and log it (rate-limited): WARNING for the caller's fault,
        ERROR when the refusal is our own failure (``ours``: the node cannot answer right now)."""
        self.refused.labels(reason=reason).inc()
        log_it = self._log.error if ours else self._log.warning
        log_it(reason, "refused (%s): %s", reason, message)
