"""A C2SP tlog-witness: ``POST /add-checkpoint`` cosigns a log's checkpoint if it extends the last one.

Request body: ``old <size>``, zero or more base64 consistency-proof lines, an empty line, then the
signed checkpoint. Answers, in the order the spec checks them:

* 400 malformed body or checkpoint, or ``old`` above the checkpoint's size;
* 404 the origin is not a log this witness follows;
* 403 no valid signature from the log's key;
* 409 ``text/x.tlog.size`` with ``<latest size>\\n`` when ``old`` is not the size this witness last
  cosigned (the log retries from there); 409 plain text for the same size with a different root;
* 422 a consistency proof that does not verify (or a proof where none belongs);
* 200 one cosignature line (C2SP tlog-cosignature v1, timestamped).

The witness remembers one ``(size, root)`` per origin in a SQLite file; the update is a compare-and-set
on the old size, so two concurrent requests cannot both move it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from chain_lite import b64, merkle
from chain_lite.checkpoint import SignedCheckpoint, parse_uint64
from chain_lite.cosignature import CosignatureSigner
from chain_lite.errors import ChainError, SignatureError
from chain_lite.note import Ed25519Verifier, VerifierKey, open_note

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


class WitnessState:
    """``origin → (size, root)`` of the last cosigned checkpoint, in ``DIR/witness.db``."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS latest "
            "(origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL)"
        )

    def get(self, origin: str) -> tuple[int, bytes]:
        row = self._conn.execute("SELECT size, root FROM latest WHERE origin = ?", (origin,)).fetchone()
        return (0, merkle.EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))

    def advance(self, origin: str, old: int, size: int, root: bytes) -> bool:
        """Move ``origin`` from ``old`` to ``(size, root)``; False if someone else moved it first."""
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

    def close(self) -> None:
        self._conn.close()


class Witness:
    def __init__(self, signer: CosignatureSigner, logs: list[VerifierKey], state: WitnessState) -> None:
        self.signer = signer
        self.logs: dict[str, Ed25519Verifier] = {}
        self.set_logs(logs)
        self.state = state

    def set_logs(self, logs: list[VerifierKey]) -> None:
        """Follow exactly these logs (``logs.txt`` reloaded); sizes already seen are kept."""
        self.logs = {vkey.name: Ed25519Verifier.from_vkey(vkey) for vkey in logs}

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
        if old > cp.size:
            return _plain(400, f"old size {old} is above the checkpoint size {cp.size}")
        latest_size, latest_root = self.state.get(cp.origin)
        if old != latest_size:
            return Answer(409, f"{latest_size}\n".encode(), SIZE_CONTENT_TYPE)
        if old == cp.size:
            if cp.root != latest_root:
                return _plain(409, f"a different root at the same size {old}: the log forked")
            if proof:
                return _plain(422, "a proof between equal sizes must be empty")
        elif old == 0:
            if proof:
                return _plain(422, "a proof from size 0 must be empty")
        else:
            try:
                merkle.verify_consistency(old, cp.size, proof, latest_root, cp.root)
            except ChainError as exc:
                return _plain(422, f"consistency proof does not verify: {exc}")
        if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
            return _plain(422, "an empty tree must have the empty root")
        if not self.state.advance(cp.origin, old, cp.size, cp.root):
            latest_size, _ = self.state.get(cp.origin)
            return Answer(409, f"{latest_size}\n".encode(), SIZE_CONTENT_TYPE)
        return Answer(200, self.signer.cosign(signed.note, now_s).line().encode())
