"""The gateway daemon: connectors → ingest → writer → chain → sync, under systemd.

Lifecycle (STYLE 9):

* start: schema, local device provisioning, writer thread, ingest loop, chain loop, syncer, local HTTP,
  connectors; then ``READY=1`` and ``STATUS=`` lines; ``WATCHDOG=1`` from the main loop.
* SIGHUP: reload ``gateway.toml``; connectors are stopped and started again with the new settings
  (messages in flight stay unacknowledged and are redelivered; nothing is lost).
* SIGTERM/SIGINT: ``STOPPING=1``; stop intake (connectors), store everything queued, close the open
  block, stop sync, close the store; exit. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.keys import load_private_pem, load_public_pem, public_der
from chain_lite.policy import Policy
from edge import config as gateway_config
from edge import store
from edge.connectors import PLUGINS, Connector
from edge.errors import ConfigError
from edge.ingest import Ingest
from edge.local_api import LocalApi, LocalHttp
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edge.status import GatewayStatus
from edge.sync import Syncer
from edge.writer import Writer
from rootclient.client import AsyncRootClient
from rootclient.pinned_log import PinnedLog
from runtime.sdnotify import Notifier, reloading

log = logging.getLogger(__name__)
CHAIN_TICK_S = 0.2
PRUNE_EVERY_S = 60.0
PRUNE_WHEN_FULL_S = 1.0


def provision_local_devices(cfg: gateway_config.GatewayConfig) -> int:
    """Load ``[devices]`` public keys into the store (works offline); returns how many."""
    conn = store.connect(cfg.db)
    try:
        for ident, path in cfg.devices.items():
            try:
                key = load_public_pem(path.read_bytes())
            except (OSError, ChainError) as exc:
                raise ConfigError(
                    cfg.path or cfg.state / gateway_config.CONFIG_NAME, f"devices.{ident}", f"{path}: {exc}"
                ) from exc
            conn.execute(
                "INSERT INTO devices (identifier, key, origin, fetched_ms) VALUES (?, ?, 'local', NULL) "
                "ON CONFLICT (identifier) DO UPDATE SET key = excluded.key, origin = 'local'",
                (ident, public_der(key)),
            )
    finally:
        conn.close()
    return len(cfg.devices)


class Gateway:
    def __init__(self, cfg: gateway_config.GatewayConfig, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        store.create_schema(cfg.db)
        provision_local_devices(cfg)
        signer = CoseSigner(cfg.gateway, load_private_pem(cfg.key.read_bytes()))
        self.writer = Writer(
            cfg.db,
            signer,
            max_readings=cfg.block_max_readings,
            max_seconds=cfg.block_max_seconds,
            disk_budget_bytes=cfg.disk_budget_mb * 1024 * 1024,
            retention_days=cfg.retention_days,
            counter_window=cfg.counter_window,
        )
        self.ingest = Ingest(self.writer)
        self.policy = Policy.parse(cfg.policy.read_bytes())
        self.connectors: list[Connector] = []
        self.stop_event = asyncio.Event()
        self.reload_event = asyncio.Event()
        self.syncer: Syncer | None = None
        self.registry: RegistryCache | None = None

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
        return GatewayStatus(
            gateway=self.cfg.gateway,
            accepted=stats.accepted,
            rejected=dict(stats.rejected),
            refused=stats.refused,
            store_full=self.writer.store_full,
            sync=self.syncer.state if self.syncer else "starting",
            connectors={f"{c.__class__.__name__}[{i}]": c.state for i, c in enumerate(self.connectors)},
            store=store.read_status(self.cfg.db),
            duplicates=stats.duplicates,
        )

    async def _status_line(self) -> str:
        return (await asyncio.to_thread(self.snapshot)).status_line()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload_event.set)
        await self.ingest.open()
        await self.ingest.call(self.writer.prune)
        async with AsyncRootClient(self.cfg.root, timeout=15.0) as root:
            pins = SqlitePinStore(self.cfg.db)
            pinned = await PinnedLog.open(self.policy, self.policy.logs[0].verifier.name, root, pins)
            self.registry = RegistryCache(root, pinned, pins)
            self.ingest.on_unknown_signer = self._fetch_key
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
            tasks = [
                asyncio.create_task(self.ingest.run(), name="ingest"),
                asyncio.create_task(self._chain_loop(), name="chain"),
                asyncio.create_task(self.syncer.run(self.stop_event), name="sync"),
                asyncio.create_task(
                    self.registry.refresh_loop(self.stop_event, self._forget_key), name="registry"
                ),
            ]
            self.connectors = self._make_connectors()
            for c in self.connectors:
                await c.start()
            # Health answers once the connectors are up, like READY=1: probes never race the listeners.
            local = LocalHttp(LocalApi(self.cfg.db, self.snapshot), self.cfg.http_listen)
            local.start()
            self.notifier.send("READY=1", f"STATUS=running; {await self._status_line()}")
            log.info(
                "gateway %s running: %d connector(s), root %s",
                self.cfg.gateway,
                len(self.connectors),
                self.cfg.root,
            )
            try:
                await self._main_loop()
            finally:
                await self._shutdown(tasks, local)

    async def _fetch_key(self, signer: str) -> bool:
        """An unknown signer: look it up in the root's registry (verified) and cache its key."""
        assert self.registry is not None
        found = await self.registry.fetch(signer)
        if found:
            await self._forget_key(signer)
        return found

    async def _forget_key(self, signer: str) -> None:
        await self.ingest.call(self.writer.forget_key, signer)

    def _on_stop_signal(self) -> None:
        if self.stop_event.is_set():
            log.warning("second signal: exiting now")
            os._exit(1)
        self.stop_event.set()

    async def _main_loop(self) -> None:
        ping = self.notifier.watchdog_interval() or 5.0
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reload_event.wait(), ping)
            if self.reload_event.is_set():
                self.reload_event.clear()
                await self._reload()
            self.notifier.send("WATCHDOG=1", f"STATUS=running; {await self._status_line()}")

    async def _reload(self) -> None:
        reloading(self.notifier)
        try:
            new = gateway_config.load(self.cfg.state, self.cfg.path)
            provision_local_devices(new)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)  # noqa: TRY400 (a typo needs no traceback)
            self.notifier.send("READY=1")
            return
        for c in self.connectors:
            await c.stop()
        self.cfg = new
        self.writer.keys.clear()  # device keys may have changed
        self.connectors = self._make_connectors()
        for c in self.connectors:
            await c.start()
        log.info("configuration reloaded: %d connector(s)", len(self.connectors))
        self.notifier.send("READY=1")

    async def _shutdown(self, tasks: list[asyncio.Task[None]], local: LocalHttp) -> None:
        self.notifier.send("STOPPING=1")
        log.info("stopping: closing intake, storing what is queued, closing the open block")
        for c in self.connectors:
            with contextlib.suppress(Exception):
                await c.stop()
        await self.ingest.drain()
        with contextlib.suppress(Exception):
            await self.ingest.call(lambda: self.writer.close_block_if_due(force=True))
        await asyncio.to_thread(local.stop)
        self.stop_event.set()
        for task in tasks:
            if task.get_name() in ("ingest", "chain"):
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.ingest.close()
        log.info("stopped")


def run(state: Path, config: Path | None = None) -> None:
    cfg = gateway_config.load(state, config)
    gateway = Gateway(cfg)
    asyncio.run(gateway.run())
