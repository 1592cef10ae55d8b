"""Shared fixtures: where the public vectors live, and hypothesis settings."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
SHARED_VECTORS = Path(os.environ.get("EDGEROOT_SHARED_VECTORS", REPO.parent / "shared" / "vectors"))
OWN_VECTORS = Path(__file__).resolve().parent / "vectors"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile("ci", parent=settings.get_profile("default"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
