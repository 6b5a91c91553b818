from importlib import resources

import numpy as np

from pyg_vig.datasets import embedded_path, write_idx
from pyg_vig.datasets.make_subset import balanced_indices, make_subset


def test_embedded_subset_is_balanced_and_licensed():
    with np.load(embedded_path()) as d:
        assert d["train_images"].shape == (20000, 28, 28) and d["train_images"].dtype == np.uint8
        assert d["test_images"].shape == (5000, 28, 28)
        assert np.bincount(d["train_labels"]).tolist() == [2000] * 10
        assert np.bincount(d["test_labels"]).tolist() == [500] * 10
        # indices into the full splits are unique and sorted
        src = d["train_source_index"]
        assert (np.diff(src) > 0).all() and src.max() < 60000
    notice = resources.files("pyg_vig.datasets") / "assets" / "LICENSE-fashion-mnist.txt"
    text = notice.read_text()
    assert "Zalando SE" in text and "MIT" in text


def test_balanced_indices_deterministic():
    labels = np.repeat(np.arange(3), 50)[np.random.default_rng(1).permutation(150)]
    a, b = balanced_indices(labels, 10, seed=0), balanced_indices(labels, 10, seed=0)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(labels[a]).tolist() == [10, 10, 10]
    assert not np.array_equal(a, balanced_indices(labels, 10, seed=1))


def test_make_subset_from_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 3)
    out = make_subset(tmp_path, tmp_path / "sub.npz", train_per_class=5, test_per_class=2)
    out2 = make_subset(tmp_path, tmp_path / "sub2.npz", train_per_class=5, test_per_class=2)
    with np.load(out) as d, np.load(out2) as d2:
        assert d["train_images"].shape == (15, 28, 28) and d["test_labels"].shape == (6,)
        for k in d.files:
            np.testing.assert_array_equal(d[k], d2[k])
