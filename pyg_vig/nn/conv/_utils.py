"""Helpers shared by the ViG graph convolutions."""

from __future__ import annotations

import torch
from torch import Tensor

from pyg_vig.nn.linear import MultiHeadUpdate


def as_pair(x: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``x`` or ``(x_src, x_dst)`` → ``(x_src, x_dst)``."""
    if isinstance(x, Tensor):
        return x, x
    return x[0], x[1]


_FAST_PATH = True


def set_fast_path(enabled: bool) -> bool:
    """Enable/disable the k-regular reshape aggregation (``False``: always PyG's scatter path).

    Returns the previous setting. Used by the benchmarks to time the generic path.
    """
    global _FAST_PATH
    prev, _FAST_PATH = _FAST_PATH, bool(enabled)
    return prev


def regular_degree(edge_index: object, num_dst: int, k: int | None = None) -> int | None:
    """``k`` when ``edge_index`` lists exactly ``k`` sources per target, sorted by target.

    That is the layout :func:`pyg_vig.nn.knn_graph` produces; the convolutions then aggregate by
    a reshape instead of a scatter. A given ``k`` is trusted (no check, no device sync, so it
    compiles cleanly); otherwise the layout is detected, outside of :func:`torch.compile` only.
    """
    if (not _FAST_PATH or not isinstance(edge_index, Tensor) or edge_index.layout != torch.strided
            or edge_index.dim() != 2 or edge_index.size(0) != 2 or num_dst == 0):
        return None  # sparse adjacency matrices take the generic propagate path
    E = edge_index.size(1)
    if k is not None:
        if E != k * num_dst:
            raise ValueError(
                f"k={k} given but edge_index has {E} edges for {num_dst} targets (expected "
                f"{k * num_dst}); drop the k hint for general graphs"
            )
        return k
    if torch.compiler.is_compiling() or E % num_dst:
        return None
    deg = E // num_dst
    expected = torch.arange(num_dst, device=edge_index.device).repeat_interleave(deg)
    return deg if torch.equal(edge_index[1], expected) else None


def gather_neighbors(x_src: Tensor, edge_index: Tensor, num_dst: int, k: int) -> Tensor:
    """``(num_dst, k, C)`` source features of a k-regular, target-sorted ``edge_index``."""
    return x_src.index_select(0, edge_index[0]).view(num_dst, k, x_src.size(-1))


def update_repr(module, in_channels, out_channels, **extra) -> str:
    """``Name(in, out, heads=4, ...)`` as PyG convolutions print themselves."""
    parts = [str(in_channels), str(out_channels)] + [f"{k}={v}" for k, v in extra.items()]
    return f"{module.__class__.__name__}({', '.join(parts)})"


def heads_of(update: MultiHeadUpdate) -> int:
    return update[0].heads
