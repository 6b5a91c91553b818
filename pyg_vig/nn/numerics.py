"""Opt-in "official numerics": reproduce the official code's float32 results bit for bit.

By default every layer runs node-major (``[N, C]`` GEMMs), the fast layout. Mathematically that
is the official model, but float32 sums come out in another order, so results differ from the
official code in the last bit or two. That is harmless except where two k-NN candidates are
within a few ulps of each other, when the neighbour choice can flip. Inside
:func:`official_numerics` the 1x1 linears, the multi-head updates, the neighbour sum of GIN and
the feature normalisation of the k-NN run as the official code runs them (channel-first
``Conv2d`` on ``(B, C, N, 1)`` / ``(B, C, N, k)`` tensors), which reproduces its graphs and
logits exactly, at a speed cost.

.. code-block:: python

    with pyg_vig.nn.official_numerics():
        logits = model(images)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor

__all__ = ["official_numerics", "is_official", "graph_scope", "current_graphs",
           "conv1x1_nodes", "normalize_nodes"]

_state = threading.local()


def is_official() -> bool:
    """Whether :func:`official_numerics` is active in this thread."""
    return getattr(_state, "official", False)


@contextlib.contextmanager
def official_numerics(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed forward passes with the official code's float32 operation order."""
    prev = is_official()
    _state.official = enabled
    try:
        yield
    finally:
        _state.official = prev


@contextlib.contextmanager
def graph_scope(num_graphs: int, grid: tuple[int, int] | None = None) -> Iterator[None]:
    """Tell layers inside how many equally sized graphs (of which grid) the nodes hold."""
    prev = (current_graphs(), getattr(_state, "grid", None))
    _state.graphs, _state.grid = num_graphs, grid
    try:
        yield
    finally:
        _state.graphs, _state.grid = prev


def current_graphs() -> int | None:
    """Graph count set by the enclosing :func:`graph_scope`, if any."""
    return getattr(_state, "graphs", None)


def conv1x1_nodes(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1,
                  on_grid: bool = False) -> Tensor:
    """A (grouped) linear on node features ``[B*n, C]`` or edge features ``[B*n, k, C]``,
    computed as the official ``Conv2d(1x1)`` on ``(B, C, n, 1)`` / ``(B, C, n, k)``, or on the
    ``(B, C, H, W)`` image with ``on_grid`` (the Grapher's fc layers and the FFN): oneDNN picks
    its summation order by tensor shape, so the shape matters for the last bit.
    """
    B = current_graphs()
    if B is None:
        raise RuntimeError("official numerics need the graph count: run through a ViG model, "
                           "Grapher or FFN (they open a graph_scope)")
    w = weight.view(weight.size(0), -1, 1, 1)
    if x.dim() == 2:
        n = x.size(0) // B
        # (B*n, C) -> (B, C, n, 1)
        grid = getattr(_state, "grid", None)
        hw = grid if on_grid and grid is not None and grid[0] * grid[1] == n else (n, 1)
        img = x.view(B, n, -1).permute(0, 2, 1).reshape(B, -1, *hw).contiguous()
        out = F.conv2d(img, w, bias, groups=groups).flatten(2)
        return out.permute(0, 2, 1).reshape(B * n, -1)
    n, k = x.size(0) // B, x.size(1)
    # (B*n, k, C) -> (B, C, n, k)
    img = x.view(B, n, k, -1).permute(0, 3, 1, 2).contiguous()
    out = F.conv2d(img, w, bias, groups=groups)
    return out.permute(0, 2, 3, 1).reshape(B * n, k, -1)


def normalize_nodes(x: Tensor) -> Tensor:
    """L2-normalise ``(B, n, C)`` features along C as the official code does on ``(B, C, n)``."""
    return F.normalize(x.transpose(1, 2).contiguous(), p=2.0, dim=1).transpose(1, 2)
