"""A C2SP tlog-witness: ``POST /add-checkpoint`` cosigns a log's checkpoint if it extends the last one.

Request body: ``old <size>``, zero or more base64 consistency-proof lines, an empty line, then the
signed checkpoint. Answers, in the order the spec checks them:

* 400 malformed body or checkpoint, or ``old`` above the checkpoint's size;
* 404 the origin is not a log this witness follows;
* 403 no valid signature from the log's key;
* 409 ``text/x.tlog.size`` with ``<latest size>\\n`` when ``old`` is not the size this witness last
  cosigned (the log retries from there); 409 plain text for the same size with a different root;
* 422 a consistency proof that does not verify (or a proof where none belongs), or a checkpoint whose
  declared hash profile (its ``hash`` line) is not the one this witness follows the log with;
* 200 one cosignature line (C2SP tlog-cosignature v1, timestamped).

The witness remembers one ``(size, root)`` per origin in a SQLite file; the update is a compare-and-set
on the old size, so two concurrent requests cannot both move it. A log that shows two different roots
for one size has forked: both signed checkpoints are kept as evidence (the one cosigned before and the
one refused now), and every later checkpoint of that log is refused with 409 (D-079).

Where the state lives is a :class:`WitnessStore`: a SQLite file for the standalone ``edgeroot witness``
(:class:`WitnessState`), the node's own database for a parent witnessing its children
(:mod:`resolver.anchoring`, which also logs each cosigned checkpoint as an anchor leaf).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from chain_lite import b64, merkle
from chain_lite.checkpoint import SignedCheckpoint, parse_uint64
from chain_lite.cosignature import CosignatureSigner, LogVerifier, log_verifier
from chain_lite.errors import ChainError, SignatureError
from chain_lite.note import VerifierKey, open_note
from chain_lite.suite import SHA256, HashSuite

MAX_BODY = 16 * 1024
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _plain(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


def is_refusal(answer: Answer) -> bool:
    """Anything but a cosignature or the normal catch-up (409 with the witness's size)."""
    return answer.status != 200 and not (answer.status == 409 and answer.content_type == SIZE_CONTENT_TYPE)


async def serve(witness: Witness, request: Request, now_s: int) -> tuple[bytes, Answer]:
    """One ``add-checkpoint`` request over HTTP: the body read up to :data:`MAX_BODY` (the rest is not
    read), then judged in the thread pool (signatures and the state's transaction block). The body is
    returned too, for the caller's labels."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return body[:MAX_BODY], _plain(400, f"body exceeds {MAX_BODY} bytes")
    return body, await run_in_threadpool(witness.add_checkpoint, body, now_s)


def http_response(answer: Answer) -> Response:
    # An explicit header: Starlette would append "; charset=utf-8" to a text/ media type, and
    # clients compare text/x.tlog.size exactly.
    return Response(answer.body, status_code=answer.status, headers={"content-type": answer.content_type})


class WitnessStore(Protocol):
    """What a witness remembers per log: the last cosigned ``(size, root)`` and fork evidence."""

    def get(self, origin: str) -> tuple[int, bytes]: ...

    def advance(self, origin: str, old: int, signed: SignedCheckpoint, now_s: int) -> bool:
        """Move ``origin`` from size ``old`` to ``signed`` (cosigned at ``now_s``); False if another
        request moved it first."""
        ...

    def keep_evidence(self, origin: str, refused: SignedCheckpoint, now_s: int) -> None:
        """Keep ``refused`` beside what was cosigned at its size: the log forked."""
        ...

    def forked(self, origin: str) -> bool: ...


class WitnessState:
    """``origin → (size, root)`` of the last cosigned checkpoint, in ``DIR/witness.db``; fork evidence
    in its ``evidence`` table."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS latest "
            "(origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS evidence (origin TEXT NOT NULL, size INTEGER NOT NULL, "
            "cosigned_root BLOB NOT NULL, refused_note BLOB NOT NULL, received_s INTEGER NOT NULL)"
        )

    def get(self, origin: str) -> tuple[int, bytes]:
        row = self._conn.execute("SELECT size, root FROM latest WHERE origin = ?", (origin,)).fetchone()
        return (0, merkle.EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))

    def advance(self, origin: str, old: int, signed: SignedCheckpoint, now_s: int) -> bool:
        """Move ``origin`` from ``old`` to ``signed``'s size and root; False if another request moved it
        first."""
        size, root = signed.checkpoint.size, signed.checkpoint.root
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            current, _ = self.get(origin)
            if current != old:
                return False
            self._conn.execute(
                "INSERT INTO latest (origin, size, root) VALUES (?, ?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root",
                (origin, size, root),
            )
        return True

    def keep_evidence(self, origin: str, refused: SignedCheckpoint, now_s: int) -> None:
        # The standalone witness keeps only (size, root) of what it cosigned, so the evidence is the
        # refused note with the root cosigned at its size; the log's own earlier note has it signed.
        size, root = self.get(origin)
        with self._conn:
            self._conn.execute(
                "INSERT INTO evidence (origin, size, cosigned_root, refused_note, received_s) "
                "VALUES (?, ?, ?, ?, ?)",
                (origin, size, root, refused.to_bytes(), now_s),
            )

    def forked(self, origin: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM evidence WHERE origin = ? LIMIT 1", (origin,)).fetchone()
        return row is not None

    def close(self) -> None:
        self._conn.close()


def witness_log_line(vkey: VerifierKey, suite: HashSuite = SHA256) -> str:
    """One line of the witness's ``logs.txt``: ``<vkey>`` for a SHA-256 log, ``<vkey> <hash>`` for a
    log of another hash profile (``sm3``)."""
    return str(vkey) if suite is SHA256 else f"{vkey} {suite.name}"


class Witness:
    """The tlog-witness checks over a :class:`WitnessStore`. ``logs`` maps an origin to the log's
    verifier; :meth:`set_logs` fixes it from a list (``logs.txt``), and a parent node replaces it with
    a mapping over its child logs (:class:`resolver.anchoring.ChildLogs`). ``suites`` names the hash of
    each log that does not hash with SHA-256 (``<vkey> sm3`` in ``logs.txt``, D-064)."""

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: list[VerifierKey],
        state: WitnessStore,
        suites: Mapping[str, HashSuite] | None = None,
    ) -> None:
        self.signer = signer
        self.logs: Mapping[str, LogVerifier] = {}
        self.suites: dict[str, HashSuite] = {}
        self.set_logs(logs, suites)
        self.state = state

    def set_logs(self, logs: list[VerifierKey], suites: Mapping[str, HashSuite] | None = None) -> None:
        """Follow exactly these logs (``logs.txt`` reloaded), each with its hash profile from ``suites``
        (by log name; SHA-256 when absent); sizes already seen are kept."""
        self.logs = {vkey.name: log_verifier(vkey) for vkey in logs}
        self.suites = {name: suite for name, suite in (suites or {}).items() if name in self.logs}

    def add_checkpoint(self, body: bytes, now_s: int) -> Answer:  # noqa: PLR0911 (one return per spec verdict)
        if len(body) > MAX_BODY:
            return _plain(400, f"body exceeds {MAX_BODY} bytes")
        head, sep, note_bytes = body.partition(b"\n\n")
        if not sep:
            return _plain(400, "no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            return _plain(400, "proof lines are not ASCII")
        if not lines[0].startswith("old "):
            return _plain(400, "first line is not 'old <size>'")
        old = parse_uint64(lines[0][4:])
        if old is None:
            return _plain(400, "old size is not a canonical decimal")
        if len(lines) - 1 > MAX_PROOF_LINES:
            return _plain(400, f"more than {MAX_PROOF_LINES} proof lines")
        proof = []
        for line in lines[1:]:
            h = b64.decode(line)
            if h is None or len(h) != merkle.HASH_SIZE:
                return _plain(400, "a proof line is not canonical base64 of 32 bytes")
            proof.append(h)
        try:
            signed = SignedCheckpoint.parse(note_bytes)
        except ChainError as exc:
            return _plain(400, f"bad checkpoint: {exc}")
        cp = signed.checkpoint
        verifier = self.logs.get(cp.origin)
        if verifier is None:
            return _plain(404, f"unknown log {cp.origin!r}")
        try:
            open_note(signed.note, [verifier])
        except SignatureError as exc:
            return _plain(403, f"checkpoint not signed by the log: {exc}")
        suite = self.suites.get(cp.origin, SHA256)
        if cp.suite is not suite:  # never check a proof with another hash than the log's own
            follows = f"this witness follows {cp.origin} as {suite.name}"
            return _plain(422, f"checkpoint declares hash {cp.suite.name}; {follows}")
        if old > cp.size:
            return _plain(400, f"old size {old} is above the checkpoint size {cp.size}")
        if self.state.forked(cp.origin):
            return _plain(409, f"log {cp.origin} showed two roots for one size; evidence kept, not cosigning")
        latest_size, latest_root = self.state.get(cp.origin)
        if latest_size == 0:
            latest_root = suite.empty_root  # nothing cosigned yet: the empty tree, in the log's hash
        if old != latest_size:
            return Answer(409, f"{latest_size}\n".encode(), SIZE_CONTENT_TYPE)
        if old == cp.size:
            if cp.root != latest_root:
                self.state.keep_evidence(cp.origin, signed, now_s)
                return _plain(409, f"a different root at the same size {old}: the log forked; evidence kept")
            if proof:
                return _plain(422, "a proof between equal sizes must be empty")
        elif old == 0:
            if proof:
                return _plain(422, "a proof from size 0 must be empty")
        else:
            try:
                merkle.verify_consistency(old, cp.size, proof, latest_root, cp.root, suite=suite)
            except ChainError as exc:
                return _plain(422, f"consistency proof does not verify: {exc}")
        if cp.size == 0 and cp.root != suite.empty_root:
            return _plain(422, "an empty tree must have the empty root")
        if not self.state.advance(cp.origin, old, signed, now_s):
            latest_size, _ = self.state.get(cp.origin)
            return Answer(409, f"{latest_size}\n".encode(), SIZE_CONTENT_TYPE)
        return Answer(200, self.signer.cosign(signed.note, now_s).line().encode())
