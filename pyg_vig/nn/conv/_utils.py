"""Helpers shared by the ViG graph convolutions."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn import MessagePassing

from pyg_vig.nn.edge_index import regular_degree  # noqa: F401 (re-exported for the convs)
from pyg_vig.nn.reduce import (  # noqa: F401 (to_target_sorted is re-exported for the convs)
    neighbor_reduce,
    reduce_edges,
    to_target_sorted,
)


def as_pair(x: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``x`` or ``(x_src, x_dst)`` → ``(x_src, x_dst)``."""
    if isinstance(x, Tensor):
        return x, x
    return x[0], x[1]


def single_or_pair(x: tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    """One tensor when sources and targets are the same nodes (PyG's ``decomposed_layers`` can
    only split a tensor), else the pair.
    """
    return x[0] if x[0] is x[1] else x


def for_propagate(conv: MessagePassing, edge_index: object, x: object = None) -> object:
    """``edge_index`` as :meth:`~MessagePassing.propagate` should see it.

    PyG runs ``message_and_aggregate`` for a column-sorted :class:`~torch_geometric.EdgeIndex`
    whenever ``aggr`` is a fusable string and the layer is not explaining. Our fused paths
    assume the default ``flow`` and no per-message hooks or feature decomposition; for any other
    setting the graph is handed over as a plain tensor, so PyG's generic message → aggregate
    path runs and every option means what it means in PyG. So does node-feature input with
    more than two dimensions (``[T, N, C]`` with ``node_dim``): the fused kernels take ``[N, C]``.
    """
    if not isinstance(edge_index, EdgeIndex):
        return edge_index
    first = x[0] if isinstance(x, (tuple, list)) else x
    generic = (
        (isinstance(first, Tensor) and first.dim() != 2)
        or conv.flow != "source_to_target"
        or conv.decomposed_layers != 1
        or conv._message_forward_pre_hooks or conv._message_forward_hooks
        or conv._aggregate_forward_pre_hooks or conv._aggregate_forward_hooks
    )
    return edge_index.as_tensor() if generic else edge_index


def aggr_channels(conv: MessagePassing, channels: int) -> int:
    """Channels that ``conv``'s aggregation returns for ``channels`` input channels
    (``len(aggr) * channels`` for a list of aggregations, which PyG concatenates).
    """
    get = getattr(conv.aggr_module, "get_out_channels", None)
    return int(get(channels)) if get is not None else channels


def fused_reduce(conv: MessagePassing, x_src: Tensor, edge_index: EdgeIndex) -> Tensor:
    """``aggr_j x_j`` over a target-sorted graph, for the fused paths."""
    return neighbor_reduce(x_src, edge_index, conv.aggr)


def reduce_messages(conv: MessagePassing, messages: Tensor, edge_index: EdgeIndex) -> Tensor:
    """Reduce per-edge ``messages`` (in ``edge_index`` order) with ``conv.aggr`` → ``[N, C]``."""
    return reduce_edges(messages, edge_index, conv.aggr)


def relative_to_target(conv: MessagePassing, agg: Tensor, x_dst: Tensor, edge_index: EdgeIndex
                       ) -> Tensor:
    r""":math:`\bigoplus_j (x_j - x_i)` from :math:`\bigoplus_j x_j`.

    Subtracting :math:`x_i` is monotone, so it commutes with max and min exactly; for mean it
    commutes up to rounding and a sum loses :math:`\deg(i)\,x_i`. Targets without neighbours get
    0, as in PyG's scatter.
    """
    k = regular_degree(edge_index)
    if k is not None:
        return agg - x_dst * k if conv.aggr in ("sum", "add") else agg - x_dst
    deg = edge_index.get_indptr().diff().unsqueeze(-1).to(x_dst.dtype)  # (N, 1)
    # agg - w * x_i in one pass; an empty neighbourhood has agg = 0 and w = 0
    w = deg if conv.aggr in ("sum", "add") else (deg > 0).to(x_dst.dtype)
    return torch.addcmul(agg, x_dst, w, value=-1)


def interleave(x: Tensor, m: Tensor) -> Tensor:
    """``[N, C]``, ``[N, C]`` → ``[N, 2C]`` with channels ``x_0, m_0, x_1, m_1, ...``."""
    return rearrange(torch.stack([x, m], dim=-1), "... c two -> ... (c two)")


def update_repr(module, in_channels, out_channels, **extra) -> str:
    """``Name(in, out, heads=4, ...)`` as PyG convolutions print themselves."""
    parts = [str(in_channels), str(out_channels)] + [f"{k}={v}" for k, v in extra.items()]
    return f"{module.__class__.__name__}({', '.join(parts)})"
