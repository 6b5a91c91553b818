"""Pyramid Vision GNN (Pyramid ViG).

Paper: `"Vision GNN: An Image is Worth Graph of Nodes" <https://arxiv.org/abs/2206.00272>`_
(Han et al., NeurIPS 2022). Original code: https://github.com/huawei-noah/Efficient-AI-Backbones
(``vig_pytorch/pyramid_vig.py``). Modifications by the pyg_vig developers: node-major
representation with PyG message passing, any input resolution (position embedding resampled,
relative bias resampled from the training grid, as the official resize path), mixed-resolution
batches, feature-pyramid outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch_geometric.data import Batch

from pyg_vig.data.grid import GridLayout
from pyg_vig.models._base import ClassifierHead, ConvStem, ViGBase
from pyg_vig.models.features import feature_take_indices
from pyg_vig.models.vig import _make_graph
from pyg_vig.nn.grapher import ViGBlock

__all__ = ["PyramidViG", "Downsample", "PyramidStage"]


class Downsample(nn.Module):
    """3x3 stride-2 convolution + BatchNorm between pyramid stages (halves the grid)."""

    def __init__(self, in_channels: int, out_channels: int, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 2, 1, **dd),
                                  nn.BatchNorm2d(out_channels, **dd))

    def forward(self, x: Tensor, layout: GridLayout) -> tuple[Tensor, GridLayout]:
        return layout.apply_grid_op(x, self.conv)


class PyramidStage(nn.Module):
    """An optional :class:`Downsample` followed by ViG blocks at one resolution."""

    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, layout: GridLayout, run_block: Callable, edges: list | None
                ) -> tuple[Tensor, GridLayout]:
        if self.downsample is not None:
            x, layout = self.downsample(x, layout)
        for block in self.blocks:
            if edges is not None:
                x, ei = run_block(block, x, layout, True)
                edges.append((ei, layout.sizes))
            else:
                x = run_block(block, x, layout, False)
        return x, layout


class PyramidViG(ViGBase):
    r"""Pyramid ViG: 4 stages at strides 4/8/16/32 with key reduction and relative position bias.

    Args:
        in_chans (int): image channels. (default: :obj:`3`)
        num_classes (int): classes; 0 for a feature extractor. (default: :obj:`1000`)
        embed_dims (sequence of int): channels per stage. (default: :obj:`(48, 96, 240, 384)`)
        depths (sequence of int): blocks per stage. (default: :obj:`(2, 2, 6, 2)`)
        k (int): neighbours per node (constant). (default: :obj:`9`)
        conv (str or callable): graph conv name or PyG conv factory. (default: :obj:`"mr"`)
        heads (int): heads of the multi-head update. (default: :obj:`4`)
        act (str): activation. (default: :obj:`"gelu"`)
        norm (bool): BatchNorm inside graph convs. (default: :obj:`True`)
        bias (bool): biases inside graph convs. (default: :obj:`True`)
        reductions (sequence of int): key pooling ratio per stage. (default: :obj:`(4, 2, 1, 1)`)
        relative_pos (str, optional): ``"official"``, ``"geometric"`` or ``None``.
            (default: :obj:`"official"`)
        use_dilation (bool): dilated neighbourhoods (the official code always dilates).
        stochastic (bool): stochastic dilation in training. (default: :obj:`False`)
        epsilon (float): its probability. (default: :obj:`0.2`)
        drop_rate (float): dropout before the classifier. (default: :obj:`0.`)
        drop_path_rate (float): stochastic depth, linear over all blocks. (default: :obj:`0.`)
        img_size (int): training resolution; sets the position-embedding grid and the dilation
            cap. (default: :obj:`224`)
        stem_stride (int): stride of the stem (4 in the paper). (default: :obj:`4`)
        backend (str): k-NN backend. (default: :obj:`"auto"`)
        head_hidden (int): hidden width of the classifier. (default: :obj:`1024`)
        fused (bool): let graph convs take their fused path on the k-NN graph; :obj:`False`
            runs PyG's generic message → aggregate path (same model; for comparisons).
            (default: :obj:`True`)
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (48, 96, 240, 384),
                 depths: Sequence[int] = (2, 2, 6, 2), k: int = 9, conv: str | Callable = "mr",
                 heads: int = 4, act: str = "gelu", norm: bool = True, bias: bool = True,
                 reductions: Sequence[int] = (4, 2, 1, 1), relative_pos: str | None = "official",
                 use_dilation: bool = True, stochastic: bool = False, epsilon: float = 0.2,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, img_size: int = 224,
                 stem_stride: int = 4, backend: str = "auto", head_hidden: int = 1024,
                 global_pool: str = "avg", fused: bool = True, device=None, dtype=None):
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        if not (len(embed_dims) == len(depths) == len(reductions)):
            raise ValueError("embed_dims, depths and reductions need one entry per stage")
        dd = {"device": device, "dtype": dtype}
        self.in_chans, self.num_classes = in_chans, num_classes
        self.num_features = embed_dims[-1]
        self.head_hidden_size = head_hidden
        self.stem_stride, self.img_size = stem_stride, img_size
        self.reductions = tuple(int(r) for r in reductions)
        n_stages = len(depths)
        grid0 = img_size // stem_stride
        last_grid = grid0 // 2 ** (n_stages - 1)
        max_dilation = max(1, last_grid * last_grid // k)  # 49 // 9 = 5 at 224 (official)
        total = sum(depths)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, total)]
        self.stem = ConvStem(in_chans, embed_dims[0], stem_stride, act, **dd)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims[0], grid0, grid0, **dd))
        self.k = k
        self.dilations: list[int] = []
        stages, j = [], 0
        self.feature_info = []
        for s in range(n_stages):
            ds = Downsample(embed_dims[s - 1], embed_dims[s], **dd) if s > 0 else None
            blocks = []
            for _ in range(depths[s]):
                # The dilation counter runs over all blocks of all stages (official schedule).
                d = min(j // 4 + 1, max_dilation) if use_dilation else 1
                self.dilations.append(d)
                blocks.append(ViGBlock(
                    embed_dims[s], drop_path=dpr[j], act=act, k=k, dilation=d, conv=conv,
                    heads=heads, norm=norm, bias=bias, reduction=self.reductions[s],
                    relative_pos=relative_pos, stochastic=stochastic, epsilon=epsilon,
                    backend=backend, fused=fused,
                    relative_pos_grid=(grid0 // 2**s, grid0 // 2**s)))
                j += 1
            stages.append(PyramidStage(ds, blocks))
            self.feature_info.append(dict(num_chs=embed_dims[s], reduction=stem_stride * 2**s,
                                          module=f"stages.{s}"))
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(embed_dims[-1], num_classes, head_hidden, act, drop_rate, **dd)
        self.apply(self._init_weights)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)  # graph convs and blocks too

    # ------------------------------------------------------------------ checks
    def _stage_grids(self, h: int, w: int) -> list[tuple[int, int]]:
        gh, gw = -(-h // self.stem_stride), -(-w // self.stem_stride)
        grids = [(gh, gw)]
        for _ in range(1, len(self.stages)):
            gh, gw = -(-gh // 2), -(-gw // 2)
            grids.append((gh, gw))
        return grids

    def _fits(self, h: int, w: int) -> str | None:
        j = 0
        grids = self._stage_grids(h, w)
        for s, ((gh, gw), stage) in enumerate(zip(grids, self.stages, strict=True)):
            r = self.reductions[s]
            keys = (gh // r) * (gw // r)
            for _ in stage.blocks:
                need = self.k * self.dilations[j]
                if keys < need:
                    return (f"stage {s} gets a {gh}x{gw} grid with {keys} key nodes but needs "
                            f"{need} (k * dilation)")
                j += 1
        return None

    def min_input_size(self) -> int:
        """Smallest square input (multiple of the stem stride) that every stage accepts."""
        side = self.stem_stride
        while self._fits(side, side) is not None:
            side += self.stem_stride
        return side

    def _check_size(self, h: int, w: int) -> None:
        why = self._fits(h, w)
        if why is not None:
            m = self.min_input_size()
            raise ValueError(f"a {h}x{w} image is too small: {why}; the minimum input size is "
                             f"{m}x{m}")

    # ------------------------------------------------------------------ forward
    def forward_nodes(self, x: Tensor | Sequence[Tensor], return_edges: bool = False,
                      stage_outputs: bool = False):
        """Images → final node features, layout, ``[(edge_index, grid sizes)]`` per block and,
        with ``stage_outputs``, the ``(nodes, layout)`` after every stage.
        """
        images = self._check_input(x)
        x, layout = self._stem_nodes(images)
        edges: list | None = [] if return_edges else None
        outs = []
        for stage in self.stages:
            x, layout = stage(x, layout, self._run_block, edges)
            if stage_outputs:
                outs.append((x, layout))
        return x, layout, (edges or []), outs

    def forward_features(self, x: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Images → last-stage feature maps ``(B, C_3, H/32, W/32)`` (a list for mixed sizes)."""
        nodes, layout, _, _ = self.forward_nodes(x)
        return self._to_maps(nodes, layout)

    def forward_intermediates(self, x: Tensor | Sequence[Tensor],
                              indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Feature maps of the stages in ``indices`` (timm's ``forward_intermediates``).

        ``indices`` follows timm's ``feature_take_indices``: ``None`` = every stage, an int n =
        the last n stages, a sequence = those stages (negative counts from the end). ``norm``
        and ``stop_early`` are accepted for timm's API (there is no final norm; the head is
        separate, so every stage runs). Returns ``(final_features, [maps])`` or only the maps
        with ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (got {output_fmt!r})")
        take, _ = feature_take_indices(len(self.stages), indices)
        nodes, layout, _, outs = self.forward_nodes(x, stage_outputs=True)
        maps = [self._to_maps(*outs[i]) for i in take]
        maps = [m.contiguous() if isinstance(m, Tensor) else [t.contiguous() for t in m]
                for m in maps]
        if intermediates_only:
            return maps
        return self._to_maps(nodes, layout), maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one in ``indices`` (and the head) → kept indices.

        ``indices`` follows timm's ``feature_take_indices`` (an int n = the last n stages,
        negative indices count from the end); the returned indices are absolute.
        """
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: last + 1]
        if prune_head:
            self.reset_classifier(0)
            self.head = nn.Identity()  # type: ignore[assignment]
        return take

    def forward_graph(self, x: Tensor | Sequence[Tensor]) -> Batch:
        """Images → the last stage's patch graph as a PyG :class:`~torch_geometric.data.Batch`.

        Besides ``x``, ``pos``, ``batch``, ``grid_size`` and ``edge_index`` (last block), it
        carries ``edge_indices`` (every block) and ``edge_grids`` (each block's query grid sizes).
        With key reduction (r > 1) in the last stage, the pooled key nodes join each graph after
        its patch nodes (``node_type == 1``), so every ``Data`` of ``to_data_list()`` is a valid
        graph; in ``edge_indices`` a source indexes the pooled key grid of that block.
        """
        nodes, layout, edges, _ = self.forward_nodes(x, return_edges=True)
        return _make_graph(nodes, layout, [e for e, _ in edges], [g for _, g in edges],
                           reduction=self.reductions[len(self.stages) - 1])


# ---------------------------------------------------------------------------- registry
from pyg_vig.models._builder import build_model_with_cfg  # noqa: E402
from pyg_vig.models._registry import _cfg, generate_default_cfgs, register_model  # noqa: E402
from pyg_vig.models.official import convert_state_dict  # noqa: E402

# Release "pyramid-vig" of huawei-noah/Efficient-AI-Backbones; see docs/pretrained.md.
_PVIG_RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/pyramid-vig/"

default_cfgs = generate_default_cfgs({
    "pvig_ti_224_gelu.in1k": _cfg(url=_PVIG_RELEASE + "pvig_ti_78.5.pth.tar", top1=78.5),
    "pvig_s_224_gelu.in1k": _cfg(url=_PVIG_RELEASE + "pvig_s_82.1.pth.tar", top1=82.1),
    "pvig_m_224_gelu.in1k": _cfg(url=_PVIG_RELEASE + "pvig_m_83.1.pth.tar", top1=83.1),
    # ImageNet-21k pre-training (90 epochs), meant for fine-tuning. The class count of its
    # classifier is not documented upstream: 21841 (the full fall-2011 ImageNet-21k) is assumed,
    # and a file with another count rebuilds the classifier to match (see docs/pretrained.md).
    "pvig_m_224_gelu.in21k": _cfg(url=_PVIG_RELEASE + "pvig_m_im21k_90e.pth", num_classes=21841),
    "pvig_b_224_gelu.in1k": _cfg(url=_PVIG_RELEASE + "pvig_b_83.66.pth.tar", crop_pct=0.95,
                                 top1=83.66),
})


def _create_pvig(variant: str, pretrained: bool = False, **kwargs) -> PyramidViG:
    out_indices = kwargs.pop("out_indices", None)
    return build_model_with_cfg(PyramidViG, variant, pretrained,
                                pretrained_filter_fn=convert_state_dict,
                                feature_cfg=dict(out_indices=out_indices), **kwargs)


@register_model("pvig_ti", aliases=("pvig_ti_224_gelu",))
def pvig_ti(pretrained: bool = False, **kwargs) -> PyramidViG:
    """Pyramid ViG-Ti (10.7M learnable parameters, 1.7 GMACs at 224²)."""
    model_args = dict(embed_dims=(48, 96, 240, 384), depths=(2, 2, 6, 2))
    return _create_pvig("pvig_ti", pretrained, **dict(model_args, **kwargs))


@register_model("pvig_s", aliases=("pvig_s_224_gelu",))
def pvig_s(pretrained: bool = False, **kwargs) -> PyramidViG:
    """Pyramid ViG-S (27.3M learnable parameters, 4.6 GMACs at 224²)."""
    model_args = dict(embed_dims=(80, 160, 400, 640), depths=(2, 2, 6, 2))
    return _create_pvig("pvig_s", pretrained, **dict(model_args, **kwargs))


@register_model("pvig_m", aliases=("pvig_m_224_gelu",))
def pvig_m(pretrained: bool = False, **kwargs) -> PyramidViG:
    """Pyramid ViG-M (49.5M learnable parameters, 8.9 GMACs at 224²)."""
    model_args = dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 16, 2))
    return _create_pvig("pvig_m", pretrained, **dict(model_args, **kwargs))


@register_model("pvig_b", aliases=("pvig_b_224_gelu",))
def pvig_b(pretrained: bool = False, **kwargs) -> PyramidViG:
    """Pyramid ViG-B (93.0M learnable parameters, 16.8 GMACs at 224²)."""
    model_args = dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2))
    return _create_pvig("pvig_b", pretrained, **dict(model_args, **kwargs))


@register_model("pvig_mini", cfg=dict(input_size=(1, 28, 28), num_classes=10, mean=(0.5,),
                                      std=(0.5,), crop_pct=1.0, interpolation="bilinear"))
def pvig_mini(pretrained: bool = False, **kwargs) -> PyramidViG:
    """A small 3-stage pyramid ViG for 28-64 px images (grids 14², 7², 4² at 28 px)."""
    defaults = dict(embed_dims=(32, 64, 128), depths=(2, 2, 2), reductions=(2, 1, 1),
                    stem_stride=2, img_size=28, in_chans=1, head_hidden=256)
    return _create_pvig("pvig_mini", pretrained, **dict(defaults, **kwargs))
