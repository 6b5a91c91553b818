"""Pyramid ViG + feature pyramid network: a backbone for torchvision's detectors.

torchvision's ``BackboneWithFPN`` takes its maps from ``IntermediateLayerGetter``, which needs a
model made of sequential children; a ViG runs its stages on node features, so
:class:`ViGBackboneWithFPN` keeps the same contract (an ``out_channels`` attribute and an ordered
dict of maps) around ``create_model(..., features_only=True)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

__all__ = ["ViGBackboneWithFPN", "vig_fpn_backbone", "BATCH_NORM_MODES"]

# "frozen": statistics and affine parameters fixed (torchvision's FrozenBatchNorm2d, mmdet's
# norm_eval=True with frozen norm parameters); "train": ordinary BatchNorm; "sync": SyncBatchNorm.
BATCH_NORM_MODES = ("frozen", "train", "sync")


def _stage_parts(model: nn.Module) -> list[tuple[str, list[nn.Module | nn.Parameter]]]:
    """The freezable parts of a pyramid ViG, earliest first: the stem (with the position
    embedding added to its output), then ``stages.0``, ``stages.1``, ... (each stage holds the
    downsampling convolution in front of its blocks).
    """
    parts: list[tuple[str, list[nn.Module | nn.Parameter]]] = [
        ("stem", [model.stem, model.pos_embed])
    ]
    parts += [(f"stages.{i}", [stage]) for i, stage in enumerate(model.stages)]
    return parts


class ViGBackboneWithFPN(nn.Module):
    r"""A pyramid ViG body with an FPN on top (torchvision's ``BackboneWithFPN`` contract).

    ``forward(images)`` takes a batch ``(B, 3, H, W)`` (torchvision's detectors pad the images
    of a batch to one size) and returns an ordered dict of ``(B, out_channels, h, w)`` maps:
    ``"0"``, ``"1"``, ... for the returned stages (highest resolution first) and the names the
    extra block adds (``"pool"`` for torchvision's ``LastLevelMaxPool``, ``"p6"``, ``"p7"`` for
    ``LastLevelP6P7``).

    Build it with :func:`vig_fpn_backbone`.

    Attributes:
        body (FeatureExtractor): ``create_model(name, features_only=True, ...)``.
        fpn (FeaturePyramidNetwork): torchvision's FPN.
        out_channels (int): channels of every output map.
        pretrained_cfg (dict): the ViG's pretrained configuration (``mean``, ``std``, ...).
        strides (list of int): stride of every output map, extra levels included.
        trainable_stages (int): how many of the parts ``stem, stages.0, ..., stages.{n-1}``
            train, counted from the last stage.
        frozen_parts (list of str): the parts that do not train.
        batch_norm (str): ``"frozen"``, ``"train"`` or ``"sync"``.
    """

    def __init__(self, body: nn.Module, fpn: FeaturePyramidNetwork, out_channels: int,
                 strides: Sequence[int], trainable_stages: int, batch_norm: str):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels
        self.strides = list(strides)
        self.trainable_stages = trainable_stages
        self.batch_norm = batch_norm
        self.pretrained_cfg = dict(getattr(body.model, "pretrained_cfg", {}))
        # count from the unpruned model: feature_info keeps every stage after pruning
        n_frozen = max(len(body.model.feature_info) + 1 - trainable_stages, 0)
        parts = _stage_parts(body.model)[:n_frozen]
        self.frozen_parts = [name for name, _ in parts]
        for _, members in parts:
            for m in members:
                for p in ([m] if isinstance(m, nn.Parameter) else m.parameters()):
                    p.requires_grad_(False)
        if batch_norm == "frozen":
            for m in self._batch_norms():
                for p in m.parameters():
                    p.requires_grad_(False)
        self.train(self.training)

    def _batch_norms(self) -> list[nn.Module]:
        return [m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> ViGBackboneWithFPN:
        """Set the training mode; frozen parts (and, with ``batch_norm="frozen"``, every batch
        norm) stay in eval mode, so their statistics never move and drop-path is off there.
        """
        super().train(mode)
        if mode:
            for name in self.frozen_parts:
                target = (self.body.model.stem if name == "stem"
                          else self.body.model.get_submodule(name))
                target.eval()
            if self.batch_norm == "frozen":
                for m in self._batch_norms():
                    m.eval()
        return self

    @property
    def feature_names(self) -> list[str]:
        """Names of the maps of the returned stages (without the extra block's)."""
        return [str(i) for i in range(len(self.body.out_indices))]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)  # [(B, C_s, H/stride_s, W/stride_s)] per returned stage
        return self.fpn(OrderedDict(zip(self.feature_names, maps, strict=True)))


def vig_fpn_backbone(
    name: str = "pvig_s",
    *,
    trainable_stages: int | None = None,
    returned_stages: Sequence[int] = (1, 2, 3),
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | str | None = None,
    norm_layer: Callable[..., nn.Module] | None = None,
    batch_norm: str | None = None,
    **model_kwargs,
) -> ViGBackboneWithFPN:
    r"""A pyramid ViG with an FPN, ready for torchvision's detectors (as torchvision's
    ``resnet_fpn_backbone``).

    .. code-block:: python

        backbone = vig_fpn_backbone("pvig_s", pretrained=True)        # ImageNet-1k weights
        maps = backbone(torch.rand(2, 3, 320, 480))   # {"0": P3, "1": P4, "2": P5, "pool": P6}

    A *stage* is one of the model's pyramid stages ``stages.0`` ... ``stages.3`` (strides 4, 8,
    16, 32; each includes the downsampling convolution in front of its blocks); the *stem* (the
    convolutional stem and the position embedding) comes before them. ``trainable_stages=t``
    trains the last ``t`` of ``stem, stages.0, ..., stages.3``, as torchvision's
    ``trainable_layers`` counts ``conv1, layer1, ..., layer4``: 4 freezes the stem, 5 trains
    everything, 0 freezes the whole ViG (the FPN always trains). Frozen parts get
    ``requires_grad=False`` and stay in eval mode (no batch-norm updates, no drop-path). The
    default is 4 (every stage, not the stem) when ImageNet weights are loaded (``pretrained``
    or ``checkpoint``) and 5 (everything) for a randomly initialised ViG, as torchvision
    trains every layer of a backbone without weights.

    Batch norm (``batch_norm``): detection batches are small (2 images per GPU in the paper's
    recipe), so with loaded weights every batch norm of the ViG by default uses its stored
    statistics and its affine parameters do not train (``"frozen"``, what torchvision's
    ``FrozenBatchNorm2d`` does for pre-trained ResNets). A randomly initialised ViG needs batch
    statistics (its stored ones are 0 and 1, and features grow stage after stage without
    them), so without weights the default is ``"train"``: ordinary batch norm, as torchvision
    uses ``BatchNorm2d`` without weights. ``"sync"`` converts it to
    :class:`torch.nn.SyncBatchNorm` so that statistics are taken over all GPUs under DDP
    (``torchrun``; call it before wrapping the detector in ``DistributedDataParallel``).

    Args:
        name (str): a pyramid model of :func:`pyg_vig.list_models` (``"pvig_ti"``, ...).
        trainable_stages (int, optional): see above, 0 to ``num_stages + 1``.
            (default: 4 with weights, 5 without)
        returned_stages (sequence of int): stages whose maps feed the FPN, increasing.
            (default: :obj:`(1, 2, 3)`, strides 8-32, as torchvision's RetinaNet)
        out_channels (int): FPN channels. (default: :obj:`256`)
        extra_blocks (ExtraFPNBlock or str, optional): extra levels after the last one:
            a torchvision ``ExtraFPNBlock``, ``"maxpool"`` (``LastLevelMaxPool``, the default,
            as ``BackboneWithFPN``) or ``"p6p7"`` (``LastLevelP6P7`` on the last returned
            stage's map, as the paper's RetinaNet).
        norm_layer (callable, optional): normalisation inside the FPN (torchvision's
            ``BackboneWithFPN`` argument). (default: :obj:`None`)
        batch_norm (str, optional): ``"frozen"``, ``"train"`` or ``"sync"``.
            (default: ``"frozen"`` with weights, ``"train"`` without)
        **model_kwargs: passed to :func:`pyg_vig.create_model`: ``pretrained=True``,
            ``checkpoint=...``, ``pretrained_cfg_overlay=...`` (ImageNet weights), and model
            arguments such as ``drop_path_rate``, ``k`` or ``img_size``.

    Returns:
        ViGBackboneWithFPN: with ``out_channels``, ``strides`` and the ViG's ``pretrained_cfg``.
    """
    import pyg_vig
    from pyg_vig.models.features import feature_take_indices

    has_weights = bool(model_kwargs.get("pretrained")) or model_kwargs.get("checkpoint") is not None
    if batch_norm is None:
        batch_norm = "frozen" if has_weights else "train"
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(f"batch_norm must be one of {', '.join(map(repr, BATCH_NORM_MODES))}, "
                         f"got {batch_norm!r}")
    for key in ("features_only", "out_indices"):
        if key in model_kwargs:
            raise ValueError(f"{key} is set by vig_fpn_backbone; choose the stages with "
                             "returned_stages")
    if all(i >= 0 for i in returned_stages) and list(returned_stages) != sorted(
            set(returned_stages)):  # checked again below for negative indices
        raise ValueError(f"returned_stages must be increasing, got {tuple(returned_stages)}")
    body = pyg_vig.create_model(name, features_only=True, out_indices=tuple(returned_stages),
                                **model_kwargs)
    n_stages = len(body.model.feature_info)
    take, _ = feature_take_indices(n_stages, tuple(returned_stages))
    if any(b <= a for a, b in zip(take, take[1:], strict=False)):
        raise ValueError(f"returned_stages must be increasing, got {tuple(returned_stages)}")
    if trainable_stages is None:
        trainable_stages = n_stages if has_weights else n_stages + 1
    if not 0 <= trainable_stages <= n_stages + 1:
        raise ValueError(f"trainable_stages must be 0 to {n_stages + 1} (the stem and "
                         f"{n_stages} stages of {name}), got {trainable_stages}")
    channels = body.feature_info.channels()
    strides = body.feature_info.reduction()
    if extra_blocks is None or extra_blocks == "maxpool":
        extra_blocks, n_extra = LastLevelMaxPool(), 1
    elif extra_blocks == "p6p7":
        extra_blocks, n_extra = LastLevelP6P7(channels[-1], out_channels), 2
    elif isinstance(extra_blocks, ExtraFPNBlock):
        # the level count of a custom block is unknown: strides then lists the stages only
        n_extra = {LastLevelMaxPool: 1, LastLevelP6P7: 2}.get(type(extra_blocks), 0)
    else:
        raise ValueError(f"extra_blocks must be a torchvision ExtraFPNBlock, 'maxpool' or "
                         f"'p6p7', got {extra_blocks!r}")
    strides += [strides[-1] * 2 ** (i + 1) for i in range(n_extra)]
    if batch_norm == "sync":
        body = nn.SyncBatchNorm.convert_sync_batchnorm(body)
    fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra_blocks,
                                norm_layer=norm_layer)
    return ViGBackboneWithFPN(body, fpn, out_channels, strides, trainable_stages, batch_norm)
