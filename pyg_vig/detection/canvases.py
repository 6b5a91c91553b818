"""A small COCO-format detection data set drawn from the embedded Fashion-MNIST subset.

Demo and tests then run on real pixels offline, through the same :class:`CocoDetection` code
path as user data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pyg_vig.datasets import FASHION_MNIST_CLASSES, embedded_path

__all__ = ["make_canvases", "CANVAS_CATEGORIES"]

# COCO categories: Fashion-MNIST class c has category id c + 1 (0 stays free for the background).
CANVAS_CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "fashion"}
                     for i, name in enumerate(FASHION_MNIST_CLASSES)]
_SPLITS = {"train": ("train", 0), "val": ("test", 1)}  # canvas split -> (subset split, stream)


def _place(rng: np.random.Generator, size: tuple[int, int], side: int,
           taken: list[tuple[int, int, int, int]], gap: int, tries: int = 30):
    """Top-left corner for a ``side``-pixel item that overlaps no box in ``taken``, or None."""
    H, W = size
    for _ in range(tries):
        x, y = int(rng.integers(0, W - side + 1)), int(rng.integers(0, H - side + 1))
        if all(x + side + gap <= x0 or x0 + w + gap <= x or y + side + gap <= y0
               or y0 + h + gap <= y for x0, y0, w, h in taken):
            return x, y
    return None


def _canvas(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray,
            size: tuple[int, int], n_objects: tuple[int, int], item_size: tuple[int, int],
            threshold: int):
    """One canvas (H, W, 3) uint8 and its objects as (category id, full-size mask)."""
    H, W = size
    base = rng.integers(0, 64, size=3)
    noise = rng.normal(0.0, 6.0, size=(H, W, 1))
    canvas = np.clip(base + noise, 0, 255)  # (H, W, 3) float: dark background with grain
    objects, taken = [], []
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        idx = int(rng.integers(len(items)))
        side = int(rng.integers(item_size[0], item_size[1] + 1))
        pos = _place(rng, size, side, taken, gap=2)
        color = rng.integers(140, 256, size=3)
        if pos is None:  # the canvas is full
            continue
        item = np.asarray(Image.fromarray(items[idx]).resize((side, side), Image.BILINEAR))
        mask = item > threshold  # (side, side) bool: the item's own pixels
        if not mask.any():
            continue
        x, y = pos
        shade = 0.35 + 0.65 * item[..., None] / 255.0  # keep the item's texture
        region = canvas[y:y + side, x:x + side]
        region[mask] = (color * shade)[mask]
        full = np.zeros((H, W), dtype=np.uint8)
        full[y:y + side, x:x + side] = mask
        taken.append((x, y, side, side))
        objects.append((int(labels[idx]) + 1, full))
    return np.round(canvas).astype(np.uint8), objects


def _annotation(ann_id: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rows, cols = np.nonzero(mask)
    x0, x1, y0, y1 = int(cols.min()), int(cols.max()), int(rows.min()), int(rows.max())
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"id": ann_id, "image_id": image_id, "category_id": category,
            "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],  # pixel edges: tight around the mask
            "area": int(mask.sum()), "iscrowd": 0,
            "segmentation": {"size": [int(s) for s in rle["size"]],
                             "counts": rle["counts"].decode("ascii")}}


def make_canvases(root: str | Path, *, n_train: int = 256, n_val: int = 64,
                  canvas_size: int | Sequence[int] = 128, seed: int = 0,
                  objects_per_image: tuple[int, int] = (1, 4),
                  item_size: tuple[int, int] = (24, 56), threshold: int = 32
                  ) -> dict[str, tuple[Path, Path]]:
    r"""Write a deterministic COCO-format detection data set made of Fashion-MNIST items.

    Each canvas is a dark, grainy background with ``objects_per_image`` items pasted at random
    positions (never overlapping) and random sizes (``item_size`` pixels square), each tinted a
    random colour. An item's instance mask is its pixels above ``threshold`` (of 255); its box
    is the mask's tight extent (COCO ``[x, y, width, height]`` in pixel edges) and its category
    id is the Fashion-MNIST class + 1 (1 ``"T-shirt/top"`` ... 10 ``"Ankle boot"``; train
    detectors with ``num_classes=11``). Masks are stored as COCO RLE. Training canvases take
    their items from the subset's ``train`` split, validation canvases from its ``test`` split.

    Files: ``root/train/000000.png, ...``, ``root/val/...``, ``root/instances_train.json``,
    ``root/instances_val.json``. The same arguments give byte-identical json (and images).

    .. code-block:: python

        paths = make_canvases("canvases", n_train=64, n_val=16)
        train = CocoDetection(*paths["train"], with_masks=True)

    Args:
        root (str or Path): output folder (created).
        n_train (int): training canvases. (default: :obj:`256`)
        n_val (int): validation canvases. (default: :obj:`64`)
        canvas_size (int or (int, int)): ``(H, W)`` of every canvas. (default: :obj:`128`)
        seed (int): random seed. (default: :obj:`0`)
        objects_per_image ((int, int)): least and most items per canvas. (default: ``(1, 4)``)
        item_size ((int, int)): smallest and largest item side in pixels. (default: ``(24, 56)``)
        threshold (int): mask threshold on the item's 0-255 pixels. (default: :obj:`32`)

    Returns:
        dict: ``{"train": (image folder, json file), "val": (image folder, json file)}``.
    """
    H, W = (canvas_size, canvas_size) if isinstance(canvas_size, int) else map(int, canvas_size)
    lo, hi = objects_per_image
    if not 0 <= lo <= hi:
        raise ValueError(f"objects_per_image must be (least, most) with 0 <= least <= most, "
                         f"got {objects_per_image}")
    if not 1 <= item_size[0] <= item_size[1] <= min(H, W):
        raise ValueError(f"item_size {item_size} must be increasing and fit a {H}x{W} canvas")
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    root = Path(root)
    out = {}
    with np.load(embedded_path()) as data:
        subset = {s: (data[f"{s}_images"], data[f"{s}_labels"]) for s in ("train", "test")}
    for split, count in (("train", n_train), ("val", n_val)):
        source, stream = _SPLITS[split]
        items, labels = subset[source]
        rng = np.random.default_rng([seed, stream])  # each split its own stream
        img_dir = root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            pixels, objects = _canvas(rng, items, labels, (H, W), (lo, hi), item_size,
                                      threshold)
            name = f"{i:06d}.png"
            Image.fromarray(pixels).save(img_dir / name)
            images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
            for category, mask in objects:
                annotations.append(_annotation(len(annotations) + 1, i + 1, category, mask))
        ann_file = root / f"instances_{split}.json"
        ann_file.write_text(json.dumps({
            "info": {"description": f"pyg_vig Fashion-MNIST canvases ({split}, seed {seed})"},
            "images": images, "annotations": annotations, "categories": CANVAS_CATEGORIES,
        }))
        out[split] = (img_dir, ann_file)
    return out
