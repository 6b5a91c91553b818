"""Official numerics: a model conversion that reproduces the official code's float32 results.

By default every layer runs node-major (``[N, C]`` GEMMs), the fast layout. Mathematically that
is the official model, but float32 sums come out in another order, so results differ from the
official code in the last bit or two. That is harmless except where two k-NN candidates are
within a few ulps of each other, when the neighbour choice can flip.

:func:`to_official_numerics` converts a model in place so that its Graphers, FFNs and graph
convolutions run as the official code runs them: channel-first ``Conv2d(1x1)`` on
``(B, C, H, W)`` / ``(B, C, N, 1)`` / ``(B, C, N, k)`` tensors, BatchNorm never folded, features
normalised along the channel axis of ``(B, C, N)``. oneDNN picks its summation order by tensor
shape, so the shapes matter for the last bit. The converted modules are subclasses of the
originals that share every parameter (the state dict does not change); only their ``forward``
differs. Every k-NN index and logit then equals the official fixtures bit for bit.

.. code-block:: python

    model = pyg_vig.nn.to_official_numerics(pyg_vig.create_model("pvig_s").eval())
    logits = model(images)      # the official float32 operation order (slower)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from pyg_vig.data.grid import GridLayout
from pyg_vig.nn.conv import EdgeConv, GINConv, MRConv, SAGEConv
from pyg_vig.nn.conv._utils import as_pair, interleave
from pyg_vig.nn.graph import KNNEdgeIndex, batched_sources, knn_index, regular_degree
from pyg_vig.nn.grapher import FFN, Grapher, _graph_assignment

__all__ = ["to_official_numerics", "register_official_twin"]


# --------------------------------------------------------------------------- channel-first ops
def _conv1x1(x: Tensor, lin: nn.Module, B: int, hw: tuple[int, int] | None, groups: int = 1
             ) -> Tensor:
    """``lin`` on nodes ``[B*n, C]`` or edges ``[B*n, k, C]`` as the official ``Conv2d(1x1)``.

    Node features run on ``(B, C, H, W)`` (``hw`` given: the image grid) or ``(B, C, n, 1)``,
    edge features on ``(B, C, n, k)``.
    """
    w = lin.weight.view(lin.weight.size(0), -1, 1, 1)
    if x.dim() == 2:
        n = x.size(0) // B
        h, wd = hw if hw is not None and hw[0] * hw[1] == n else (n, 1)
        img = rearrange(x, "(b h w) c -> b c h w", b=B, h=h, w=wd).contiguous()
        return rearrange(F.conv2d(img, w, lin.bias, groups=groups), "b c h w -> (b h w) c")
    img = rearrange(x, "(b n) k c -> b c n k", b=B).contiguous()
    return rearrange(F.conv2d(img, w, lin.bias, groups=groups), "b c n k -> (b n) k c")


def _linear_bn(seq: nn.Sequential, x: Tensor, B: int, hw: tuple[int, int] | None) -> Tensor:
    """A :class:`~pyg_vig.nn.linear.LinearBN` pair, unfolded, on the image grid."""
    return seq[1](_conv1x1(x, seq[0], B, hw))


def _update(seq: nn.Sequential, x: Tensor, B: int) -> Tensor:
    """A :class:`~pyg_vig.nn.MultiHeadUpdate` (grouped conv → BN → act), unfolded."""
    lin = seq[0]
    h = _conv1x1(x, lin, B, None, groups=lin.heads)
    shape = h.shape
    for m in list(seq)[1:]:
        h = m(h.reshape(-1, shape[-1]))
    return h.view(*shape[:-1], -1)


def _normalize(x: Tensor, B: int) -> Tensor:
    """L2-normalise ``[B*n, C]`` along C as the official code does on ``(B, C, n)``; the result
    is the ``(B, n, C)`` view of that channel-first tensor, whose strides the distance GEMM
    sees in the official code too.
    """
    xc = rearrange(x, "(b n) c -> b c n", b=B).contiguous()
    return F.normalize(xc, p=2.0, dim=1).transpose(1, 2)


def _neighbors(x_src: Tensor, edge_index: Tensor, N: int) -> tuple[Tensor, int]:
    k = regular_degree(edge_index)
    if k is None:
        raise ValueError("official numerics need the k-regular graph of knn_graph")
    # [N*k, C] -> (N, k, C)
    return rearrange(x_src.index_select(0, edge_index.as_tensor()[0]), "(n k) c -> n k c", k=k), k


# --------------------------------------------------------------------------- conv twins
class OfficialMRConv(MRConv):
    """:class:`~pyg_vig.nn.MRConv` in the official operation order."""

    def forward(self, x, edge_index, num_graphs: int) -> Tensor:
        x_src, x_dst = as_pair(x)
        x_j, _ = _neighbors(x_src, edge_index, x_dst.size(0))
        return _update(self.nn, interleave(x_dst, x_j.amax(dim=1) - x_dst), num_graphs)


class OfficialEdgeConv(EdgeConv):
    """:class:`~pyg_vig.nn.EdgeConv` in the official operation order (per-edge update)."""

    def forward(self, x, edge_index, num_graphs: int) -> Tensor:
        x_src, x_dst = as_pair(x)
        x_j, _ = _neighbors(x_src, edge_index, x_dst.size(0))
        x_i = x_dst.unsqueeze(1).expand_as(x_j)
        return _update(self.nn, torch.cat([x_i, x_j - x_i], dim=-1), num_graphs).amax(dim=1)


class OfficialGINConv(GINConv):
    """:class:`~pyg_vig.nn.GINConv` in the official operation order (sum on ``(B, C, N, k)``)."""

    def forward(self, x, edge_index, num_graphs: int) -> Tensor:
        x_src, x_dst = as_pair(x)
        x_j, _ = _neighbors(x_src, edge_index, x_dst.size(0))
        x_j = rearrange(x_j, "(b n) k c -> b c n k", b=num_graphs).contiguous()
        agg = rearrange(x_j.sum(-1), "b c n -> (b n) c")
        return _update(self.nn, (1 + self.eps) * x_dst + agg, num_graphs)


class OfficialSAGEConv(SAGEConv):
    """:class:`~pyg_vig.nn.SAGEConv` in the official operation order (per-edge ``nn1``)."""

    def forward(self, x, edge_index, num_graphs: int) -> Tensor:
        x_src, x_dst = as_pair(x)
        x_j, _ = _neighbors(x_src, edge_index, x_dst.size(0))
        m = _update(self.nn1, x_j, num_graphs).amax(dim=1)
        return _update(self.nn2, torch.cat([x_dst, m], dim=-1), num_graphs)


_CONV_TWINS = {MRConv: OfficialMRConv, EdgeConv: OfficialEdgeConv, GINConv: OfficialGINConv,
               SAGEConv: OfficialSAGEConv}


# --------------------------------------------------------------------------- block twins
def _uniform(x: Tensor, batch: Tensor | None, layout: GridLayout | None
             ) -> tuple[int, tuple[int, int] | None]:
    """``(number of graphs, grid)`` of a batch of equally sized graphs."""
    if layout is not None:
        if not layout.uniform:
            raise ValueError("official numerics need images of one size; run mixed sizes "
                             "separately or on the unconverted model")
        return layout.num_graphs, layout.grid
    if batch is None:
        return 1, None
    counts = torch.bincount(batch)
    if bool((counts != counts[0]).any()):
        raise ValueError("official numerics need graphs of equal size")
    return counts.numel(), None


class OfficialGrapher(Grapher):
    """:class:`~pyg_vig.nn.Grapher` in the official operation order."""

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None,
                return_edge_index: bool = False, *, edge_index: Tensor | None = None
                ) -> Tensor | tuple[Tensor, Tensor]:
        B, hw = _uniform(x, batch, layout)
        shortcut = x
        x = _linear_bn(self.fc1, x, B, hw)
        y, layout_y = self.keys(x, layout)
        if edge_index is None:
            # k-NN on the channel-first normalised features, batched as (B, n, C) views
            bias = None if layout is None else self.relative_bias(layout.grid, x.device,
                                                                  x.dtype)
            idx = knn_index(_normalize(x, B), None if y is None else _normalize(y, B), self.k,
                            dilation=self.dilation, bias=bias, epsilon=self.epsilon,
                            stochastic=self.stochastic and self.training, normalize=False,
                            backend=self.backend, official_order=True)
            keys = x if y is None else y
            edge_index = KNNEdgeIndex.from_sources(batched_sources(idx, keys.size(0) // B),
                                                   keys.size(0))
        elif regular_degree(edge_index) is None:
            raise ValueError(
                "a Grapher in the official operation order needs a k-regular, target-sorted "
                "KNNEdgeIndex as edge_index= (the official code only has k-NN graphs); run "
                "other graphs on a model that was not converted by to_official_numerics"
            )
        conv_in = x if y is None else (y, x)
        if type(self.graph_conv) in _CONV_TWINS.values():
            x = self.graph_conv(conv_in, edge_index, num_graphs=B)
        else:  # a foreign PyG conv has no official counterpart
            x = self.graph_conv(conv_in, edge_index)
        x = _linear_bn(self.fc2, x, B, hw)
        x = self.drop_path(x, *_graph_assignment(x, batch, layout, self.drop_path, self.training))
        x = x + shortcut
        return (x, edge_index) if return_edge_index else x


class OfficialFFN(FFN):
    """:class:`~pyg_vig.nn.FFN` in the official operation order."""

    def forward(self, x: Tensor, batch: Tensor | None = None, layout: GridLayout | None = None
                ) -> Tensor:
        B, hw = _uniform(x, batch, layout)
        shortcut = x
        x = _linear_bn(self.fc2, self.act(_linear_bn(self.fc1, x, B, hw)), B, hw)
        x = self.drop_path(x, *_graph_assignment(x, batch, layout, self.drop_path, self.training))
        return x + shortcut


_TWINS: dict[type, type] = {Grapher: OfficialGrapher, FFN: OfficialFFN, **_CONV_TWINS}


def register_official_twin(cls: type, twin: type) -> None:
    """Make :func:`to_official_numerics` turn modules of type ``cls`` into ``twin`` (a subclass
    of ``cls`` with no state of its own; it only changes the operation order).
    """
    if not (isinstance(twin, type) and issubclass(twin, cls)):
        raise TypeError(f"{twin!r} must be a subclass of {cls!r}")
    _TWINS[cls] = twin


def to_official_numerics(model: nn.Module) -> nn.Module:
    """Convert ``model`` in place to the official code's float32 operation order; returns it.

    Every :class:`~pyg_vig.nn.Grapher`, :class:`~pyg_vig.nn.FFN`, ViG graph convolution and
    convolution stem becomes its channel-first twin (a subclass sharing all parameters and
    buffers; the state dict is unchanged). The converted model only accepts batches of equally
    sized images, and is slower: use it to reproduce official results exactly, not for production.
    """
    for name, module in model.named_modules():
        _check_official(name or type(module).__name__, module)
    for module in model.modules():
        twin = _TWINS.get(type(module))
        if twin is not None:
            module.__class__ = twin
    return model


_OFFICIAL_AGGR = {MRConv: "max", EdgeConv: "max", SAGEConv: "max", GINConv: "add"}


def _check_official(name: str, module: nn.Module) -> None:
    """Refuse options the official operation order has no counterpart for (converting would
    silently change what the model computes).
    """
    what = None
    if isinstance(module, Grapher) and getattr(module, "graph_transform", None) is not None:
        what = "a graph_transform (the official graph is the plain k-NN graph)"
    elif type(module) in _OFFICIAL_AGGR:
        aggr = module.aggr
        if aggr == "sum":
            aggr = "add"
        if aggr != _OFFICIAL_AGGR[type(module)]:
            what = f"aggr={module.aggr!r} (the official {type(module).__name__} uses " \
                   f"{_OFFICIAL_AGGR[type(module)]!r})"
        elif module.flow != "source_to_target":
            what = f"flow={module.flow!r}"
        elif module.node_dim not in (0, -2):
            what = f"node_dim={module.node_dim}"
    if what is not None:
        raise ValueError(
            f"to_official_numerics: {name} uses {what}, which the official code does not have; "
            "the converted model would compute something else. Convert only models built with "
            "the official options, or keep this one in the default operation order."
        )
