"""The resolution client: talk to a root node over HTTP and verify its answers as a light client.

Verification (``--verify``) trusts only a C2SP tlog-policy and a pinned checkpoint kept in the user's
config directory (``$EDGEROOT_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/edgeroot`` or ``~/.config/edgeroot``,
file ``pinned/<origin hash>.json``). An answer's checkpoint must be signed by the log, cosigned by the
policy's quorum and consistent with the pinned one (one consistency proof covers any gap); only then is
the map-head receipt and the map proof checked, and the pin moves forward. Two inconsistent signed
checkpoints are written to ``evidence/`` beside the pin and reported; nothing is pinned from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError, FormatError
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt
from chain_lite.resolution import ProvenRecord, ResolutionProof, verify_resolution
from rootclient.errors import ClientError, EquivocationDetected


def quote_identifier(identifier: str) -> str:
    """Percent-encode an identifier for a URL path, keeping the one ``/`` between prefix and suffix."""
    prefix, _, suffix = identifier.partition("/")
    return f"{quote(prefix, safe='')}/{quote(suffix, safe='')}"


def block_batch(blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]) -> dict[str, Any]:
    """The ``POST /v1/gateways/blocks`` body; replicate mode when the blocks carry their readings."""
    items = []
    for raw, body in blocks:
        item: dict[str, Any] = {"block": b64.encode(raw)}
        if body is not None:
            item["body"] = [b64.encode(e) for e in body]
        items.append(item)
    mode = "replicate" if blocks and blocks[0][1] is not None else "anchor"
    return {"mode": mode, "blocks": items}


class RootClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RootClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                message, code = str(body.get("message", body)), int(body.get("responseCode", 2))
            except (ValueError, AttributeError):
                message, code = response.text.strip()[:300], 2
            raise ClientError(message, response.status_code, code)
        return response

    def get_json(self, path: str, **params: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._request("GET", path, params=params or None).json()
        return data

    def resolve(self, identifier: str, at: int | None = None) -> dict[str, Any]:
        params = {} if at is None else {"at": at}
        return self.get_json(f"/v1/resolve/{quote_identifier(identifier)}", **params)

    def checkpoint(self) -> bytes:
        return self._request("GET", "/v1/checkpoint").content

    def origin(self) -> str:
        try:
            return SignedCheckpoint.parse(self.checkpoint()).checkpoint.origin
        except ChainError as exc:
            raise ClientError(f"{self.base_url} serves a malformed checkpoint: {exc}") from exc

    def consistency(self, old: int, new: int) -> list[bytes]:
        body = self.get_json("/v1/proof/consistency", old=old, new=new)
        proof = [b64.decode(h) for h in body.get("proof", [])]
        if any(h is None for h in proof):
            raise ClientError("consistency proof is not base64")
        return [h for h in proof if h is not None]

    def write(self, raw: bytes) -> dict[str, Any]:
        data: dict[str, Any] = self._request(
            "POST", "/v1/registry", content=raw, headers={"content-type": "application/cose"}
        ).json()
        return data

    def submit_blocks(self, blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]) -> dict[str, Any]:
        data: dict[str, Any] = self._request("POST", "/v1/gateways/blocks", json=block_batch(blocks)).json()
        return data

    def block(self, block_id: bytes) -> dict[str, Any]:
        return self.get_json(f"/v1/blocks/{block_id.hex()}")


# --- verification --------------------------------------------------------------------------------------


def config_dir() -> Path:
    explicit = os.environ.get("EDGEROOT_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "edgeroot"


def pin_file(origin: str, directory: Path | None = None) -> Path:
    name = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return (directory or config_dir()) / "pinned" / f"{name}.json"


def proof_from_json(identifier: str, proof: dict[str, Any]) -> ResolutionProof:
    try:
        record = None if proof.get("record") is None else b64.decode(str(proof["record"]))
        map_proof = b64.decode(str(proof["map_proof"]))
        map_head = b64.decode(str(proof["map_head"]))
        receipt = Receipt.parse(str(proof["receipt"]).encode())
    except (KeyError, TypeError) as exc:
        raise FormatError("resolution proof", f"missing or mistyped field: {exc}") from exc
    if map_proof is None or map_head is None or (proof.get("record") is not None and record is None):
        raise FormatError("resolution proof", "a field is not canonical base64")
    return ResolutionProof(identifier, record, map_proof, map_head, receipt)


@dataclass(frozen=True, slots=True)
class Verified:
    proven: ProvenRecord
    pinned_size: int
    moved: bool


class Verifier:
    """A light client for one log, its pin persisted in ``pin_path``."""

    def __init__(self, policy: Policy, origin: str, pin_path: Path) -> None:
        self.pin_path = pin_path
        if pin_path.exists():
            self.light = LightClient.from_state(policy, json.loads(pin_path.read_text()))
            if self.light.origin != origin:
                raise FormatError("pin file", f"{pin_path} is for {self.light.origin}, not {origin}")
        else:
            self.light = LightClient(policy, origin)

    def _save(self) -> None:
        self.pin_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pin_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.light.state(), indent=1))
        os.replace(tmp, self.pin_path)

    def _evidence(self, evidence: Evidence) -> Path:
        directory = self.pin_path.parent.parent / "evidence"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.light.origin.replace('/', '_')}-{int(time.time())}.json"
        path.write_text(
            json.dumps(
                {
                    "reason": evidence.reason,
                    "pinned": evidence.pinned.decode(),
                    "conflicting": evidence.conflicting.decode(),
                    "proof": [b64.encode(h) for h in evidence.proof],
                },
                indent=1,
            )
        )
        return path

    def verify(self, client: RootClient, answer: dict[str, Any], *, as_of: bool = False) -> Verified:
        """Verify a ``/v1/resolve`` answer; moves the pin forward when the answer's checkpoint is newer."""
        proof = proof_from_json(str(answer.get("identifier", "")), dict(answer.get("proof") or {}))
        checkpoint = proof.receipt.checkpoint
        size = checkpoint.checkpoint.size
        old = self.light.size
        consistency = client.consistency(old, size) if 0 < old < size else []
        outcome = self.light.update(checkpoint.to_bytes(), consistency)
        if isinstance(outcome, Evidence):
            path = self._evidence(outcome)
            raise EquivocationDetected(
                f"the log showed two inconsistent checkpoints ({outcome.reason}); evidence saved to {path}",
                path,
            )
        if isinstance(outcome, Rejected):
            raise outcome.reason
        assert isinstance(outcome, Accepted)
        proven = verify_resolution(proof, outcome.checkpoint, as_of=as_of)
        self._save()
        return Verified(proven, self.light.size, outcome.moved)
