"""Isotropic Vision GNN (ViG).

Paper: `"Vision GNN: An Image is Worth Graph of Nodes" <https://arxiv.org/abs/2206.00272>`_
(Han et al., NeurIPS 2022). Original code: https://github.com/huawei-noah/Efficient-AI-Backbones
(``vig_pytorch``, Apache-2.0 / MIT). Modifications by the pyg_vig developers: node-major (graph
first) representation with PyG message passing, any input resolution, mixed-resolution batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_vig.data.grid import GridLayout
from pyg_vig.models._base import ClassifierHead, ConvStem, ViGBase
from pyg_vig.nn.grapher import ViGBlock

__all__ = ["ViG", "isotropic_schedule"]


def isotropic_schedule(depth: int, k: int, num_nodes: int, use_dilation: bool = True
                       ) -> tuple[list[int], list[int]]:
    """Per-block neighbours and dilation of isotropic ViG.

    ``k`` grows linearly from ``k`` to ``2k`` (float32 ``linspace`` truncated to int, as the
    official code does) and the dilation is ``min(i // 4 + 1, num_nodes // max(k_i))``.
    """
    ks = [int(v) for v in torch.linspace(k, 2 * k, depth)]
    max_dilation = max(1, num_nodes // max(ks))
    ds = [min(i // 4 + 1, max_dilation) if use_dilation else 1 for i in range(depth)]
    return ks, ds


class ViG(ViGBase):
    r"""Isotropic ViG: a stride-16 conv stem, ``depth`` ViG blocks at one width, a classifier.

    Args:
        in_chans (int): image channels. (default: :obj:`3`)
        num_classes (int): classes; 0 for a feature extractor. (default: :obj:`1000`)
        embed_dim (int): node feature size :math:`D`. (default: :obj:`192`)
        depth (int): number of blocks. (default: :obj:`12`)
        k (int): neighbours of the first block; grows to ``2k``. (default: :obj:`9`)
        conv (str or callable): graph conv, ``"mr"``, ``"edge"``, ``"gin"``, ``"sage"`` or a
            PyG conv factory ``(in, out) -> MessagePassing``. (default: :obj:`"mr"`)
        heads (int): heads of the multi-head update. (default: :obj:`4`)
        act (str): activation. (default: :obj:`"gelu"`)
        norm (bool): BatchNorm inside graph convs. (default: :obj:`True`)
        bias (bool): biases inside graph convs. (default: :obj:`True`)
        use_dilation (bool): dilated neighbourhoods. (default: :obj:`True`)
        stochastic (bool): stochastic dilation in training. (default: :obj:`False`)
        epsilon (float): its probability. (default: :obj:`0.2`)
        drop_rate (float): dropout before the classifier. (default: :obj:`0.`)
        drop_path_rate (float): stochastic depth, linear over blocks. (default: :obj:`0.`)
        img_size (int): training resolution, sets the position-embedding grid. (default: 224)
        stem_stride (int): stem stride (patch size). (default: :obj:`16`)
        relative_pos (str, optional): relative positional bias mode (none in the paper).
        backend (str): k-NN backend. (default: :obj:`"auto"`)
        head_hidden (int): hidden width of the classifier. (default: :obj:`1024`)
        fused (bool): let graph convs take their fused path on the k-NN graph; :obj:`False`
            runs PyG's generic message → aggregate path (same model; for comparisons).
            (default: :obj:`True`)
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 192,
                 depth: int = 12, k: int = 9, conv: str | Callable = "mr", heads: int = 4,
                 act: str = "gelu", norm: bool = True, bias: bool = True,
                 use_dilation: bool = True, stochastic: bool = False, epsilon: float = 0.2,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, img_size: int = 224,
                 stem_stride: int = 16, relative_pos: str | None = None, backend: str = "auto",
                 head_hidden: int = 1024, global_pool: str = "avg", fused: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        dd = {"device": device, "dtype": dtype}
        self.in_chans, self.num_classes = in_chans, num_classes
        self.num_features = embed_dim
        self.head_hidden_size = head_hidden
        self.stem_stride, self.img_size = stem_stride, img_size
        grid = img_size // stem_stride
        self.stem = ConvStem(in_chans, embed_dim, stem_stride, act, **dd)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid, **dd))
        self.ks, self.dilations = isotropic_schedule(depth, k, grid * grid, use_dilation)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            ViGBlock(embed_dim, drop_path=dpr[i], act=act, k=self.ks[i],
                     dilation=self.dilations[i], conv=conv, heads=heads, norm=norm, bias=bias,
                     stochastic=stochastic, epsilon=epsilon, relative_pos=relative_pos,
                     backend=backend, fused=fused)
            for i in range(depth)
        ])
        self.head = ClassifierHead(embed_dim, num_classes, head_hidden, act, drop_rate, **dd)
        self.feature_info = [dict(num_chs=embed_dim, reduction=stem_stride,
                                  module=f"blocks.{depth - 1}")]
        self.apply(self._init_weights)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)  # graph convs and blocks too

    # ------------------------------------------------------------------ checks
    def min_input_size(self) -> int:
        """Smallest square input whose node grid offers ``k * dilation`` candidates everywhere."""
        need = max(k * d for k, d in zip(self.ks, self.dilations, strict=False))
        side = 1
        while side * side < need:
            side += 1
        return side * self.stem_stride

    def _check_size(self, h: int, w: int) -> None:
        gh, gw = -(-h // self.stem_stride), -(-w // self.stem_stride)  # ceil: stride-2 convs pad
        need = max(k * d for k, d in zip(self.ks, self.dilations, strict=False))
        if gh * gw < need:
            m = self.min_input_size()
            raise ValueError(
                f"a {h}x{w} image gives a {gh}x{gw} node grid ({gh * gw} nodes) but the blocks "
                f"need {need} candidates (k * dilation); the minimum input size is {m}x{m}"
            )

    # ------------------------------------------------------------------ forward
    def forward_nodes(self, x: Tensor | Sequence[Tensor], return_edges: bool = False
                      ) -> tuple[Tensor, GridLayout, list[Tensor]]:
        """Images → final node features ``[N, C]``, their grid layout and (optionally) every
        block's ``edge_index``.
        """
        images = self._check_input(x)
        x, layout = self._stem_nodes(images)
        edges: list[Tensor] = []
        for block in self.blocks:
            if return_edges:
                x, ei = self._run_block(block, x, layout, True)
                edges.append(ei)
            else:
                x = self._run_block(block, x, layout, False)
        return x, layout, edges

    def forward_features(self, x: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Images → feature maps ``(B, C, H/16, W/16)`` (a list for mixed sizes)."""
        nodes, layout, _ = self.forward_nodes(x)
        return self._to_maps(nodes, layout)

    def forward_graph(self, x: Tensor | Sequence[Tensor]) -> Batch:
        """Images → the patch graph as a PyG :class:`~torch_geometric.data.Batch`.

        ``x`` holds the final node features, ``pos`` the grid positions, ``batch``/``ptr`` the
        graph assignment, ``grid_size`` the node grid of each image and ``edge_index`` the last
        block's k-NN graph; ``edge_indices`` and ``edge_grids`` list every block's graph and node
        grid (sizes per image) for visualisation.
        """
        nodes, layout, edges = self.forward_nodes(x, return_edges=True)
        return _make_graph(nodes, layout, edges, [layout.sizes] * len(edges))


def _make_graph(nodes: Tensor, layout: GridLayout, edges: list[Tensor],
                grids: list[list[tuple[int, int]]], reduction: int = 1) -> Batch:
    """The last block's graph as a :class:`~torch_geometric.data.Batch` of valid graphs.

    With key reduction (``reduction > 1``) the last block's sources are pooled key nodes. They
    join every graph after its patch nodes (``node_type`` 1; ``x`` the ``r x r`` average of the
    final patch features over the key's cell, ``pos`` the cell centre in patch coordinates), so
    each ``Data`` of ``to_data_list()`` holds its own keys and ``0 <= edge_index < num_nodes``.
    """
    device = nodes.device
    pos = layout.pos(device).to(nodes.dtype)
    keys, key_layout = layout.avg_pool(nodes, reduction)
    # Centre of cell (i, j) of an r x r pooling, in patch-grid coordinates.
    key_pos = key_layout.pos(device).to(nodes.dtype) * reduction + (reduction - 1) / 2
    last = edges[-1].as_tensor() if edges else None
    k = last.size(1) // nodes.size(0) if last is not None and nodes.size(0) else 0
    ptr, key_ptr = layout.ptr, key_layout.ptr
    data_list = []
    for g, (h, w) in enumerate(layout.sizes):
        a, b = ptr[g], ptr[g + 1]
        n = b - a
        d = Data(x=nodes[a:b], pos=pos[a:b], grid_size=torch.tensor([[h, w]], device=device),
                 node_type=torch.zeros(n, dtype=torch.long, device=device))
        if reduction > 1:
            ka, kb = key_ptr[g], key_ptr[g + 1]
            d.x = torch.cat([d.x, keys[ka:kb]], dim=0)
            d.pos = torch.cat([d.pos, key_pos[ka:kb]], dim=0)
            d.node_type = torch.cat([d.node_type, d.node_type.new_ones(kb - ka)])
        if last is not None and k > 0:
            src, dst = last[:, a * k : b * k]
            # local indices: keys (when pooled) come after the n patch nodes of this graph
            src = src - key_ptr[g] + n if reduction > 1 else src - a
            d.edge_index = torch.stack([src, dst - a], dim=0)
        data_list.append(d)
    batch = Batch.from_data_list(data_list)
    # Every block's graph with global indices (targets: that block's nodes, sources: its keys).
    batch.edge_indices = edges
    batch.edge_grids = grids
    return batch


# ---------------------------------------------------------------------------- registry
from pyg_vig.models._builder import build_model_with_cfg  # noqa: E402
from pyg_vig.models._registry import _cfg, generate_default_cfgs, register_model  # noqa: E402
from pyg_vig.models.official import convert_state_dict  # noqa: E402

# Release "vig" of huawei-noah/Efficient-AI-Backbones (the file names carry the accuracy measured
# on the released weights; the paper's table says 73.9 / 80.4 / 82.3). See docs/pretrained.md.
_VIG_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/vig/"

default_cfgs = generate_default_cfgs({
    "vig_ti_224_gelu.in1k": _cfg(url=_VIG_RELEASE + "vig_ti_74.5.pth", top1=74.5),
    "vig_s_224_gelu.in1k": _cfg(url=_VIG_RELEASE + "vig_s_80.6.pth", top1=80.6),
    "vig_b_224_gelu.in1k": _cfg(url=_VIG_RELEASE + "vig_b_82.6.pth", top1=82.6),
})


def _create_vig(variant: str, pretrained: bool = False, **kwargs) -> ViG:
    if kwargs.get("features_only"):
        raise RuntimeError(f"features_only is not supported for {variant}: an isotropic ViG has "
                           "a single resolution, no feature pyramid; use a pvig_* model")
    kwargs.pop("out_indices", None)
    return build_model_with_cfg(ViG, variant, pretrained,
                                pretrained_filter_fn=convert_state_dict, **kwargs)


@register_model("vig_ti", aliases=("vig_ti_224_gelu",))
def vig_ti(pretrained: bool = False, **kwargs) -> ViG:
    """ViG-Ti: 12 blocks of width 192 (7.2M parameters, 1.3 GMACs at 224²)."""
    model_args = dict(embed_dim=192, depth=12)
    return _create_vig("vig_ti", pretrained, **dict(model_args, **kwargs))


@register_model("vig_s", aliases=("vig_s_224_gelu",))
def vig_s(pretrained: bool = False, **kwargs) -> ViG:
    """ViG-S: 16 blocks of width 320 (22.7M parameters, 4.5 GMACs at 224²)."""
    model_args = dict(embed_dim=320, depth=16)
    return _create_vig("vig_s", pretrained, **dict(model_args, **kwargs))


@register_model("vig_b", aliases=("vig_b_224_gelu",))
def vig_b(pretrained: bool = False, **kwargs) -> ViG:
    """ViG-B: 16 blocks of width 640 (86.8M parameters, 17.7 GMACs at 224²)."""
    model_args = dict(embed_dim=640, depth=16)
    return _create_vig("vig_b", pretrained, **dict(model_args, **kwargs))


@register_model("vig_mini", cfg=dict(input_size=(1, 28, 28), num_classes=10, mean=(0.5,),
                                     std=(0.5,), crop_pct=1.0, interpolation="bilinear"))
def vig_mini(pretrained: bool = False, **kwargs) -> ViG:
    """A small isotropic ViG for 28-64 px images (stride-4 stem: a 7x7 node grid at 28 px)."""
    defaults = dict(embed_dim=96, depth=6, k=9, stem_stride=4, img_size=28, in_chans=1,
                    head_hidden=256)
    return _create_vig("vig_mini", pretrained, **dict(defaults, **kwargs))
