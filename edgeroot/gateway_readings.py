"""The client of the gateway's readings API (``GET /v1/readings`` behind its bearer token, D-072): every
page of one device's readings in a window, with their blocks. ``proof export`` writes them into an
evidence bundle; ``trace --gateway`` checks them under the event that points at them (D-101)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgeroot.output import CommandFailed
from runtime.keyfiles import read_bytes

READINGS_ROUTE = "/v1/readings"
PAGE = 1000


@dataclass
class GatewayReadings:
    """What the gateway answered, all pages together."""

    readings: list[dict[str, Any]]
    blocks: dict[int, dict[str, Any]]


def read_token(token_file: Path) -> str:
    """The bearer token in ``token_file`` (one line; surrounding whitespace ignored)."""
    token = read_bytes(token_file, "token file").decode(errors="replace").strip()
    if not token:
        raise CommandFailed(f"{token_file} is empty")
    return token


def fetch_readings(
    gateway: str,
    token: str,
    device: str,
    from_ms: int,
    to_ms: int,
    *,
    token_file: Path,
    on_page: Callable[[int], None] | None = None,
) -> GatewayReadings:
    """Every page of ``GET /v1/readings?device=&from=&to=`` (arrival time, ``[from_ms, to_ms)``) at the
    gateway's local API ``gateway``; ``on_page`` is told how many readings arrived so far. Raises
    :class:`CommandFailed` naming what went wrong (unreachable, token refused, an answer of the wrong
    shape)."""
    fetched = GatewayReadings([], {})
    headers = {"Authorization": f"Bearer {token}"}
    params: dict[str, str | int] = {"device": device, "from": from_ms, "to": to_ms, "limit": PAGE}
    with httpx.Client(base_url=gateway.rstrip("/"), timeout=60.0) as http:
        while True:
            try:
                answer = http.get(READINGS_ROUTE, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise CommandFailed(f"cannot reach the gateway {gateway}: {exc}") from exc
            if answer.status_code == 401:
                raise CommandFailed(f"the gateway refused the token in {token_file} (401)")
            try:
                body = answer.json()
            except ValueError as exc:
                raise CommandFailed(f"the gateway answered {answer.status_code}, not JSON") from exc
            if answer.status_code != 200 or not isinstance(body, dict):
                message = body.get("message") if isinstance(body, dict) else None
                raise CommandFailed(
                    f"the gateway answered {answer.status_code}: {message or answer.text[:200]}"
                )
            try:
                fetched.readings += list(body.get("readings") or [])
                for block in body.get("blocks") or []:
                    fetched.blocks[int(block["height"])] = block
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise CommandFailed(f"the gateway's answer is malformed: {type(exc).__name__} {exc}") from exc
            if on_page is not None:
                on_page(len(fetched.readings))
            if body.get("next") is None:
                return fetched
            params["after"] = body["next"]
