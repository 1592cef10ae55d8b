"""The writer: the one thread that writes the gateway's SQLite file.

It verifies a batch of submissions, stores accepted readings and quarantined rejects in **one**
transaction, and only then reports outcomes (so every acknowledgement follows a commit). It also closes
blocks (every ``max_readings`` readings or ``max_seconds``), signs their headers and appends them to
the local chain, and prunes anchored readings by age and disk budget.

Everything here is blocking and runs on the writer thread (:mod:`edge.ingest` calls it through a
one-thread executor), so the verifier's counters and key cache need no locks. With a
:class:`edge.verify_pool.VerifyPool` the signatures of a batch are checked in worker processes, between
the checks before them and the counters after them, which stay here (D-081).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from chain_lite.block import GENESIS_PREV, header_for, parse_block, sign_block
from chain_lite.cose import CoseSigner, verify_sign1
from chain_lite.envelope import Envelope
from chain_lite.errors import SignatureError
from chain_lite.keys import PublicKey, load_public_der
from chain_lite.suite import SHA256, HashSuite
from edge import store
from edge.admission import COUNTER_WINDOW_DEFAULT, DUPLICATE, Accepted, Duplicate, ReadingVerifier, Rejected
from edge.intake import ACCEPTED, HELD, KEY_LOOKUP, Outcome, Submission
from edge.status import CounterReset
from edge.verify_pool import VerifyPool
from runtime.clock import now_ms

log = logging.getLogger(__name__)
PRUNE_TO = 0.9
"""Pruning for the budget frees down to 90 % of it, and refused input is taken again only below that."""
MAX_SIGNERS_PER_BLOCK = 500
"""Keeps a signed header (one counter range per signer) well under the root's 65,535-byte leaf cap."""
MAX_HELD = 10_000
MAX_HELD_BYTES = 16 * 1024 * 1024
"""Readings held durably (the ``held`` table), waiting for their signers' key lookups: at most this many
rows and bytes (they count against the disk budget too). Beyond, a reading that would be held is refused
unacknowledged (``key-lookup``): its sender keeps it and sends it again (D-059)."""


class Writer:
    def __init__(
        self,
        path: Path,
        gateway: CoseSigner,
        *,
        max_readings: int,
        max_seconds: float,
        disk_budget_bytes: int,
        retention_days: float,
        counter_window: int = COUNTER_WINDOW_DEFAULT,
        suite: HashSuite = SHA256,
        pool: VerifyPool | None = None,
    ) -> None:
        self.path = path
        self.pool = pool
        """Where signatures are checked; None: on this thread (a one-core box, ``verify.workers``)."""
        self.gateway = gateway
        self.suite = suite  # the root log's hash profile: readings roots and block ids use it
        self.max_readings = max_readings
        self.max_seconds = max_seconds
        self.disk_budget_bytes = disk_budget_bytes
        self.retention_ms = int(retention_days * 86_400_000)
        self.conn: sqlite3.Connection | None = None
        self.keys: dict[str, PublicKey | None] = {}
        self._ders: dict[str, bytes] = {}
        """The DER of each key in :attr:`keys`, as the workers receive it."""
        self.verifier = ReadingVerifier(self._key, {}, stored=self._stored, window=counter_window)
        self._batch_signed: dict[tuple[str, int], list[bytes]] = {}
        """Readings accepted in the batch being judged, not yet committed, by (signer, counter)."""
        self.store_full = False
        self.may_hold: Callable[[str], bool] | None = None
        """Whether a reading whose signer has no key here is held while the registry is asked (True), or
        quarantined as ``unknown-device`` (False: absence proven, or no registry to ask). Called on this
        thread; set once by :meth:`edge.ingest.Ingest.use_registry`."""
        self.held: dict[str, int] = {}
        """Signers with readings in the ``held`` table, with how many (see :meth:`release`)."""
        self.held_count = 0
        self.held_bytes = 0
        """Rows and raw bytes in the ``held`` table, for its bound (:data:`MAX_HELD`)."""
        self._batch_held: dict[str, int] = {}
        self._batch_held_bytes = 0
        """Readings held in the batch being judged, not yet committed, by signer (and their bytes)."""

    def open(self) -> None:
        """Open the write connection (on the writer thread), load counters and apply the counter resets
        requested while the gateway was stopped."""
        self.conn = store.connect(self.path)
        self.verifier.counters = dict(self.conn.execute("SELECT signer, last FROM counters").fetchall())
        # Readings held when the gateway stopped are judged once their lookups end (Ingest restarts them).
        loaded = store.held_by_signer(self.conn)
        self.held = {signer: rows for signer, (rows, _) in loaded.items()}
        self.held_count = sum(self.held.values())
        self.held_bytes = sum(size for _, size in loaded.values())
        self.process([])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _db(self) -> sqlite3.Connection:
        assert self.conn is not None, "Writer.open() first"
        return self.conn

    def _key(self, signer: str) -> PublicKey | None:
        if signer in self.held or signer in self._batch_held:
            # Earlier readings of this signer wait for its lookup: a later one must not overtake them.
            return None
        if signer not in self.keys:
            row = self._db().execute("SELECT key FROM devices WHERE identifier = ?", (signer,)).fetchone()
            if row is not None:
                self._ders[signer] = bytes(row[0])
            self.keys[signer] = None if row is None else load_public_der(bytes(row[0]))
        return self.keys[signer]

    def _stored(self, signer: str, counter: int) -> list[bytes]:
        """The admission's lookup of stored readings: this batch's first, then the file's."""
        return self._batch_signed.get((signer, counter), []) + store.readings_with_counter(
            self._db(), signer, counter
        )

    def forget_key(self, signer: str) -> None:
        """Drop a cached key (or a cached absence) after the devices table changed."""
        self.keys.pop(signer, None)

    def _hold(self, sub: Submission, signer: str, *, stored: bool) -> Outcome | None:
        """Hold ``sub`` (a reading of ``signer``, who has no key here) while the registry is asked; None
        when its absence is proven or there is no registry: then ``unknown-device`` is final.

        A held reading is written to the ``held`` table in this batch's transaction (``stored``: it is
        there already, being judged again), so its outcome is durable and its sender is acknowledged.
        Beyond :data:`MAX_HELD` it is refused unacknowledged instead (``key-lookup``)."""
        waiting = signer in self.held or signer in self._batch_held  # earlier readings of it are held
        if not waiting and (self.may_hold is None or not self.may_hold(signer)):
            return None
        if not stored:
            rows = self.held_count + sum(self._batch_held.values())
            size = self.held_bytes + self._batch_held_bytes + len(sub.raw)
            if rows >= MAX_HELD or size > MAX_HELD_BYTES:
                detail = f"too many readings wait for key lookups; send the reading of {signer} again later"
                return Outcome(accepted=False, durable=False, reason=KEY_LOOKUP, detail=detail, signer=signer)
            self._batch_held_bytes += len(sub.raw)
        self._batch_held[signer] = self._batch_held.get(signer, 0) + 1
        return Outcome(
            accepted=False,
            durable=True,
            reason=HELD,
            detail=f"held durably while the key of {signer} is looked up; judged then",
            signer=signer,
        )

    def release(self, signer: str) -> list[tuple[Submission, Outcome]]:
        """The lookup of ``signer`` settled it (key found, or absence proven): judge its held readings
        now, in arrival order and before any later reading of it, and delete them from ``held`` in the
        same transaction that stores or quarantines them. Readings it holds again (the key is still
        unknown and absence unproven) stay in the table."""
        if signer not in self.held:
            return []
        rows = store.held_of(self._db(), signer)
        count = self.held.pop(signer)
        self.keys.pop(signer, None)  # the registry may have stored a key meanwhile
        subs = [Submission(raw, source, received_ms) for _, source, received_ms, raw in rows]
        try:
            outcomes = self.process(subs, held_ids=[row[0] for row in rows])
        except BaseException:
            self.held[signer] = count
            raise
        return list(zip(subs, outcomes, strict=True))

    # --- ingest --------------------------------------------------------------------------------------------

    def process(self, batch: list[Submission], held_ids: list[int] | None = None) -> list[Outcome]:
        """Verify and store a batch in one transaction; outcomes are valid only once this returns.

        ``held_ids``: the batch is read from the ``held`` table (:meth:`release`), these are its rows;
        each one judged is deleted from it in the same transaction.

        Counter resets an operator requested (``edgeroot gateway device reset-counter``) are applied
        first, in the same transaction: they may come from another process at any time, and this thread
        alone holds the counters in memory (D-053).

        Signatures are checked for the whole batch before any counter is judged (:meth:`_authentic`); a
        failure there (:class:`edge.verify_pool.VerificationUnavailable`) leaves everything as it was."""
        db = self._db()
        authentic = self._authentic(batch)
        saved_counters = dict(self.verifier.counters)
        resets = self._apply_counter_resets(store.pending_counter_resets(db))
        outcomes: list[Outcome] = []
        readings, quarantine, gaps, touched = [], [], [], {}
        duplicates = 0
        self._batch_signed = {}
        new_held: list[tuple[str, str, int, bytes]] = []
        judged_held: list[tuple[int, int]] = []  # (id, bytes) of held rows judged now
        for at, sub in enumerate(batch):
            held_id = None if held_ids is None else held_ids[at]
            verdict = self._judge(authentic[at])
            if isinstance(verdict, Accepted):
                env = verdict.envelope
                readings.append((env.signer, env.subject, env.counter, sub.received_ms, sub.raw))
                self._batch_signed.setdefault((env.signer, env.counter), []).append(sub.raw)
                touched[env.signer] = env.counter
                if verdict.gap_from is not None:
                    gaps.append((env.signer, verdict.gap_from, env.counter, sub.received_ms))
                outcomes.append(ACCEPTED)
            elif isinstance(verdict, Duplicate):
                # Stored before: acknowledged as a success, so the sender frees it (D-052).
                duplicates += 1
                detail = f"{verdict.envelope.signer} counter {verdict.envelope.counter} is stored already"
                outcomes.append(Outcome(True, True, DUPLICATE, detail))
            elif (
                verdict.reason == "unknown-device"
                and verdict.signer is not None
                and (held := self._hold(sub, verdict.signer, stored=held_id is not None)) is not None
            ):
                outcomes.append(held)  # neither stored nor quarantined: judged once the lookup ends
                if held_id is None and held.durable:
                    new_held.append((verdict.signer, sub.source, sub.received_ms, sub.raw))
                continue  # a held row held again stays in the table
            else:
                quarantine.append(
                    (sub.received_ms, sub.source, verdict.reason, sub.raw[: store.QUARANTINE_RAW_MAX])
                )
                outcomes.append(Outcome(False, True, verdict.reason, verdict.detail, verdict.signer))
            if held_id is not None:
                judged_held.append((held_id, len(sub.raw)))
        self._batch_signed = {}
        batch_held, self._batch_held, self._batch_held_bytes = self._batch_held, {}, 0
        try:
            db.execute("BEGIN IMMEDIATE")
            self._write(
                db, resets=resets, readings=readings, quarantine=quarantine, gaps=gaps, touched=touched,
                duplicates=duplicates, new_held=new_held, judged_held=[held_id for held_id, _ in judged_held],
            )  # fmt: skip
            db.execute("COMMIT")
            self._held_committed(batch_held, new_held, judged_held)
            if readings or quarantine or new_held:
                # After every batch, not once a minute: input is refused as soon as the budget is reached,
                # so it is overshot by one batch at most (three PRAGMAs: microseconds).
                self._check_budget()
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.verifier.counters = saved_counters  # and the resets stay pending, for the next batch
            raise
        for reset, previous in resets:
            log.warning(
                "counter of %s reset from %s %s, requested by %s (%s): replay protection restarts there",
                reset.signer,
                previous,
                "(forgotten)" if reset.to is None else f"to {reset.to}",
                reset.requested_by,
                reset.reason or "no reason given",
            )
        return outcomes

    def _authentic(self, batch: list[Submission]) -> list[Rejected | Envelope]:
        """Each submission's checks before its counter, in order: its verdict, or its envelope when the
        signature is good. The key of a signer is the same for every reading of it in one batch (held
        signers have none until :meth:`release`), so checking all of them before judging any counter
        gives the verdicts :meth:`ReadingVerifier.check` would give one by one."""
        self._batch_held, self._batch_held_bytes = {}, 0  # so a signer's key is looked up as committed
        pre: list[Rejected | tuple[Envelope, PublicKey]] = [
            Rejected(sub.reject, "") if sub.reject is not None else self.verifier.precheck(sub.raw)
            for sub in batch
        ]
        signed = [p for p in pre if not isinstance(p, Rejected)]
        if self.pool is not None:
            results = self.pool.verify([(env.sign1, self._ders[env.signer]) for env, _ in signed])
        else:
            results = []
            for env, key in signed:
                try:
                    verify_sign1(env.sign1, key)
                except SignatureError as exc:
                    results.append(str(exc))
                else:
                    results.append(None)
        verdicts = iter(results)
        out: list[Rejected | Envelope] = []
        for p in pre:
            if isinstance(p, Rejected):
                out.append(p)
            elif (why := next(verdicts)) is None:
                out.append(p[0])
            else:
                out.append(Rejected("bad-signature", why))
        return out

    def _judge(self, checked: Rejected | Envelope) -> Accepted | Duplicate | Rejected:
        """The verdict of an authentic envelope's counter (judged in batch order), or the one it had."""
        return checked if isinstance(checked, Rejected) else self.verifier.judge_counter(checked)

    @staticmethod
    def _write(
        db: sqlite3.Connection,
        *,
        resets: list[tuple[CounterReset, int | None]],
        readings: list[tuple[str, str, int, int, bytes]],
        quarantine: list[tuple[int, str, str, bytes]],
        gaps: list[tuple[str, int, int, int]],
        touched: dict[str, int],
        duplicates: int,
        new_held: list[tuple[str, str, int, bytes]],
        judged_held: list[int],
    ) -> None:
        """A judged batch's rows, inside :meth:`process`'s transaction: held readings are written, and
        judged ones deleted from ``held``, in the transaction that stores or quarantines the rest."""
        for reset, previous in resets:
            if reset.to is None:
                db.execute("DELETE FROM counters WHERE signer = ?", (reset.signer,))
            else:
                db.execute(
                    "INSERT INTO counters (signer, last) VALUES (?, ?) "
                    "ON CONFLICT (signer) DO UPDATE SET last = excluded.last",
                    (reset.signer, reset.to),
                )
            store.mark_counter_reset_applied(db, reset.id, previous, now_ms())
        db.executemany(
            "INSERT INTO readings (signer, subject, counter, received_ms, raw) VALUES (?, ?, ?, ?, ?)",
            readings,
        )
        db.executemany(
            "INSERT INTO quarantine (received_ms, source, reason, raw) VALUES (?, ?, ?, ?)", quarantine
        )
        db.executemany("INSERT INTO gaps (signer, expected, got, received_ms) VALUES (?, ?, ?, ?)", gaps)
        db.executemany(
            "INSERT INTO counters (signer, last) VALUES (?, ?) "
            "ON CONFLICT (signer) DO UPDATE SET last = excluded.last",
            list(touched.items()),
        )
        if duplicates:
            store.add_duplicates(db, duplicates)
        store.insert_held(db, new_held)
        store.delete_held(db, judged_held)

    def _held_committed(
        self,
        batch_held: dict[str, int],
        new_held: list[tuple[str, str, int, bytes]],
        judged_held: list[tuple[int, int]],
    ) -> None:
        """The batch's changes to the ``held`` table are committed: count them."""
        for signer, rows in batch_held.items():
            self.held[signer] = self.held.get(signer, 0) + rows
        self.held_count += len(new_held) - len(judged_held)
        self.held_bytes += sum(len(row[3]) for row in new_held) - sum(size for _, size in judged_held)

    def _apply_counter_resets(self, pending: list[CounterReset]) -> list[tuple[CounterReset, int | None]]:
        """Apply resets to the counters in memory, oldest first; each with the counter it replaced."""
        applied = []
        for reset in pending:
            previous = self.verifier.counters.get(reset.signer)
            if reset.to is None:
                self.verifier.counters.pop(reset.signer, None)
            else:
                self.verifier.counters[reset.signer] = reset.to
            applied.append((reset, previous))
        return applied

    # --- chain ---------------------------------------------------------------------------------------------

    def close_block_if_due(self, *, force: bool = False) -> int | None:
        """Close one block when enough readings wait or the oldest has waited long enough; its height."""
        db = self._db()
        count, oldest = db.execute(
            "SELECT COUNT(*), MIN(received_ms) FROM readings WHERE block IS NULL"
        ).fetchone()
        if not count:
            return None
        due = count >= self.max_readings or now_ms() - oldest >= self.max_seconds * 1000
        if not (due or force):
            return None
        rows = db.execute(
            "SELECT id, signer, counter, raw FROM readings WHERE block IS NULL ORDER BY id LIMIT ?",
            (self.max_readings,),
        ).fetchall()
        readings: list[tuple[str, int, bytes]] = []
        signers: set[str] = set()
        for _, signer, counter, raw in rows:
            if signer not in signers and len(signers) >= MAX_SIGNERS_PER_BLOCK:
                break
            signers.add(signer)
            readings.append((signer, counter, bytes(raw)))
        ids = [r[0] for r in rows[: len(readings)]]
        prev = db.execute("SELECT height, raw, time_ms FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        height = 0 if prev is None else prev[0] + 1
        prev_id = GENESIS_PREV if prev is None else parse_block(bytes(prev[1])).block_id
        time_ms = max(now_ms(), 0 if prev is None else prev[2])
        header = header_for(self.gateway.kid, height, prev_id, readings, time_ms, suite=self.suite)
        block = sign_block(header, self.gateway)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO blocks (height, block_id, raw, first_reading, count, time_ms, state) "
                "VALUES (?, ?, ?, ?, ?, ?, 'chained')",
                (height, block.block_id, block.raw, ids[0], len(ids), time_ms),
            )
            db.execute(
                "UPDATE readings SET block = ? WHERE id >= ? AND id <= ? AND block IS NULL",
                (height, ids[0], ids[-1]),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.debug("closed block %d with %d readings", height, len(ids))
        return height

    # --- retention -----------------------------------------------------------------------------------------

    def disk_used(self) -> int:
        """Bytes of live data: pages in use (freed pages are reused, so the file itself never shrinks)."""
        db = self._db()
        pages = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    def prune(self) -> int:
        """Delete anchored readings past retention, then oldest anchored first while over budget (down
        to :data:`PRUNE_TO` of it, so intake does not flap at the edge).

        Unanchored readings are never deleted; when the budget is reached with nothing left to prune,
        :attr:`store_full` is set and new input is refused until anchoring frees space.
        """
        db = self._db()
        cutoff = now_ms() - self.retention_ms
        anchored = "block IN (SELECT height FROM blocks WHERE state = 'anchored')"
        deleted = db.execute(f"DELETE FROM readings WHERE received_ms < ? AND {anchored}", (cutoff,)).rowcount  # noqa: S608
        # Refusing input (full) with pages in use between the low mark and the budget still prunes: those
        # pages can drop below the budget without any pruning (blocks closed, pages freed), and input is
        # taken again only below the low mark.
        if self.store_full or self.disk_used() > self.disk_budget_bytes:
            while self.disk_used() > self.disk_budget_bytes * PRUNE_TO:
                oldest = f"SELECT id FROM readings WHERE {anchored} ORDER BY id LIMIT 1000"  # noqa: S608
                gone = db.execute(f"DELETE FROM readings WHERE id IN ({oldest})").rowcount  # noqa: S608
                if not gone:
                    break
                deleted += gone
        self._check_budget()
        return int(deleted)

    def _check_budget(self) -> None:
        """Set :attr:`store_full` from the pages in use, logging each change once. Once full, input is
        taken again only below :data:`PRUNE_TO` of the budget: room for a few batches, so intake does not
        flap at the edge while anchoring catches up."""
        used = self.disk_used()
        full = used > self.disk_budget_bytes * (PRUNE_TO if self.store_full else 1)
        if full != self.store_full:
            (log.error if full else log.warning)(
                "disk budget %s: %d bytes used of %d%s",
                "reached" if full else "no longer reached",
                used,
                self.disk_budget_bytes,
                "; refusing new readings until blocks are anchored" if full else "",
            )
        self.store_full = full
