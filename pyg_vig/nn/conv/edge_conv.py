"""Edge convolution with a multi-head update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn.conv._utils import (
    as_pair,
    check_inputs,
    for_propagate,
    reduce_messages,
    shared_channels,
    sorted_for,
    update_repr,
)
from pyg_vig.nn.edge_index import regular_degree
from pyg_vig.nn.linear import MultiHeadUpdate, can_fold, folded_linear_params, grouped_linear
from pyg_vig.nn.reduce import reduce_edges


class EdgeConv(MessagePassing):
    r"""The edge convolutional operator from the `"Dynamic Graph CNN for Learning on Point
    Clouds" <https://arxiv.org/abs/1801.07829>`_ paper, with the multi-head update of ViG.

    .. math::
        \mathbf{x}^{\prime}_i = \max_{j \in \mathcal{N}(i)} \sigma\left(\mathrm{BN}\left(
        \mathbf{W}_{\mathrm{heads}} \left[ \mathbf{x}_i, \mathbf{x}_j - \mathbf{x}_i \right]
        \right)\right)

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
        if self.decomposed_layers != 1:
            raise ValueError(
                f"{type(self).__name__} applies an MLP to each per-edge message, so its features "
                f"cannot be split into decomposed_layers={self.decomposed_layers} chunks (PyG's "
                "decomposition needs messages that act channel by channel); use the default 1"
            )
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        channels = shared_channels(self, in_channels)  # -1: lazy
        self.nn = MultiHeadUpdate(2 * channels if channels > 0 else -1, out_channels, heads,
                                  bias, norm, act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Adj) -> Tensor:
        x_src, x_dst = as_pair(x)
        check_inputs(self, x_src, x_dst)
        lin = self.nn[0]
        if lin.is_lazy or lin.in_channels != 2 * x_dst.size(-1):
            lin.materialize(2 * x_dst.size(-1))  # the fused path reads the weight directly
        # propagate_type: (x: PairTensor)
        return self.propagate(for_propagate(self, edge_index, x), x=as_pair(x))

    def message_and_aggregate(self, edge_index: Adj, x: PairTensor) -> Tensor:
        r"""Per-node GEMMs instead of per-edge ones.

        With an even number of heads the first half of the heads reads only :math:`x_i` and the
        second half only :math:`x_j - x_i`, and :math:`W(x_j - x_i) = Wx_j - Wx_i`. So both
        halves are computed once per node and combined per edge, ``k`` times fewer multiply-adds.
        """
        edge_index = sorted_for(edge_index, x)
        x_src, x_dst = x
        src, dst = edge_index.as_tensor()
        lin = self.nn[0]
        if lin.heads % 2:  # heads mix x_i and x_j - x_i: per-edge messages
            msg = self.message(x_dst.index_select(0, dst), x_src.index_select(0, src))
            return reduce_messages(self, msg, edge_index)
        half, G2 = lin.out_channels // 2, lin.heads // 2
        weight, bias, norm = lin.weight, lin.bias, (self.nn[1] if len(self.nn) > 2 else None)
        if norm is not None and can_fold(self.nn):
            weight, bias = folded_linear_params(weight, bias, norm)  # eval: BN folded
            norm = None
        act = self.nn[-1]
        b1 = None if bias is None else bias[:half]
        b2 = None if bias is None else bias[half:]
        a = grouped_linear(x_dst, weight[:half], b1, G2)  # (N, O/2): depends on x_i only
        v_src = grouped_linear(x_src, weight[half:], None, G2)
        v_dst = v_src if x_src is x_dst else grouped_linear(x_dst, weight[half:], None, G2)
        rel = v_src.index_select(0, src) - v_dst.index_select(0, dst)  # (E, O/2)
        if b2 is not None:
            rel = rel + b2
        if norm is None and self.aggr in ("max", "min", "mean"):
            # The x_i half is the same on every edge into i, so its max/min/mean is itself
            # (0 for a target without edges, as PyG's scatter gives).
            a = act(a)
            if regular_degree(edge_index) is None:
                a = a * (edge_index.get_indptr().diff() > 0).unsqueeze(-1).to(a.dtype)
            return torch.cat([a, reduce_edges(act(rel), edge_index, self.aggr)], dim=-1)
        h = torch.cat([a.index_select(0, dst), rel], dim=-1)  # (E, O)
        if norm is not None:  # training: BatchNorm statistics over all edges
            h = norm(h)
        return reduce_messages(self, act(h), edge_index)

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return self.nn(torch.cat([x_i, x_j - x_i], dim=-1))

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr == "max" else {"aggr": self.aggr}))
