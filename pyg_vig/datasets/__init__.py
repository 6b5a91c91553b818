"""Datasets: the embedded Fashion-MNIST subset, MNIST-format IDX folders and image folders.

:func:`load_dataset` is the single entry point::

    from pyg_vig.datasets import load_dataset

    train = load_dataset("fashion_mnist_subset", "train")       # shipped with the package
    test = load_dataset("/usr/share/datasets/fashion-mnist", "test")  # any IDX folder
    pets = load_dataset("~/pets", "train", image_size=64)       # ~/pets/train/<class>/*.jpg

Each dataset yields ``(image [C, H, W] float in [0, 1], label)`` and has ``classes`` and
``in_chans`` attributes.

Kept here because no library does it: the embedded subset ships inside the package so the demo
needs no download (torchvision's ``FashionMNIST`` downloads), and IDX folders are read in any
file spelling Debian and mirrors use. Per-image transforms are torchvision's and timm's
(:func:`build_transform`, imported when called).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from pyg_vig.datasets.folder import IMAGE_EXTENSIONS, load_image
from pyg_vig.datasets.idx import (
    IDXDataset,
    TensorImageDataset,
    find_idx_files,
    read_idx,
    read_idx_split,
    write_idx,
)
from pyg_vig.datasets.preprocess import (
    ImageFileDataset,
    ImageTransform,
    class_names,
    collate_skip_unreadable,
    create_transform,
    imagenet_class_names,
    imagenet_synsets,
    resize_center_crop,
    resolve_data_config,
    scan_image_folder,
)

__all__ = [
    "EMBEDDED",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_PATH",
    "IDXDataset",
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "ImageFolder",
    "ImageTransform",
    "TensorImageDataset",
    "build_transform",
    "class_names",
    "collate_skip_unreadable",
    "create_transform",
    "embedded_path",
    "find_idx_files",
    "imagenet_class_names",
    "imagenet_synsets",
    "load_dataset",
    "load_image",
    "read_idx",
    "read_idx_split",
    "resize_center_crop",
    "resolve_data_config",
    "scan_image_folder",
    "write_idx",
]

EMBEDDED = "fashion_mnist_subset"
FASHION_MNIST_SYSTEM_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# names that mean "the full Fashion-MNIST as installed by apt-get install dataset-fashion-mnist"
_SYSTEM_NAMES = ("fashion_mnist", "fashion-mnist")


def embedded_path() -> Path:
    """Path of the shipped ``fashion_mnist_subset.npz`` (20k train / 5k test, class-balanced)."""
    return Path(str(resources.files("pyg_vig.datasets") / "assets" / "fashion_mnist_subset.npz"))


def _load_npz(path: Path, split: str, classes: list[str] | None, transform) -> TensorImageDataset:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with np.load(path) as data:
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    except KeyError:
        raise ValueError(f"{path} has no '{split}_images'/'{split}_labels' arrays") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read dataset file {path}: {e}") from None
    return TensorImageDataset(images, labels, classes, transform)


def load_dataset(
    name_or_path: str | Path,
    split: str = "train",
    *,
    transform: Callable[[Tensor], Tensor] | None = None,
    image_size: int | tuple[int, int] | None = None,
    in_chans: int = 3,
    classes: list[str] | None = None,
    crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> Dataset:
    """Load one split of a dataset by name or path.

    ``name_or_path`` is one of

    * ``"fashion_mnist_subset"``: the subset shipped with the package (28x28 grayscale);
    * ``"fashion_mnist"``: the full set installed at ``/usr/share/datasets/fashion-mnist``;
    * a folder of MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``, ...);
    * a ``.npz`` file with ``<split>_images`` (``[N, H, W]`` uint8) and ``<split>_labels``;
    * an image folder: ``root/<split>/<class>/*.jpg`` (or ``root/<class>/*.jpg``, used for
      every split), read with :class:`ImageFolder` at ``image_size`` and ``in_chans``.

    Args:
        name_or_path (str or Path): see above.
        split (str): ``'train'`` or ``'test'`` (image folders also accept ``'val'``).
        transform (callable, optional): per-image transform of ``[C, H, W]`` floats.
        image_size (int or (int, int), optional): size for image folders (default: :obj:`32`).
        in_chans (int): channels for image folders, 1 or 3 (default: :obj:`3`).
        classes (list of str, optional): class names in label order; for image folders, the
            expected folders (pass the training set's ``classes`` when loading its test split).
        crop_pct (float): image folders: centre-crop fraction after the aspect-preserving
            resize to ``image_size`` (default: :obj:`1.0`).
        interpolation (str): image folders: PIL resampling filter (default: :obj:`"bilinear"`).

    Raises:
        FileNotFoundError: the path (or a needed file in it) does not exist.
        ValueError: the data cannot be read.
    """
    name = str(name_or_path)
    if name == EMBEDDED:
        return _load_npz(embedded_path(), split, classes or FASHION_MNIST_CLASSES, transform)
    if name in _SYSTEM_NAMES:
        root = Path(FASHION_MNIST_SYSTEM_PATH)
        if not root.is_dir():
            raise FileNotFoundError(
                f"full Fashion-MNIST not found at {root} "
                "(apt-get install dataset-fashion-mnist, or pass the IDX folder)"
            )
        return IDXDataset(root, split, classes or FASHION_MNIST_CLASSES, transform)
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"unsupported dataset file {path} (expected a folder or a .npz)")
        return _load_npz(path, split, classes, transform)
    try:
        find_idx_files(path, split)
        is_idx = True
    except FileNotFoundError:
        is_idx = False
    if is_idx:
        return IDXDataset(path, split, classes, transform)
    root = path / split if (path / split).is_dir() else path
    if split == "test" and not (path / "test").is_dir() and (path / "val").is_dir():
        root = path / "val"
    from pyg_vig.datasets.image_folder import ImageFolder

    return ImageFolder(
        root, image_size or 32, in_chans, transform, classes, crop_pct, interpolation
    )


def __getattr__(name: str):
    # ImageFolder is torchvision's: imported on first use, so that reading IDX / .npz data and
    # preparing images for a model keep working without torchvision
    if name == "ImageFolder":
        from pyg_vig.datasets.image_folder import ImageFolder

        return ImageFolder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_transform(
    train: bool,
    image_size: int | tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop_padding: int = 2,
    hflip: float = 0.5,
    reprob: float = 0.25,
    resize: bool = False,
    auto_augment: str | None = None,
) -> Callable[[Tensor], Tensor]:
    """The per-image pipeline of in-memory ``[C, H, W]`` float images, from torchvision's and
    timm's transforms: (resize,) (RandAugment,) (random crop, flip,) normalise, (random erasing).

    Evaluation uses the resize and normalisation only. ``resize`` adds an antialiased bilinear
    :class:`~torchvision.transforms.Resize` to ``image_size`` first (stored images of another
    size). ``auto_augment`` is a timm policy string such as ``'rand-m9-mstd0.5-inc1'`` (the
    official recipe's RandAugment), applied through PIL by
    :func:`timm.data.auto_augment.rand_augment_transform`; random erasing is timm's
    :class:`~timm.data.random_erasing.RandomErasing` in ``'pixel'`` mode.
    """
    from torchvision import transforms as T

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    steps: list[Callable] = [T.Resize(size, antialias=True)] if resize else []
    if train:
        if auto_augment:
            steps += _rand_augment(auto_augment, mean)
        if crop_padding > 0:
            steps.append(T.RandomCrop(size, padding=crop_padding))
        if hflip > 0:
            steps.append(T.RandomHorizontalFlip(hflip))
    steps.append(T.Normalize(mean, std))
    if train and reprob > 0:
        from timm.data.random_erasing import RandomErasing

        steps.append(RandomErasing(probability=reprob, mode="pixel", device="cpu"))
    return T.Compose(steps)


def _rand_augment(policy: str, mean: tuple[float, ...]) -> list[Callable]:
    """Timm's RandAugment on a float tensor: to PIL, augment, back to a float tensor."""
    from timm.data.auto_augment import auto_augment_transform, rand_augment_transform
    from torchvision import transforms as T

    fill = tuple(round(255 * m) for m in mean)
    hparams = {"translate_const": 10, "img_mean": fill[0] if len(fill) == 1 else fill}
    try:
        if policy.startswith("rand"):
            aug = rand_augment_transform(policy, hparams)
        else:
            aug = auto_augment_transform(policy, hparams)
    except (AssertionError, KeyError, ValueError) as e:
        raise ValueError(
            f"unknown auto-augment policy {policy!r} ({e}); use a timm policy string such as "
            "'rand-m9-mstd0.5-inc1' (RandAugment) or 'original' (AutoAugment)"
        ) from None
    return [T.ToPILImage(), aug, T.ToTensor()]
