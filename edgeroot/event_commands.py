"""``edgeroot event capture``: sign each event of an EPCIS document and POST it to ``/epcis/capture``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from chain_lite import b64
from chain_lite.cose import CoseSigner
from chain_lite.epcis_capture import Capture, sign_capture
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE, event_facts
from chain_lite.errors import ChainError
from edgeroot.output import CommandFailed, Reporter
from rootclient.client import RootClient
from rootclient.codecs import EPCIS_NAMESPACE, EPCIS_SIGNATURE
from rootclient.errors import ClientError, ProtocolError
from runtime.keyfiles import load_private_key

POLL_S = 0.2


def sign_document(
    document: Any, signer: CoseSigner, origin: str, bases: Sequence[str] = (DEFAULT_IDENTIFIER_BASE,)
) -> dict[str, Any]:
    """``document`` with every event signed for node ``origin`` (an earlier signature is replaced)."""
    if not isinstance(document, dict) or document.get("type") != "EPCISDocument":
        raise CommandFailed("the file is not an EPCIS 2.0 EPCISDocument (type must be EPCISDocument)")
    body = document.get("epcisBody")
    if not isinstance(body, dict):
        raise CommandFailed("the document has no epcisBody object")
    events = body.get("eventList")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise CommandFailed("epcisBody.eventList must be a list of event objects")
    signed_events = []
    context = document.get("@context")
    for position, event in enumerate(events):
        plain = {k: v for k, v in event.items() if k != EPCIS_SIGNATURE}
        if context is not None and "@context" not in plain:
            # The event carries the document's @context: the log keeps events alone, and the
            # prefixes it declares are part of the event's CBV hash ID.
            plain = {"@context": context, **plain}
        try:
            facts = event_facts(plain, bases)
            capture = Capture(origin, facts.hash_id, json.dumps(plain, ensure_ascii=False).encode())
            raw = sign_capture(capture, signer).raw
        except ChainError as exc:
            raise CommandFailed(f"event {position}: {exc}") from exc
        signed_events.append({**plain, EPCIS_SIGNATURE: b64.encode(raw)})
    contexts = context if isinstance(context, list) else [] if context is None else [context]
    if not any(isinstance(c, dict) and "edgeroot" in c for c in contexts):
        contexts = [*contexts, {"edgeroot": EPCIS_NAMESPACE}]
    return {**document, "@context": contexts, "epcisBody": {**body, "eventList": signed_events}}


def run_capture(args: argparse.Namespace, report: Reporter) -> int:
    try:
        document = json.loads(args.file.read_bytes())
    except OSError as exc:
        raise CommandFailed(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CommandFailed(f"{args.file} is not JSON: {exc}") from exc
    try:
        signer = CoseSigner(args.signer, load_private_key(args.key))
    except ChainError as exc:
        raise CommandFailed(str(exc)) from exc
    with RootClient(args.root) as client:
        try:
            signed = sign_document(document, signer, client.origin(), [args.base])
            answer = client.epcis_capture(signed)
            job: dict[str, Any] | None = None
            if args.wait:
                deadline = time.monotonic() + args.timeout
                job = client.epcis_capture_job(answer.capture_id)
                while job.get("running"):
                    if time.monotonic() > deadline:
                        raise CommandFailed(
                            f"capture {answer.capture_id} not published within {args.timeout:g} s"
                        )
                    time.sleep(POLL_S)
                    job = client.epcis_capture_job(answer.capture_id)
        except ClientError as exc:
            if 400 <= exc.status < 500:
                return report.invalid(f"capture refused: {exc.message}", responseCode=exc.handle_code)
            raise CommandFailed(exc.message) from exc
        except ProtocolError as exc:
            raise CommandFailed(f"{args.root} answered out of protocol: {exc}") from exc
    indices = {} if job is None else {e["hashID"]: e["logIndex"] for e in job.get("edgeroot:events", [])}
    events = [
        {"hash_id": h, "signer": s, "duplicate": d, **({"log_index": indices.get(h)} if job else {})}
        for h, s, d in answer.events
    ]
    fresh = sum(1 for e in events if not e["duplicate"])
    return report.ok(
        f"captured {fresh} new event(s) of {len(events)} (capture job {answer.location})",
        capture_id=answer.capture_id,
        events=events,
    )
