"""Shared test configuration.

``tests/nn/dense_reference.py`` (the dense official-formula reference) is imported by tests in
several folders; the folder is put on ``sys.path`` here because ``tests`` is not a package.

The ``device`` fixture runs a test on every available device: ``cpu`` always, ``cuda`` when
``torch.cuda.is_available()``. Its CUDA cases carry the ``cuda`` marker, so that
``pytest -m cuda`` (what ``benchmarks/gpu.sh`` runs) selects exactly the GPU cases of the suite.
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
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: a test case that runs on a CUDA device")


@pytest.fixture(
    params=[pytest.param(d, marks=[pytest.mark.cuda] if d == "cuda" else []) for d in DEVICES],
    ids=DEVICES,
)
def device(request) -> torch.device:
    """Every available device: ``cpu``, and ``cuda`` when a GPU is there."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so random graphs are reproducible."""
    torch.manual_seed(12345)
    yield


def pytest_report_header(config):
    return (f"torch {torch.__version__}, torch_cluster installed: {HAS_CLUSTER}, "
            f"devices: {', '.join(DEVICES)}")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh ``$TORCH_HOME`` (the torch.hub download cache) for tests that download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"
