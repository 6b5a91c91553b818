"""Reader (and writer) for the IDX format of MNIST, Fashion-MNIST and friends.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian ``int32`` per dimension, then the data in C order. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "IDXDataset",
    "TensorImageDataset",
    "find_idx_files",
    "read_idx",
    "read_idx_split",
    "write_idx",
]

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PREFIX = {"train": "train", "test": "t10k"}


def _open(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array in native byte order.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a valid IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"not an IDX file (bad magic number): {path}")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"IDX file {path} is truncated or corrupt: {len(data)} bytes, expected {expected} "
            f"for shape {shape}"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip it when ``compress`` (default: name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    payload = header + np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(payload)
    return path


def find_idx_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """Locate the image and label files of ``split`` (``'train'``/``'test'``) in an MNIST folder.

    Accepts the usual spellings: ``train-images-idx3-ubyte``, ``train-images.idx3-ubyte``, each
    optionally ``.gz``; ``t10k-*`` or ``test-*`` for the test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        names = [
            f"{prefix}-{kind}{sep}idx{ndim}-ubyte{gz}"
            for prefix in dict.fromkeys((_PREFIX[split], split))
            for sep in ("-", ".")
            for gz in ("", ".gz")
        ]
        hits = [root / n for n in names if (root / n).is_file()]
        if not hits:
            raise FileNotFoundError(
                f"no {split} {kind} IDX file in {root} (looked for {names[0]} or {names[1]})"
            )
        found.append(hits[0])
    return found[0], found[1]


def read_idx_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the images ``[N, H, W]`` and labels ``[N]`` of one split of an MNIST-format folder."""
    image_file, label_file = find_idx_files(root, split)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"IDX files in {root} do not match: images {images.shape} vs labels {labels.shape}"
        )
    return images, labels.astype(np.int64)


class TensorImageDataset(Dataset):
    """Grayscale images held in memory as a ``uint8`` tensor ``[N, H, W]`` with labels ``[N]``.

    ``__getitem__`` returns ``(image, label)`` with ``image`` a float tensor ``[1, H, W]`` in
    ``[0, 1]`` passed through ``transform``.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        classes: list[str] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        self.images = torch.as_tensor(np.asarray(images, dtype=np.uint8))
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = (
            list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        )
        self.transform = transform
        self.skipped = 0

    @property
    def in_chans(self) -> int:
        """Number of image channels (always 1)."""
        return 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index].unsqueeze(0).float().div_(255)  # (H, W) -> (1, H, W)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class IDXDataset(TensorImageDataset):
    """One split of an MNIST-format folder of IDX files, e.g. ``/usr/share/datasets/fashion-mnist``.

    Args:
        root (str or Path): folder holding ``train-images-idx3-ubyte[.gz]`` and friends.
        split (str): ``'train'`` or ``'test'``.
        classes (list of str, optional): class names (default: :obj:`"0"`, :obj:`"1"`, ...).
        transform (callable, optional): applied to each ``[1, H, W]`` float image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        classes: list[str] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        images, labels = read_idx_split(root, split)
        super().__init__(images, labels, classes, transform)
        self.root = Path(root)
        self.split = split
