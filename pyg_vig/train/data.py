"""Data of a run: normalisation statistics of in-memory data sets.

The loaders themselves are built by :class:`~pyg_vig.train.Trainer` from
:func:`pyg_vig.datasets.load_dataset` and :func:`pyg_vig.datasets.build_transform` (torchvision /
timm transforms); computing a small data set's own mean/std is what no library does for us.
"""

from __future__ import annotations

from torch.utils.data import Dataset

__all__ = ["data_stats"]


def data_stats(dataset: Dataset) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of an in-memory ``uint8`` image dataset (on up to 10k images)."""
    images = getattr(dataset, "images", None)
    if images is None:
        return [0.5] * dataset.in_chans, [0.5] * dataset.in_chans
    x = images[:10000].float().div(255)
    x = x.unsqueeze(1) if x.ndim == 3 else x  # (N, H, W) -> (N, 1, H, W)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
