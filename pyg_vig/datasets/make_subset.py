"""Regenerate the embedded Fashion-MNIST subset from a folder of IDX files.

The package ships ``assets/fashion_mnist_subset.npz``: a class-balanced, deterministic selection of
20,000 training and 5,000 test images from Fashion-MNIST (Zalando Research, MIT licence). To
rebuild it, fetch the IDX files (Debian: ``apt-get download dataset-fashion-mnist && dpkg -x
dataset-fashion-mnist_*.deb /tmp/fm``) and run::

    python -m pyg_vig.datasets.make_subset /tmp/fm/usr/share/datasets/fashion-mnist

The selection is a fixed-seed permutation of each class's indices, so the output is identical on
every machine for the same IDX files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pyg_vig.datasets.idx import read_idx_split

__all__ = ["balanced_indices", "make_subset"]

DEFAULT_OUT = Path(__file__).parent / "assets" / "fashion_mnist_subset.npz"


def balanced_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Pick ``per_class`` indices of every class with a fixed-seed permutation, sorted.

    Args:
        labels (np.ndarray): integer labels, shape ``[N]``.
        per_class (int): how many samples to keep per class.
        seed (int): seed of the permutation.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, {per_class} requested")
        keep.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(keep))


def make_subset(
    root: str | Path,
    out: str | Path = DEFAULT_OUT,
    train_per_class: int = 2000,
    test_per_class: int = 500,
    seed: int = 0,
) -> Path:
    """Write the class-balanced subset of the IDX dataset in ``root`` to ``out`` (``.npz``).

    Returns:
        Path: the written file.
    """
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = read_idx_split(root, split)
        keep = balanced_indices(labels, per_class, seed)
        arrays[f"{split}_images"] = images[keep]  # (n, 28, 28) uint8
        arrays[f"{split}_labels"] = labels[keep].astype(np.uint8)
        arrays[f"{split}_source_index"] = keep.astype(np.int32)  # index into the full split
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m pyg_vig.datasets.make_subset IDX_DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder with the (gzipped) Fashion-MNIST IDX files")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--train-per-class", type=int, default=2000)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_subset(args.root, args.out, args.train_per_class, args.test_per_class, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
