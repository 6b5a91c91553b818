"""A folder of user images, one sub-folder per class (the ``ImageFolder`` layout)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from pyg_vig.datasets.preprocess import IMAGE_EXTENSIONS, resize_center_crop

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "load_image"]



def load_image(
    path: str | Path,
    in_chans: int = 3,
    size: int | tuple[int, int] | None = None,
    crop_pct: float | None = 1.0,
    interpolation: str = "bilinear",
) -> Tensor:
    """Decode an image file into a float tensor ``[in_chans, H, W]`` in ``[0, 1]``.

    Args:
        path (str or Path): image file.
        in_chans (int): 1 for grayscale, 3 for RGB (default: :obj:`3`).
        size (int or (int, int), optional): output ``(H, W)``. The aspect ratio is kept: the
            image is scaled to cover ``size / crop_pct`` and centre-cropped
            (:func:`~pyg_vig.datasets.preprocess.resize_center_crop`).
        crop_pct (float, optional): centre-crop fraction (default: :obj:`1.0`); :obj:`None`
            stretches the image to ``size`` instead.
        interpolation (str): PIL resampling filter (default: :obj:`"bilinear"`).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when PIL cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and crop_pct is None:
                h, w = (size, size) if isinstance(size, int) else size
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            elif size is not None:
                img = resize_center_crop(img, size, crop_pct, interpolation)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    tensor = torch.from_numpy(arr.copy())
    if tensor.ndim == 2:  # (H, W) -> (1, H, W)
        tensor = tensor.unsqueeze(0)
    else:  # (H, W, C) -> (C, H, W)
        tensor = tensor.permute(2, 0, 1)
    return tensor.float().div_(255)


class ImageFolder(Dataset):
    """Images under ``root/<class name>/*.png|jpg|...``; class indices follow sorted folder names.

    Every image is decoded once when the dataset is built, so a corrupt or unreadable file is found
    up front: it is skipped with a warning naming the file, and counted in :attr:`skipped`
    (:attr:`skipped_files` lists them). Images are resized to ``image_size``, keeping their aspect
    ratio (centre crop of ``crop_pct``), and kept in memory as ``uint8``.

    Args:
        root (str or Path): the folder.
        image_size (int or (int, int)): ``(H, W)`` every image is resized to.
        in_chans (int): 1 (grayscale) or 3 (RGB) (default: :obj:`3`).
        transform (callable, optional): applied to each ``[C, H, W]`` float image.
        classes (list of str, optional): expected class names in label order; a folder
            missing from ``root`` is an error (used to match a test set to its training set).
        crop_pct (float): centre-crop fraction after the aspect-preserving resize
            (default: :obj:`1.0`).
        interpolation (str): PIL resampling filter (default: :obj:`"bilinear"`).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | tuple[int, int],
        in_chans: int = 3,
        transform: Callable[[Tensor], Tensor] | None = None,
        classes: list[str] | None = None,
        crop_pct: float = 1.0,
        interpolation: str = "bilinear",
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = found
        missing = [c for c in classes if c not in found]
        if missing:
            raise FileNotFoundError(f"class folder(s) {missing} missing in {root}")
        if not classes:
            raise FileNotFoundError(f"no class sub-folders in image folder {root}")
        self.root, self.classes, self.in_chans = root, list(classes), in_chans
        self.transform = transform
        images, labels, self.skipped_files = [], [], []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                try:
                    img = load_image(path, in_chans, image_size, crop_pct, interpolation)
                except ValueError as e:
                    warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                    self.skipped_files.append(path)
                    continue
                images.append(img.mul(255).round_().to(torch.uint8))
                labels.append(label)
        if not images:
            raise ValueError(f"no readable images in {root} ({len(self.skipped_files)} skipped)")
        if self.skipped_files:
            warnings.warn(
                f"{len(self.skipped_files)} unreadable image(s) skipped in {root}", stacklevel=2
            )
        self.images = torch.stack(images)  # (N, C, H, W) uint8
        self.labels = torch.tensor(labels, dtype=torch.long)

    @property
    def skipped(self) -> int:
        """Number of files that could not be decoded."""
        return len(self.skipped_files)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index].float().div_(255)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
