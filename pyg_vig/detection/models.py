"""torchvision's RetinaNet and Mask R-CNN on a pyramid ViG + FPN (the paper's Table 10 setups).

Labels follow torchvision: a target's ``labels`` are the category ids themselves (COCO ids
1-90 for COCO), ``num_classes`` must exceed the largest id, and for Mask R-CNN label 0 is the
background (so COCO's 80 categories need ``num_classes=91``, as torchvision's COCO models).
"""

from __future__ import annotations

import inspect

from torchvision.models.detection import MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from pyg_vig.detection.backbone import ViGBackboneWithFPN, vig_fpn_backbone

__all__ = ["retinanet_pvig_fpn", "maskrcnn_pvig_fpn", "split_detector_kwargs"]


def split_detector_kwargs(detector_cls: type, kwargs: dict) -> tuple[dict, dict]:
    """Split ``kwargs`` into (detector arguments, backbone arguments).

    A keyword the torchvision detector (or its ``GeneralizedRCNNTransform``) names in its
    signature goes to the detector (``min_size``, ``max_size``, ``score_thresh``, ...); every
    other keyword goes to :func:`vig_fpn_backbone` (``pretrained``, ``checkpoint``,
    ``trainable_stages``, model arguments), which rejects unknown ones by name.
    """
    names: set[str] = set()
    for cls in (detector_cls, FasterRCNN if detector_cls is MaskRCNN else detector_cls,
                GeneralizedRCNNTransform):
        names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD}
    names -= {"self", "backbone", "num_classes"}
    detector = {k: v for k, v in kwargs.items() if k in names}
    backbone = {k: v for k, v in kwargs.items() if k not in names}
    return detector, backbone


def _image_stats(backbone: ViGBackboneWithFPN, detector_kwargs: dict) -> None:
    """Normalise images as the ViG was pre-trained (``pretrained_cfg`` ``mean``/``std``)."""
    cfg = backbone.pretrained_cfg
    detector_kwargs.setdefault("image_mean", list(cfg.get("mean", (0.5, 0.5, 0.5))))
    detector_kwargs.setdefault("image_std", list(cfg.get("std", (0.5, 0.5, 0.5))))


def _check_levels(backbone: ViGBackboneWithFPN, what: str) -> None:
    if len(backbone.strides) == len(backbone.feature_names):
        raise ValueError(f"the backbone's custom extra_blocks add an unknown number of levels: "
                         f"pass {what} for every level")


def retinanet_pvig_fpn(name: str = "pvig_s", *, num_classes: int = 91, **kwargs) -> RetinaNet:
    r"""RetinaNet with a pyramid ViG + FPN backbone (P3-P7, as torchvision's
    ``retinanet_resnet50_fpn`` and the paper's RetinaNet).

    .. code-block:: python

        model = retinanet_pvig_fpn("pvig_s", num_classes=91, pretrained=True)
        losses = model(images, targets)          # train mode: dict of losses
        detections = model.eval()(images)        # boxes in the input images' coordinates

    Stages 1-3 (strides 8, 16, 32) feed the FPN; ``LastLevelP6P7`` adds P6 and P7 from the
    last stage's map (mmdetection's ``add_extra_convs="on_input"``). Anchors: three octave
    scales of ``4 * stride`` (32 to 512 px over P3-P7) and ratios 0.5, 1, 2 per level.
    Images are normalised with the ViG's ``pretrained_cfg`` mean and std.

    Args:
        name (str): pyramid ViG (``"pvig_ti"``, ``"pvig_s"``, ...). (default: :obj:`"pvig_s"`)
        num_classes (int): larger than the largest category id. (default: :obj:`91`, COCO)
        **kwargs: torchvision ``RetinaNet`` arguments (``min_size``, ``max_size``,
            ``score_thresh``, ``anchor_generator``, ...) go to the detector; everything else
            (``pretrained``, ``checkpoint``, ``trainable_stages``, ``returned_stages``,
            ``batch_norm``, model arguments) to :func:`vig_fpn_backbone`.
    """
    detector_kwargs, backbone_kwargs = split_detector_kwargs(RetinaNet, kwargs)
    backbone_kwargs.setdefault("returned_stages", (1, 2, 3))
    backbone_kwargs.setdefault("extra_blocks", "p6p7")
    backbone = vig_fpn_backbone(name, **backbone_kwargs)
    _image_stats(backbone, detector_kwargs)
    if "anchor_generator" not in detector_kwargs:
        _check_levels(backbone, "anchor_generator")
        sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3)))
                      for s in backbone.strides)
        detector_kwargs["anchor_generator"] = AnchorGenerator(
            sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, num_classes, **detector_kwargs)


def maskrcnn_pvig_fpn(name: str = "pvig_s", *, num_classes: int = 91, **kwargs) -> MaskRCNN:
    r"""Mask R-CNN with a pyramid ViG + FPN backbone (P2-P6, as torchvision's
    ``maskrcnn_resnet50_fpn`` and the paper's Mask R-CNN).

    .. code-block:: python

        model = maskrcnn_pvig_fpn("pvig_s", num_classes=91, pretrained=True)

    All four stages (strides 4-32) feed the FPN and ``LastLevelMaxPool`` adds P6 (used by the
    RPN only). RPN anchors: ``8 * stride`` (32 to 512 px over P2-P6), ratios 0.5, 1, 2. The box
    and mask heads pool from the stage levels with ``MultiScaleRoIAlign`` (7x7 and 14x14).
    Label 0 is the background; images are normalised with the ViG's ``pretrained_cfg``.

    Args:
        name (str): pyramid ViG. (default: :obj:`"pvig_s"`)
        num_classes (int): larger than the largest category id, background included.
            (default: :obj:`91`, COCO)
        **kwargs: torchvision ``MaskRCNN`` / ``FasterRCNN`` arguments (``min_size``,
            ``box_score_thresh``, ``rpn_anchor_generator``, ...) go to the detector; everything
            else to :func:`vig_fpn_backbone`.
    """
    detector_kwargs, backbone_kwargs = split_detector_kwargs(MaskRCNN, kwargs)
    backbone_kwargs.setdefault("returned_stages", (0, 1, 2, 3))
    backbone_kwargs.setdefault("extra_blocks", "maxpool")
    backbone = vig_fpn_backbone(name, **backbone_kwargs)
    _image_stats(backbone, detector_kwargs)
    if "rpn_anchor_generator" not in detector_kwargs:
        _check_levels(backbone, "rpn_anchor_generator")
        sizes = tuple((8 * s,) for s in backbone.strides)
        detector_kwargs["rpn_anchor_generator"] = AnchorGenerator(
            sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    names = backbone.feature_names
    detector_kwargs.setdefault("box_roi_pool", MultiScaleRoIAlign(names, 7, 2))
    detector_kwargs.setdefault("mask_roi_pool", MultiScaleRoIAlign(names, 14, 2))
    return MaskRCNN(backbone, num_classes, **detector_kwargs)
