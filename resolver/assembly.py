"""Setting up and running the root node and the witness (the CLI in edgeroot/ calls these).

``init_root`` creates the state directory: keys, ``root.toml``, the database with its schema, a record
for each root prefix (self-signed bootstrap writes, the log's first leaves) and ``policy.txt``; the
first batch is integrated at once, so a fresh node already has a signed checkpoint. ``add_root_prefix``
adds a root prefix to an existing node by the same bootstrap write (D-126). ``build_root_app`` runs
the sequencer loop as a background task of the app's event loop; :mod:`resolver.http_service` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from chain_lite import keys
from chain_lite.cose import CoseSigner
from chain_lite.cosignature import log_verifier, witness_verifier
from chain_lite.keys import NoteKey, PrivateKey
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_SM2_COSIGNATURE, VerifierKey
from chain_lite.policy import Group, Log, Policy, Witness
from chain_lite.registry import Value, admin_kid, build_write, prefix_handle, pubkey_value, sign_write
from chain_lite.suite import LOG_PROFILES, SHA256, HashSuite, LogProfile, hash_suite
from resolver import anchoring
from resolver import config as root_config
from resolver import openapi_models as om
from resolver import witness_server as witness_http
from resolver.api import create_app, offline_docs_app
from resolver.cosigning import Cosigner
from resolver.db import Database
from resolver.delegation_check import DelegationCheck
from resolver.errors import ResolverError
from resolver.fast_reads import FastReads
from resolver.http_service import Hooks
from resolver.log_store import set_log_suite
from resolver.metrics import RootMetrics
from resolver.published_marker import PublishedMarker
from resolver.reads import RootNode
from resolver.registry import submit_write
from resolver.sequencer import Sequencer, SequencerBusy
from resolver.witness_server import SIZE_CONTENT_TYPE, WitnessState, witness_log_line
from resolver.witness_server import Witness as WitnessService
from rootclient import routes
from runtime.clock import now_ms
from runtime.keyfiles import load_private_key, write_private
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)


def node_policy(
    log_vkey: VerifierKey,
    witnesses: list[VerifierKey],
    quorum: int,
    url: str | None = None,
    suite: HashSuite = SHA256,
) -> Policy:
    """The C2SP tlog-policy for this log: its key and hash, its witnesses, ``quorum`` of them required."""
    names = tuple(w.name for w in witnesses)
    return Policy(
        [Log(log_verifier(log_vkey), url, suite)],
        [Witness(w.name, witness_verifier(w)) for w in witnesses],
        [Group("witnesses", quorum, names)] if witnesses else [],
        quorum="witnesses" if witnesses and quorum > 0 else "none",
    )


@dataclass(frozen=True, slots=True)
class InitResult:
    state: Path
    origin: str
    prefixes: tuple[str, ...]
    """The root prefixes served, normalised, in the order given."""
    log_vkey: str
    admin_key: Path
    admin_kids: tuple[str, ...]
    """The one admin key's name under each prefix (``300:0.na/<prefix>``, D-126)."""
    policy: Path
    database: str
    witness_vkey: str
    """The node's own cosignature key, with which it witnesses the child logs it anchors (D-105)."""


def bootstrap_prefix(db: Database, origin: str, prefix: str, admin: PrivateKey) -> str:
    """Queue the self-signed creation of root prefix ``prefix`` (normalised) with ``admin`` as its admin
    key at index 300, through the registry's one check of every write (``bootstrap``: the record's own
    key signs it); the write becomes a log leaf like any other. Returns the admin's key name. Raises
    :class:`ResolverError` when the registry refuses it (``0.na/<prefix>`` exists, under a delegation)."""
    kid = admin_kid(prefix)
    request = build_write(
        origin,
        "create",
        prefix_handle(prefix),
        [pubkey_value(300, admin.public_key()), Value(100, "DESC", "string", f"root prefix of {origin}")],
        timestamp_ms=now_ms(),
        nonce=os.urandom(16),
    )
    signed = sign_write(request, CoseSigner(kid, admin))
    submit_write(db, signed.raw, origin=origin, now_ms=now_ms(), bootstrap=True)
    return kid


def init_root(
    state: Path,
    origin: str,
    *prefixes: str,
    database: str | None = None,
    witnesses: list[tuple[str, VerifierKey]] | None = None,
    quorum: int | None = None,
    profile: LogProfile = LOG_PROFILES["default"],
    parent: str = "",
) -> InitResult:
    """Create a root node's state directory (refuses to touch an existing one) serving ``prefixes`` (at
    least one, none under another), all administered by one admin key, ``admin.pem`` (D-126).
    ``profile`` fixes the log's hash and key types for its lifetime (the hash is kept in the database,
    see log_store), its own witness key included (an SM node cosigns its children with SM2, D-105);
    ``parent`` is the URL of the node that will delegate the prefixes to this one, or of a node above
    the ones that will (D-075, D-127). Raises :class:`ValueError` for a bad prefix list."""
    try:
        prefixes = root_config.served_prefixes(prefixes)
    except root_config.PrefixListError as exc:
        raise ValueError(f"--prefix: {exc.reason}") from exc
    state.mkdir(parents=True, exist_ok=True)
    if (state / root_config.CONFIG_NAME).exists():
        raise FileExistsError(
            f"{state / root_config.CONFIG_NAME} exists: this state directory is initialised"
        )
    witnesses = witnesses or []
    for _, vkey in witnesses:
        if vkey.sigtype not in (SIGTYPE_COSIGNATURE_V1, SIGTYPE_SM2_COSIGNATURE):
            raise ValueError(f"witness key {vkey.name} is not a cosignature (0x04 or SM2) key")
    quorum = len(witnesses) if quorum is None else quorum
    if not 0 <= quorum <= len(witnesses):
        raise ValueError(f"quorum {quorum} is not between 0 and the {len(witnesses)} witnesses")
    log_key = NoteKey.generate(origin, profile.log_sigtype)
    admin = keys.generate_p256()
    db_url = database or f"sqlite:///{(state / 'root.db').resolve()}"
    (state / root_config.CONFIG_NAME).write_text(
        root_config.render(
            {
                "origin": origin,
                "prefixes": list(prefixes),
                "parent": parent,
                "database": db_url,
                "witness": [{"name": vk.name, "url": url, "vkey": str(vk)} for url, vk in witnesses],
            }
        )
    )
    cfg = root_config.load(state)
    write_private(cfg.log_skey, (log_key.skey() + "\n").encode())
    cfg.log_vkey.write_text(log_key.vkey() + "\n")
    write_private(cfg.admin_key, keys.private_pem(admin))
    (state / "admin.pub.pem").write_bytes(keys.public_pem(admin.public_key()))
    witness_key = anchoring.ensure_witness_key(state, origin, profile.cosign_sigtype)
    policy = node_policy(
        VerifierKey.parse(log_key.vkey()), [vk for _, vk in witnesses], quorum, suite=profile.hash
    )
    cfg.policy.write_text(policy.to_text())

    db = Database(cfg.database)
    try:
        db.create_schema()
        with db.transaction() as tx:
            set_log_suite(tx, profile.hash)  # before the first leaf: a log's hash never changes
        kids = tuple(bootstrap_prefix(db, origin, prefix, admin) for prefix in cfg.prefixes)
        sequencer = Sequencer(db, log_key.log_signer(), origin, publish=not witnesses)
        try:
            sequencer.integrate(now_ms())
        finally:
            sequencer.close()
    finally:
        db.close()
    return InitResult(
        state, origin, cfg.prefixes, log_key.vkey(), cfg.admin_key, kids, cfg.policy, cfg.database,
        witness_vkey=witness_key.vkey(),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AddedPrefix:
    prefix: str
    prefixes: tuple[str, ...]
    """Every prefix the node now serves, as ``root.toml`` lists them."""
    admin_kid: str
    config: Path
    sequenced: bool
    """Whether this command integrated the write (no node was running); else the running node does."""


def add_root_prefix(
    state: Path, prefix: str, *, config: Path | None = None, key: Path | None = None
) -> AddedPrefix:
    """Add root prefix ``prefix`` to the initialised node in ``state``: the bootstrap write of
    :func:`init_root` (signed by ``key``, default the node's ``admin.pem``, which becomes the prefix's
    admin key), logged like every write, then ``prefixes`` in ``root.toml`` (``config``, default
    ``STATE/root.toml``; a ``prefix = "..."`` file is rewritten with ``prefixes = [...]``).

    Checked before anything is written: the new list must be valid (:func:`root_config.served_prefixes`).
    The write goes into the database directly, as ``init`` does: a running node accepts writes under
    the prefix at once and sequences the leaf with its next batch (this call integrates it itself when
    no node holds the sequencer lock); the running node's delegation check takes the new prefix on its
    next reload (SIGHUP). Raises :class:`ValueError` (a bad prefix list), :class:`ConfigError`,
    :class:`ResolverError` (the registry refuses the write), :class:`KeyFileError` and :class:`OSError`.
    """
    cfg = root_config.load(state, config)
    try:
        prefixes = root_config.served_prefixes((*cfg.prefixes, prefix))
    except root_config.PrefixListError as exc:
        raise ValueError(f"cannot add {prefix}: {exc.reason}") from exc
    path = cfg.path or state / root_config.CONFIG_NAME
    if not os.access(path, os.W_OK):  # checked first: a prefix logged but missing from root.toml helps nobody
        raise PermissionError(f"cannot add {prefix}: {path} is not writable (nothing was changed)")
    admin = load_private_key(key or cfg.admin_key)
    db = Database(cfg.database)
    try:
        kid = bootstrap_prefix(db, cfg.origin, prefixes[-1], admin)
        root_config.update(path, {"prefixes": list(prefixes), "prefix": None})
        try:
            sequencer = Sequencer(
                db, NoteKey.parse_skey(cfg.log_skey.read_text()).log_signer(), cfg.origin,
                max_batch=cfg.max_batch, publish=not cfg.witnesses, identifier_bases=(cfg.identifier_base,),
            )  # fmt: skip
        except SequencerBusy:
            sequenced = False  # a running node sequences the leaf with its next batch
        else:
            try:
                sequencer.integrate(now_ms())
            finally:
                sequencer.close()
            sequenced = True
    finally:
        db.close()
    return AddedPrefix(prefixes[-1], prefixes, kid, path, sequenced)


STANDBY_RETRY_S = 2.0


class Role:
    """Whether this process sequences the database or stands by (for STATUS=, /healthz and /metrics), and
    which worker it is under ``root run --workers N`` (``None`` when it serves alone)."""

    def __init__(self, worker: int | None = None) -> None:
        self.name = "starting"
        self.worker = worker


async def run_sequencer(
    make: Callable[[], Sequencer],
    cosigner: Cosigner | None,
    interval_s: float,
    stop: asyncio.Event,
    *,
    published: Callable[[], None],
    role: Role | None = None,
) -> None:
    """Become the database's sequencer, waiting as a hot standby while another process is.

    Several ``root run`` processes may share one database (PostgreSQL, or one SQLite file on one
    host): all serve the API, one sequences, and when it stops another takes the lock within
    :data:`STANDBY_RETRY_S`. ``published`` is called (on the loop) whenever this process publishes a
    checkpoint or adds cosignatures to one, so its own API moves to it at once.
    """
    role = role or Role()
    announced = False
    while not stop.is_set():
        try:
            sequencer = make()
        except SequencerBusy:
            role.name = "standby"
            if not announced:
                log.info("another process is sequencing this database; serving the API, standing by")
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_RETRY_S)
            continue
        role.name = "sequencing"
        log.info("sequencing (batches every %.0f ms or %d leaves)", interval_s * 1000, sequencer.max_batch)
        try:
            await sequencer_loop(sequencer, cosigner, interval_s, stop, published)
        finally:
            sequencer.close()
            role.name = "stopped"


async def sequencer_loop(
    sequencer: Sequencer,
    cosigner: Cosigner | None,
    interval_s: float,
    stop: asyncio.Event,
    published: Callable[[], None],
) -> None:
    """Integrate a batch every ``interval_s`` (at once again when a batch was full); cosign; publish;
    call ``published`` after each publication."""
    if cosigner is not None and await _publish_leftovers(sequencer.db, cosigner):
        published()
    while not stop.is_set():
        started = time.monotonic()
        try:
            # A batch is one blocking database transaction: run it off the event loop.
            batch = await asyncio.to_thread(sequencer.integrate, now_ms())
            if batch is not None and cosigner is not None:
                await cosigner.cosign_and_publish(batch.checkpoint.checkpoint.size)
                fresh = True
            elif batch is not None:
                fresh = sequencer.publish_immediately
            else:
                fresh = cosigner is not None and await cosigner.retry_failing() > 0
            if fresh:
                published()
        except Exception:
            log.exception("sequencer batch failed; retrying after the interval")
            batch = None
        full = batch is not None and batch.leaves > sequencer.max_batch
        if not full:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - started)))


def _unpublished(db: Database) -> int | None:
    with db.transaction(write=False) as tx:
        row = tx.one("SELECT MAX(size) FROM checkpoints WHERE published = 0")
    return None if row is None or row[0] is None else int(row[0])


async def _publish_leftovers(db: Database, cosigner: Cosigner) -> bool:
    """A checkpoint signed before a crash but not yet through its witness round is published now."""
    size = await asyncio.to_thread(_unpublished, db)  # database: off the loop
    if size is None:
        return False
    await cosigner.cosign_and_publish(size)
    return True


def build_root_app(  # noqa: PLR0915 (the app's parts wired, and one closure per systemd hook)
    cfg: root_config.RootConfig, *, worker: int | None = None, marker: PublishedMarker | None = None
) -> tuple[FastAPI, RootNode]:
    """The root node's app with its sequencer running for the app's lifetime.

    ``app.state.hooks`` says what systemd hears (:mod:`resolver.http_service`): a status line, and a reload
    that re-reads ``root.toml`` and applies its prefixes (to the delegation check, D-127) and its witness
    list (other keys need a restart). ``worker`` and
    ``marker``: this app is worker ``worker`` of ``root run --workers N``, keeping its answers no older
    than the other workers' through ``marker`` (:mod:`resolver.published_marker`).
    """
    db = Database(cfg.database)
    db.create_schema()
    node = RootNode(db, cfg.origin, identifier_bases=(cfg.identifier_base,), marker=marker)
    log_key = NoteKey.parse_skey(cfg.log_skey.read_text())
    metrics = RootMetrics()
    role = Role(worker)
    running: dict[str, Cosigner] = {}
    delegations = DelegationCheck(
        cfg.parent, cfg.prefixes, VerifierKey.parse(log_key.vkey()), cfg.parent_check_s,
        metrics.prefix_delegated,
    )  # fmt: skip

    def make_sequencer() -> Sequencer:
        return Sequencer(
            db, log_key.log_signer(), cfg.origin, max_batch=cfg.max_batch, publish=not cfg.witnesses,
            identifier_bases=(cfg.identifier_base,),
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        # The first published view before serving (a worker thread builds the map); then a follower
        # keeps it current, woken by this process's sequencer and polling for the others'.
        await asyncio.to_thread(node.refresh)
        async with httpx.AsyncClient() as client:
            cosigner = Cosigner(db, cfg.witnesses, client, metrics) if cfg.witnesses else None
            if cosigner is not None:
                running["cosigner"] = cosigner
            # hooks.spawn: a task of the daemon's Service (its death stops the daemon), or a plain task
            follower = _app.state.hooks.spawn("published-view", node.follow(stop))
            checking = None
            if cfg.parent:  # a top node has no delegation to check
                checking = _app.state.hooks.spawn("delegation-check", delegations.run(stop))
            task = _app.state.hooks.spawn(
                "sequencer",
                run_sequencer(
                    make_sequencer, cosigner, cfg.interval_ms / 1000, stop, role=role, published=node.wake
                ),
            )
            try:
                yield
            finally:
                stop.set()
                node.wake()
                await task
                await follower
                if checking is not None:
                    await checking
                db.close()

    def status() -> str:
        try:
            size = f"log size {node.view().size}"
        except ResolverError:
            size = "no published checkpoint yet"
        failing = metrics.witnesses_failing()
        witnesses = f"; not cosigning: {', '.join(failing)}" if failing else ""
        lacking = [s.prefix for s in delegations.statuses() if s.problem is not None]
        prefixes = f"; not delegated here: {', '.join(lacking)}" if lacking else ""
        return f"{role.name}; {size}{witnesses}{prefixes}"

    def reload() -> str:
        new = root_config.load(cfg.state, cfg.path)
        restart = ("origin", "parent", "database", "interval_ms", "max_batch", "max_body_bytes", "children")
        for key in restart:
            if getattr(new, key) != getattr(cfg, key):
                log.warning("root.toml %s changed: takes effect after a restart", key)
        # The prefixes served (root add-prefix): the registry reads them from the database, the check here.
        delegations.set_prefixes(new.prefixes)
        served = f"prefixes now {', '.join(new.prefixes)}"
        cosigner = running.get("cosigner")
        if cosigner is None:
            if new.witnesses:
                log.warning("root.toml now lists witnesses: takes effect after a restart")
            return f"{served}; no witness list to update"
        cosigner.set_witnesses(new.witnesses)
        return f"{served}; witnesses now {', '.join(w.name for w in new.witnesses) or 'none'}"

    # Published read-only at routes.POLICY, so a browser can check checkpoints against it.
    policy_text = cfg.policy.read_bytes() if cfg.policy.exists() else None
    app = create_app(
        node,
        max_body=cfg.max_body_bytes,
        lifespan=lifespan,
        metrics=metrics,
        role=role,
        policy_text=policy_text,
        delegations=delegations,
    )
    # A parent witnesses its child logs ([[child]] tables and the nodes it delegated a prefix to) and
    # anchors their checkpoints in this log (D-078, D-085): every node may delegate, so every node serves it.
    parent = anchoring.build(
        cfg.state, cfg.origin, db, node, children=cfg.children, registry=metrics.registry
    )
    anchoring.install(app, node, parent)
    # The hot reads as precomputed bytes, in front of FastAPI's routing (resolver.fast_reads).
    app.add_middleware(FastReads, node=node, metrics=metrics)
    app.state.hooks = Hooks(status, reload, refused=lambda why: metrics.refused.labels(reason=why).inc())
    return app, node


# --- witness ---------------------------------------------------------------------------------------------


def init_witness(
    state: Path,
    name: str,
    logs: list[VerifierKey],
    suites: Mapping[str, HashSuite] | None = None,
    *,
    alg: str = "p256",
) -> NoteKey:
    """A witness's state: its key (Ed25519, or SM2 with ``alg="sm2"``: D-062) and the logs it follows."""
    state.mkdir(parents=True, exist_ok=True)
    key = NoteKey.generate(name, SIGTYPE_SM2_COSIGNATURE if alg == "sm2" else SIGTYPE_COSIGNATURE_V1)
    write_private(state / "witness.skey", (key.skey() + "\n").encode())
    (state / "witness.vkey").write_text(key.vkey() + "\n")
    (state / "logs.txt").write_text(
        "# log verifier keys this witness cosigns for, one per line (then the log's hash if not sha256)\n"
        + "".join(f"{witness_log_line(vk, (suites or {}).get(vk.name, SHA256))}\n" for vk in logs)
    )
    return key


def load_witness_logs(path: Path) -> tuple[list[VerifierKey], dict[str, HashSuite]]:
    """The log verifier keys in ``path`` (``logs.txt``: one per line, ``#`` comments), and the hash
    profile of each log whose line names one after its key."""
    keys: list[VerifierKey] = []
    suites: dict[str, HashSuite] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        vkey_text, _, hash_name = line.strip().partition(" ")
        vkey = VerifierKey.parse(vkey_text)
        keys.append(vkey)
        if hash_name.strip():
            suites[vkey.name] = hash_suite(hash_name.strip())
    return keys, suites


def build_witness_app(state: Path, logs: Path | None = None) -> FastAPI:
    """The witness's app; ``app.state.hooks``: a status line, and a reload that re-reads the logs file
    (``logs``, default ``STATE/logs.txt``)."""
    logs = logs or state / "logs.txt"
    key = NoteKey.parse_skey((state / "witness.skey").read_text())
    followed, suites = load_witness_logs(logs)
    witness = WitnessService(key.cosigner(), followed, WitnessState(state / "witness.db"), suites)
    app = offline_docs_app(title="edgeroot witness", summary="C2SP tlog-witness add-checkpoint", version="1")
    registry = CollectorRegistry()
    answers = Counter(
        "edgeroot_witness_answers", "add-checkpoint answers by HTTP status", ["status"], registry=registry
    )
    refusals = RateLimitedLog(log, 10.0)
    cosigned = {"count": 0}

    def status() -> str:
        return f"following {len(witness.logs)} log(s); {cosigned['count']} checkpoint(s) cosigned since start"

    def reload() -> str:
        witness.set_logs(*load_witness_logs(logs))
        return f"following {', '.join(sorted(witness.logs)) or 'no logs'}"

    app.state.hooks = Hooks(status, reload)

    @app.post(
        routes.WITNESS_ADD_CHECKPOINT,
        response_class=PlainTextResponse,
        responses=om.witness_answers(SIZE_CONTENT_TYPE),
        openapi_extra=om.request_body("text/plain", "tlog-witness: old size, proof, checkpoint"),
    )
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness add-checkpoint."""
        _, answer = await witness_http.serve(witness, request, int(time.time()))
        answers.labels(status=str(answer.status)).inc()
        cosigned["count"] += answer.status == 200
        if witness_http.is_refusal(answer):
            refusals.warning(
                str(answer.status),
                "refused add-checkpoint (%d): %s",
                answer.status,
                answer.body.decode().strip(),
            )
        return witness_http.http_response(answer)

    @app.get(
        routes.METRICS,
        response_class=Response,
        responses={200: om.content(CONTENT_TYPE_LATEST, "Prometheus text exposition")},
    )
    def metrics() -> Response:
        """Prometheus text: answers by status (409 with a size is the normal catch-up, not a refusal)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
