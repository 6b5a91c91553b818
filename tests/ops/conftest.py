"""Shared fixtures for the compiled-operator tests."""

import os
import warnings

import pytest

from pyg_vig import ops


@pytest.fixture(scope="session")
def compiled() -> None:
    """Skip (with the build error as the reason) where the C++ operators cannot be built;
    with ``PYG_VIG_REQUIRE_OPS=1`` (what ``make test`` sets, after building them) a failed build
    fails these tests instead of skipping them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if not ops.available():
            reason = f"compiled pyg_vig.ops unavailable: {ops.build_error()}"
            if os.environ.get("PYG_VIG_REQUIRE_OPS") == "1":
                pytest.fail(reason + " (PYG_VIG_REQUIRE_OPS=1: the build must work here)")
            pytest.skip(reason)


@pytest.fixture(params=["cpp", "torch"])
def impl(request) -> str:
    """Both implementations; "cpp" skips where the build failed."""
    if request.param == "cpp":
        request.getfixturevalue("compiled")
    return request.param
