"""The systemd units pass `systemd-analyze verify` (where the command exists) and say what they must."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
def test_bridge_unit_verifies(tmp_path: Path) -> None:
    """The bridge template, instantiated for ttyUSB0, has no unknown keys or bad values."""
    edgeroot = Path(sys.executable).with_name("edgeroot")
    text = (UNITS / "edgeroot-bridge@.service").read_text().replace("/usr/bin/edgeroot", str(edgeroot))
    unit = tmp_path / "edgeroot-bridge@ttyUSB0.service"
    unit.write_text(text)
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 and problems == [], problems


def test_bridge_unit_is_notify_hardened_and_can_reach_its_port() -> None:
    """Type=notify, restart on failure, dialout, and hardening that still allows /dev/%I."""
    text = (UNITS / "edgeroot-bridge@.service").read_text()
    for line in (
        "Type=notify", "Restart=on-failure", "SupplementaryGroups=dialout", "DeviceAllow=/dev/%I rw",
        "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "SystemCallFilter=@system-service",
        "BindsTo=dev-%i.device",
    ):  # fmt: skip
        assert line in text.splitlines(), line
    rule = (UNITS / "99-edgeroot-bridge.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="edgeroot-bridge@%k.service"' in rule
