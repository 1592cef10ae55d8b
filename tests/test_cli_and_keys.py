"""The CLI: key files with safe modes, clear verdicts, JSON for scripts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.errors import KeyFormatError
from chain_lite.keys import NoteKey, algorithm_of, load_private_pem, load_public_pem
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    VerifierKey,
)
from chain_lite.receipt import Receipt
from edgeroot.cli import main

from .helpers import LogBuilder


@pytest.mark.parametrize("alg", ["p256", "sm2"])
@pytest.mark.parametrize("kind", ["device", "gateway", "log", "witness"])
def test_keygen_writes_private_keys_0600_and_refuses_to_overwrite(
    kind: str, alg: str, tmp_path: Path
) -> None:
    """Private key files are 0600 from creation, of the algorithm asked (--alg sm2: SM2 for every kind);
    a second run without --force exits 2."""
    name = "88.123.99/PUMP-0001" if kind in ("device", "gateway") else f"{kind}.example"
    assert main(["keygen", "--kind", kind, "--name", name, "--alg", alg, "--out", str(tmp_path)]) == 0
    private = next(p for p in tmp_path.iterdir() if p.suffix in (".key", ".skey"))
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    if kind in ("device", "gateway"):
        public = load_public_pem((tmp_path / private.name.replace(".key", ".pub")).read_bytes())
        assert algorithm_of(public) == algorithm_of(load_private_pem(private.read_bytes())) == alg
    else:
        note_key = NoteKey.parse_skey(private.read_text())
        want = {"p256": {"log": SIGTYPE_ED25519, "witness": SIGTYPE_COSIGNATURE_V1},
                "sm2": {"log": SIGTYPE_SM2, "witness": SIGTYPE_SM2_COSIGNATURE}}[alg][kind]  # fmt: skip
        assert note_key.sigtype == want
        vkey = (tmp_path / private.name.replace(".skey", ".vkey")).read_text()
        assert VerifierKey.parse(vkey).sigtype == want
    assert main(["keygen", "--kind", kind, "--name", name, "--alg", alg, "--out", str(tmp_path)]) == 2


def test_device_simulate_refuses_a_key_of_another_alg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`device simulate --alg sm2` with a P-256 key file exits 2 naming both, before sending anything."""
    assert main(["keygen", "--kind", "device", "--name", "88.123/D", "--out", str(tmp_path)]) == 0
    argv = ["device", "simulate", "--coap", "coap://127.0.0.1:9/readings", "--id", "88.123/D",
            "--key", str(tmp_path / "88.123_D.key"), "--alg", "sm2", "--count", "1"]  # fmt: skip
    assert main(argv) == 2
    out = capsys.readouterr()
    message = out.out + out.err
    assert "--alg sm2" in message and "is p256" in message


def test_keygen_rejects_bad_names(tmp_path: Path) -> None:
    """A device name that is not an identifier, or a note key name with a space, is a usage error."""
    assert main(["keygen", "--kind", "device", "--name", "no-slash", "--out", str(tmp_path)]) == 2
    assert main(["keygen", "--kind", "log", "--name", "has space", "--out", str(tmp_path)]) == 2


def test_key_loading_refuses_other_curves() -> None:
    """Only P-256 and Ed25519 keys are accepted."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from chain_lite.keys import private_pem

    with pytest.raises(KeyFormatError):
        load_private_pem(private_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(KeyFormatError):
        load_private_pem(b"not a key")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    log = LogBuilder()
    log.add(20)
    old = log.checkpoint()
    log.add(15)
    new = log.checkpoint()
    receipt = Receipt(7, tuple(log.tree.inclusion_proof(7)), SignedCheckpoint.parse(new))
    paths = {name: tmp_path / name for name in ("policy", "old", "new", "proof", "receipt", "leaf", "vkey")}
    paths["policy"].write_text(log.policy().to_text())
    paths["old"].write_bytes(old)
    paths["new"].write_bytes(new)
    paths["proof"].write_text("".join(b64.encode(h) + "\n" for h in log.tree.consistency_proof(20)))
    paths["receipt"].write_bytes(receipt.to_bytes())
    paths["leaf"].write_bytes(b"entry 7")
    paths["vkey"].write_text(log.log_key.vkey() + "\n")
    return paths


def test_verify_note_receipt_and_consistency_succeed(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid inputs exit 0 and say what was proven."""
    assert main(["verify", "note", "--vkey", str(files["vkey"]), str(files["new"])]) == 0
    assert main(["verify", "receipt", str(files["receipt"]), "--policy", str(files["policy"]),
                 "--leaf", str(files["leaf"])]) == 0  # fmt: skip
    assert main(["verify", "consistency", "--policy", str(files["policy"]), "--old", str(files["old"]),
                 "--new", str(files["new"]), "--proof", str(files["proof"])]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "entry 7 is in" in out and "size 35 extends size 20" in out


def test_verify_json_output_is_one_object(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """--json works before or after the subcommand and prints one parseable object."""
    assert main(["--json", "verify", "receipt", str(files["receipt"]), "--policy", str(files["policy"]),
                 "--leaf", str(files["leaf"])]) == 0  # fmt: skip
    first = json.loads(capsys.readouterr().out)
    assert first["ok"] is True and first["index"] == 7 and first["tree_size"] == 35
    assert main(["verify", "consistency", "--policy", str(files["policy"]), "--old", str(files["new"]),
                 "--new", str(files["old"]), "--proof", str(files["proof"]), "--json"]) == 1  # fmt: skip
    second = json.loads(capsys.readouterr().out)
    assert second["ok"] is False and "older than the pinned" in second["error"]


def test_verify_failures_exit_1_with_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong leaf, a wrong vkey and a wrong proof each exit 1 with a single reason line."""
    files["leaf"].write_bytes(b"entry 8")
    assert main(["verify", "receipt", str(files["receipt"]), "--policy", str(files["policy"]),
                 "--leaf", str(files["leaf"])]) == 1  # fmt: skip
    other = NoteKey.generate("log.test.edgeroot.example", 0x01).vkey()
    assert main(["verify", "note", "--vkey", other, str(files["new"])]) == 1
    files["proof"].write_text(b64.encode(b"\x00" * 32) + "\n")
    assert main(["verify", "consistency", "--policy", str(files["policy"]), "--old", str(files["old"]),
                 "--new", str(files["new"]), "--proof", str(files["proof"])]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("INVALID") for line in err)


def test_missing_files_are_usage_errors(files: dict[str, Path]) -> None:
    """Unreadable input exits 2, not 1: nothing was verified either way."""
    assert main(["verify", "receipt", "/nonexistent", "--policy", str(files["policy"]),
                 "--leaf-hash", "00" * 32]) == 2  # fmt: skip
