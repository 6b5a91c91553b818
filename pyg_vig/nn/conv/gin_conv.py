"""Graph isomorphism convolution with a multi-head update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn import numerics
from pyg_vig.nn.conv._utils import as_pair, gather_neighbors, regular_degree, update_repr
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

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, eps: float = 0.0,
                 train_eps: bool = True, bias: bool = True, norm: bool = True,
                 act: str | Callable | None = "gelu", **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
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

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, k: int | None = None) -> Tensor:
        """Args: ``k`` is an optional promise that ``edge_index`` is k-regular and target-sorted."""
        x = as_pair(x)
        x_src, x_dst = x
        deg = regular_degree(edge_index, x_dst.size(0), k)
        if deg is not None:
            x_j = gather_neighbors(x_src, edge_index, x_dst.size(0), deg)  # (N, k, C)
            B = numerics.current_graphs() if numerics.is_official() else None
            if B is not None:  # the official code sums over k on a (B, C, N, k) tensor
                n = x_j.size(0) // B
                x_j = x_j.view(B, n, deg, -1).permute(0, 3, 1, 2).contiguous()
                agg = x_j.sum(-1).permute(0, 2, 1).reshape(B * n, -1)
            else:
                agg = x_j.sum(dim=1)
        else:
            # propagate_type: (x: PairTensor)
            agg = self.propagate(edge_index, x=x)
        return self.nn((1 + self.eps) * x_dst + agg)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads)
