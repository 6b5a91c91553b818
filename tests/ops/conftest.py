"""Shared fixtures for the compiled-operator tests."""

import warnings

import pytest

from pyg_vig import ops


@pytest.fixture(scope="session")
def compiled() -> None:
    """Skip (with the build error as the reason) where the C++ operators cannot be built."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if not ops.available():
            pytest.skip(f"compiled pyg_vig.ops unavailable: {ops.build_error()}")


@pytest.fixture(params=["cpp", "torch"])
def impl(request) -> str:
    """Both implementations; "cpp" skips where the build failed."""
    if request.param == "cpp":
        request.getfixturevalue("compiled")
    return request.param
