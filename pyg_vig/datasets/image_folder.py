"""``root/<class>/<image>`` folders for training: torchvision's ``ImageFolder``, decoded up front.

torchvision finds the classes and files (``find_classes``, ``make_dataset``; ``samples``,
``targets``, ``class_to_idx`` mean what they mean there). What it does not do, and this subclass
adds: every image is decoded once when the dataset is built, resized to the model's input and
kept in memory as ``uint8`` (small data sets train without re-decoding every epoch), a corrupt
file is skipped with a warning instead of failing mid-epoch, and ``classes=`` fixes the label
order so that a test folder is labelled like its training folder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import ImageFolder as _TorchvisionImageFolder

from pyg_vig.datasets.folder import IMAGE_EXTENSIONS, load_image

__all__ = ["ImageFolder"]


class ImageFolder(_TorchvisionImageFolder):
    """Images under ``root/<class name>/**/*.png|jpg|...``, decoded once and kept in memory.

    Labels follow the sorted class folder names, or the order of ``classes`` when given. A corrupt
    or unreadable file is skipped with a warning naming it and listed in :attr:`skipped_files`;
    :attr:`samples` / :attr:`targets` then hold the readable files only. Images are resized to
    ``image_size`` keeping their aspect ratio (centre crop of ``crop_pct``).

    Args:
        root (str or Path): the folder.
        image_size (int or (int, int)): ``(H, W)`` every image is resized to.
        in_chans (int): 1 (grayscale) or 3 (RGB) (default: :obj:`3`).
        transform (callable, optional): applied to each ``[C, H, W]`` float image in ``[0, 1]``.
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
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        self._given_classes = list(classes) if classes is not None else None

        def decode(path: str) -> Tensor:
            return load_image(path, in_chans, image_size, crop_pct, interpolation)

        super().__init__(
            str(root),
            loader=decode,
            is_valid_file=lambda p: Path(p).suffix.lower() in IMAGE_EXTENSIONS,
            allow_empty=True,
        )
        self.transform = transform  # applied by __getitem__ to the decoded float tensor
        self.in_chans = in_chans
        images, samples, self.skipped_files = [], [], []
        for path, label in self.samples:
            try:
                img = decode(path)
            except ValueError as e:
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                self.skipped_files.append(Path(path))
                continue
            images.append(img.mul(255).round_().to(torch.uint8))
            samples.append((path, label))
        if not images:
            raise ValueError(f"no readable images in {root} ({len(self.skipped_files)} skipped)")
        if self.skipped_files:
            warnings.warn(
                f"{len(self.skipped_files)} unreadable image(s) skipped in {root}", stacklevel=2
            )
        self.samples = self.imgs = samples
        self.targets = [label for _, label in samples]
        self.images = torch.stack(images)  # (N, C, H, W) uint8
        self.labels = torch.tensor(self.targets, dtype=torch.long)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        """The sorted class folders (as torchvision), or the ``classes`` given (all must exist)."""
        root = Path(directory)
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes = self._given_classes if self._given_classes is not None else found
        missing = [c for c in classes if c not in found]
        if missing:
            raise FileNotFoundError(f"class folder(s) {missing} missing in {root}")
        if not classes:
            raise FileNotFoundError(f"no class sub-folders in image folder {root}")
        return list(classes), {c: i for i, c in enumerate(classes)}

    @property
    def skipped(self) -> int:
        """Number of files that could not be decoded."""
        return len(self.skipped_files)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index].float().div_(255)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
