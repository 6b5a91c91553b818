"""Max-relative graph convolution."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn.conv._utils import (
    aggr_channels,
    as_pair,
    check_inputs,
    for_propagate,
    fused_reduce,
    relative_to_target,
    shared_channels,
    single_or_pair,
    sorted_for,
    update_repr,
)
from pyg_vig.nn.linear import MultiHeadUpdate


class MRConv(MessagePassing):
    r"""The max-relative graph convolution from the `"DeepGCNs: Can GCNs Go as Deep as CNNs?"
    <https://arxiv.org/abs/1904.03751>`_ paper, with the multi-head update of `"Vision GNN: An
    Image is Worth Graph of Nodes" <https://arxiv.org/abs/2206.00272>`_ (Eq. 3-5).

    .. math::
        \mathbf{m}_i = \max_{j \in \mathcal{N}(i)} \left( \mathbf{x}_j - \mathbf{x}_i \right),
        \qquad
        \mathbf{x}^{\prime}_i = \sigma\left(\mathrm{BN}\left(\mathbf{W}_{\mathrm{heads}}
        \left[ x_{i,0}, m_{i,0}, x_{i,1}, m_{i,1}, \ldots \right] \right)\right)

    The input of the update interleaves node and aggregated channels, as the official ViG code
    does; with a multi-head (grouped) update, head :math:`h` therefore sees the pairs
    :math:`(x_c, m_c)` of its own channel slice. Any PyG aggregation can replace the max
    (``aggr="mean"``, ``"sum"``, a list, an :class:`~torch_geometric.nn.aggr.Aggregation`); an
    aggregation that returns more channels than it gets (a list) is concatenated after
    :math:`x_i` instead of interleaved.

    On a target-sorted :class:`~torch_geometric.EdgeIndex` (what :func:`~pyg_vig.nn.knn_graph`
    returns) the default settings take a fused path: :math:`\max_j(x_j - x_i) = \max_j x_j -
    x_i` exactly, so one fused gather-and-reduce and one subtraction replace the per-edge
    messages. Explainers, hooks, ``flow="target_to_source"`` and non-fusable aggregations run
    PyG's generic path.

    Args:
        in_channels (int or tuple): size of each input sample, or :obj:`-1` to derive it from
            the first input (lazy initialisation). A tuple gives the sizes of source and target
            features, which must agree (:math:`x_j - x_i`), e.g. :obj:`(-1, -1)` for
            :func:`~torch_geometric.nn.to_hetero`.
        out_channels (int): size of each output sample.
        heads (int, optional): heads of the multi-head update. (default: :obj:`4`)
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
                 bias: bool = True, norm: bool = True, act: str | Callable | None = "gelu",
                 **kwargs):
        kwargs.setdefault("aggr", "max")
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        channels = shared_channels(self, in_channels)  # -1: lazy
        update_in = channels + aggr_channels(self, channels) if channels > 0 else -1
        self.nn = MultiHeadUpdate(update_in, out_channels, heads, bias, norm, act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Adj) -> Tensor:
        x = as_pair(x)
        check_inputs(self, *x)
        # propagate_type: (x: PairTensor)
        m = self.propagate(for_propagate(self, edge_index, x), x=single_or_pair(x))
        if m.size(-1) == x[1].size(-1):  # one aggregation (a list concatenates several)
            return self.nn((x[1], m))  # x_0, m_0, x_1, m_1, ... as the official code
        return self.nn(torch.cat([x[1], m], dim=-1))

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return x_j - x_i

    def message_and_aggregate(self, edge_index: Adj, x: Tensor | PairTensor) -> Tensor:
        edge_index = sorted_for(edge_index, x)
        x_src, x_dst = as_pair(x)
        agg = fused_reduce(self, x_src, edge_index)  # aggr_j x_j
        return relative_to_target(self, agg, x_dst, edge_index)

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr == "max" else {"aggr": self.aggr}))
