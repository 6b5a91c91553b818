"""Image augmentations in plain torch (torchvision does not install beside the CPU torch here).

Per-image transforms take and return a float tensor ``[C, H, W]`` and draw their randomness from
torch's global generator, so seeding torch (and restoring its state on resume) reproduces them.
:class:`Mixup` works on a whole batch and turns labels into soft targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Compose",
    "Mixup",
    "Normalize",
    "RandomCrop",
    "RandomErasing",
    "RandomHorizontalFlip",
    "Resize",
    "one_hot_smooth",
]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]):
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(t) for t in self.transforms)})"


class Resize:
    """Resize to ``size`` ``(H, W)`` with antialiased bilinear interpolation."""

    def __init__(self, size: int | tuple[int, int]):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        if tuple(x.shape[-2:]) == self.size:
            return x
        # (C, H, W) -> (1, C, H, W) -> (C, h, w)
        out = F.interpolate(x[None], size=self.size, mode="bilinear", antialias=True)
        return out[0]

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomCrop:
    """Zero-pad by ``padding`` pixels on every side, then crop a random ``size`` window."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        _, H, W = x.shape
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"crop {self.size} larger than padded image {(H, W)}")
        top = int(torch.randint(0, H - h + 1, ()))
        left = int(torch.randint(0, W - w + 1, ()))
        return x[:, top : top + h, left : left + w]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        return x.flip(-1) if float(torch.rand(())) < self.p else x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """Subtract ``mean`` and divide by ``std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        return (x - self.mean.to(x)) / self.std.to(x)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class RandomErasing:
    """Random erasing (`Zhong et al. 2020 <https://arxiv.org/abs/1708.04896>`_).

    With probability ``p``, replace a rectangle covering a ``scale`` fraction of the image, with
    aspect ratio drawn log-uniformly from ``ratio``, by per-pixel standard-normal noise (timm's
    ``'pixel'`` mode; apply it after :class:`Normalize`) or by zeros (``mode='const'``).
    """

    def __init__(
        self,
        p: float = 0.25,
        scale: tuple[float, float] = (0.02, 1 / 3),
        ratio: tuple[float, float] = (0.3, 3.3),
        mode: str = "pixel",
        max_attempts: int = 10,
    ):
        if mode not in ("pixel", "const"):
            raise ValueError(f"mode must be 'pixel' or 'const', got {mode!r}")
        self.p, self.scale, self.ratio, self.mode = p, scale, ratio, mode
        self.max_attempts = max_attempts
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, x: Tensor) -> Tensor:  # noqa: D102
        if float(torch.rand(())) >= self.p:
            return x
        C, H, W = x.shape
        for _ in range(self.max_attempts):
            area = H * W * float(torch.empty(()).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(()).uniform_(*self.log_ratio)))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < H and 0 < w < W:
                top = int(torch.randint(0, H - h + 1, ()))
                left = int(torch.randint(0, W - w + 1, ()))
                x = x.clone()
                if self.mode == "pixel":
                    x[:, top : top + h, left : left + w] = torch.randn(C, h, w, dtype=x.dtype)
                else:
                    x[:, top : top + h, left : left + w] = 0
                return x
        return x

    def __repr__(self) -> str:
        return (
            f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, mode={self.mode})"
        )


def one_hot_smooth(target: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Labels ``[B]`` -> soft targets ``[B, num_classes]``: ``1 - smoothing + smoothing / K`` on
    the true class and ``smoothing / K`` elsewhere (the rule of ``CrossEntropyLoss``'s
    ``label_smoothing``).
    """
    off = smoothing / num_classes
    out = torch.full((target.numel(), num_classes), off, device=target.device)
    return out.scatter_(1, target.view(-1, 1), 1.0 - smoothing + off)


class Mixup:
    r"""Mixup (`Zhang et al. 2018 <https://arxiv.org/abs/1710.09412>`_) and CutMix (`Yun et al. 2019
    <https://arxiv.org/abs/1905.04899>`_) on a batch, with label smoothing.

    With probability ``prob`` a batch is mixed with its reverse (``x.flip(0)``): by CutMix with
    probability ``switch_prob`` when both are enabled, else by Mixup. The mixing weight
    :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`; for CutMix it is corrected to the
    pasted box's true area. Targets are the same mix of the smoothed one-hot labels.

    Args:
        num_classes (int): number of classes.
        mixup_alpha (float): Mixup :math:`\alpha`; 0 disables Mixup (default: :obj:`0.8`).
        cutmix_alpha (float): CutMix :math:`\alpha`; 0 disables CutMix (default: :obj:`1.0`).
        prob (float): probability of mixing a batch at all (default: :obj:`1.0`).
        switch_prob (float): probability of CutMix when both are on (default: :obj:`0.5`).
        label_smoothing (float): smoothing of the one-hot targets (default: :obj:`0.1`).
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing

    @property
    def enabled(self) -> bool:
        """Whether any mixing can happen."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    @staticmethod
    def _beta(alpha: float) -> float:
        a = torch.tensor(float(alpha))
        return float(torch.distributions.Beta(a, a).sample())

    def __call__(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch ``x [B, C, H, W]`` with labels ``target [B]``; returns soft targets."""
        soft = one_hot_smooth(target, self.num_classes, self.label_smoothing)
        if not self.enabled or float(torch.rand(())) >= self.prob:
            return x, soft
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand(())) < self.switch_prob
        )
        if use_cutmix:
            lam = self._beta(self.cutmix_alpha)
            H, W = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy, cx = int(torch.randint(0, H, ())), int(torch.randint(0, W, ()))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)
        else:
            lam = self._beta(self.mixup_alpha)
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, soft * lam + soft.flip(0) * (1.0 - lam)

    def __repr__(self) -> str:
        return (
            f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"prob={self.prob}, switch_prob={self.switch_prob}, "
            f"label_smoothing={self.label_smoothing})"
        )
