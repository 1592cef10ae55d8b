"""Shared fixtures: where the public vectors live, and hypothesis settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, settings

from chain_lite.suite import LOG_PROFILES
from tests.gateway_harness import Plant, running_plant
from tests.mqtt_harness import running_broker
from tests.root_harness import POSTGRES_DOWN, POSTGRES_URL, RootUnderTest, postgres_schema, running_root

REPO = Path(__file__).resolve().parent.parent
SHARED_VECTORS = Path(os.environ.get("EDGEROOT_SHARED_VECTORS", REPO.parent / "shared" / "vectors"))
OWN_VECTORS = Path(__file__).resolve().parent / "vectors"

# anyio (>= 4.12) imports its API lazily, on first use, and pytest rewrites the asserts of every module
# of a distribution that ships a pytest plugin (anyio does) as it imports it, compiling the source. CPython
# 3.11's compiler is not thread-safe (gh-106905): the first `anyio.open_file` of a server thread, while
# the main thread compiled another module, failed a request with "AST constructor recursion depth
# mismatch" (a CI run on a fresh virtualenv). Every lazy name is resolved here, in the main thread.
for _module in (anyio, anyio.abc):
    for _name in dir(_module):
        getattr(_module, _name)

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile("ci", parent=settings.get_profile("default"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for each backend; PostgreSQL is skipped (saying why) when no server answers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'root.db'}"
        return
    if POSTGRES_DOWN:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {POSTGRES_DOWN}")
    with postgres_schema() as url:
        yield url


@pytest.fixture
def root(tmp_path: Path, database_url: str) -> Iterator[RootUnderTest]:
    """A root node with one witness, both served over real HTTP on loopback."""
    with running_root(tmp_path, database_url) as node:
        yield node


@pytest.fixture(params=["default", "sm"])
def any_suite_root(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> Iterator[RootUnderTest]:
    """Like ``root``, once per log suite (``root init --suite default|sm``): SHA-256 and SM3 logs."""
    with running_root(tmp_path, database_url, profile=LOG_PROFILES[request.param]) as node:
        yield node


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real broker on a free loopback port for the test session: mosquitto, or amqtt without one."""
    with running_broker(tmp_path_factory.mktemp("mqtt")) as address:
        yield address


PLANT_ALGS = {"p256": ("p256", "p256"), "sm2": ("sm2", "p256"), "sm2-gateway": ("sm2", "sm2")}
"""The plant fixture's key parameters: (device key, gateway key) algorithms."""
SUITE_KEYS = {"default": "p256", "sm": "sm2-gateway"}
"""Each log suite's own keys: a bare suite name is that suite throughout (``sm``: the all-SM plant)."""


def plant_params(param: str) -> tuple[str, str, str]:
    """``SUITE+KEYS``, a bare ``SUITE`` (its own keys) or bare ``KEYS`` (the default suite): the log suite
    and the device's and gateway's key algorithms."""
    suite, plus, algs = param.partition("+")
    if not plus:
        suite, algs = (param, SUITE_KEYS[param]) if param in SUITE_KEYS else ("default", param)
    return (suite, *PLANT_ALGS[algs])


@pytest.fixture
def plant(request: pytest.FixtureRequest, tmp_path: Path, mqtt_broker: tuple[str, int]) -> Iterator[Plant]:
    """A root, a registered gateway and device, and the gateway process (started by the test). Keys are
    P-256 on a default-suite log unless a test parametrises the fixture (``indirect``, spelled as
    :func:`plant_params` reads it): ``sm2`` (an SM2 device on a default-suite gateway and log: issue 16's
    mixed deployment), ``sm2-gateway`` (the gateway's key that signs its blocks is SM2 too), ``sm`` (the
    all-SM deployment: SM2 device, gateway, log and witness keys, SM3 log and blocks) beside ``default``
    for the end-to-end and fault tests that must pass on both suites."""
    suite, device_alg, gateway_alg = plant_params(getattr(request, "param", "p256"))
    with running_plant(tmp_path, mqtt_broker, suite, device_alg, gateway_alg) as p:
        yield p


@pytest.fixture(params=["default", "sm", "default+sm2", "sm+p256"])
def any_suite_plant(
    request: pytest.FixtureRequest, tmp_path: Path, mqtt_broker: tuple[str, int]
) -> Iterator[Plant]:
    """Like ``plant``, once per suite and mix: ``default`` and ``sm`` (each suite throughout), then
    ``SUITE+KEYS``, the suite with the keys of :data:`PLANT_ALGS` (``default+sm2``: an SM2 device on the
    default suite, issue 16's mixed deployment; ``sm+p256``: P-256 device and gateway on an SM3 log)."""
    suite, device_alg, gateway_alg = plant_params(request.param)
    with running_plant(tmp_path, mqtt_broker, suite, device_alg, gateway_alg) as p:
        yield p
