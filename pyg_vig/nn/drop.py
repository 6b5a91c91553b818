"""Stochastic depth for node-major features."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

__all__ = ["DropPath"]


class DropPath(nn.Module):
    """Drop the residual branch of whole graphs (images) with probability ``p`` in training.

    The node-major analogue of timm's ``DropPath``: one Bernoulli draw per graph, surviving
    graphs scaled by ``1 / (1 - p)``, identity in eval. Node features ``[N, C]`` without
    ``batch`` are one graph; a dense ``(B, ...)`` tensor (more than two dimensions) gets one
    draw per sample along dim 0, exactly as timm's ``DropPath``.

    Args:
        p (float): drop probability. (default: :obj:`0.`)
        scale_by_keep (bool): scale surviving graphs by ``1 / (1 - p)`` as timm's
            ``DropPath(scale_by_keep=True)``. (default: :obj:`True`)
        drop_prob (float, optional): timm's name for ``p``. (default: :obj:`None`)

    No host synchronisation: without ``num_graphs`` one draw is made per possible graph id
    (``batch.numel()`` of them) instead of reading ``batch.max()`` back from the device.
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True, *,
                 drop_prob: float | None = None):
        super().__init__()
        if drop_prob is not None:  # timm's keyword for p
            if p != 0.0 and p != drop_prob:
                raise ValueError(f"DropPath got p={p} and drop_prob={drop_prob}; give one")
            p = drop_prob
        self.p = float(p)
        self.scale_by_keep = bool(scale_by_keep)

    def forward(self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
                ) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        if batch is None and x.dim() > 2:
            # a dense (B, ...) tensor, as timm's DropPath gets: one draw per sample of dim 0
            mask = x.new_empty((x.size(0),) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        elif batch is None:  # node-major [N, C] of one graph
            mask = x.new_empty(1).bernoulli_(keep)
        else:
            B = num_graphs if num_graphs is not None else batch.numel()
            mask = x.new_empty(B).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask = mask / keep
        if batch is None:
            return x * mask
        return x * mask.index_select(0, batch).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}" + ("" if self.scale_by_keep else ", scale_by_keep=False")
