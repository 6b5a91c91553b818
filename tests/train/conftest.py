import numpy as np
import pytest

from pyg_vig.datasets import embedded_path, write_idx


def write_tiny_idx(root, n_train=256, n_test=128):
    """An MNIST-format folder with a class-balanced slice of the embedded Fashion-MNIST data."""
    root.mkdir(parents=True, exist_ok=True)
    with np.load(embedded_path()) as d:
        for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
            step = len(d[f"{split}_labels"]) // n
            write_idx(root / f"{prefix}-images-idx3-ubyte.gz", d[f"{split}_images"][::step][:n])
            write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", d[f"{split}_labels"][::step][:n])
    return root


@pytest.fixture
def tiny_idx(tmp_path):
    return write_tiny_idx(tmp_path / "tiny_fmnist")
