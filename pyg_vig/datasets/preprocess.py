"""Evaluation preprocessing from a model's ``pretrained_cfg`` (no torchvision needed).

The official evaluation (timm 0.3.2 ``transforms_imagenet_eval``, used by the official
``train.py``) resizes the shorter image side to ``floor(size / crop_pct)`` with PIL (bicubic for
ViG), takes the centre ``size x size`` crop and normalises with the configuration's mean and std.
:func:`create_transform` does exactly that, so ``pyg-vig predict`` and ``pyg-vig eval`` and user
code share one function:

.. code-block:: python

    from PIL import Image
    import pyg_vig
    from pyg_vig.datasets import create_transform

    model = pyg_vig.create_model("pvig_s", pretrained=True).eval()
    transform = create_transform(model.pretrained_cfg)   # 248 px short side, centre 224 crop
    x = transform(Image.open("cat.jpg")).unsqueeze(0)    # (1, 3, 224, 224), normalised
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "ImageTransform",
    "class_names",
    "collate_skip_unreadable",
    "create_transform",
    "imagenet_class_names",
    "imagenet_synsets",
    "resize_center_crop",
    "resolve_data_config",
    "scan_image_folder",
]

# the file suffixes scanned in image folders (folder.py re-exports them)
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def resize_center_crop(img: Image.Image, size: int | tuple[int, int], crop_pct: float = 1.0,
                       interpolation: str = "bicubic") -> Image.Image:
    """Resize keeping the aspect ratio, then cut the centre ``size`` crop.

    For a square ``size`` the shorter side becomes ``floor(size / crop_pct)`` and the longer
    one keeps the ratio (torchvision's ``Resize(int)`` rule, as timm's evaluation transform);
    for ``(h, w)`` the image is scaled to just cover ``(h / crop_pct, w / crop_pct)``.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
    W, H = img.size
    if h == w:
        short = int(math.floor(h / crop_pct))
        if W <= H:
            new_w, new_h = short, int(short * H / W)
        else:
            new_w, new_h = int(short * W / H), short
    else:
        scale = max(h / crop_pct / H, w / crop_pct / W)
        new_w, new_h = max(w, round(W * scale)), max(h, round(H * scale))
    if (new_w, new_h) != (W, H):
        img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    top, left = int(round((new_h - h) / 2.0)), int(round((new_w - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def _open(path: str | Path, mode: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


class ImageTransform:
    """Image file or PIL image → normalised float tensor ``(C, size, size)``.

    Args:
        input_size (tuple): ``(C, H, W)``; ``C`` 1 reads grayscale, 3 RGB.
        crop_pct (float): centre-crop fraction (default: :obj:`1.0`: no border cut).
        interpolation (str): PIL resampling: ``bicubic``, ``bilinear``, ... (default: bicubic).
        mean, std (sequence of float): per-channel normalisation of ``[0, 1]`` pixels.
    """

    def __init__(self, input_size: Sequence[int], crop_pct: float = 1.0,
                 interpolation: str = "bicubic", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)):
        c, h, w = (int(v) for v in input_size)
        if c not in (1, 3):
            raise ValueError(f"images have 1 or 3 channels, got input_size {tuple(input_size)}")
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values, got {tuple(mean)} / {tuple(std)}")
        self.input_size = (c, h, w)
        self.crop_pct, self.interpolation = float(crop_pct), interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        resize_center_crop(Image.new("L", (1, 1)), (h, w), self.crop_pct, interpolation)  # check

    def crop(self, img: Image.Image | str | Path) -> Image.Image:
        """The resized, centre-cropped PIL image (before normalisation)."""
        mode = "L" if self.input_size[0] == 1 else "RGB"
        img = _open(img, mode) if isinstance(img, (str, Path)) else img.convert(mode)
        return resize_center_crop(img, self.input_size[1:], self.crop_pct, self.interpolation)

    def to_tensor(self, img: Image.Image) -> Tensor:
        """PIL image → ``(C, H, W)`` float tensor in ``[0, 1]`` (no resizing)."""
        arr = np.asarray(img, dtype=np.uint8)
        x = torch.from_numpy(arr.copy())
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # (H, W[, C]) -> (C, H, W)
        return x.float().div_(255)

    def __call__(self, img: Image.Image | str | Path) -> Tensor:
        return (self.to_tensor(self.crop(img)) - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"ImageTransform(input_size={self.input_size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.interpolation!r}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()})")


def resolve_data_config(source: Any = None, pretrained_cfg: dict | None = None,
                        model: Any = None) -> dict:
    """``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std`` of a model (its
    ``pretrained_cfg``), of a configuration dict, or of a :class:`~pyg_vig.train.TrainConfig`
    (a trained run: its image size and data statistics, no border cut).

    timm's call ``resolve_data_config(args, model=model)`` (or ``pretrained_cfg=``) works too:
    the model (or configuration) gives the values and the entries of the ``args`` dict that
    are set override them.
    """
    base = model if model is not None else pretrained_cfg
    if base is None:
        if source is None:
            raise TypeError("resolve_data_config needs a model, a pretrained_cfg dict or a "
                            "TrainConfig")
        return _resolve_data_config(source)
    cfg = _resolve_data_config(base)
    if isinstance(source, dict):  # timm's ``args``: settings given explicitly win
        cfg.update({k: v for k, v in source.items() if k in cfg and v is not None})
    return cfg


def _resolve_data_config(source: Any) -> dict:
    if hasattr(source, "image_size") and hasattr(source, "in_chans") and hasattr(source, "mean"):
        c, s = int(source.in_chans), int(source.image_size)  # a TrainConfig
        crop_pct, interpolation = 1.0, "bilinear"
        if getattr(source, "pretrained", False):  # fine-tuned: the weights' evaluation crop
            from pyg_vig.models._registry import get_pretrained_cfg

            pcfg = get_pretrained_cfg(source.model)
            crop_pct, interpolation = float(pcfg["crop_pct"]), str(pcfg["interpolation"])
        return dict(input_size=(c, s, s), crop_pct=crop_pct, interpolation=interpolation,
                    mean=tuple(source.mean), std=tuple(source.std))
    cfg = getattr(source, "pretrained_cfg", source)
    if not isinstance(cfg, dict):
        raise TypeError(f"cannot read a data configuration from {type(source).__name__}")
    c = int(getattr(source, "in_chans", cfg.get("input_size", (3,))[0]))
    _, h, w = cfg.get("input_size", (c, 224, 224))
    mean = tuple(cfg.get("mean", (0.5,) * c))
    std = tuple(cfg.get("std", (0.5,) * c))
    if len(mean) != c:  # e.g. RGB statistics for a model built with in_chans=1
        mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    return dict(input_size=(c, int(h), int(w)), crop_pct=float(cfg.get("crop_pct", 1.0)),
                interpolation=str(cfg.get("interpolation", "bicubic")), mean=mean, std=std)


# timm.data's defaults (DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN/STD), for a call without a model
_TIMM_DEFAULTS = dict(crop_pct=0.875, interpolation="bilinear", mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225))


def create_transform(source: Any = None, *, is_training: bool = False,
                     crop_mode: str | None = None, **overrides) -> ImageTransform:
    """The evaluation transform of a model / ``pretrained_cfg`` / ``TrainConfig`` (see
    :func:`resolve_data_config`); keyword arguments override single fields.

    The keywords of ``timm.data.create_transform`` for evaluation work as there, so
    ``create_transform(**timm.data.resolve_model_data_config(model))`` gives timm's transform:
    ``input_size`` may be an int (a square image, 3 channels unless ``mean`` has one) or
    ``(C, H, W)`` (also as ``source``), ``crop_mode`` must be ``"center"`` and ``is_training``
    :obj:`False` (training augmentation is ``timm.data.create_transform(is_training=True)``);
    without a model the fields left out take timm's defaults (crop 0.875, bilinear, ImageNet
    mean and std).
    """
    if is_training:
        raise ValueError("pyg_vig.datasets.create_transform is the evaluation transform; for "
                         "training augmentation use timm.data.create_transform(..., "
                         "is_training=True)")
    if crop_mode not in (None, "center"):
        raise ValueError(f"crop_mode={crop_mode!r} is not supported: this evaluation transform "
                         "resizes and takes the centre crop (crop_mode='center')")
    if isinstance(source, (int, tuple, list)):  # timm's first argument: input_size
        source, overrides = None, {"input_size": source, **overrides}
    cfg = resolve_data_config(source) if source is not None else dict(_TIMM_DEFAULTS)
    cfg.update(overrides)
    size = cfg.get("input_size")
    if isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 2):
        c = len(cfg.get("mean", (0.5,) * 3))
        cfg["input_size"] = (c, size, size) if isinstance(size, int) else (c, *size)
    return ImageTransform(**cfg)


# ------------------------------------------------------------------------------ class names
@cache
def _imagenet_table() -> tuple[tuple[str, str], ...]:
    path = resources.files("pyg_vig.datasets") / "assets" / "imagenet_classes.tsv"
    rows = [line.split("\t", 1) for line in path.read_text().splitlines() if line.strip()]
    return tuple((wnid, lemmas) for wnid, lemmas in rows)


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in label order (``n01440764`` = 0, tench)."""
    return [wnid for wnid, _ in _imagenet_table()]


def imagenet_class_names(full: bool = False) -> list[str]:
    """ImageNet-1k class names in label order: the first WordNet lemma (``'tench'``), or all
    lemmas with ``full=True`` (``'tench, Tinca tinca'``).
    """
    return [lemmas if full else lemmas.split(",")[0] for _, lemmas in _imagenet_table()]


def class_names(model: Any) -> list[str]:
    """Label names for ``model``'s outputs: the ImageNet-1k names for 1000-class ImageNet
    weights, ``pretrained_cfg['label_names']`` when given, else ``'class <i>'``.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    n = int(getattr(model, "num_classes", cfg.get("num_classes", 0)))
    names = cfg.get("label_names")
    if names is not None and len(names) == n:
        return list(names)
    if n == 1000 and cfg.get("num_classes") == 1000 and cfg.get("url"):
        return imagenet_class_names()
    return [f"class {i}" for i in range(n)]


# ------------------------------------------------------------------------------ lazy folders
def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None,
                      extensions: Sequence[str] | None = None) -> tuple[list[tuple[Path, int]],
                                                                         list[str]]:
    """``(file, label)`` pairs of ``root/<class>/**/<image>`` without decoding anything.

    ``classes`` gives the label order (e.g. the 1000 ImageNet WordNet ids): sub-folders are
    labelled by their position in it and must all appear in it. Without ``classes`` labels
    follow the sorted sub-folder names.
    """
    exts = tuple(e.lower() for e in (extensions or IMAGE_EXTENSIONS))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise FileNotFoundError(f"no class sub-folders in image folder {root} "
                                "(expected root/<class>/<image files>)")
    order = list(classes) if classes is not None else found
    index = {name: i for i, name in enumerate(order)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise ValueError(f"class folder(s) {unknown[:5]} of {root} are not among the model's "
                         f"{len(order)} classes (first: {order[:3]})")
    files = [(p, index[name]) for name in found for p in sorted((root / name).rglob("*"))
             if p.is_file() and p.suffix.lower() in exts]
    if not files:
        raise ValueError(f"no image files in {root}")
    return files, order


class ImageFileDataset(Dataset):
    """Images decoded on access (large folders such as the ImageNet validation set).

    An unreadable file yields ``(None, label, path)`` instead of raising, so that
    :func:`collate_skip_unreadable` can drop it and the run goes on.
    """

    def __init__(self, files: Sequence[tuple[Path, int]],
                 transform: Callable[[Image.Image | Path], Tensor]):
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        try:
            return self.transform(path), label, str(path)
        except (ValueError, OSError) as e:
            return None, label, f"{path}: {e}"


def collate_skip_unreadable(batch: list) -> tuple[Tensor, Tensor, list[str]]:
    """Stack the readable images of a batch; returns ``(x, y, problems)``."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [msg for x, _, msg in batch if x is None]
    if not good:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), bad
    return (torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad)
