"""Evaluation preprocessing from ``pretrained_cfg`` and lazily decoded image folders."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import pyg_vig
import pyg_vig.hub
from pyg_vig.datasets import (
    ImageFileDataset,
    collate_skip_unreadable,
    create_transform,
    imagenet_class_names,
    imagenet_synsets,
    load_image,
    resize_center_crop,
    resolve_data_config,
    scan_image_folder,
)
from pyg_vig.datasets.preprocess import class_names


def _square_photo(path, W=300, H=200, side=100):
    """A black W x H image with a white side x side square in the middle."""
    arr = np.zeros((H, W, 3), np.uint8)
    top, left = (H - side) // 2, (W - side) // 2
    arr[top : top + side, left : left + side] = 255
    Image.fromarray(arr).save(path)
    return path


def _white_box(x):
    """(rows, cols) extent of the bright pixels of a (C, H, W) tensor."""
    ys, xs = torch.nonzero(x[0] > x[0].min() + 0.5 * (x[0].max() - x[0].min()), as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1), ys, xs


def test_resize_keeps_the_aspect_ratio(tmp_path):
    """The official eval transform: short side to floor(224 / 0.9) = 248, centre 224 crop; a
    300x200 photo is not stretched (its centred square stays square: 100 * 248/200 = 124)."""
    cfg = pyg_vig.hub.get_pretrained_cfg("pvig_s")
    t = create_transform(cfg)
    x = t(_square_photo(tmp_path / "a.png"))
    assert x.shape == (3, 224, 224)
    h, w, ys, xs = _white_box(x)
    assert abs(h - 124) <= 1 and abs(w - 124) <= 1
    assert abs((ys.min() + ys.max()) / 2 - 111.5) <= 1
    assert abs((xs.min() + xs.max()) / 2 - 111.5) <= 1
    # the crop itself, as PIL sees it
    img = resize_center_crop(Image.new("RGB", (300, 200)), 224, 0.9, "bicubic")
    assert img.size == (224, 224)
    # crop_pct 0.95 (pvig_b) cuts less: short side floor(224 / 0.95) = 235
    x = create_transform(pyg_vig.hub.get_pretrained_cfg("pvig_b"))(tmp_path / "a.png")
    assert abs(_white_box(x)[0] - round(100 * 235 / 200)) <= 1


def test_normalisation_and_grayscale(tmp_path):
    Image.fromarray(np.full((40, 60, 3), 204, np.uint8)).save(tmp_path / "g.png")
    x = create_transform(pyg_vig.hub.get_pretrained_cfg("vig_ti"))(tmp_path / "g.png")
    torch.testing.assert_close(x, torch.full((3, 224, 224), (0.8 - 0.5) / 0.5), atol=1e-5, rtol=0)
    model = pyg_vig.create_model("vig_mini")
    cfg = resolve_data_config(model)
    assert cfg == dict(input_size=(1, 28, 28), crop_pct=1.0, interpolation="bilinear",
                       mean=(0.5,), std=(0.5,))  # fmt: skip
    assert create_transform(model)(tmp_path / "g.png").shape == (1, 28, 28)
    with pytest.raises(ValueError, match="crop_pct must lie in"):
        create_transform(cfg, crop_pct=1.5)


def test_load_image_keeps_aspect_unless_asked(tmp_path):
    path = _square_photo(tmp_path / "a.png")
    h, w, *_ = _white_box(load_image(path, 3, 100))
    assert abs(h - 50) <= 1 and abs(w - 50) <= 1  # 200 -> 100: the square halves
    h, w, *_ = _white_box(load_image(path, 3, 100, crop_pct=None))  # the old stretch
    assert abs(h - 50) <= 1 and abs(w - 33) <= 1


def test_imagenet_class_names():
    names, wnids = imagenet_class_names(), imagenet_synsets()
    assert len(names) == len(wnids) == 1000 and wnids == sorted(set(wnids))
    assert names[0] == "tench" and wnids[0] == "n01440764"
    assert names[1] == "goldfish" and names[999] == "toilet tissue"
    assert imagenet_class_names(full=True)[0] == "tench, Tinca tinca"
    assert class_names(pyg_vig.create_model("vig_ti")) == names
    assert class_names(pyg_vig.create_model("vig_ti", num_classes=3)) == [
        "class 0", "class 1", "class 2"]  # fmt: skip


def test_lazy_folder_labels_by_class_list_and_skips_unreadable(tmp_path):
    wnids = imagenet_synsets()
    root = tmp_path / "val"
    for wnid, value in ((wnids[1], 10), (wnids[500], 200)):
        (root / wnid).mkdir(parents=True)
        Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(root / wnid / "a.JPEG")
    (root / wnids[500] / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    files, order = scan_image_folder(root, classes=wnids)
    assert [label for _, label in files] == [1, 500, 500] and order == wnids
    ds = ImageFileDataset(files, create_transform(pyg_vig.hub.get_pretrained_cfg("pvig_ti")))
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_skip_unreadable)
    batches = list(loader)
    x, y, bad = batches[0]
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [1, 500] and bad == []
    x, y, bad = batches[1]
    assert len(x) == 0 and len(bad) == 1 and "broken.JPEG" in bad[0]
    # folders that are not classes of the model are refused by name
    (root / "cats").mkdir()
    with pytest.raises(ValueError, match=r"\['cats'\] .* not among the model's 1000 classes"):
        scan_image_folder(root, classes=wnids)
