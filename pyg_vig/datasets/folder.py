"""Decoding one image file into the float tensor our models take (no torchvision needed).

:class:`~pyg_vig.datasets.ImageFolder` (torchvision's, decoded once into memory) is in
``image_folder.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from pyg_vig.datasets.preprocess import IMAGE_EXTENSIONS, resize_center_crop

__all__ = ["IMAGE_EXTENSIONS", "load_image"]



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
