"""ViG building blocks on node features: Grapher, FFN and ViGBlock (paper §3.2, Eq. 6-7)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from pyg_vig.data.grid import GridLayout
from pyg_vig.nn import numerics
from pyg_vig.nn.conv import CONVS, EdgeConv, GINConv, MRConv, SAGEConv
from pyg_vig.nn.drop import DropPath
from pyg_vig.nn.graph import (
    LowRankBias,
    index_to_edge_index,
    knn_graph,
    knn_index,
    resolve_backend,
)
from pyg_vig.nn.linear import LinearBN, get_act

__all__ = ["Grapher", "FFN", "ViGBlock", "grid_knn_graph", "RELATIVE_POS_MODES"]

RELATIVE_POS_MODES = ("official", "geometric")
_OUR_CONVS = (MRConv, EdgeConv, GINConv, SAGEConv)


def _linear_bn(in_channels: int, out_channels: int, dd: dict) -> nn.Sequential:
    # Index 0 / 1 mirror the official Conv2d(1x1) / BatchNorm2d pair.
    return LinearBN(in_channels, out_channels, **dd)


def grid_knn_graph(
    x: Tensor,
    layout: GridLayout,
    k: int,
    *,
    y: Tensor | None = None,
    layout_y: GridLayout | None = None,
    dilation: int = 1,
    bias_fn: Callable[[tuple[int, int]], Tensor | LowRankBias | None] | None = None,
    stochastic: bool = False,
    epsilon: float = 0.2,
    backend: str = "auto",
) -> Tensor:
    r""":func:`~pyg_vig.nn.knn_graph` for image grids, grouping graphs by grid size.

    Unlike :func:`knn_graph`, which only sees node counts, this knows each graph's
    :math:`H \\times W`, so the positional bias of a graph is built for its own grid
    (``bias_fn((H, W))``). Graphs of equal size are processed as one batch; a uniform batch
    needs no indexing and no device synchronisation at all.
    """
    if y is None:
        y, layout_y = x, layout
    assert layout_y is not None
    kd = k * dilation
    for (h, w), (hy, wy) in zip(layout.sizes, layout_y.sizes, strict=False):
        if hy * wy < kd:
            raise ValueError(
                f"a {h}x{w} node grid with {hy}x{wy} key nodes has fewer candidates than "
                f"k * dilation = {kd}; use a larger image or a smaller k / dilation"
            )
    same = y is x
    opts = dict(dilation=dilation, stochastic=stochastic, epsilon=epsilon, backend=backend)
    if layout.uniform and layout_y.uniform:
        B = layout.num_graphs
        n, m = layout.counts[0], layout_y.counts[0]
        xq = x.view(B, n, -1)
        xk = None if same else y.view(B, m, -1)
        bias = bias_fn(layout.sizes[0]) if bias_fn is not None else None
        return index_to_edge_index(knn_index(xq, xk, k, bias=bias, **opts), m)

    src = torch.empty(x.size(0), k, dtype=torch.long, device=x.device)
    for size, members in layout.groups():
        n = layout.counts[members[0]]
        m = layout_y.counts[members[0]]
        rows_x = torch.cat([torch.arange(layout.ptr[g], layout.ptr[g] + n) for g in members])
        rows_y = torch.cat([torch.arange(layout_y.ptr[g], layout_y.ptr[g] + m) for g in members])
        rows_x, rows_y = rows_x.to(x.device), rows_y.to(x.device)
        xq = x.index_select(0, rows_x).view(len(members), n, -1)
        xk = None if same else y.index_select(0, rows_y).view(len(members), m, -1)
        bias = bias_fn(size) if bias_fn is not None else None
        idx = knn_index(xq, xk, k, bias=bias, **opts)
        start = torch.tensor([layout_y.ptr[g] for g in members], device=x.device).view(-1, 1, 1)
        src[rows_x] = (idx + start).view(-1, k)
    dst = torch.arange(x.size(0), device=x.device).repeat_interleave(k)
    return torch.stack([src.view(-1), dst], dim=0)


def _uniform_graph_count(x: Tensor, batch: Tensor | None, layout: GridLayout | None
                         ) -> tuple[int, tuple[int, int] | None]:
    if layout is not None:
        if not layout.uniform:
            raise ValueError("official_numerics() needs images of one size; run mixed sizes "
                             "separately or without official numerics")
        return layout.num_graphs, layout.sizes[0]
    if batch is None:
        return 1, None
    counts = torch.bincount(batch)
    if bool((counts != counts[0]).any()):
        raise ValueError("official_numerics() needs graphs of equal size")
    return counts.numel(), None


class Grapher(nn.Module):
    r"""The Grapher module of ViG (paper Eq. 6) on node features.

    .. math::
        Y = \mathrm{DropPath}\left(\sigma\left(\mathrm{GraphConv}(X W_{in})\right)
        W_{out}\right) + X

    Each call rebuilds a dilated k-NN graph over the L2-normalised features after ``fc1``; with
    ``reduction > 1`` the keys are the ``r x r`` average-pooled grid (a bipartite graph), and with
    ``relative_pos`` the sin-cos relative positional bias of the pyramid models is added to the
    distances.

    Args:
        channels (int): node feature size :math:`C`.
        k (int, optional): neighbours per node. (default: :obj:`9`)
        dilation (int, optional): dilation rate. (default: :obj:`1`)
        conv (str or callable, optional): ``"mr"``, ``"edge"``, ``"gin"``, ``"sage"``, or a
            factory ``conv(in_channels, out_channels)`` returning any PyG ``MessagePassing``
            layer, e.g. ``lambda i, o: GATConv(i, o)``. (default: :obj:`"mr"`)
        heads (int, optional): heads of the multi-head update. (default: :obj:`4`)
        act (str, optional): activation inside the graph conv. (default: :obj:`"gelu"`)
        norm (bool, optional): BatchNorm inside the graph conv. (default: :obj:`True`)
        bias (bool, optional): bias inside the graph conv. (default: :obj:`True`)
        reduction (int, optional): key pooling ratio :math:`r` (needs a grid layout).
            (default: :obj:`1`)
        relative_pos (str, optional): ``None``, ``"official"`` (the official table, bit for
            bit) or ``"geometric"`` (pooled keys at their true positions). (default: :obj:`None`)
        stochastic (bool, optional): random-subset dilation in training. (default: :obj:`False`)
        epsilon (float, optional): its probability. (default: :obj:`0.2`)
        drop_path (float, optional): stochastic depth rate. (default: :obj:`0.`)
        backend (str, optional): k-NN backend. (default: :obj:`"auto"`)
    """

    def __init__(self, channels: int, k: int = 9, dilation: int = 1,
                 conv: str | Callable[[int, int], nn.Module] = "mr", heads: int = 4,
                 act: str | Callable | None = "gelu", norm: bool = True, bias: bool = True,
                 reduction: int = 1, relative_pos: str | None = None, stochastic: bool = False,
                 epsilon: float = 0.2, drop_path: float = 0.0, backend: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if relative_pos is not None and relative_pos not in RELATIVE_POS_MODES:
            raise ValueError(
                f"relative_pos must be None or one of {RELATIVE_POS_MODES}, got {relative_pos!r}"
            )
        resolve_backend(backend)
        self.channels, self.k, self.dilation = channels, int(k), int(dilation)
        self.reduction, self.relative_pos = int(reduction), relative_pos
        self.stochastic, self.epsilon, self.backend = stochastic, float(epsilon), backend
        self.fc1 = _linear_bn(channels, channels, dd)
        if isinstance(conv, str):
            if conv not in CONVS:
                raise ValueError(f"unknown graph conv {conv!r}; choose one of {sorted(CONVS)} "
                                 "or pass a factory (in_channels, out_channels) -> conv")
            self.graph_conv = CONVS[conv](channels, 2 * channels, heads=heads, bias=bias,
                                          norm=norm, act=act)
        else:
            self.graph_conv = conv(channels, 2 * channels)
        self._native = isinstance(self.graph_conv, _OUR_CONVS)
        self.fc2 = _linear_bn(2 * channels, channels, dd)
        self.drop_path = DropPath(drop_path)
        self._bias_cache: dict = {}

    # ------------------------------------------------------------------ relative bias
    def relative_bias(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype
                      ) -> Tensor | LowRankBias | None:
        """The distance bias for a query grid of ``size`` (cached per grid, device and dtype)."""
        if self.relative_pos is None:
            return None
        key = (size, device, dtype)
        if key not in self._bias_cache:
            from pyg_vig.nn import pos_embed

            h, w = size
            if self.relative_pos == "geometric":
                # Factors, not a table: the k-NN builds the bias chunk by chunk (bounded memory)
                # or folds it into the features (KD-tree backends).
                q, kf = pos_embed.relative_position_factors(h, w, self.channels, self.reduction)
                val: Tensor | LowRankBias = LowRankBias(q.to(device, dtype), kf.to(device, dtype))
            else:
                val = pos_embed.relative_position_bias(
                    h, w, self.channels, self.reduction, mode=self.relative_pos
                ).to(device=device, dtype=dtype)
            self._bias_cache[key] = val
        return self._bias_cache[key]

    def _apply(self, fn, recurse=True):
        self._bias_cache = {}  # tables follow the module's device/dtype lazily
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------ forward
    def build_graph(self, x: Tensor, batch: Tensor | None = None,
                    layout: GridLayout | None = None) -> tuple[Tensor, Tensor | None]:
        """k-NN graph over ``x`` (the features after ``fc1``) → ``(edge_index, key features)``."""
        stochastic = self.stochastic and self.training
        if layout is None:
            if self.reduction > 1 or self.relative_pos is not None:
                raise ValueError(
                    "this Grapher uses key reduction or a relative positional bias, which need "
                    "the grid sizes: pass layout=GridLayout(...) (see pyg_vig.data)"
                )
            edge_index = knn_graph(x, self.k, batch, dilation=self.dilation,
                                   stochastic=stochastic, epsilon=self.epsilon,
                                   backend=self.backend)
            return edge_index, None
        y, layout_y = layout.avg_pool(x, self.reduction)
        edge_index = grid_knn_graph(
            x, layout, self.k, y=None if self.reduction == 1 else y, layout_y=layout_y,
            dilation=self.dilation, stochastic=stochastic, epsilon=self.epsilon,
            backend=self.backend,
            bias_fn=lambda s: self.relative_bias(s, x.device, x.dtype),
        )
        return edge_index, (None if self.reduction == 1 else y)

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None,
                return_edge_index: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Args: ``x`` ``[N, C]``; ``batch`` ``[N]`` or ``layout`` (grid sizes) for images."""
        if numerics.is_official() and numerics.current_graphs() is None:
            with numerics.graph_scope(*_uniform_graph_count(x, batch, layout)):
                return self.forward(x, batch, layout, return_edge_index)
        shortcut = x
        x = self.fc1(x)
        edge_index, y = self.build_graph(x, batch, layout)
        if self._native:
            x = self.graph_conv(x if y is None else (y, x), edge_index, k=self.k)
        else:
            x = self.graph_conv(x if y is None else (y, x), edge_index)
        x = self.fc2(x)
        if batch is None and layout is not None and self.drop_path.p > 0 and self.training:
            batch = layout.batch(x.device)
        x = self.drop_path(x, batch, None if layout is None else layout.num_graphs) + shortcut
        return (x, edge_index) if return_edge_index else x

    def extra_repr(self) -> str:
        return (f"k={self.k}, dilation={self.dilation}, reduction={self.reduction}, "
                f"relative_pos={self.relative_pos}")


class FFN(nn.Module):
    r"""The feed-forward module of ViG (paper Eq. 7), applied to every node.

    .. math:: Z = \mathrm{DropPath}\left(\sigma(Y W_1) W_2\right) + Y

    Args:
        channels (int): node feature size.
        hidden_channels (int, optional): hidden size. (default: :obj:`4 * channels`)
        act (str, optional): activation. (default: :obj:`"gelu"`)
        drop_path (float, optional): stochastic depth rate. (default: :obj:`0.`)
    """

    def __init__(self, channels: int, hidden_channels: int | None = None,
                 act: str | Callable | None = "gelu", drop_path: float = 0.0,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden_channels = hidden_channels or 4 * channels
        self.fc1 = _linear_bn(channels, hidden_channels, dd)
        self.act = get_act(act)
        self.fc2 = _linear_bn(hidden_channels, channels, dd)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None
                ) -> Tensor:
        if numerics.is_official() and numerics.current_graphs() is None:
            with numerics.graph_scope(*_uniform_graph_count(x, batch, layout)):
                return self.forward(x, batch, layout)
        shortcut = x
        x = self.fc2(self.act(self.fc1(x)))
        if batch is None and layout is not None and self.drop_path.p > 0 and self.training:
            batch = layout.batch(x.device)
        return self.drop_path(x, batch, None if layout is None else layout.num_graphs) + shortcut


class ViGBlock(nn.Module):
    """One ViG block: a :class:`Grapher` followed by an :class:`FFN`.

    Args:
        channels (int): node feature size.
        drop_path (float, optional): stochastic depth rate of both modules. (default: :obj:`0.`)
        act (str, optional): activation. (default: :obj:`"gelu"`)
        mlp_ratio (float, optional): FFN hidden size / ``channels``. (default: :obj:`4.`)
        **grapher_kwargs: forwarded to :class:`Grapher` (``k``, ``dilation``, ``conv``, ...).
    """

    def __init__(self, channels: int, drop_path: float = 0.0, act: str | Callable = "gelu",
                 mlp_ratio: float = 4.0, **grapher_kwargs):
        super().__init__()
        self.grapher = Grapher(channels, act=act, drop_path=drop_path, **grapher_kwargs)
        self.ffn = FFN(channels, int(channels * mlp_ratio), act=act, drop_path=drop_path)

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None,
                return_edge_index: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        x, edge_index = self.grapher(x, batch, layout, return_edge_index=True)
        x = self.ffn(x, batch, layout)
        return (x, edge_index) if return_edge_index else x
