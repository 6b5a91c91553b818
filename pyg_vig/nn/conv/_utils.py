"""Helpers shared by the ViG graph convolutions."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn import MessagePassing

from pyg_vig.nn.edge_index import regular_degree  # noqa: F401 (re-exported for the convs)
from pyg_vig.nn.linear import interleave  # noqa: F401 (re-exported for the convs)
from pyg_vig.nn.reduce import (  # noqa: F401 (to_target_sorted is re-exported for the convs)
    neighbor_reduce,
    reduce_edges,
    to_target_sorted,
)


def as_pair(x: Tensor | tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
    """``x`` or ``(x_src, x_dst)`` → ``(x_src, x_dst)`` (``x_dst`` may be ``None``, as in PyG)."""
    if isinstance(x, Tensor):
        return x, x
    return x[0], x[1]


def channel_pair(in_channels: int | tuple[int, int]) -> tuple[int, int]:
    """``in_channels`` as PyG's convs take it (an int, or ``(source, target)`` channels; ``-1``
    or any value ``<= 0`` is lazy) → ``(source, target)``.
    """
    if isinstance(in_channels, int):
        return in_channels, in_channels
    if not (isinstance(in_channels, (tuple, list)) and len(in_channels) == 2
            and all(isinstance(c, int) for c in in_channels)):
        raise TypeError(f"in_channels must be an int or a pair of ints (source, target), "
                        f"-1 for lazy initialisation; got {in_channels!r}")
    return int(in_channels[0]), int(in_channels[1])


def shared_channels(conv: MessagePassing, in_channels: int | tuple[int, int]) -> int:
    """The one channel count of a conv whose sources and targets meet in one expression
    (``x_j - x_i``, ``(1 + eps) x_i + sum_j x_j``); ``-1`` while unknown (lazy).
    """
    src, dst = channel_pair(in_channels)
    if src > 0 and dst > 0 and src != dst:
        raise ValueError(f"{type(conv).__name__} combines x_i and x_j channel by channel, so "
                         f"sources and targets need the same channels; got in_channels="
                         f"{in_channels!r}. Project one side first (e.g. with "
                         f"torch_geometric.nn.Linear(-1, {max(src, dst)}))")
    return max(src, dst, -1)


def check_inputs(conv: MessagePassing, x_src: Tensor, x_dst: Tensor | None,
                 needs_targets: bool = True, same_channels: bool = True) -> None:
    """Clear errors for bipartite inputs a conv cannot take (before any shape mismatch deeper
    down): ``(x_src, None)`` where the update reads :math:`x_i`, or source and target features
    of different widths where they are combined channel by channel.
    """
    name = type(conv).__name__
    if x_dst is None:
        if needs_targets:
            raise ValueError(f"{name} reads the target features x_i, so x=(x_src, None) is not "
                             f"supported; pass (x_src, x_dst)")
        return
    if same_channels and x_src.size(-1) != x_dst.size(-1):
        raise ValueError(f"{name} combines x_i and x_j channel by channel, so x_src and x_dst "
                         f"need the same number of channels; got {x_src.size(-1)} and "
                         f"{x_dst.size(-1)}")


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


def sorted_for(edge_index: object, x: Tensor | tuple[Tensor, Tensor | None]) -> EdgeIndex:
    """The target-sorted graph a fused path reduces over, with one target per row of
    ``x_dst`` (see :func:`~pyg_vig.nn.reduce.to_target_sorted`).
    """
    x_dst = as_pair(x)[1]
    return to_target_sorted(edge_index, None if x_dst is None else x_dst.size(0))


def aggr_channels(conv: MessagePassing, channels: int) -> int:
    """Channels that ``conv``'s aggregation returns for ``channels`` input channels
    (``len(aggr) * channels`` for a list of aggregations, which PyG concatenates); ``-1`` for
    unknown (lazy) ``channels``.
    """
    if channels <= 0:
        return -1
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


def update_repr(module, in_channels, out_channels, **extra) -> str:
    """``Name(in, out, heads=4, ...)`` as PyG convolutions print themselves."""
    parts = [str(in_channels), str(out_channels)] + [f"{k}={v}" for k, v in extra.items()]
    return f"{module.__class__.__name__}({', '.join(parts)})"
