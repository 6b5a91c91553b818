import numpy as np
import pytest
import torch
from PIL import Image

from pyg_vig.datasets import ImageFolder, load_dataset, load_image


def _png(path, value, size=(10, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        _png(root / split / "cat" / "a.png", 10)
        _png(root / split / "cat" / "b.jpg", 20)
        _png(root / split / "dog" / "c.png", 200, mode="L")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "train" / "dog" / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_image_folder_skips_and_counts_corrupt_files(folder):
    with pytest.warns(UserWarning, match="broken.png"):
        ds = ImageFolder(folder / "train", image_size=8, in_chans=3)
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == 3 and ds.skipped == 1
    assert ds.skipped_files[0].name == "broken.png"
    x, y = ds[2]
    assert x.shape == (3, 8, 8) and y == 1
    assert torch.allclose(x, torch.full_like(x, 200 / 255), atol=1 / 255)


def test_load_dataset_image_folder_splits(folder):
    train = load_dataset(folder, "train", image_size=(6, 7), in_chans=1)
    test = load_dataset(folder, "test", image_size=(6, 7), in_chans=1, classes=train.classes)
    assert train[0][0].shape == (1, 6, 7) and len(test) == 3


def test_image_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tmp_path / "none", 8)
    with pytest.raises(FileNotFoundError, match="bird"):
        ImageFolder(folder / "test", 8, classes=["cat", "bird"])
    empty = tmp_path / "empty" / "cls"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolder(tmp_path / "empty", 8)


def test_load_image(folder, tmp_path):
    x = load_image(folder / "train" / "cat" / "a.png", in_chans=1)
    assert x.shape == (1, 12, 10) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(folder / "train" / "dog" / "broken.png")
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "missing.png")
