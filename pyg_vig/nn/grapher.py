"""ViG building blocks on node features: Grapher, FFN and ViGBlock (paper §3.2, Eq. 6-7)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor
from torch_geometric import EdgeIndex

from pyg_vig.data.grid import GridLayout
from pyg_vig.nn.conv import CONVS
from pyg_vig.nn.drop import DropPath
from pyg_vig.nn.knn import (
    LowRankBias,
    _real_tensors,
    grid_knn_graph,
    knn_graph,
    resolve_backend,
)
from pyg_vig.nn.linear import LinearBN, can_fold, folded_linear_params, get_act
from pyg_vig.ops.rows import feed_forward

__all__ = ["Grapher", "FFN", "ViGBlock", "RELATIVE_POS_MODES"]

RELATIVE_POS_MODES = ("official", "geometric")


def _linear_bn(in_channels: int, out_channels: int, dd: dict) -> nn.Sequential:
    # Index 0 / 1 mirror the official Conv2d(1x1) / BatchNorm2d pair.
    return LinearBN(in_channels, out_channels, **dd)


def _table(mode: str, h: int, w: int, channels: int, reduction: int, device, dtype,
           native: tuple[int, int] | None = None) -> Tensor | LowRankBias:
    from pyg_vig.nn import pos_embed

    if mode == "geometric":
        # Factors, not a table: the k-NN builds the bias chunk by chunk (bounded memory) or
        # folds it into the features (KD-tree backends).
        q, kf = pos_embed.cached_relative_position_factors(h, w, channels, reduction,
                                                           device=device, dtype=dtype)
        return LowRankBias(q, kf)
    if native is not None:
        return pos_embed.cached_resampled_official_bias(*native, h, w, channels, reduction,
                                                        device=device, dtype=dtype)
    return pos_embed.cached_relative_position_bias(h, w, channels, reduction, mode,
                                                   device=device, dtype=dtype)


_GETTERS: dict[int, Callable] = {}


def _constant_getter(owner: int) -> Callable:
    """A table getter that :func:`torch.compile` calls once while tracing and keeps as a graph
    constant (``assume_constant_result``). Dynamo names the constant after the function, so
    every Grapher gets a getter of its own (made eagerly: dynamo cannot wrap one mid-trace).
    """
    getter = _GETTERS.get(owner)
    if getter is None:
        def getter(mode, h, w, channels, reduction, device, dtype, native_h=None, native_w=None):
            native = None if native_h is None else (native_h, native_w)
            table = _table(mode, h, w, channels, reduction, torch.device(device), dtype, native)
            return table.dense() if isinstance(table, LowRankBias) else table

        name = f"_relative_position_table_{owner}"
        getter.__name__ = getter.__qualname__ = name
        getter.__code__ = getter.__code__.replace(co_name=name, co_qualname=name)
        getter = _GETTERS[owner] = torch._dynamo.assume_constant_result(getter)
    return getter


def _graph_assignment(x: Tensor, batch: Tensor | None, layout: GridLayout | None,
                      drop_path: DropPath, training: bool) -> tuple[Tensor | None, int | None]:
    """``(batch, num_graphs)`` for per-graph stochastic depth (only built when it acts)."""
    if layout is None or drop_path.p == 0 or not training:
        return batch, None
    return (layout.batch(x.device) if batch is None else batch), layout.num_graphs


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
        relative_pos_grid ((int, int), optional): with ``"official"``, the query grid the table
            was made for (the model's training resolution): on any other grid that table is
            resampled bicubically to the new size, as the official Grapher's resize path does
            (cheap at detection sizes). :obj:`None` builds the table for the actual grid
            instead (an ``N x N`` Gram matrix per new size). (default: :obj:`None`)
        stochastic (bool, optional): random-subset dilation in training. (default: :obj:`False`)
        epsilon (float, optional): its probability. (default: :obj:`0.2`)
        drop_path (float, optional): stochastic depth rate. (default: :obj:`0.`)
        backend (str, optional): k-NN backend. (default: :obj:`"auto"`)
        graph_transform (callable, optional): applied to every k-NN graph this Grapher
            builds, before the convolution sees it, e.g. ``lambda ei: dropout_edge(ei, p=0.1,
            training=True)[0]`` (:func:`torch_geometric.utils.dropout_edge`); it receives and
            returns an ``edge_index`` (sources in row 0, targets in row 1). Graphs passed as
            ``edge_index=`` to :meth:`forward` are used as given. (default: :obj:`None`)
        fused (bool, optional): hand the convolution the :class:`~pyg_vig.nn.KNNEdgeIndex`
            of the k-NN graph, so PyG may take the conv's fused ``message_and_aggregate``; with
            :obj:`False` it gets a plain ``edge_index`` tensor and runs PyG's generic
            message → aggregate path (same result, slower; for comparisons). (default:
            :obj:`True`)
    """

    def __init__(self, channels: int, k: int = 9, dilation: int = 1,
                 conv: str | Callable[[int, int], nn.Module] = "mr", heads: int = 4,
                 act: str | Callable | None = "gelu", norm: bool = True, bias: bool = True,
                 reduction: int = 1, relative_pos: str | None = None, stochastic: bool = False,
                 epsilon: float = 0.2, drop_path: float = 0.0, backend: str = "auto",
                 fused: bool = True, graph_transform: Callable[[Tensor], Tensor] | None = None,
                 relative_pos_grid: tuple[int, int] | None = None, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if relative_pos is not None and relative_pos not in RELATIVE_POS_MODES:
            raise ValueError(
                f"relative_pos must be None or one of {RELATIVE_POS_MODES}, got {relative_pos!r}"
            )
        resolve_backend(backend)
        self.channels, self.k, self.dilation = channels, int(k), int(dilation)
        self.reduction, self.relative_pos = int(reduction), relative_pos
        if relative_pos_grid is not None:
            relative_pos_grid = (int(relative_pos_grid[0]), int(relative_pos_grid[1]))
        self.relative_pos_grid = relative_pos_grid if relative_pos == "official" else None
        self.stochastic, self.epsilon, self.backend = stochastic, float(epsilon), backend
        self.fused = bool(fused)
        if graph_transform is not None and not callable(graph_transform):
            raise TypeError(f"graph_transform must be a callable edge_index -> edge_index, got "
                            f"{type(graph_transform).__name__}")
        self.graph_transform = graph_transform
        if relative_pos is not None:
            _constant_getter(id(self))
        self.fc1 = _linear_bn(channels, channels, dd)
        if isinstance(conv, str):
            if conv not in CONVS:
                raise ValueError(f"unknown graph conv {conv!r}; choose one of {sorted(CONVS)} "
                                 "or pass a factory (in_channels, out_channels) -> conv")
            self.graph_conv = CONVS[conv](channels, 2 * channels, heads=heads, bias=bias,
                                          norm=norm, act=act)
        else:
            self.graph_conv = conv(channels, 2 * channels)
        self.fc2 = _linear_bn(2 * channels, channels, dd)
        self.drop_path = DropPath(drop_path)

    relative_pos_grid: tuple[int, int] | None = None  # default of Graphers pickled before it

    # ------------------------------------------------------------------ relative bias
    def relative_bias(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype
                      ) -> Tensor | LowRankBias | None:
        """The distance bias for a query grid of ``size``, in at least float32.

        Eagerly it comes from :data:`pyg_vig.nn.pos_embed.relative_position_cache`, shared by
        every Grapher of the same configuration and bounded in size. While :func:`torch.export`
        or :func:`torch.compile` traces, the table is built from real tensors once and becomes a
        constant of the traced program (never rebuilt per call, never a trace-time tensor in
        the eager cache).
        """
        if self.relative_pos is None:
            return None
        dtype = torch.promote_types(dtype, torch.float32)
        if torch.compiler.is_exporting():
            with _real_tensors():
                return self._build_bias(size, device, dtype)
        if torch.compiler.is_compiling():
            getter = _GETTERS.get(id(self))
            if getter is not None:  # always, unless the Grapher was unpickled
                return getter(self.relative_pos, *size, self.channels, self.reduction,
                              str(device), dtype, *(self.relative_pos_grid or (None, None)))
        return self._build_bias(size, device, dtype)

    def _build_bias(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype
                    ) -> Tensor | LowRankBias:
        return _table(self.relative_pos, *size, self.channels, self.reduction, device, dtype,
                      self.relative_pos_grid)

    # ------------------------------------------------------------------ forward
    def keys(self, x: Tensor, layout: GridLayout | None) -> tuple[Tensor | None, GridLayout | None]:
        """The key (source) nodes: ``r x r`` average-pooled grids, or ``None`` (keys are ``x``)."""
        if layout is None:
            if self.reduction > 1 or self.relative_pos is not None:
                raise ValueError(
                    "this Grapher uses key reduction or a relative positional bias, which need "
                    "the grid sizes: pass layout=GridLayout(...) (see pyg_vig.data)"
                )
            return None, None
        if self.reduction == 1:
            return None, layout
        return layout.avg_pool(x, self.reduction)

    def graph(self, x: Tensor, batch: Tensor | None, layout: GridLayout | None,
              y: Tensor | None, layout_y: GridLayout | None, normalize: bool = True) -> Tensor:
        """The dilated k-NN graph from keys ``y`` (or ``x``) to the nodes ``x``."""
        opts = dict(dilation=self.dilation, stochastic=self.stochastic and self.training,
                    epsilon=self.epsilon, normalize=normalize, backend=self.backend)
        if layout is None:
            edge_index = knn_graph(x, self.k, batch, loop=True, **opts)
        else:
            edge_index = grid_knn_graph(
                x, layout, self.k, y=y, layout_y=layout_y,
                bias_fn=lambda s: self.relative_bias(s, x.device, x.dtype), **opts)
        if self.graph_transform is not None:
            edge_index = self.graph_transform(edge_index)
        return edge_index

    def build_graph(self, x: Tensor, batch: Tensor | None = None,
                    layout: GridLayout | None = None) -> tuple[Tensor, Tensor | None]:
        """k-NN graph over ``x`` (the features after ``fc1``) → ``(edge_index, key features)``."""
        y, layout_y = self.keys(x, layout)
        return self.graph(x, batch, layout, y, layout_y), y

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None,
                return_edge_index: bool = False, *, edge_index: Tensor | None = None
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Args: ``x`` ``[N, C]``; ``batch`` ``[N]`` or ``layout`` (grid sizes) for images;
        ``edge_index``: run on this graph (keys to nodes) instead of building the k-NN graph,
        e.g. when an explainer masks its edges.
        """
        shortcut = x
        x = self.fc1(x)
        y, layout_y = self.keys(x, layout)
        if edge_index is None:
            edge_index = self.graph(x, batch, layout, y, layout_y)
        conv_graph = edge_index
        if not self.fused and isinstance(edge_index, EdgeIndex):
            conv_graph = edge_index.as_tensor()
        x = self.graph_conv(x if y is None else (y, x), conv_graph)
        x = self.fc2(x)
        x = self.drop_path(x, *_graph_assignment(x, batch, layout, self.drop_path, self.training))
        x = x + shortcut
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
        if not self.training and can_fold(self.fc1) and can_fold(self.fc2):
            # Inference: BatchNorm folded, activation fused, rows in cache-sized chunks.
            w1, b1 = folded_linear_params(self.fc1[0].weight, self.fc1[0].bias, self.fc1[1])
            w2, b2 = folded_linear_params(self.fc2[0].weight, self.fc2[0].bias, self.fc2[1])
            return feed_forward(x, w1, b1, self.act, w2, b2, shortcut=x)
        shortcut = x
        x = self.fc2(self.act(self.fc1(x)))
        x = self.drop_path(x, *_graph_assignment(x, batch, layout, self.drop_path, self.training))
        return x + shortcut


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
