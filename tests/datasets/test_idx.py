import gzip

import numpy as np
import pytest
import torch

from pyg_vig.datasets import (
    IDXDataset,
    embedded_path,
    find_idx_files,
    load_dataset,
    read_idx,
    read_idx_split,
    write_idx,
)


def _write_split(root, prefix, images, labels, gz):
    ext = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)


@pytest.fixture
def idx_folder(tmp_path):
    """Real IDX files (train gzipped, test raw) holding a slice of the embedded data."""
    with np.load(embedded_path()) as d:
        _write_split(tmp_path, "train", d["train_images"][:300], d["train_labels"][:300], True)
        _write_split(tmp_path, "t10k", d["test_images"][:100], d["test_labels"][:100], False)
        return tmp_path, {k: d[k][:300] for k in ("train_images", "train_labels")}


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_write_read_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), arr)
    out = read_idx(path)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == gz


def test_idx_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 3), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x02"
    assert raw[4:12] == b"\x00\x00\x00\x02\x00\x00\x00\x03"


def test_idx_dataset_matches_source(idx_folder):
    root, src = idx_folder
    train = IDXDataset(root, "train")
    assert len(train) == 300 and train.in_chans == 1
    x, y = train[7]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(
        (x[0] * 255).round().to(torch.uint8), torch.from_numpy(src["train_images"][7])
    )
    assert y == int(src["train_labels"][7])
    test = IDXDataset(root, "test")
    assert len(test) == 100


def test_find_idx_files_spellings(tmp_path):
    write_idx(tmp_path / "t10k-images.idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.zeros((1,), np.uint8))
    images, labels = find_idx_files(tmp_path, "test")
    assert images.name == "t10k-images.idx3-ubyte" and labels.name == "t10k-labels.idx1-ubyte"
    with pytest.raises(FileNotFoundError, match="no train images IDX file"):
        find_idx_files(tmp_path, "train")


def test_corrupt_idx_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    write_idx(tmp_path / "ok", np.zeros((4, 5, 5), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "cut.gz").write_bytes(gzip.compress((tmp_path / "ok").read_bytes())[:-10])
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


def test_mismatched_images_and_labels(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        read_idx_split(tmp_path, "train")


def test_load_dataset_dispatch(idx_folder, tmp_path):
    root, _ = idx_folder
    assert isinstance(load_dataset(root, "test"), IDXDataset)
    emb = load_dataset("fashion_mnist_subset", "test")
    assert len(emb) == 5000 and emb.classes[9] == "Ankle boot"
    with pytest.raises(FileNotFoundError, match="dataset path not found"):
        load_dataset(tmp_path / "missing", "train")
    npz = tmp_path / "mine.npz"
    np.savez(npz, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.array([0, 1]))
    assert len(load_dataset(npz, "train")) == 2
    with pytest.raises(ValueError, match="no 'test_images'"):
        load_dataset(npz, "test")
