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


def test_image_folder_is_torchvisions(folder):
    """samples / targets / class_to_idx mean what torchvision's ImageFolder says, minus the
    corrupt file, which torchvision would only hit mid-epoch."""
    torchvision = pytest.importorskip("torchvision")
    with pytest.warns(UserWarning, match="broken.png"):
        ours = ImageFolder(folder / "train", image_size=8)
    theirs = torchvision.datasets.ImageFolder(str(folder / "train"))
    assert isinstance(ours, torchvision.datasets.ImageFolder)
    assert ours.classes == theirs.classes and ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == [s for s in theirs.samples if not s[0].endswith("broken.png")]
    assert ours.targets == [t for _, t in ours.samples] == ours.labels.tolist()
    # given classes fix the label order (a test folder labelled like its training folder)
    flipped = ImageFolder(folder / "test", 8, classes=["dog", "cat"])
    assert flipped.class_to_idx == {"dog": 0, "cat": 1}
    assert sorted(flipped.targets) == [0, 1, 1]


def test_idx_and_npz_data_load_without_torchvision(tmp_path):
    """Reading the embedded / IDX data needs no torchvision (only ImageFolder imports it)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torchvision':\n"
        "            raise ModuleNotFoundError('No module named torchvision (blocked)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pyg_vig.datasets import load_dataset\n"
        "ds = load_dataset('fashion_mnist_subset', 'test')\n"
        "print(len(ds), tuple(ds[0][0].shape))\n"
        "import pyg_vig.datasets as d\n"
        "try:\n"
        "    d.ImageFolder\n"
        "except ModuleNotFoundError as e:\n"
        "    print('needs', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "5000 (1, 28, 28)"
    assert lines[1].startswith("needs") and "torchvision" in lines[1]
