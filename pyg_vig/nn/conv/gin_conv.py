"""Graph isomorphism convolution with a multi-head update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn.conv._utils import (
    aggr_channels,
    as_pair,
    for_propagate,
    fused_reduce,
    single_or_pair,
    to_target_sorted,
    update_repr,
)
from pyg_vig.nn.linear import MultiHeadUpdate


class GINConv(MessagePassing):
    r"""The graph isomorphism operator from the `"How Powerful are Graph Neural Networks?"
    <https://arxiv.org/abs/1810.00826>`_ paper, with a learnable :math:`\epsilon` and the
    multi-head update of ViG.

    .. math::
        \mathbf{x}^{\prime}_i = \sigma\left(\mathrm{BN}\left(\mathbf{W}_{\mathrm{heads}}
        \left( (1 + \epsilon) \mathbf{x}_i + \sum_{j \in \mathcal{N}(i)} \mathbf{x}_j \right)
        \right)\right)

    Args:
        in_channels (int): size of each input sample.
        out_channels (int): size of each output sample.
        heads (int, optional): heads of the multi-head update. (default: :obj:`4`)
        eps (float, optional): initial :math:`\epsilon`. (default: :obj:`0.`)
        train_eps (bool, optional): learn :math:`\epsilon`. (default: :obj:`True`)
        bias (bool, optional): learn a bias in the update. (default: :obj:`True`)
        norm (bool, optional): BatchNorm in the update. (default: :obj:`True`)
        act (str or callable, optional): activation of the update. (default: :obj:`"gelu"`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}_t|, F_{out})`
    """

    SUPPORTS_FUSED_EDGE_INDEX = True

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, eps: float = 0.0,
                 train_eps: bool = True, bias: bool = True, norm: bool = True,
                 act: str | Callable | None = "gelu", **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        if aggr_channels(self, in_channels) != in_channels:
            raise ValueError(
                f"GINConv adds the aggregated neighbours to (1 + eps) x_i, so its aggregation must "
                f"keep the channel count; aggr={self.aggr!r} returns "
                f"{aggr_channels(self, in_channels)} channels for {in_channels}. Use a single "
                f"aggregation (e.g. 'add', 'mean', 'max') or MultiAggregation(mode='sum')"
            )
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.initial_eps = eps
        self.nn = MultiHeadUpdate(in_channels, out_channels, heads, bias, norm, act)
        if train_eps:
            self.eps = torch.nn.Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def forward(self, x: Tensor | PairTensor, edge_index: Adj) -> Tensor:
        x = as_pair(x)
        # propagate_type: (x: PairTensor)
        agg = self.propagate(for_propagate(self, edge_index, x), x=single_or_pair(x))
        return self.nn((1 + self.eps) * x[1] + agg)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def message_and_aggregate(self, edge_index: Adj, x: Tensor | PairTensor) -> Tensor:
        return fused_reduce(self, as_pair(x)[0], to_target_sorted(edge_index))

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr in ("add", "sum") else {"aggr": self.aggr}))
