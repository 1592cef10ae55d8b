"""The namespace rules that need the registry's contents (DESIGN §2, docs/formats.md §10).

* **Look-alikes are one identifier.** A new identifier whose confusable skeleton equals an existing
  one's under the same prefix is refused, naming the existing one. The skeleton is Unicode UTS #39's,
  computed by ICU's ``SpoofChecker`` (docs/decisions.md says why ICU), over the NFKC form of the
  canonical suffix (so full-width digits and ligatures meet their ASCII twins), lowercased in ASCII
  and skeletoned again: the namespace is ASCII case-insensitive, and UTS #39 maps ``M`` and ``m``
  differently (``m`` looks like ``rn``), so a Cyrillic ``М`` must meet an ASCII ``m`` through its
  skeleton ``M``.
* **One device key, one device.** Every ``HS_PUBKEY`` of a device, gateway or bridge record (any record
  but a prefix's ``0.na/P``, whose admin keys may govern several prefixes) is bound to that record; a
  key already bound to another identifier is refused. Keys are compared by SHA-256 of their re-encoded
  SubjectPublicKeyInfo DER, so one key in two encodings (compressed and uncompressed points) is one key.

The node stores both beside the record (``records.skeleton``, ``device_keys``), unique-indexed, so each
check is one indexed lookup and a concurrent write cannot slip past it. Skeletons depend on ICU's
confusables data: :data:`SKELETON_VERSION` names it, and :func:`refresh` recomputes every stored
skeleton when it changes (``Database.create_schema`` calls it).
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import TYPE_CHECKING

import icu

from chain_lite.errors import ChainError
from chain_lite.identifier import ascii_lower
from chain_lite.keys import load_public_der, public_der
from chain_lite.registry import Record, governed_prefix

if TYPE_CHECKING:  # resolver.db calls refresh(); only the type is needed here, not the module
    from resolver.db import Tx

SKELETON_VERSION = f"uts39-icu-{icu.ICU_VERSION}-nfkc-ascii-lower-v1"
"""Changes whenever a stored skeleton could: ICU's data version or the way it is applied here."""

# ICU documents a configured USpoofChecker as safe to share between threads for its const functions
# (getSkeleton is one); the node's write endpoint runs in FastAPI's thread pool.
_CHECKER = icu.SpoofChecker()


def skeleton(canonical: str) -> str:
    """The confusable key of a canonical identifier: its prefix and the skeleton of its suffix."""
    prefix, _, suffix = canonical.partition("/")
    first = _CHECKER.getSkeleton(0, unicodedata.normalize("NFKC", suffix))
    return f"{prefix}/{_CHECKER.getSkeleton(0, ascii_lower(first))}"


def key_fingerprint(der: bytes) -> bytes:
    """SHA-256 of a public key's SubjectPublicKeyInfo DER as this library re-encodes it.

    Raises :class:`chain_lite.errors.KeyFormatError` for anything that is not a supported key.
    """
    return hashlib.sha256(public_der(load_public_der(der))).digest()


def bound_keys(record: Record) -> list[bytes]:
    """Fingerprints of the device keys ``record`` binds (none for a prefix record), sorted, each once."""
    if governed_prefix(record.identifier) is not None:
        return []
    keys = [v for v in record.values if v.type == "HS_PUBKEY" and v.format == "base64"]
    return sorted({key_fingerprint(v.as_bytes()) for v in keys})


def refresh(tx: Tx) -> None:
    """Recompute every stored skeleton and key binding if :data:`SKELETON_VERSION` changed.

    Identifiers registered before the rules existed keep working: of two stored look-alikes (or two
    records sharing a key) the first in identifier order holds the skeleton (the binding); the other
    keeps none, and any new look-alike of either is still refused through the first.
    """
    row = tx.one("SELECT value FROM meta WHERE key = 'namespace_version'")
    if row is not None and row[0] == SKELETON_VERSION:
        return
    rows = tx.all("SELECT identifier, record FROM records ORDER BY identifier")
    tx.execute("UPDATE records SET skeleton = NULL")
    tx.execute("DELETE FROM device_keys")
    seen: set[str] = set()
    for identifier, data in rows:
        key = skeleton(identifier)
        if key not in seen:
            seen.add(key)
            tx.execute("UPDATE records SET skeleton = ? WHERE identifier = ?", (key, identifier))
        try:
            fingerprints = bound_keys(Record.decode(bytes(data)))
        except ChainError:  # a record stored before its checks existed: it binds nothing
            continue
        for fingerprint in fingerprints:
            tx.execute(
                "INSERT INTO device_keys (key_hash, identifier) VALUES (?, ?) "
                "ON CONFLICT (key_hash) DO NOTHING",
                (fingerprint, identifier),
            )
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('namespace_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (SKELETON_VERSION,),
    )
