"""``edgeroot verify anchor``: prove from a parent node's log that a child log's checkpoint is anchored.

The parent is asked where its newest anchor of the child is (``GET /v1/anchors/{origin}``, a pointer),
then everything is checked (:mod:`chain_lite.anchor`): the parent checkpoint under the policy, the
anchor leaf's inclusion, the child's signatures, and the child's consistency proof between the given
and the anchored checkpoint (fetched from the child). Fork evidence the parent kept is checked too:
two checkpoints signed by the child for one size make the child inconsistent, whatever else holds.
"""

from __future__ import annotations

import argparse
from typing import Any

from chain_lite.anchor import (
    Anchored,
    AnchorProof,
    Inconsistent,
    NotAnchoredYet,
    ProvenAnchor,
    is_fork_evidence,
    judge,
    needs_child_proof,
    prove_anchor,
)
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import ChainError
from edgeroot.output import CommandFailed, Reporter
from edgeroot.verify import read_policy
from rootclient.client import RootClient
from rootclient.codecs import AnchorInfo
from rootclient.errors import ClientError, ProtocolError
from runtime.keyfiles import read_bytes

EXIT_NOT_YET = 3


def _parent_url(args: argparse.Namespace, urls: list[str | None]) -> str:
    if args.root:
        return str(args.root).rstrip("/")
    known = [u for u in urls if u]
    if len(known) != 1:
        raise CommandFailed("give --root PARENT_URL: the policy names no single log URL")
    return known[0].rstrip("/")


def _fetch_parent(url: str, origin: str) -> tuple[AnchorInfo, AnchorProof | None]:
    """The parent's pointer and, when it has an anchor, the proof material it points at."""
    with RootClient(url) as parent:
        try:
            checkpoint = parent.checkpoint()
            size = SignedCheckpoint.parse(checkpoint).checkpoint.size
            info = parent.anchors(origin, size)
            if info.index is None:
                return info, None
            leaf, inclusion = parent.inclusion(info.index, info.tree_size)
        except ClientError as exc:
            if exc.status == 404:
                raise CommandFailed(f"{url} does not witness {origin}: {exc.message}") from exc
            raise CommandFailed(f"parent {url}: {exc.message}") from exc
        except (ProtocolError, ChainError) as exc:
            raise CommandFailed(f"parent {url} answered out of protocol: {exc}") from exc
    if info.tree_size != size:
        raise CommandFailed(f"parent {url} answered for size {info.tree_size}, not its checkpoint's {size}")
    return info, AnchorProof(checkpoint, info.index, leaf, tuple(inclusion))


def _child_proof(
    url: str | None, sizes: tuple[int, int], given_size: int, anchored_size: int
) -> list[bytes] | None:
    """The child's consistency proof between the two sizes; ``None`` when the given checkpoint is the
    newer one and the child cannot be asked (then it is judged not anchored yet, without that proof)."""
    older = given_size < anchored_size
    if url is None:
        if older:
            raise CommandFailed("give --child CHILD_URL: the parent names no URL for the child log")
        return None
    with RootClient(url) as child:
        try:
            return child.consistency(*sizes)
        except (ClientError, ProtocolError) as exc:
            if older:
                raise CommandFailed(f"child {url}: cannot get the consistency proof {sizes}: {exc}") from exc
            return None


def _evidence(proven: ProvenAnchor, info: AnchorInfo) -> list[dict[str, Any]]:
    """The parent's fork evidence that verifies (two notes signed by the child, one size, two roots)."""
    return [
        {"size": size, "cosigned": a.decode(), "refused": b.decode()}
        for size, a, b in info.evidence
        if is_fork_evidence(proven.anchor.child_vkey, a, b)
    ]


def run_anchor(args: argparse.Namespace, report: Reporter) -> int:  # noqa: PLR0911 (one return per verdict)
    policy = read_policy(args.policy)
    try:
        given = SignedCheckpoint.parse(read_bytes(args.checkpoint, "checkpoint"))
    except ChainError as exc:
        raise CommandFailed(f"{args.checkpoint}: {exc}") from exc
    origin = given.checkpoint.origin
    parent_url = _parent_url(args, [log.url for log in policy.logs])
    info, proof = _fetch_parent(parent_url, origin)
    facts: dict[str, Any] = {"child": origin, "child_size": given.checkpoint.size, "parent": parent_url}
    if proof is None:
        return report.pending(
            f"{origin} size {given.checkpoint.size} is NOT ANCHORED YET: the parent has no anchor of "
            f"{origin} under its checkpoint of size {info.tree_size}",
            EXIT_NOT_YET,
            anchored=False,
            **facts,
        )
    try:
        proven = prove_anchor(policy, proof)
    except ChainError as exc:
        return report.invalid(f"the parent's anchor of {origin} does NOT verify: {exc}", **facts)
    anchored = proven.anchor.checkpoint.checkpoint
    parent = proven.parent
    facts |= {
        "parent_log": parent.checkpoint.origin,
        "parent_size": parent.checkpoint.size,
        "parent_cosigned_by": list(parent.cosigners),
        "anchor_index": proven.index,
        "anchored_size": anchored.size,
        "anchored_at": proven.anchor.cosigned_at,
    }
    evidence = _evidence(proven, info)
    if evidence:
        return report.invalid(
            f"INCONSISTENT: {origin} showed the parent two roots for size {evidence[0]['size']} "
            "(both notes signed by the child; keep them as evidence)",
            evidence=evidence,
            **facts,
        )
    sizes = needs_child_proof(proven, given)
    child_url = args.child or info.url
    child_proof = (
        None if sizes is None else _child_proof(child_url, sizes, given.checkpoint.size, anchored.size)
    )
    try:
        verdict = judge(proven, given, child_proof)
    except ChainError as exc:
        return report.invalid(f"{args.checkpoint} cannot be judged against the anchor: {exc}", **facts)
    if isinstance(verdict, Inconsistent):
        return report.invalid(
            f"INCONSISTENT: {origin} size {given.checkpoint.size} and the anchored size {anchored.size} "
            f"cannot both hold: {verdict.reason}",
            evidence=[
                {"given": given.to_bytes().decode(), "anchored": proven.anchor.checkpoint.to_bytes().decode()}
            ],
            **facts,
        )
    if isinstance(verdict, NotAnchoredYet):
        linked = "" if child_proof is None else " (it extends the anchored one)"
        return report.pending(
            f"{origin} size {given.checkpoint.size} is NOT ANCHORED YET{linked}: the parent's newest anchor "
            f"is size {anchored.size}, entry {proven.index} of {parent.checkpoint.origin}",
            EXIT_NOT_YET,
            anchored=False,
            **facts,
        )
    assert isinstance(verdict, Anchored)
    how = "itself" if anchored.size == given.checkpoint.size else f"through size {anchored.size}"
    return report.ok(
        f"ANCHORED: {origin} size {given.checkpoint.size} is anchored {how} at entry {proven.index} of "
        f"{parent.checkpoint.origin} (checkpoint size {parent.checkpoint.size}, cosigned by "
        f"{', '.join(parent.cosigners) or 'no witness'})",
        anchored=True,
        **facts,
    )
