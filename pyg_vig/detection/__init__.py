"""Detection and instance segmentation with pyramid ViG backbones (extra ``detection``).

torchvision's RetinaNet and Mask R-CNN on a ViG + FPN backbone, COCO-format datasets read with
pycocotools, ``torchvision.transforms.v2`` pipelines, COCO evaluation, and a small COCO-format
data set generated from the embedded Fashion-MNIST subset::

    from pyg_vig.detection import (CocoDetection, detection_transforms, make_canvases,
                                   retinanet_pvig_fpn)

    paths = make_canvases("canvases", n_train=64, n_val=16)
    train = CocoDetection(*paths["train"], transforms=detection_transforms(train=True))
    model = retinanet_pvig_fpn("pvig_s", num_classes=11, pretrained=True)

``import pyg_vig`` does not import this package, so torchvision and pycocotools are needed only
here (``pip install 'pyg-vig[detection]'``).
"""

try:
    import torchvision  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pyg_vig.detection requires torchvision (and pycocotools for COCO data and "
        "evaluation): pip install 'pyg-vig[detection]'"
    ) from e

from pyg_vig.detection.backbone import BATCH_NORM_MODES, ViGBackboneWithFPN, vig_fpn_backbone
from pyg_vig.detection.canvases import make_canvases
from pyg_vig.detection.data import CocoDetection, collate, detection_transforms, load_coco
from pyg_vig.detection.evaluate import (
    coco_from_targets,
    evaluate_coco,
    score_predictions,
    to_coco_results,
)
from pyg_vig.detection.models import maskrcnn_pvig_fpn, retinanet_pvig_fpn

__all__ = [
    "BATCH_NORM_MODES",
    "CocoDetection",
    "ViGBackboneWithFPN",
    "coco_from_targets",
    "collate",
    "detection_transforms",
    "evaluate_coco",
    "load_coco",
    "make_canvases",
    "maskrcnn_pvig_fpn",
    "retinanet_pvig_fpn",
    "score_predictions",
    "to_coco_results",
    "vig_fpn_backbone",
]
