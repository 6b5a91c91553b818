"""Shared test configuration.

``tests/nn/dense_reference.py`` (the dense official-formula reference) is imported by tests in
several folders; the folder is put on ``sys.path`` here because ``tests`` is not a package.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_NN_TESTS = str(Path(__file__).parent / "nn")
if _NN_TESTS not in sys.path:
    sys.path.insert(0, _NN_TESTS)

HAS_CLUSTER = importlib.util.find_spec("torch_cluster") is not None


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so random graphs are reproducible."""
    torch.manual_seed(12345)
    yield


def pytest_report_header(config):
    return f"torch {torch.__version__}, torch_cluster installed: {HAS_CLUSTER}"
