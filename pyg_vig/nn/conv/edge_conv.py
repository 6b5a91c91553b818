"""Edge convolution with a multi-head update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn import numerics
from pyg_vig.nn.conv._utils import as_pair, gather_neighbors, regular_degree, update_repr
from pyg_vig.nn.linear import MultiHeadUpdate, folded_linear_params, grouped_linear


class EdgeConv(MessagePassing):
    r"""The edge convolutional operator from the `"Dynamic Graph CNN for Learning on Point
    Clouds" <https://arxiv.org/abs/1801.07829>`_ paper, with the multi-head update of ViG.

    .. math::
        \mathbf{x}^{\prime}_i = \max_{j \in \mathcal{N}(i)} \sigma\left(\mathrm{BN}\left(
        \mathbf{W}_{\mathrm{heads}} \left[ \mathbf{x}_i, \mathbf{x}_j - \mathbf{x}_i \right]
        \right)\right)

    Args:
        in_channels (int): size of each input sample.
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

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, bias: bool = True,
                 norm: bool = True, act: str | Callable | None = "gelu", **kwargs):
        kwargs.setdefault("aggr", "max")
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.nn = MultiHeadUpdate(2 * in_channels, out_channels, heads, bias, norm, act)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, k: int | None = None) -> Tensor:
        """Args: ``k`` is an optional promise that ``edge_index`` is k-regular and target-sorted."""
        x = as_pair(x)
        x_src, x_dst = x
        N = x_dst.size(0)
        deg = regular_degree(edge_index, N, k)
        if deg is None:
            # propagate_type: (x: PairTensor)
            return self.propagate(edge_index, x=x)
        if self.heads % 2 == 0 and not numerics.is_official():
            return self._decomposed(x_src, x_dst, edge_index, deg)
        x_j = gather_neighbors(x_src, edge_index, N, deg)  # (N, k, C)
        x_i = x_dst.unsqueeze(1).expand_as(x_j)
        return self.nn(torch.cat([x_i, x_j - x_i], dim=-1)).amax(dim=1)

    def _decomposed(self, x_src: Tensor, x_dst: Tensor, edge_index: Tensor, k: int) -> Tensor:
        r"""Per-node GEMMs instead of per-edge ones.

        With an even number of heads the first half of the heads reads only :math:`x_i` and the
        second half only :math:`x_j - x_i`, and :math:`W(x_j - x_i) = Wx_j - Wx_i`. So both halves
        are computed once per node and combined per edge, ``k`` times fewer multiply-adds.
        """
        lin = self.nn[0]
        N, half, G2 = x_dst.size(0), lin.out_channels // 2, lin.heads // 2
        weight, bias = lin.weight, lin.bias
        if len(self.nn) > 2 and not self.training and isinstance(self.nn[1], nn.BatchNorm1d):
            weight, bias = folded_linear_params(weight, bias, self.nn[1])  # eval: BN folded
            norm = None
        else:
            norm = self.nn[1] if len(self.nn) > 2 else None
        act = self.nn[-1]
        b1 = None if bias is None else bias[:half]
        b2 = None if bias is None else bias[half:]
        a = grouped_linear(x_dst, weight[:half], b1, G2)  # (N, O/2): depends on x_i only
        v_src = grouped_linear(x_src, weight[half:], None, G2)
        v_dst = v_src if x_src is x_dst else grouped_linear(x_dst, weight[half:], None, G2)
        rel = gather_neighbors(v_src, edge_index, N, k) - v_dst.unsqueeze(1)  # (N, k, O/2)
        if b2 is not None:
            rel = rel + b2
        if norm is None:  # eval: the x_i half is the same on every edge, so its max is itself
            return torch.cat([act(a), act(rel).amax(dim=1)], dim=-1)
        # training: BatchNorm statistics over all edges, as in the per-edge computation
        h = torch.cat([a.unsqueeze(1).expand(-1, k, -1), rel], dim=-1)
        return act(norm(h.reshape(N * k, -1))).view(N, k, -1).amax(dim=1)

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return self.nn(torch.cat([x_i, x_j - x_i], dim=-1))

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads)
