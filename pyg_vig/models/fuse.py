"""Inference-time BatchNorm folding."""

from __future__ import annotations

import torch
from torch import nn

from pyg_vig.models._layers import ClassifierHead
from pyg_vig.nn.linear import MultiHeadLinear

__all__ = ["fuse_batchnorm"]


@torch.no_grad()
def _fold(layer: nn.Module, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = layer.weight
    layer.weight.copy_(w * scale.view(-1, *([1] * (w.dim() - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(shift))
    layer.bias.copy_(layer.bias * scale + shift)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the Linear / conv / multi-head linear before it.

    Works on any ``nn.Sequential`` whose child ``i`` is such a layer and child ``i + 1`` a
    BatchNorm (the layout of every ViG linear-BN pair). The model is switched to eval mode.
    """
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, ClassifierHead) and isinstance(module.norm, nn.BatchNorm1d):
            _fold(module.fc, module.norm)
            module.norm = nn.Identity()
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, layer), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and isinstance(
                layer, (nn.Linear, nn.Conv2d, MultiHeadLinear)
            ) and bn.track_running_stats:
                _fold(layer, bn)
                setattr(module, bn_name, nn.Identity())
    return model
