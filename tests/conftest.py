"""Shared fixtures: every behaviour test runs against each implementation.

The ``cython`` parameter is on by default and a missing extension is a
*failure*, not a skip (the frozenlist trap: "C" tests silently testing Python).
Pass ``--no-extensions`` or set ``DTPROTO_NO_EXTENSIONS=1`` to test only the
pure-Python reference.  ``DTPROTO_TEST_IMPLEMENTATIONS=cython`` keeps only the
``cython`` parameter: CI sets it on its first pass because its second pass
(``DTPROTO_NO_EXTENSIONS=1``) runs every ``python`` parameter anyway.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

from dtproto import _impl

# Subprocesses that import dtproto must not start in the repository root:
# there the source tree (no compiled core unless built in place) comes first on
# sys.path and shadows the installed package.  Tests run them from here.
NEUTRAL_DIR = tempfile.mkdtemp(prefix="dtproto-tests-")

settings.register_profile(
    "dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
settings.register_profile(
    "large", max_examples=20_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-extensions", action="store_true", default=False,
        help="test only the pure-Python implementation",
    )


def extensions_expected(config: pytest.Config) -> bool:
    return not (config.getoption("--no-extensions") or _impl.env_flag("DTPROTO_NO_EXTENSIONS"))


def implementation_names(config: pytest.Config) -> list:
    names = ["python", "cython"] if extensions_expected(config) else ["python"]
    only = os.environ.get("DTPROTO_TEST_IMPLEMENTATIONS")
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = set(wanted) - {"python", "cython"}
        if unknown or not set(wanted) & set(names):
            raise pytest.UsageError(
                "DTPROTO_TEST_IMPLEMENTATIONS=%r: expected a comma-separated subset of %s"
                % (only, ", ".join(names)))
        names = [n for n in names if n in wanted]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        names = implementation_names(metafunc.config)
        params = [
            pytest.param(n, id=n, marks=[pytest.mark.cython] if n == "cython" else [])
            for n in names
        ]
        metafunc.parametrize("impl", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest):
    """The codec module under test (``dtproto._codec_py`` or ``dtproto._codec_c``)."""
    available = _impl.available_implementations()
    if request.param not in available:
        pytest.fail(
            "the Cython core is not importable: %s. Build it (pip install ., then run the "
            "installed pytest, or pip install -e .), or run with DTPROTO_NO_EXTENSIONS=1"
            % _impl.extension_error()
        )
    return available[request.param]


@pytest.fixture(scope="session")
def py():
    """The pure-Python reference."""
    return _impl.available_implementations()["python"]


@pytest.fixture(scope="session")
def cython_module(request: pytest.FixtureRequest):
    """The Cython core, for tests that compare it with the reference: skipped
    when extensions are switched off, a failure when it cannot be imported."""
    if not extensions_expected(request.config):
        pytest.skip("extensions switched off: no Cython core to compare")
    impls = _impl.available_implementations()
    if "cython" not in impls:
        pytest.fail("the Cython core is not importable (%s); build it or set "
                    "DTPROTO_NO_EXTENSIONS=1" % _impl.extension_error())
    return impls["cython"]
