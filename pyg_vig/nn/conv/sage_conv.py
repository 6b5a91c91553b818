"""GraphSAGE convolution (max-pool variant) with a multi-head update."""

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
    reduce_messages,
    to_target_sorted,
    update_repr,
)
from pyg_vig.nn.linear import MultiHeadUpdate


class SAGEConv(MessagePassing):
    r"""The GraphSAGE operator from the `"Inductive Representation Learning on Large Graphs"
    <https://arxiv.org/abs/1706.02216>`_ paper in its max-pool form, as used by ViG.

    .. math::
        \mathbf{m}_i = \max_{j \in \mathcal{N}(i)} \sigma\left(\mathrm{BN}\left(
        \mathbf{W}^{(1)}_{\mathrm{heads}} \mathbf{x}_j\right)\right), \qquad
        \mathbf{x}^{\prime}_i = \sigma\left(\mathrm{BN}\left(\mathbf{W}^{(2)}_{\mathrm{heads}}
        \left[ \mathbf{x}_i, \mathbf{m}_i \right]\right)\right)

    Args:
        in_channels (int): size of each input sample.
        out_channels (int): size of each output sample.
        heads (int, optional): heads of the multi-head updates. (default: :obj:`4`)
        bias (bool, optional): learn biases in the updates. (default: :obj:`True`)
        norm (bool, optional): BatchNorm in the updates. (default: :obj:`True`)
        act (str or callable, optional): activation of the updates. (default: :obj:`"gelu"`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}_t|, F_{out})`
    """

    SUPPORTS_FUSED_EDGE_INDEX = True

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, bias: bool = True,
                 norm: bool = True, act: str | Callable | None = "gelu", **kwargs):
        kwargs.setdefault("aggr", "max")
        super().__init__(**kwargs)
        if self.decomposed_layers != 1:
            raise ValueError(
                f"{type(self).__name__} applies an MLP to each per-edge message, so its features "
                f"cannot be split into decomposed_layers={self.decomposed_layers} chunks (PyG's "
                "decomposition needs messages that act channel by channel); use the default 1"
            )
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.nn1 = MultiHeadUpdate(in_channels, in_channels, heads, bias, norm, act)
        self.nn2 = MultiHeadUpdate(in_channels + aggr_channels(self, in_channels), out_channels,
                                   heads, bias, norm, act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn1.reset_parameters()
        self.nn2.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Adj) -> Tensor:
        x = as_pair(x)
        # propagate_type: (x: PairTensor)
        m = self.propagate(for_propagate(self, edge_index, x), x=x)
        return self.nn2(torch.cat([x[1], m], dim=-1))

    def message(self, x_j: Tensor) -> Tensor:
        return self.nn1(x_j)

    def message_and_aggregate(self, edge_index: Adj, x: PairTensor) -> Tensor:
        edge_index = to_target_sorted(edge_index)
        if self.training:
            # Per edge, so that BatchNorm statistics are taken over edges (official, generic).
            x_j = x[0].index_select(0, edge_index.as_tensor()[0])
            return reduce_messages(self, self.nn1(x_j), edge_index)
        # Eval: nn1 acts on each node alone, so transform every source once, then reduce.
        return fused_reduce(self, self.nn1(x[0]), edge_index)

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr == "max" else {"aggr": self.aggr}))
