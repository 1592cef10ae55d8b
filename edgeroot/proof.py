"""``edgeroot proof checkpoint|receipt|consistency``: fetch from a root node the files ``edgeroot verify``
checks offline.

- ``checkpoint --out FILE``: the latest signed checkpoint, as served (for ``verify note`` and, kept from
  two moments, for ``verify consistency``);
- ``receipt (--index N | --block ID | --gateway ID) --out FILE --leaf-out FILE``: a C2SP tlog-proof
  receipt of one log entry and the entry's exact bytes (for ``verify receipt --leaf``): entry N against
  the latest checkpoint, or a gateway block (by its hex id, or a gateway's latest accepted block) with
  the receipt the root keeps for it (the one the gateway stored);
- ``consistency --old FILE --new FILE --out FILE``: the consistency proof between two saved checkpoints,
  one base64 hash a line (for ``verify consistency``);
- ``export --gateway URL --token-file F --root URL --device ID --from T1 --to T2 --out DIR``: an evidence
  bundle (for ``verify bundle``): the device's readings received in [T1, T2) with every proof, written
  and checked by :mod:`edgeroot.evidence_commands`.

Nothing is verified here (the point is to check it offline, with ``verify``), but every answer is
decoded strictly, so a file written is always one ``verify`` can read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeroot.lazy_command import lazy
from edgeroot.output import JSON_FLAG


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "proof", help="fetch a checkpoint, receipt or consistency proof into files", description=__doc__
    )
    psub = p.add_subparsers(dest="what", required=True, metavar="{checkpoint,receipt,consistency,export}")

    cp = psub.add_parser("checkpoint", help="the latest signed checkpoint", parents=[JSON_FLAG])
    cp.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    cp.add_argument("--out", type=Path, required=True, help="file for the checkpoint (a signed note)")
    cp.set_defaults(run=lazy("edgeroot.proof_commands", "run_checkpoint"))

    rc = psub.add_parser("receipt", help="a receipt of one log entry, and the entry", parents=[JSON_FLAG])
    rc.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    which = rc.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the entry's index in the log")
    which.add_argument("--block", help="a gateway block id (hex, as the root answers it)")
    which.add_argument("--gateway", help="a gateway identifier: its latest block the root accepted")
    rc.add_argument("--out", type=Path, required=True, help="file for the receipt (C2SP tlog-proof)")
    rc.add_argument("--leaf-out", type=Path, required=True, help="file for the entry's exact bytes")
    rc.set_defaults(run=lazy("edgeroot.proof_commands", "run_receipt"))

    cons = psub.add_parser(
        "consistency", help="the consistency proof between two saved checkpoints", parents=[JSON_FLAG]
    )
    cons.add_argument("--root", required=True, help="root node URL, e.g. http://127.0.0.1:8470")
    cons.add_argument("--old", type=Path, required=True, help="the older checkpoint file")
    cons.add_argument("--new", type=Path, required=True, help="the newer checkpoint file")
    cons.add_argument("--out", type=Path, required=True, help="file for the proof: one base64 hash a line")
    cons.set_defaults(run=lazy("edgeroot.proof_commands", "run_consistency"))

    ex = psub.add_parser(
        "export", help="an evidence bundle of a device's readings, verifiable offline", parents=[JSON_FLAG]
    )
    ex.add_argument("--gateway", required=True, help="the gateway's local API, e.g. http://127.0.0.1:8480")
    ex.add_argument("--token-file", type=Path, required=True, help="file holding the gateway's http.token")
    ex.add_argument("--root", required=True, help="root node URL: the keys' records with their map proofs")
    ex.add_argument("--device", required=True, help="the device identifier")
    ex.add_argument("--from", dest="from_", required=True, help="from (inclusive): RFC 3339 or epoch ms")
    ex.add_argument("--to", required=True, help="to (exclusive): RFC 3339 or epoch ms")
    ex.add_argument(
        "--policy", type=Path, help="C2SP tlog-policy to ship (default: the root's published one)"
    )
    ex.add_argument("--out", type=Path, required=True, help="a new (or empty) directory for the bundle")
    ex.set_defaults(run=lazy("edgeroot.evidence_commands", "run_export"))
