"""The verifiable map as of some log size, rebuilt from the ``history`` table and kept current.

``history`` holds one row per registry change: ``(identifier, log index, record or NULL)``. The map as
of log size ``S`` maps SHA-256(identifier) to SHA-256(record) for each identifier's latest row below
``S`` (a NULL record means deleted). The sequencer and every API process derive the same map from the
same rows; only the sequencer writes them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from chain_lite.registry import Record
from chain_lite.sparse_map import MapProof, SparseMap, map_key
from resolver.db import Tx

_AS_OF_QUERY = (
    "SELECT h.identifier, h.record FROM history h JOIN "
    "(SELECT identifier, MAX(idx) AS m FROM history WHERE idx < ? GROUP BY identifier) x "
    "ON h.identifier = x.identifier AND h.idx = x.m"
)


def value_of(record: bytes | None) -> bytes | None:
    return None if record is None else Record.decode(record).value_hash


class MapState:
    """A :class:`SparseMap` that follows the log forward; thread-safe.

    With ``keep_records`` it also holds each current record's bytes, so the API answers resolution
    requests from memory (about 300 bytes an identifier) without a database round trip.
    """

    def __init__(self, *, keep_records: bool = False) -> None:
        self.map = SparseMap()
        self.size = 0
        self.records: dict[str, bytes] | None = {} if keep_records else None
        self._lock = threading.Lock()

    @classmethod
    def as_of(cls, tx: Tx, size: int, *, keep_records: bool = False) -> MapState:
        state = cls(keep_records=keep_records)
        entries = {}
        for identifier, record in tx.all(_AS_OF_QUERY, (size,)):
            if record is not None:
                data = bytes(record)
                entries[map_key(identifier)] = Record.decode(data).value_hash
                if state.records is not None:
                    state.records[identifier] = data
        state.map = SparseMap(entries)
        state.size = size
        return state

    def apply(self, identifier: str, record: bytes | None) -> None:
        with self._lock:
            self._apply(identifier, record)

    def _apply(self, identifier: str, record: bytes | None) -> None:
        self.map.set(map_key(identifier), value_of(record))
        if self.records is not None:
            if record is None:
                self.records.pop(identifier, None)
            else:
                self.records[identifier] = record

    def advance(self, tx: Tx, size: int) -> None:
        """Apply the changes logged in ``[self.size, size)``."""
        if size <= self.size:
            return
        rows = tx.all(
            "SELECT identifier, record FROM history WHERE idx >= ? AND idx < ? ORDER BY idx",
            (self.size, size),
        )
        with self._lock:
            for identifier, record in rows:
                self._apply(identifier, None if record is None else bytes(record))
            self.size = size

    def root_and_proof(self, identifier: str) -> tuple[bytes, MapProof]:
        with self._lock:
            return self.map.root(), self.map.prove(map_key(identifier))

    def record_and_proof(self, identifier: str) -> tuple[bytes | None, MapProof]:
        """The current record's bytes (needs ``keep_records``) and its map proof, read together."""
        assert self.records is not None, "MapState was built without keep_records"
        with self._lock:
            return self.records.get(identifier), self.map.prove(map_key(identifier))

    def root(self) -> bytes:
        with self._lock:
            return self.map.root()

    def __len__(self) -> int:
        return len(self.map)


class AsOfCache:
    """A few historical maps for ``?at=N`` queries, least recently used first out."""

    def __init__(self, capacity: int = 2) -> None:
        self._maps: OrderedDict[int, MapState] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, tx: Tx, size: int) -> MapState:
        with self._lock:
            hit = self._maps.get(size)
            if hit is not None:
                self._maps.move_to_end(size)
                return hit
        state = MapState.as_of(tx, size)
        with self._lock:
            self._maps[size] = state
            while len(self._maps) > self._capacity:
                self._maps.popitem(last=False)
        return state
