"""Readings as evidence (issue 15, items 4 and 5): the gateway's token-protected readings API, the root's
blocks-in-a-window query, and evidence bundles exported from a real gateway and root, then verified
offline after both are stopped; one changed byte or one missing file in any kind of file is refused
with the file named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain_lite.block import parse_block
from chain_lite.evidence import (
    MANIFEST,
    BlockEntry,
    BundleError,
    KeyEntry,
    Manifest,
    ReadingEntry,
    canonical_json,
    parse_manifest,
    sha256_hex,
)
from edge import store
from edgeroot.cli import main
from edgeroot.system import configure, wait_until
from rootclient.client import RootClient
from runtime.clock import now_ms
from tests.gateway_harness import DEVICE, GATEWAY, Plant, cli
from tests.helpers import LogBuilder
from tests.mqtt_harness import Publisher

TOKEN = "s3cret-evidence-token-0123456789"
KINDS = {  # a file of each kind in a bundle: its directory and suffix
    "manifest": MANIFEST,
    "policy": "policy.txt",
    "checkpoint": "checkpoints/*.note",
    "block": "blocks/*.cose",
    "block receipt": "blocks/*.tlog-proof",
    "reading": "readings/*.cose",
    "reading proof": "readings/*.proof",
    "key record": "keys/*.record.cbor",
    "key map proof": "keys/*.map-proof",
    "key map head": "keys/*.map-head",
    "key receipt": "keys/*.tlog-proof",
}


def _readings(plant: Plant, token: str | None, **params: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{plant.http}/v1/readings", params=params, headers=headers, timeout=30)


def _readings_stored(plant: Plant) -> list[store.StoredReading]:
    with store.reader(plant.gateway.db) as conn:
        return store.readings(conn, DEVICE)


def _stored(plant: Plant) -> int:
    return len(_readings_stored(plant))


def _wait_stored_and_past(plant: Plant, count: int) -> None:
    """``count`` readings stored, and the clock past the last one's arrival (the next burst arrives later)."""
    wait_until(f"{count} readings stored", lambda: _stored(plant) >= count, timeout=60)
    last = max(r.received_ms for r in _readings_stored(plant))
    wait_until("the gateway clock to pass the last arrival", lambda: now_ms() > last, timeout=5)


def _verify(bundle: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["verify", "bundle", str(bundle), "--policy", str(policy), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _rehash(bundle: Path, name: str) -> None:
    """Rewrite the manifest so its hash of ``name`` matches the file again: what someone who changed the
    file on purpose would do. Only the signatures and proofs can then catch it."""
    manifest = json.loads((bundle / MANIFEST).read_bytes())
    manifest["files"][name] = sha256_hex((bundle / name).read_bytes())
    (bundle / MANIFEST).write_bytes(canonical_json(manifest))


def test_readings_export_to_a_bundle_that_verifies_offline_and_refuses_any_changed_file(
    plant: Plant, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readings served only with the token; a bundle exported, checked after gateway and root stopped,
    and each kind of file changed by one byte (or removed) refused with its name."""
    configure(plant.gateway.config, {"http": {"token": TOKEN}})
    plant.start()
    pub = Publisher(*plant.broker)
    try:
        for burst in range(1, 4):  # three bursts, each stored before the next: three arrival times at least
            for _ in range(20):
                pub.publish("edgeroot/readings/pump", plant.reading())
            _wait_stored_and_past(plant, 20 * burst)
    finally:
        pub.close()
    plant.wait_anchored(60)

    # Token: none or a wrong one is 401 with the Bearer challenge, and counted; never logged.
    for token in (None, "wrong", TOKEN + "x"):
        refused = _readings(plant, token, device=DEVICE, **{"from": 0, "to": 1 << 62})
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    metrics = httpx.get(f"{plant.http}/metrics").text
    assert "edgeroot_gateway_api_unauthorized_total 3.0" in metrics.splitlines()
    assert _readings(plant, TOKEN, device=DEVICE, **{"from": 5, "to": 4}).status_code == 400
    assert _readings(plant, TOKEN, device=DEVICE, **{"from": "yesterday", "to": 4}).status_code == 400

    # Time range: from inclusive, to exclusive, on the gateway's arrival time; paging loses nothing.
    stored = _readings_stored(plant)
    times = sorted({r.received_ms for r in stored})
    assert len(times) >= 3, times
    lo, hi = times[1], times[-1]
    expected = [r.id for r in stored if lo <= r.received_ms < hi]
    one = _readings(plant, TOKEN, device=DEVICE, **{"from": lo, "to": hi, "limit": 2000}).json()
    assert [r["id"] for r in one["readings"]] == expected and one["next"] is None
    assert {r["received_ms"] for r in one["readings"]} >= {lo} and hi not in {
        r["received_ms"] for r in one["readings"]
    }
    paged: list[int] = []
    after: str | None = "0"
    while after is not None:
        page = _readings(
            plant, TOKEN, device=DEVICE, **{"from": lo, "to": hi, "limit": 7, "after": after}
        ).json()
        assert len(page["readings"]) <= 7
        paged += [r["id"] for r in page["readings"]]
        after = page["next"]
    assert paged == expected

    # The root's view of the same window: the blocks signed in it and the first signed after it, each
    # with its receipt; the readings are at the root (replicate mode).
    with store.reader(plant.gateway.db) as conn:
        signed = [(b.height, parse_block(b.raw).header.time_ms) for b in store.blocks(conn)]
    inside = [h for h, t in signed if lo <= t < hi]
    after_window = [h for h, t in signed if t >= hi][:1]
    with RootClient(plant.root.url) as root:
        window, more = root.blocks_in_window(GATEWAY, lo, hi)
        assert [b.height for b in window] == inside + after_window and more is None
        assert all(b.at_root and b.receipt is not None for b in window)
        paged_blocks, more = root.blocks_in_window(GATEWAY, 0, 1 << 62, after=0)
        assert [b.height for b in paged_blocks] == [h for h, _ in signed][1:] and more is None

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    bundle = tmp_path / "bundle"
    exported = cli(
        "proof", "export", "--gateway", plant.http, "--token-file", token_file, "--root", plant.root.url,
        "--device", DEVICE, "--from", "1970-01-01T00:00:00Z", "--to", str(1 << 62), "--out", bundle,
    )  # fmt: skip
    assert exported["ok"] is True, exported
    assert exported["readings"] == 60 and exported["skipped_unanchored"] == 0
    part = tmp_path / "part"  # the window's edges cut blocks: those are not proven complete
    partial = cli(
        "proof", "export", "--gateway", plant.http, "--token-file", token_file, "--root", plant.root.url,
        "--device", DEVICE, "--from", str(lo), "--to", str(hi), "--out", part,
    )  # fmt: skip
    assert partial["readings"] == len(expected), partial
    in_window = {r.id for r in stored if lo <= r.received_ms < hi}
    holders = {r.block for r in stored if r.id in in_window}
    whole_blocks = [h for h in sorted(holders) if all(r.id in in_window for r in stored if r.block == h)]
    assert partial["complete_blocks"] == whole_blocks and partial["blocks"] == sorted(holders)
    assert TOKEN not in plant.log()
    plant.system.stop_all()  # offline from here on: no gateway, no root

    policy = plant.root.policy_path
    code, verdict = _verify(bundle, policy, capsys)
    assert code == 0, verdict
    assert verdict["readings"] == 60 and verdict["device"] == DEVICE and verdict["policy_matches"] is True
    assert verdict["arrivals_consistent"] is True
    # All 60 readings are the device's only ones: every block is proven to hold no other.
    assert verdict["complete_blocks"] == verdict["blocks"]

    for kind, pattern in KINDS.items():
        name = next(p for p in sorted(bundle.glob(pattern))).relative_to(bundle).as_posix()
        changed = tmp_path / f"changed-{kind.replace(' ', '-')}"
        shutil.copytree(bundle, changed)
        _flip(changed / name)
        code, out = _verify(changed, policy, capsys)
        assert code == 1, (kind, out)
        assert name in out["error"], (kind, out)
        if kind in ("manifest", "policy"):
            continue
        # Changed on purpose, manifest rewritten to match: the signatures and proofs still refuse it,
        # naming the file (beside the proof it fails, when the two only disagree).
        _rehash(changed, name)
        code, out = _verify(changed, policy, capsys)
        assert code == 1, (kind, out)
        assert name in out["error"] and "one of them was changed" not in out["error"], (kind, out)

    # The manifest's claims are checked against the proven bytes, not believed.
    def edited(name: str, change: Callable[[dict[str, Any]], object]) -> tuple[int, dict[str, Any]]:
        copy = tmp_path / f"edited-{name}"
        shutil.copytree(bundle, copy)
        manifest = json.loads((copy / MANIFEST).read_bytes())
        change(manifest)
        (copy / MANIFEST).write_bytes(canonical_json(manifest))
        return _verify(copy, policy, capsys)

    def swap_proofs(m: dict[str, Any]) -> None:
        first, second = m["readings"][0], m["readings"][1]
        first["proof"], second["proof"] = second["proof"], first["proof"]

    refusals = {
        "swapped proofs": (swap_proofs, "does not prove"),
        "index moved": (
            lambda m: m["readings"][0].update(index=m["readings"][0]["index"] + 1),
            "does not prove",
        ),
        "another device": (lambda m: m.update(device="88.123.99/PUMP-0043"), "not of 88.123.99/PUMP-0043"),
        "no checkpoint": (lambda m: m.update(checkpoints=[]), "lists no checkpoint"),
        "a checkpoint unlisted": (lambda m: m["checkpoints"].pop(0), "not one of the manifest's checkpoints"),
        "block unlisted": (lambda m: m.update(blocks=m["blocks"][1:]), "not in the bundle"),
        "block twice": (lambda m: m["blocks"].append(m["blocks"][0]), "listed twice"),
        "reading twice": (lambda m: m["readings"].append(m["readings"][0]), "listed twice"),
        "gateway key dropped": (lambda m: m.update(keys=m["keys"][1:]), "no key record of the gateway"),
        "another gateway": (lambda m: m.update(gateway="88.123.99/GW-2"), "no key record of the gateway"),
        "device as gateway": (lambda m: m.update(gateway=DEVICE), "has no GATEWAY value"),
    }
    for case, (change, reason) in refusals.items():
        code, out = edited(case.replace(" ", "-"), change)
        assert code == 1 and reason in out["error"], (case, out)

    # An arrival time is the gateway's word: one that contradicts the signed block time is reported.
    code, out = edited("late-arrival", lambda m: m["readings"][0].update(received_ms=1 << 62))
    assert code == 0 and out["arrivals_consistent"] is False, out

    other_policy = tmp_path / "other-policy.txt"
    other_policy.write_text(LogBuilder().policy().to_text())
    code, out = _verify(bundle, other_policy, capsys)
    assert code == 1 and out["file"].startswith("checkpoints/"), out

    gone = tmp_path / "missing"
    shutil.copytree(bundle, gone)
    victim = next(iter(sorted(gone.glob("readings/*.cose"))))
    victim.unlink()
    code, out = _verify(gone, policy, capsys)
    assert code == 1 and "missing" in out["error"] and out["file"] == victim.relative_to(gone).as_posix()


def test_manifest_refuses_hostile_shapes() -> None:
    """Non-canonical bytes, duplicate keys, floats, paths leaving the directory and unlisted files are
    refused as the manifest's fault."""
    good = {
        "format": "edgeroot/evidence-bundle/v1", "device": DEVICE, "gateway": GATEWAY,
        "from_ms": 0, "to_ms": 1,
        "files": {"policy.txt": "0" * 64}, "policy": "policy.txt", "checkpoints": [], "blocks": [],
        "readings": [], "keys": [],
    }  # fmt: skip
    assert parse_manifest(canonical_json(good)).policy == "policy.txt"
    hostile = [
        json.dumps(good).encode(),  # spaces: not canonical
        canonical_json(good).replace(b'"blocks":[]', b'"blocks":[],"blocks":[]'),
        canonical_json({**good, "to_ms": 1.5}),
        canonical_json({**good, "files": {"../policy.txt": "0" * 64}, "policy": "../policy.txt"}),
        canonical_json({**good, "files": {"/etc/passwd": "0" * 64}, "policy": "/etc/passwd"}),
        canonical_json({**good, "policy": "other.txt"}),
        canonical_json({**good, "files": {"policy.txt": "A" * 64}}),
        canonical_json({**good, "extra": 1}),
        canonical_json({**good, "readings": [{"block": 0}]}),
        canonical_json([good]),
        b"\xff",
    ]
    for data in hostile:
        with pytest.raises(BundleError) as caught:
            parse_manifest(data)
        assert caught.value.file == MANIFEST, data


_paths = st.from_regex(r"[a-z0-9_-][a-z0-9._-]{0,12}(/[a-z0-9_-][a-z0-9._-]{0,12}){0,3}", fullmatch=True)
_uints = st.integers(min_value=0, max_value=(1 << 63) - 1)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    names = draw(st.lists(_paths.filter(lambda p: p != MANIFEST), min_size=1, max_size=8, unique=True))
    files = {n: draw(st.binary(min_size=32, max_size=32)).hex() for n in names}
    pick = st.sampled_from(names)
    return Manifest(
        device=draw(st.text(max_size=20)),
        gateway=draw(st.text(max_size=20)),
        from_ms=draw(_uints),
        to_ms=draw(_uints),
        files=files,
        policy=draw(pick),
        checkpoints=tuple(draw(st.lists(pick, max_size=3))),
        blocks=tuple(draw(st.lists(st.builds(BlockEntry, _uints, pick, pick), max_size=3))),
        readings=tuple(
            draw(st.lists(st.builds(ReadingEntry, _uints, _uints, pick, pick, _uints), max_size=3))
        ),
        keys=tuple(
            draw(st.lists(st.builds(KeyEntry, st.text(max_size=20), pick, pick, pick, pick), max_size=2))
        ),
    )


@given(manifests())
def test_manifest_round_trips_through_its_one_byte_form(manifest: Manifest) -> None:
    """Any manifest encodes to ASCII canonical JSON that parses back to itself and encodes the same."""
    data = manifest.encode()
    assert data.isascii() and data.endswith(b"\n") and data.count(b"\n") == 1
    parsed = parse_manifest(data)
    assert parsed == manifest and parsed.encode() == data
