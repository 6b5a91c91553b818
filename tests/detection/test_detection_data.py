import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from pyg_vig.datasets import FASHION_MNIST_CLASSES  # noqa: E402
from pyg_vig.detection import (  # noqa: E402
    CocoDetection,
    collate,
    detection_transforms,
    make_canvases,
)


def _copy(canvases, tmp_path, edit=None):
    """A copy of the training canvases, with ``edit(data)`` applied to its json."""
    img_dir, ann_file = canvases["train"]
    dst = tmp_path / "images"
    shutil.copytree(img_dir, dst)
    data = json.loads(ann_file.read_text())
    if edit is not None:
        edit(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return dst, path


def test_items_are_tv_tensors(canvases):
    ds = CocoDetection(*canvases["train"], with_masks=True)
    assert len(ds) == 4 and ds.skipped == []
    assert ds.classes == {i + 1: n for i, n in enumerate(FASHION_MNIST_CLASSES)}
    assert ds.num_classes == 11
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
    assert image.shape == (3, 96, 96) and 0 <= image.min() and image.max() <= 1
    boxes, masks = target["boxes"], target["masks"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format.name == "XYXY"
    assert isinstance(masks, tv_tensors.Mask) and masks.shape == (len(boxes), 96, 96)
    assert target["labels"].dtype == torch.int64 and target["image_id"] == ds.ids[0]
    for box, mask in zip(boxes, masks, strict=True):  # the box is the mask's tight extent
        rows, cols = torch.nonzero(mask, as_tuple=True)
        want = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert box.tolist() == [float(v) for v in want]


def test_flip_moves_boxes_and_masks(canvases):
    plain = CocoDetection(*canvases["train"], with_masks=True)
    flipped = CocoDetection(*canvases["train"], with_masks=True, transforms=detection_transforms(
        train=True, hflip=1.0))
    (img0, t0), (img1, t1) = plain[1], flipped[1]
    W = img0.shape[-1]
    assert torch.equal(img1, img0.flip(-1))
    assert torch.equal(t1["masks"], t0["masks"].flip(-1))
    want = torch.stack([W - t0["boxes"][:, 2], t0["boxes"][:, 1], W - t0["boxes"][:, 0],
                        t0["boxes"][:, 3]], dim=1)
    assert torch.equal(t1["boxes"], want)
    assert torch.equal(t1["labels"], t0["labels"])


def test_resize_moves_boxes_and_eval_transforms_do_not_flip(canvases):
    ds = CocoDetection(*canvases["train"], transforms=v2.Compose(
        [detection_transforms(train=False), v2.Resize((48, 48))]))
    image, target = ds[0]
    ref = CocoDetection(*canvases["train"])[0][1]
    assert image.shape[-2:] == (48, 48)
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor),
                               ref["boxes"].as_subclass(torch.Tensor) / 2)


def test_image_without_objects(canvases, tmp_path):
    def drop_first_image_objects(data):
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]

    ds = CocoDetection(*_copy(canvases, tmp_path, drop_first_image_objects), with_masks=True,
                       transforms=detection_transforms(train=True))
    image, target = ds[0]
    assert target["image_id"] == 1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 96, 96)
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and targets[1]["boxes"].shape[0] > 0


@pytest.mark.parametrize("field, value, match", [
    ("bbox", [80, 10, 30, 20], r"bbox \[80, 10, 30, 20\] \(x2=110, y2=30\) lies outside"),
    ("bbox", [-5, 10, 30, 20], "lies outside the image"),
    ("bbox", [10, 10, 0, 20], "width or height <= 0"),
    ("bbox", [10, 10, 20, -1], "width or height <= 0"),
    ("bbox", [10, 10, 20], "is not"),
    ("category_id", 42, "category_id 42 is not one of the file's categories"),
    ("image_id", 999, "image_id 999 is not in 'images'"),
])
def test_bad_annotation_names_it_and_the_file(canvases, tmp_path, field, value, match):
    def spoil(data):
        data["annotations"][2][field] = value
        data["annotations"][2]["id"] = 777

    img_dir, ann_file = _copy(canvases, tmp_path, spoil)
    with pytest.raises(ValueError, match=match) as e:
        CocoDetection(img_dir, ann_file)
    assert "annotation id 777" in str(e.value) and str(ann_file) in str(e.value)


def test_box_within_tolerance_is_clipped(canvases, tmp_path):
    def nudge(data):
        data["annotations"][0]["bbox"] = [-0.5, 1, 20, 20]

    ds = CocoDetection(*_copy(canvases, tmp_path, nudge))
    assert ds[0][1]["boxes"][0].tolist() == [0.0, 1.0, 19.5, 21.0]


def test_not_a_coco_file(tmp_path):
    (tmp_path / "a.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="no 'annotations', 'categories' list"):
        CocoDetection(tmp_path, tmp_path / "a.json")
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoDetection(tmp_path, tmp_path / "missing.json")


def test_corrupt_image_is_reported_and_skipped(canvases, tmp_path):
    img_dir, ann_file = _copy(canvases, tmp_path)
    (img_dir / "000001.png").write_bytes(b"not a png at all")
    (img_dir / "000003.png").unlink()
    with pytest.warns(UserWarning) as record:
        ds = CocoDetection(img_dir, ann_file)
    messages = [str(w.message) for w in record]
    assert any("000001.png: cannot read it" in m for m in messages), messages
    assert any("000003.png: file not found" in m for m in messages), messages
    assert all(w.filename == __file__ for w in record)  # points at the caller's line
    assert len(ds) == 2 and ds.ids == [1, 3]
    assert [f for f, _ in ds.skipped] == ["000001.png", "000003.png"]
    assert "file not found" in ds.skipped[1][1]


def test_truncated_image_is_skipped_when_loaded(canvases, tmp_path):
    img_dir, ann_file = _copy(canvases, tmp_path)
    data = (img_dir / "000000.png").read_bytes()
    (img_dir / "000000.png").write_bytes(data[: len(data) // 2])  # header intact
    ds = CocoDetection(img_dir, ann_file)
    assert len(ds) == 4
    with pytest.warns(UserWarning, match="cannot decode it"):
        item = ds[0]
    assert item is None and ds.skipped[0][0] == "000000.png"
    images, targets = collate([item, ds[1]])
    assert len(images) == 1 and targets[0]["image_id"] == 2


def test_canvases_are_deterministic(tmp_path):
    a = make_canvases(tmp_path / "a", n_train=3, n_val=2, canvas_size=(64, 96), seed=1)
    b = make_canvases(tmp_path / "b", n_train=3, n_val=2, canvas_size=(64, 96), seed=1)
    c = make_canvases(tmp_path / "c", n_train=3, n_val=2, canvas_size=(64, 96), seed=2)
    for split in ("train", "val"):
        assert a[split][1].read_bytes() == b[split][1].read_bytes()
        assert a[split][1].read_bytes() != c[split][1].read_bytes()
        assert sorted(p.name for p in a[split][0].iterdir()) == [
            f"{i:06d}.png" for i in range(3 if split == "train" else 2)]
    data = json.loads(a["val"][1].read_text())
    assert [c["id"] for c in data["categories"]] == list(range(1, 11))
    assert data["images"][0] == {"id": 1, "file_name": "000000.png", "width": 96, "height": 64}
    for ann in data["annotations"]:  # area and box from the RLE mask
        m = mask_utils.decode(ann["segmentation"])
        assert ann["area"] == int(m.sum()) and m.shape == (64, 96)
        x, y, w, h = ann["bbox"]
        rows, cols = np.nonzero(m)
        assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())
    # a validation split does not depend on how many training canvases were made
    d = make_canvases(tmp_path / "d", n_train=1, n_val=2, canvas_size=(64, 96), seed=1)
    assert d["val"][1].read_bytes() == a["val"][1].read_bytes()


def test_canvas_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="item_size"):
        make_canvases(tmp_path, n_train=1, n_val=1, canvas_size=32, item_size=(24, 40))
    with pytest.raises(ValueError, match="objects_per_image"):
        make_canvases(tmp_path, n_train=1, n_val=1, objects_per_image=(3, 1))
