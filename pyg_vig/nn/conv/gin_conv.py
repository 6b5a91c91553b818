"""Graph isomorphism convolution with a multi-head update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, OptPairTensor
from torch_geometric.utils import spmm

from pyg_vig.nn.conv._utils import (
    aggr_channels,
    as_pair,
    check_inputs,
    for_propagate,
    fused_reduce,
    shared_channels,
    single_or_pair,
    sorted_for,
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
        in_channels (int or tuple): size of each input sample, or :obj:`-1` to derive it from
            the first input (lazy initialisation). A tuple gives the sizes of source and target
            features, which must agree, e.g. :obj:`(-1, -1)` for
            :func:`~torch_geometric.nn.to_hetero`. As in PyG's
            :class:`~torch_geometric.nn.conv.GINConv`, ``x=(x_src, None)`` drops the
            :math:`(1 + \epsilon) \mathbf{x}_i` term, and a weighted ``torch.sparse`` adjacency
            weights the neighbours (a ``SparseTensor``'s values are ignored, as PyG does).
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

    def __init__(self, in_channels: int | tuple[int, int], out_channels: int, heads: int = 4,
                 eps: float = 0.0, train_eps: bool = True, bias: bool = True, norm: bool = True,
                 act: str | Callable | None = "gelu", **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        channels = shared_channels(self, in_channels)  # -1: lazy
        probe = channels if channels > 0 else heads  # any width shows what the aggr does to it
        if aggr_channels(self, probe) != probe:
            raise ValueError(
                f"GINConv adds the aggregated neighbours to (1 + eps) x_i, so its aggregation must "
                f"keep the channel count; aggr={self.aggr!r} returns "
                f"{aggr_channels(self, probe)} channels for {probe}. Use a single "
                f"aggregation (e.g. 'add', 'mean', 'max') or MultiAggregation(mode='sum')"
            )
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.initial_eps = eps
        self.nn = MultiHeadUpdate(channels, out_channels, heads, bias, norm, act)
        if train_eps:
            self.eps = torch.nn.Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def forward(self, x: Tensor | OptPairTensor, edge_index: Adj) -> Tensor:
        x = as_pair(x)
        check_inputs(self, *x, needs_targets=False)
        # propagate_type: (x: OptPairTensor)
        agg = self.propagate(for_propagate(self, edge_index, x), x=single_or_pair(x))
        if x[1] is None:  # no target features: no root term, as in PyG's GINConv
            return self.nn(agg)
        return self.nn((1 + self.eps) * x[1] + agg)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def message_and_aggregate(self, edge_index: Adj, x: Tensor | OptPairTensor) -> Tensor:
        x_src = as_pair(x)[0]
        if isinstance(edge_index, Tensor) and edge_index.layout in (
                torch.sparse_coo, torch.sparse_csr, torch.sparse_csc):
            # A torch.sparse adjacency carries edge weights, and PyG's GINConv sums the
            # weighted neighbours (spmm); so does this layer, with the same call (weights of
            # another dtype are cast to the features', where PyG's spmm would raise).
            return spmm(edge_index.to(x_src.dtype), x_src, reduce=self.aggr)
        # EdgeIndex (no weights) and SparseTensor (PyG drops its values): plain neighbours
        return fused_reduce(self, x_src, sorted_for(edge_index, x))

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr in ("add", "sum") else {"aggr": self.aggr}))
