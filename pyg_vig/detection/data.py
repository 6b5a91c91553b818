"""COCO-format detection data: a dataset read with pycocotools, v2 transforms and collation.

torchvision's ``CocoDetection`` returns the raw annotation list (its reference scripts convert
it in ``coco_utils.py``) and ``wrap_dataset_for_transforms_v2`` adds the ``tv_tensors``; neither
checks the annotations or survives an unreadable image, which is what this module adds.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["CocoDetection", "collate", "detection_transforms", "load_coco"]


def _require_pycocotools():
    try:
        from pycocotools.coco import COCO
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("COCO data and evaluation need pycocotools: "
                          "pip install 'pyg-vig[detection]'") from e
    return COCO


def load_coco(ann_file: str | Path):
    """Read a COCO annotation file into a ``pycocotools.coco.COCO`` (quietly).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a COCO json file (with ``images``, ``annotations``,
            ``categories`` lists).
    """
    COCO = _require_pycocotools()
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        data = json.loads(ann_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{ann_file} is not a json file: {e}") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data.get(k) if isinstance(data, dict) else None, list)]
    if missing:
        raise ValueError(f"{ann_file} is not a COCO annotation file: it has no "
                         f"{', '.join(map(repr, missing))} list")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _check_annotations(coco, ann_file: Path, tolerance: float) -> None:
    """Raise one ``ValueError`` listing the bad images/annotations of the file (first 5)."""
    problems: list[str] = []
    for img in coco.dataset["images"]:
        lacks = [k for k in ("id", "file_name", "width", "height") if k not in img]
        if lacks:
            problems.append(f"image entry {img.get('id', img)} has no {', '.join(lacks)}")
    images = {img["id"]: img for img in coco.dataset["images"] if "id" in img}
    categories = {c["id"] for c in coco.dataset["categories"]}
    for ann in coco.dataset["annotations"]:
        aid = ann.get("id")
        img = images.get(ann.get("image_id"))
        where = f"annotation id {aid}"
        if img is None:
            problems.append(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        where += f" (image {img['id']} {img.get('file_name')!r}, {img.get('width')}x" \
                 f"{img.get('height')})"
        if ann.get("category_id") not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not one of "
                            f"the file's categories {sorted(categories)}")
        box = ann.get("bbox")
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            problems.append(f"{where}: bbox {box!r} is not [x, y, width, height]")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            problems.append(f"{where}: bbox {box} has width or height <= 0 (x2 <= x1 or "
                            "y2 <= y1)")
        elif "width" in img and "height" in img and (
                x < -tolerance or y < -tolerance or x + w > img["width"] + tolerance
                or y + h > img["height"] + tolerance):
            problems.append(f"{where}: bbox {box} (x2={x + w:g}, y2={y + h:g}) lies outside "
                            "the image")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{ann_file}: {len(problems)} bad annotation(s); fix or remove them:\n  "
                         + "\n  ".join(problems[:5]) + more)


class CocoDetection(Dataset):
    r"""A COCO-format detection data set: images in ``img_dir``, annotations in ``ann_file``.

    Item ``i`` is ``(image, target)``: the image as a :class:`torchvision.tv_tensors.Image`
    ``[3, H, W]`` float in ``[0, 1]``; the target a dict with ``boxes``
    (:class:`~torchvision.tv_tensors.BoundingBoxes`, XYXY, ``[N, 4]``; ``[0, 4]`` for an image
    without objects), ``labels`` (int64 category ids, torchvision's convention), ``image_id``
    (int) and, with ``with_masks``, ``masks`` (:class:`~torchvision.tv_tensors.Mask`
    ``[N, H, W]`` uint8, decoded from polygons or RLE). ``transforms(image, target)`` from
    ``torchvision.transforms.v2`` moves the boxes and masks with the image.

    The annotation file is checked when the data set is built: an annotation whose box has
    ``width <= 0`` or ``height <= 0``, lies outside its image (by more than ``tolerance``
    pixels; boxes within the tolerance are clipped), or whose ``category_id`` is not among the
    file's categories raises a ``ValueError`` naming the annotation id, its image and the file.
    Crowd annotations (``iscrowd=1``) are left out of the targets (COCO evaluation reads them
    from the file as regions to ignore).

    An image that cannot be read (missing, not an image, size other than the file says) is
    skipped with a warning and recorded in :attr:`skipped` as ``(file, reason)``: with
    ``check_images`` (default) when the data set is built (the image headers are read), else
    when the item is loaded, which then returns :obj:`None` (:func:`collate` drops it; with
    ``DataLoader`` worker processes such a late skip is recorded in the worker's copy of the
    data set, so only its warning reaches the main process).

    Args:
        img_dir (str or Path): folder that the images' ``file_name`` entries are relative to.
        ann_file (str or Path): COCO json file.
        transforms (callable, optional): ``transforms(image, target) -> (image, target)``,
            e.g. :func:`detection_transforms`.
        with_masks (bool): add instance masks to the targets. (default: :obj:`False`)
        check_images (bool): read every image header now. (default: :obj:`True`)
        tolerance (float): pixels a box may extend past the image. (default: :obj:`1.0`)

    Attributes:
        coco (pycocotools.coco.COCO): the annotations (for :func:`evaluate_coco`).
        ids (list of int): image ids of the items, in order.
        classes (dict): category id -> name.
        num_classes (int): largest category id + 1, the detectors' ``num_classes``.
        skipped (list of (str, str)): unreadable images and why.
    """

    def __init__(self, img_dir: str | Path, ann_file: str | Path, *,
                 transforms: Callable | None = None, with_masks: bool = False,
                 check_images: bool = True, tolerance: float = 1.0):
        self.img_dir, self.ann_file = Path(img_dir), Path(ann_file)
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.img_dir}")
        self.coco = load_coco(self.ann_file)
        _check_annotations(self.coco, self.ann_file, tolerance)
        self.transforms, self.with_masks = transforms, with_masks
        self.classes = {c["id"]: c.get("name", str(c["id"]))
                        for c in self.coco.dataset["categories"]}
        self.skipped: list[tuple[str, str]] = []
        self.ids = sorted(self.coco.imgs)
        if check_images:
            readable = []
            for i in self.ids:  # a loop, not a comprehension: the warnings' stacklevel
                if self._header_ok(self.coco.imgs[i]):
                    readable.append(i)
            self.ids = readable

    def _skip(self, file_name: str, reason: str) -> None:
        self.skipped.append((file_name, reason))
        # stacklevel 4: the user's line (via __init__ -> _header_ok or __getitem__ -> load_image)
        warnings.warn(f"skipping image {self.img_dir / file_name}: {reason}", stacklevel=4)

    def _header_ok(self, info: dict) -> bool:
        path = self.img_dir / info["file_name"]
        try:
            with Image.open(path) as img:
                size = img.size
        except FileNotFoundError:
            self._skip(info["file_name"], "file not found")
            return False
        except (OSError, ValueError, SyntaxError) as e:
            self._skip(info["file_name"], f"cannot read it ({e})")
            return False
        if size != (info["width"], info["height"]):
            self._skip(info["file_name"], f"it is {size[0]}x{size[1]}, the annotation file "
                                          f"says {info['width']}x{info['height']}")
            return False
        return True

    @property
    def num_classes(self) -> int:
        """The detectors' ``num_classes`` for this data set: the largest category id + 1
        (torchvision's convention: labels are category ids, 0 is the background).
        """
        return max(self.classes, default=0) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> tv_tensors.Image | None:
        """The image as ``[3, H, W]`` float in ``[0, 1]``, or :obj:`None` (recorded in
        :attr:`skipped`) when it cannot be decoded.
        """
        info = self.coco.imgs[image_id]
        try:
            with Image.open(self.img_dir / info["file_name"]) as img:
                img = img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as e:
            self._skip(info["file_name"], f"cannot decode it ({e})")
            return None
        x = v2.functional.pil_to_tensor(img)  # (3, H, W) uint8
        return tv_tensors.Image(x.float().div_(255))

    def load_target(self, image_id: int) -> dict:
        """The target of one image (see the class description), before transforms."""
        info = self.coco.imgs[image_id]
        H, W = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x1, y1, x2, y2)
        boxes[:, 0::2].clamp_(0, W)
        boxes[:, 1::2].clamp_(0, H)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(H, W)),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
        }
        if self.with_masks:
            masks = [torch.from_numpy(self.coco.annToMask(a)) for a in anns]
            target["masks"] = tv_tensors.Mask(
                torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.uint8))
        return target

    def __getitem__(self, index: int) -> tuple[Tensor, dict] | None:
        image_id = self.ids[index]
        image = self.load_image(image_id)
        if image is None:
            return None
        target = self.load_target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {len(self.classes)} categories, "
                f"img_dir={str(self.img_dir)!r}, ann_file={str(self.ann_file)!r})")


def detection_transforms(train: bool, *, hflip: float = 0.5,
                         extra: Sequence[Callable] = ()) -> v2.Compose:
    """The ``torchvision.transforms.v2`` pipeline of ``(image, target)`` pairs.

    ``ToImage`` and ``ToDtype(float32, scale=True)`` (PIL or uint8 inputs become ``[0, 1]``
    floats; masks stay uint8), then for training a ``RandomHorizontalFlip(hflip)`` (boxes and
    masks follow), any ``extra`` v2 transforms, and ``SanitizeBoundingBoxes`` (drops boxes
    smaller than a pixel with their labels and masks). Resizing and normalisation are left to
    the detector (``min_size``/``max_size``, ``image_mean``/``image_std``), which returns
    its detections in the coordinates of the images it was given, so evaluation needs no
    mapping back.
    """
    steps: list[Callable] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if train and hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps += list(extra)
    steps.append(v2.SanitizeBoundingBoxes())
    return v2.Compose(steps)


def collate(batch: Sequence[tuple[Tensor, dict] | None]) -> tuple[list[Tensor], list[dict]]:
    """``[(image, target), ...]`` -> ``([images], [targets])``, as torchvision's detectors
    take them (images of different sizes stay separate); unreadable items (:obj:`None`) are
    dropped.
    """
    items = [b for b in batch if b is not None]
    return [img for img, _ in items], [t for _, t in items]
