"""The completeness index (decisions D-070): per identifier, a map entry committing to the log indices
of every event that mentions it (:class:`chain_lite.epcis_capture.IndexEntry`).

The entries live in the ``history`` table beside registry records, under the name
``epcis-index:<identifier>``, one row per event that extends them, so the map as of any log size, the
published view and as-of answers are rebuilt by the one mechanism (:mod:`resolver.map_state`), and the
list of an identifier's events as of size ``S`` is its rows below ``S``.
"""

from __future__ import annotations

from collections.abc import Sequence

from chain_lite.epcis_capture import IndexEntry, index_key_name
from chain_lite.epcis_facts import EventFacts
from chain_lite.suite import HashSuite
from resolver.db import Row, Tx
from resolver.log_store import log_suite


def index_changes(tx: Tx, events: Sequence[tuple[int, EventFacts]]) -> list[tuple[str, int, bytes]]:
    """``history`` rows ``(epcis-index:<identifier>, event log index, entry bytes)`` that the events
    (``(log index, facts)`` in log order) leave."""
    suite = log_suite(tx)
    identifiers = {index_key_name(i): i for _, facts in events for i in facts.identifiers()}
    current = _latest(tx, identifiers, suite)
    rows: list[tuple[str, int, bytes]] = []
    for index, facts in events:
        for identifier in facts.identifiers():
            name = index_key_name(identifier)
            entry = current[name].extended(index, suite=suite)
            current[name] = entry
            rows.append((name, index, entry.encode()))
    return rows


_LATEST_CHUNK = 500
"""Names per query (well inside SQLite's and PostgreSQL's parameter limits)."""


def _latest(tx: Tx, identifiers: dict[str, str], suite: HashSuite) -> dict[str, IndexEntry]:
    """The newest entry of each ``epcis-index:`` name (name → identifier), or an empty one: a query per
    :data:`_LATEST_CHUNK` names, not one per identifier."""
    found = {name: IndexEntry.empty(identifier, suite=suite) for name, identifier in identifiers.items()}
    names = list(identifiers)
    for start in range(0, len(names), _LATEST_CHUNK):
        chunk = names[start : start + _LATEST_CHUNK]
        rows: list[Row] = tx.all(
            "SELECT h.identifier, h.record FROM history h "  # noqa: S608 (placeholders only)
            f"WHERE h.identifier IN ({','.join('?' * len(chunk))}) "
            "AND h.idx = (SELECT MAX(m.idx) FROM history m WHERE m.identifier = h.identifier)",
            chunk,
        )
        for name, record in rows:
            found[str(name)] = IndexEntry.decode(bytes(record))
    return found


def indices_as_of(tx: Tx, identifiers: Sequence[str], size: int) -> dict[str, list[int]]:
    """For each identifier (comparison key), the log indices of the events mentioning it below log size
    ``size``, in log order; one query."""
    names = {index_key_name(identifier): identifier for identifier in identifiers}
    found: dict[str, list[int]] = {identifier: [] for identifier in identifiers}
    if not names:
        return found
    rows: list[Row] = tx.all(
        f"SELECT identifier, idx FROM history WHERE identifier IN ({','.join('?' * len(names))}) "  # noqa: S608
        "AND idx < ? ORDER BY idx",
        [*names, size],
    )
    for name, idx in rows:
        found[names[str(name)]].append(int(idx))
    return found
