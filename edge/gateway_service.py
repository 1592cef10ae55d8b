"""The gateway daemon: connectors → ingest → writer → chain → sync, under systemd.

A thin user of :class:`runtime.service.Service` (lifecycle, signals, sd_notify, exit codes are there);
this module supplies the gateway's start, status line, reload and shutdown steps:

* start: schema, local device provisioning, signature verification workers (``verify.workers``,
  :mod:`edge.verify_pool`), writer thread, ingest loop, chain loop, syncer, registry
  refresh, connectors, local HTTP (health answers once the connectors are up); then ``READY=1``.
* status: accepted / rejected / refused counts, unanchored blocks, sync state, STORE FULL.
* SIGHUP: reload ``gateway.toml``; connectors are stopped and started again with the new settings
  (messages in flight stay unacknowledged and are redelivered; nothing is lost). A bad file is refused
  and the running configuration kept.
* stop, in this order under one deadline (:data:`STOP_DEADLINE_S`): stop intake (connectors), drain
  (store everything queued), close the open block, stop the local HTTP, close the store, stop the
  verification workers; then the remaining loops (chain, sync, registry) are cancelled, and the
  connections to the root and to the delegated nodes closed. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.keys import load_public_pem, public_der
from chain_lite.policy import Policy
from chain_lite.suite import SHA256
from edge import config as gateway_config
from edge import store
from edge.connectors import PLUGINS, Connector
from edge.errors import ConfigError
from edge.ingest import Ingest
from edge.local_api import LocalApi, LocalHttp
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edge.status import GatewayStatus, RejectHistory
from edge.sync import Syncer
from edge.verify_pool import VerifyPool, pool_size
from edge.writer import Writer
from rootclient.client import AsyncRootClient
from rootclient.pinned_log import PinnedLog
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key
from runtime.sdnotify import Notifier
from runtime.service import Service, Step, run_service

log = logging.getLogger(__name__)
CHAIN_TICK_S = 0.2
PRUNE_EVERY_S = 60.0
PRUNE_WHEN_FULL_S = 1.0
STOP_DEADLINE_S = 20.0
"""The whole shutdown's deadline: below ``TimeoutStopSec=30`` of edgeroot-gateway.service."""


def provision_local_devices(cfg: gateway_config.GatewayConfig) -> int:
    """Make ``[devices]`` the gateway's locally provisioned keys (works offline); returns how many.
    Blocking file and database work: call it off the event loop."""
    keys: dict[str, bytes] = {}
    for ident, path in cfg.devices.items():
        try:
            keys[ident] = public_der(load_public_pem(path.read_bytes()))
        except (OSError, ChainError) as exc:
            raise ConfigError(
                cfg.path or cfg.state / gateway_config.CONFIG_NAME, f"devices.{ident}", f"{path}: {exc}"
            ) from exc
    store.replace_local_devices(cfg.db, keys)
    return len(keys)


async def _reraise(exc: Exception) -> None:
    """A task that fails with ``exc``: how a step outside the task group stops the service loudly."""
    raise exc


class Gateway:
    def __init__(self, cfg: gateway_config.GatewayConfig, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        # Key and policy first: a wrong or unreadable file is named before the store is made.
        signer = CoseSigner(cfg.gateway, load_private_key(cfg.key))
        try:
            self.policy = Policy.parse(cfg.policy.read_bytes())
        except (OSError, ChainError) as exc:
            where = cfg.path or cfg.state / gateway_config.CONFIG_NAME
            raise ConfigError(where, "policy", f"{cfg.policy}: {exc}") from exc
        store.create_schema(cfg.db)
        provision_local_devices(cfg)
        workers = pool_size(cfg.verify_workers)
        self.pool = VerifyPool(workers) if workers else None
        self.writer = Writer(
            cfg.db,
            signer,
            max_readings=cfg.block_max_readings,
            max_seconds=cfg.block_max_seconds,
            disk_budget_bytes=cfg.disk_budget_mb * 1024 * 1024,
            retention_days=cfg.retention_days,
            counter_window=cfg.counter_window,
            # The root's policy names its log's hash profile: blocks are built with it (an SM3 log
            # refuses a SHA-256 block, and the reverse).
            suite=self.policy.logs[0].suite if self.policy.logs else SHA256,
            pool=self.pool,
        )
        self.ingest = Ingest(self.writer)
        self.connectors: list[Connector] = []
        self.syncer: Syncer | None = None
        self.registry: RegistryCache | None = None
        self.local: LocalHttp | None = None
        self.reject_history = RejectHistory()

    def _make_connectors(self) -> list[Connector]:
        return [PLUGINS[c.type].create(c, self.ingest) for c in self.cfg.connectors]

    async def _chain_loop(self) -> None:
        since_prune = 0.0
        while True:
            await asyncio.sleep(CHAIN_TICK_S)
            try:
                while await self.ingest.call(self.writer.close_block_if_due) is not None:
                    pass
                since_prune += CHAIN_TICK_S
                # While input is refused for the disk budget, look for prunable (newly anchored) data
                # every second rather than every minute: intake resumes as soon as anchoring frees space.
                every = PRUNE_WHEN_FULL_S if self.writer.store_full else PRUNE_EVERY_S
                if since_prune >= every:
                    since_prune = 0.0
                    await self.ingest.call(self.writer.prune)
            except Exception:  # e.g. a locked or full disk: the readings stay unchained; retry next tick
                log.exception("closing a block or pruning failed; retrying")

    def snapshot(self) -> GatewayStatus:
        """Every fact the gateway reports, now. Blocking (it reads the store through a connection of its
        own): the local API calls it on its request threads, the main loop through ``to_thread``. The
        counters it copies are plain integers and a dict copied in one step, safe to read from there."""
        stats = self.ingest.stats
        rejected = dict(stats.rejected)
        return GatewayStatus(
            gateway=self.cfg.gateway,
            accepted=stats.accepted,
            rejected=rejected,
            refused=stats.refused,
            store_full=self.writer.store_full,
            sync=self.syncer.state if self.syncer else "starting",
            connectors={f"{c.__class__.__name__}[{i}]": c.state for i, c in enumerate(self.connectors)},
            store=store.read_status(self.cfg.db),
            duplicates=stats.duplicates,
            root_protocol_errors=sum(part.protocol_errors for part in (self.syncer, self.registry) if part),
            held=stats.held,
            lookups=self.registry.lookups if self.registry else 0,
            lookups_deferred=self.registry.deferred if self.registry else 0,
            lookup_problem=self.registry.failing if self.registry else None,
            sync_problem=self.syncer.problem if self.syncer else None,
            sync_failures=self.syncer.failures if self.syncer else 0,
            reject_history=self.reject_history.observe(now_ms(), rejected),
        )

    async def _status_line(self) -> str:
        return (await asyncio.to_thread(self.snapshot)).status_line()

    async def run(self) -> None:
        """The daemon, until SIGTERM or a failure (see :func:`run` for the exit code)."""
        service = self._service = Service(
            "gateway", status=self._status, reload=self._reload, stop_deadline_s=STOP_DEADLINE_S,
            notifier=self.notifier,
        )  # fmt: skip
        # The root client and the registry's clients of delegated nodes (closed through ``closing``)
        # outlive the service's shutdown: the sync and registry loops may be mid-request until cancelled.
        async with (
            AsyncRootClient(self.cfg.root, timeout=15.0) as root,
            contextlib.AsyncExitStack() as closing,
            service,
        ):
            service.shutdown_order(
                Step("stop intake", self._stop_connectors),
                Step("drain", self.ingest.drain),
                Step("close the open block", self._close_open_block),
                Step("stop the local HTTP", self._stop_local_http),
                Step("close the store", self.ingest.close),
                Step("stop the verification workers", self._stop_workers),
            )
            if self.pool is not None:
                # Started first (fresh interpreters, a fraction of a second; blocking, before anything runs
                # on the loop); stopped last, after the drain that still needs them.
                self.pool.start()
            await self.ingest.open()
            service.spawn("ingest", self.ingest.run())
            await self.ingest.call(self.writer.prune)
            pins = SqlitePinStore(self.cfg.db)
            pinned = await PinnedLog.open(self.policy, self.policy.logs[0].verifier.name, root, pins)
            self.registry = RegistryCache(root, pinned, pins)
            closing.push_async_callback(self.registry.aclose)
            self.ingest.use_registry(self.registry)
            self.syncer = Syncer(
                root,
                pinned,
                pins,
                mode=self.cfg.mode,
                batch=self.cfg.sync_batch,
                interval_s=self.cfg.sync_interval_s,
                max_blocks_per_s=self.cfg.sync_max_blocks_per_s,
                max_request_bytes=self.cfg.sync_max_request_kb * 1024,
            )
            service.spawn("chain", self._chain_loop())
            service.spawn("sync", self.syncer.run(service.stopping))
            service.spawn("registry", self.registry.refresh_loop(service.stopping, self._forget_key))
            await self._start_connectors()
            # Health answers once the connectors are up, like READY=1: probes never race the listeners.
            # The token is read per request, so a reload (SIGHUP) that changes it applies at once.
            api = LocalApi(self.cfg.db, self.snapshot, lambda: self.cfg.http_token)
            self.local = LocalHttp(api, self.cfg.http_listen)
            self.local.start()
            log.info(
                "gateway %s running: %d connector(s), root %s",
                self.cfg.gateway,
                len(self.connectors),
                self.cfg.root,
            )
            await service.serve()

    async def _forget_key(self, signer: str) -> None:
        await self.ingest.call(self.writer.forget_key, signer)

    async def _status(self) -> str:
        return f"running; {await self._status_line()}"

    async def _reload(self) -> str:
        # File and database work off the loop; a ConfigError keeps the running configuration.
        new = await asyncio.to_thread(gateway_config.load, self.cfg.state, self.cfg.path)
        old = self.cfg
        await self._use_devices(new)
        self.cfg = new
        try:
            await self._start_connectors()
        except Exception:
            # Never leave intake stopped, or the devices changed, behind a "kept the running configuration"
            # message: put the devices and connectors of the running configuration back, then report the
            # reload as failed.
            self.cfg = old
            try:
                await self._use_devices(old)
                await self._start_connectors()
            except Exception as exc:  # noqa: BLE001 (handed to a task, which fails the service with it)
                # Neither configuration can take readings: stop loudly (systemd restarts the gateway)
                # rather than run on without intake.
                self._service.spawn("connectors", _reraise(exc))
            raise
        return f"{len(self.connectors)} connector(s)"

    async def _use_devices(self, cfg: gateway_config.GatewayConfig) -> None:
        """Make ``cfg``'s ``[devices]`` the locally trusted keys, and drop the writer's cached keys."""
        await asyncio.to_thread(provision_local_devices, cfg)
        await self.ingest.call(self.writer.keys.clear)  # writer-thread state, changed on its thread

    async def _start_connectors(self) -> None:
        """Create and start the configured connectors. On a failure, ``self.connectors`` holds the ones
        that started (the caller stops them) and the failure is raised."""
        # The running ones stop first (the new ones may bind the same ports); one that fails to stop was
        # logged, and the new ones are started all the same.
        with contextlib.suppress(Exception):
            await self._stop_connectors()
        self.connectors = self._make_connectors()
        started: list[Connector] = []
        try:
            for c in self.connectors:
                await c.start()
                started.append(c)
        finally:
            self.connectors = started

    # --- shutdown steps, in the order declared in run() ---------------------------------------------------

    async def _stop_connectors(self) -> None:
        """Stop every connector, even when one fails to stop; then raise the first failure."""
        stopping, self.connectors = self.connectors, []
        failures: list[Exception] = []
        for c in stopping:
            try:
                await c.stop()
            except Exception as exc:  # the others must still stop taking input
                log.exception("stopping %s failed", type(c).__name__)
                failures.append(exc)
        if failures:
            raise failures[0]

    async def _close_open_block(self) -> None:
        await self.ingest.call(lambda: self.writer.close_block_if_due(force=True))

    async def _stop_workers(self) -> None:
        if self.pool is not None:
            await asyncio.to_thread(self.pool.stop)

    async def _stop_local_http(self) -> None:
        if self.local is not None:
            await asyncio.to_thread(self.local.stop)


def run(state: Path, config: Path | None = None) -> int:
    """Run the gateway daemon; the process exit code (:func:`runtime.service.run_service`). A bad
    ``gateway.toml`` raises :class:`edge.errors.ConfigError` before anything starts."""
    cfg = gateway_config.load(state, config)
    gateway = Gateway(cfg)
    return run_service(gateway.run)
