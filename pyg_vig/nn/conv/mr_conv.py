"""Max-relative graph convolution."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor

from pyg_vig.nn.conv._utils import as_pair, gather_neighbors, regular_degree, update_repr
from pyg_vig.nn.linear import MultiHeadUpdate


def _max_neighbors(x_src: Tensor, edge_index: Tensor, num_dst: int, k: int) -> Tensor:
    """``max_j x_j`` over the ``k`` sources of every target, ``[num_dst, C]``."""
    if not (torch.is_grad_enabled() and x_src.requires_grad):
        return gather_neighbors(x_src, edge_index, num_dst, k).amax(dim=1)
    # Training: find the winning neighbour of every (node, channel) without autograd, then
    # gather just those values. The backward pass is a scatter of num_dst * C values instead of
    # the (num_dst, k, C) mask and scatter of a differentiable max over gathered features; as
    # with torch.max(dim) in the official code, the gradient goes to one winner per channel.
    with torch.no_grad():
        x_j = gather_neighbors(x_src, edge_index, num_dst, k)  # (N, k, C)
        hit = x_j == x_j.amax(dim=1, keepdim=True)
        # First winning rank j as k - max_j(hit * (k - j)): amax over the middle axis is much
        # faster than argmax there, and uint8 keeps the mask small.
        weight = torch.arange(k, 0, -1, dtype=torch.uint8, device=x_j.device).view(1, k, 1)
        arg = k - (hit * weight).amax(dim=1).long()  # (N, C)
        winner = edge_index[0].view(num_dst, k).gather(1, arg)  # source node per channel
    return x_src.gather(0, winner)


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
    :math:`(x_c, m_c)` of its own channel slice. Because :math:`\max_j(x_j - x_i) = \max_j x_j -
    x_i`, the aggregation is a plain max over neighbours followed by one subtraction.

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
        deg = regular_degree(edge_index, x_dst.size(0), k)
        if deg is not None:
            # max_j (x_j - x_i) = max_j x_j - x_i: one gather, one reduction, one subtraction.
            m = _max_neighbors(x_src, edge_index, x_dst.size(0), deg) - x_dst
        else:
            # propagate_type: (x: PairTensor)
            m = self.propagate(edge_index, x=x)
        # (N, C), (N, C) -> (N, C, 2) -> (N, 2C): channels x_0, m_0, x_1, m_1, ...
        h = torch.stack([x_dst, m], dim=-1).reshape(x_dst.size(0), 2 * self.in_channels)
        return self.nn(h)

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return x_j - x_i

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads)
