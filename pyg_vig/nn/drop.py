"""Stochastic depth for node-major features."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["DropPath"]


class DropPath(nn.Module):
    """Drop the residual branch of whole graphs (images) with probability ``p`` in training.

    The node-major analogue of timm's ``DropPath``: one Bernoulli draw per graph, surviving
    graphs scaled by ``1 / (1 - p)``, identity in eval.

    Args:
        p (float): drop probability. (default: :obj:`0.`)
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
                ) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        if keep <= 0.0:
            return torch.zeros_like(x)
        if batch is None:
            mask = x.new_empty(1).bernoulli_(keep)
            return x * (mask / keep)
        B = num_graphs if num_graphs is not None else int(batch.max()) + 1
        mask = x.new_empty(B).bernoulli_(keep) / keep
        return x * mask.index_select(0, batch).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}"
