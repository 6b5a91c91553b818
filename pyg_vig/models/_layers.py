"""Image-space layers of the ViG models: the convolution stem and the classifier head."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn
from torch import Tensor

from pyg_vig.nn.linear import get_act

__all__ = ["ConvStem", "ClassifierHead"]


class ConvStem(nn.Module):
    """Overlapping 3x3 convolution stem: ``log2(stride)`` stride-2 convs, then a stride-1 conv.

    Channels double up to ``out_channels`` (``C/8, C/4, C/2, C`` then ``C`` for stride 16, as
    in isotropic ViG; ``C/2, C`` then ``C`` for stride 4, as in pyramid ViG). BatchNorm follows
    every conv and the activation every conv but the last. Module indices mirror the official
    ``stem.convs`` Sequential so checkpoint keys match directly.
    """

    def __init__(self, in_chans: int, out_channels: int, stride: int = 16,
                 act: str | Callable = "gelu", device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        n_down = int(round(math.log2(stride)))
        if 2**n_down != stride or stride < 1:
            raise ValueError(f"stem stride must be a power of two, got {stride}")
        layers: list[nn.Module] = []
        prev = in_chans
        for i in range(n_down):
            ch = out_channels // 2 ** (n_down - 1 - i)
            layers += [nn.Conv2d(prev, ch, 3, 2, 1, **dd), nn.BatchNorm2d(ch, **dd), get_act(act)]
            prev = ch
        layers += [nn.Conv2d(prev, out_channels, 3, 1, 1, **dd), nn.BatchNorm2d(out_channels, **dd)]
        self.convs = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class ClassifierHead(nn.Module):
    """Global average pool → Linear(C, hidden) → BN → act → dropout → Linear(hidden, classes)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 1024,
                 act: str | Callable = "gelu", drop_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc = nn.Linear(in_features, hidden, **dd)
        self.norm = nn.BatchNorm1d(hidden, **dd)
        self.act = get_act(act)
        self.drop = nn.Dropout(drop_rate)
        self.out = nn.Linear(hidden, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.hidden = hidden

    def forward(self, pooled: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.act(self.norm(self.fc(pooled))))
        return x if pre_logits else self.out(x)
