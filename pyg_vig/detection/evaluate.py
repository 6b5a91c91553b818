"""COCO box and mask mAP of torchvision detectors with pycocotools' ``COCOeval``."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pyg_vig.detection.data import _require_pycocotools, collate

__all__ = ["evaluate_coco", "score_predictions", "to_coco_results", "coco_from_targets"]

IOU_TYPES = ("bbox", "segm")
# names of COCOeval.stats[0:9] (AP at IoU 0.5:0.95, 0.5, 0.75, per object size; AR at 1/10/100)
_STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
               "AR1", "AR10", "AR100")


def _encode_masks(masks: Tensor) -> list[dict]:
    """Binary masks ``[N, H, W]`` -> COCO RLE dicts with ``counts`` as str (json-ready)."""
    from pycocotools import mask as mask_utils

    arr = np.asfortranarray(masks.to(torch.uint8).cpu().numpy().transpose(1, 2, 0))
    rles = mask_utils.encode(arr) if len(masks) else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def to_coco_results(outputs: Sequence[dict], image_ids: Sequence[int], *,
                    mask_threshold: float = 0.5) -> list[dict]:
    """Detections of a torchvision detector -> the COCO results list (``bbox`` as ``[x, y, w, h]``).

    Args:
        outputs (list of dict): per image ``boxes`` (XYXY), ``labels``, ``scores`` and
            optionally ``masks`` (``[N, 1, H, W]`` probabilities, as Mask R-CNN returns them).
        image_ids (list of int): the COCO image id of every output.
        mask_threshold (float): probability above which a mask pixel is in. (default: 0.5)
    """
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores, labels = out["scores"].tolist(), out["labels"].tolist()
        segs = None
        if "masks" in out:
            m = out["masks"]
            m = m[:, 0] if m.dim() == 4 else m  # (N, 1, H, W) -> (N, H, W)
            segs = _encode_masks(m > mask_threshold if m.is_floating_point() else m.bool())
        for j in range(len(scores)):
            r = {"image_id": int(image_id), "category_id": int(labels[j]),
                 "bbox": [round(v, 3) for v in xywh[j]], "score": float(scores[j])}
            if segs is not None:
                r["segmentation"] = segs[j]
            results.append(r)
    return results


def coco_from_targets(targets: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                      categories: Iterable[int] | None = None):
    """A ``pycocotools`` ``COCO`` ground truth built from torchvision-style targets.

    For data sets that are not :class:`CocoDetection`: every target needs ``boxes`` (XYXY),
    ``labels`` and ``image_id``; ``masks`` (``[N, H, W]``) become RLE segmentations.
    ``image_sizes`` are the ``(H, W)`` of the images.
    """
    COCO = _require_pycocotools()
    images, anns = [], []
    seen: set[int] = set()
    for t, (H, W) in zip(targets, image_sizes, strict=True):
        image_id = int(t["image_id"])
        images.append({"id": image_id, "width": int(W), "height": int(H)})
        boxes = t["boxes"].float().cpu()
        segs = _encode_masks(t["masks"].bool()) if "masks" in t else None
        for j, (box, label) in enumerate(zip(boxes.tolist(), t["labels"].tolist(), strict=True)):
            w, h = box[2] - box[0], box[3] - box[1]
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(label),
                   "bbox": [box[0], box[1], w, h], "iscrowd": 0,
                   "area": float(t["masks"][j].sum()) if segs is not None else w * h}
            if segs is not None:
                ann["segmentation"] = segs[j]
            anns.append(ann)
            seen.add(int(label))
    cats = sorted(set(categories) if categories is not None else seen)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": int(c), "name": str(c)} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def score_predictions(coco_gt, results: Sequence[dict], iou_types: Sequence[str] = ("bbox",),
                      image_ids: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """Score a COCO results list against a ground truth with ``COCOeval``.

    .. code-block:: python

        scores = score_predictions(dataset.coco, results, ("bbox", "segm"))
        scores["bbox"]["mAP"], scores["bbox"]["mAP50"]

    Args:
        coco_gt (pycocotools.coco.COCO): the ground truth (:attr:`CocoDetection.coco`).
        results (list of dict): ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``,
            ``score`` (and ``segmentation`` as RLE for ``"segm"``), as :func:`to_coco_results`.
        iou_types (sequence of str): ``"bbox"`` and/or ``"segm"``.
        image_ids (sequence of int, optional): evaluate these images only (default: every
            image of ``coco_gt``).

    Returns:
        dict: per IoU type ``mAP`` (IoU 0.50:0.95), ``mAP50``, ``mAP75``, ``mAP_small``,
        ``mAP_medium``, ``mAP_large``, ``AR1``, ``AR10``, ``AR100``: COCOeval's ``stats``, in
        ``[0, 1]``; ``-1`` where the ground truth has no object of that size (COCO's
        convention). An empty results list scores 0.
    """
    from pycocotools.cocoeval import COCOeval

    scores: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_types must be among {IOU_TYPES}, got {iou_type!r}")
        if iou_type == "segm" and any("segmentation" not in r for r in results):
            raise ValueError("'segm' evaluation needs a 'segmentation' in every result: the "
                             "model returns no masks (use a Mask R-CNN or iou_types=('bbox',))")
        if not results:
            scores[iou_type] = dict.fromkeys(_STAT_NAMES, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval reports by printing
            # loadRes adds fields to the dicts it is given: hand it copies
            coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            if image_ids is not None:
                ev.params.imgIds = sorted(int(i) for i in image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        scores[iou_type] = {k: float(v) for k, v in zip(_STAT_NAMES, ev.stats, strict=False)}
    return scores


def _find_coco(dataset) -> object | None:
    """The ``coco`` attribute of a data set, looking through ``Subset`` wrappers."""
    while dataset is not None:
        if hasattr(dataset, "coco"):
            return dataset.coco
        dataset = getattr(dataset, "dataset", None)
    return None


def _to_original(out: dict, size: tuple[int, int], original: tuple[int, int]) -> dict:
    """Map detections on a resized image (``size``) back to the original ``(H, W)``."""
    if tuple(size) == tuple(original):
        return out
    (h, w), (H, W) = size, original
    out = dict(out)
    out["boxes"] = out["boxes"] * out["boxes"].new_tensor([W / w, H / h, W / w, H / h])
    if "masks" in out and len(out["masks"]):
        m = out["masks"]
        m = m if m.dim() == 4 else m[:, None]
        out["masks"] = F.interpolate(m.float(), size=(H, W), mode="bilinear",
                                     align_corners=False)
    return out


@torch.no_grad()
def evaluate_coco(model: nn.Module, data: Dataset | DataLoader, *,
                  iou_types: Sequence[str] = ("bbox",), device: torch.device | str | None = None,
                  batch_size: int = 2, mask_threshold: float = 0.5
                  ) -> dict[str, dict[str, float]]:
    """COCO mAP of a torchvision detector on a data set (pycocotools ``COCOeval``).

    .. code-block:: python

        val = CocoDetection(img_dir, ann_file, transforms=detection_transforms(train=False))
        scores = evaluate_coco(model, val, iou_types=("bbox", "segm"))
        print(scores["bbox"]["mAP"], scores["segm"]["mAP50"])

    Detections are scored in the original image coordinates: torchvision's detectors return
    them for the images they are given, and when the evaluation transforms resized an image
    (its size differs from the annotation file's) boxes and masks are scaled back. Transforms
    that crop, pad or flip cannot be undone: keep them out of evaluation.

    Args:
        model (nn.Module): a torchvision detector (eval mode is set for the run and the
            previous mode restored).
        data (Dataset or DataLoader): yields ``(image, target)`` (a data set, batched here
            with :func:`collate`) or ``([images], [targets])`` batches. The ground truth is
            the data set's ``coco`` (:class:`CocoDetection`, also inside a ``Subset``), else it
            is built from the targets (:func:`coco_from_targets`).
        iou_types (sequence of str): ``"bbox"`` and/or ``"segm"`` (Mask R-CNN).
        device (torch.device or str, optional): where to run (default: the model's).
        batch_size (int): images per forward pass for a data set. (default: :obj:`2`)
        mask_threshold (float): mask probability threshold. (default: :obj:`0.5`)

    Returns:
        dict: ``{"bbox": {"mAP": ..., "mAP50": ..., "mAP75": ...}, "segm": {...}}``, see
        :func:`score_predictions`.
    """
    if isinstance(data, DataLoader):
        loader, dataset = data, data.dataset
    else:
        loader, dataset = DataLoader(data, batch_size=batch_size, collate_fn=collate), data
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    coco = _find_coco(dataset)
    was_training = model.training
    model.eval()
    results, image_ids, targets_seen, sizes = [], [], [], []
    try:
        for images, targets in loader:
            outputs = model([img.to(device) for img in images])
            for img, target, out in zip(images, targets, outputs, strict=True):
                image_id = int(target["image_id"])
                size = tuple(img.shape[-2:])
                if coco is not None:
                    info = coco.imgs[image_id]
                    out = _to_original(out, size, (info["height"], info["width"]))
                else:
                    targets_seen.append(target)
                    sizes.append(size)
                out = {k: v.cpu() for k, v in out.items()}
                results += to_coco_results([out], [image_id], mask_threshold=mask_threshold)
                image_ids.append(image_id)
    finally:
        model.train(was_training)
    if coco is None:
        coco = coco_from_targets(targets_seen, sizes)
    return score_predictions(coco, results, iou_types, image_ids=image_ids)
