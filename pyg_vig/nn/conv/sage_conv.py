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
    channel_pair,
    check_inputs,
    for_propagate,
    fused_reduce,
    reduce_messages,
    sorted_for,
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
        in_channels (int or tuple): size of each input sample, or :obj:`-1` to derive it from
            the first input (lazy initialisation). A tuple gives the sizes of source and target
            features, which may differ (as in PyG's :class:`~torch_geometric.nn.conv.SAGEConv`),
            e.g. :obj:`(-1, -1)` for :func:`~torch_geometric.nn.to_hetero`. With lazy source
            channels, :attr:`nn1` (whose width is that of the sources) is built by the first
            forward call, or by loading a state dict.
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
        self._update_args = (heads, bias, norm, act)
        src, dst = channel_pair(in_channels)
        # nn1 maps sources to their own width; with lazy sources it waits for the first input.
        # (registered even while None, so the module order, and state dict order, never change)
        self.register_module("nn1", MultiHeadUpdate(src, src, heads, bias, norm, act)
                             if src > 0 else None)
        nn2_in = dst + aggr_channels(self, src) if src > 0 and dst > 0 else -1
        self.nn2 = MultiHeadUpdate(nn2_in, out_channels, heads, bias, norm, act)
        self._register_load_state_dict_pre_hook(self._build_nn1_for_state)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.nn1 is not None:
            self.nn1.reset_parameters()
        self.nn2.reset_parameters()

    def _build_nn1(self, channels: int) -> None:
        ref = self.nn2[0].bias if self.nn2[0].bias is not None else self.nn2[0].weight
        self.nn1 = MultiHeadUpdate(channels, channels, *self._update_args, device=ref.device,
                                   dtype=ref.dtype).train(self.training)

    def _build_nn1_for_state(self, state_dict, prefix, *args) -> None:
        weight = state_dict.get(prefix + "nn1.0.weight")
        if self.nn1 is None and weight is not None:
            self._build_nn1(weight.size(0))

    def forward(self, x: Tensor | PairTensor, edge_index: Adj) -> Tensor:
        x = as_pair(x)
        check_inputs(self, *x, same_channels=False)
        if self.nn1 is None:
            self._build_nn1(x[0].size(-1))
        # propagate_type: (x: PairTensor)
        m = self.propagate(for_propagate(self, edge_index, x), x=x)
        return self.nn2(torch.cat([x[1], m], dim=-1))

    def message(self, x_j: Tensor) -> Tensor:
        return self.nn1(x_j)

    def message_and_aggregate(self, edge_index: Adj, x: PairTensor) -> Tensor:
        edge_index = sorted_for(edge_index, x)
        if self.training:
            # Per edge, so that BatchNorm statistics are taken over edges (official, generic).
            x_j = x[0].index_select(0, edge_index.as_tensor()[0])
            return reduce_messages(self, self.nn1(x_j), edge_index)
        # Eval: nn1 acts on each node alone, so transform every source once, then reduce.
        return fused_reduce(self, self.nn1(x[0]), edge_index)

    def __repr__(self) -> str:
        return update_repr(self, self.in_channels, self.out_channels, heads=self.heads,
                           **({} if self.aggr == "max" else {"aggr": self.aggr}))
