import json

import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from torchvision.transforms import v2  # noqa: E402

from pyg_vig.detection import (  # noqa: E402
    CocoDetection,
    coco_from_targets,
    detection_transforms,
    evaluate_coco,
    score_predictions,
)
from pyg_vig.detection.data import load_coco  # noqa: E402

ONE = pytest.approx(1.0, abs=1e-9)  # COCOeval averages in floating point


def _results(coco, shift=0.0, masks=True):
    """The ground truth as predictions (score 1), boxes moved ``shift`` pixels right."""
    out = []
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        r = dict(image_id=a["image_id"], category_id=a["category_id"], score=1.0,
                 bbox=[x + shift, y, w, h])
        if masks:
            r["segmentation"] = a["segmentation"]
        out.append(r)
    return out


def test_perfect_predictions_score_one(canvases):
    coco = load_coco(canvases["val"][1])
    scores = score_predictions(coco, _results(coco), ("bbox", "segm"))
    for kind in ("bbox", "segm"):
        assert scores[kind]["mAP"] == ONE
        assert scores[kind]["mAP50"] == ONE and scores[kind]["mAP75"] == ONE


def test_shifted_boxes_score_a_known_lower_value(tmp_path):
    # 20x20 boxes moved 4 px: IoU = 16*20 / (24*20) = 2/3, a match at IoU thresholds
    # 0.50, 0.55, 0.60, 0.65 only: mAP = 4/10, mAP50 = 1, mAP75 = 0
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                 "area": 400, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 60, 20, 20],
                 "area": 400, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    coco = load_coco(tmp_path / "gt.json")
    scores = score_predictions(coco, _results(coco, shift=4.0, masks=False))["bbox"]
    assert scores["mAP"] == pytest.approx(0.4)
    assert scores["mAP50"] == ONE and scores["mAP75"] == 0.0
    assert score_predictions(coco, _results(coco, masks=False))["bbox"]["mAP"] == ONE
    assert score_predictions(coco, [])["bbox"]["mAP"] == 0.0


def test_segm_needs_masks(canvases):
    coco = load_coco(canvases["val"][1])
    with pytest.raises(ValueError, match="'segm' evaluation needs a 'segmentation'"):
        score_predictions(coco, _results(coco, masks=False), ("segm",))
    with pytest.raises(ValueError, match="iou_types must be among"):
        score_predictions(coco, _results(coco), ("keypoints",))


class Oracle(nn.Module):
    """Answers with the given outputs, one per image in order (a detector that is always right)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.calls = 0

    def forward(self, images):
        assert not self.training
        out = self.outputs[self.calls:self.calls + len(images)]
        self.calls += len(images)
        return out


def _oracle_for(ds):
    outputs = []
    for _, t in ds:
        n = len(t["boxes"])
        outputs.append(dict(boxes=t["boxes"].as_subclass(torch.Tensor), labels=t["labels"],
                            scores=torch.ones(n), masks=t["masks"][:, None].float()))
    return Oracle(outputs)


def test_evaluate_maps_resized_predictions_back(canvases):
    # the evaluation transform doubles the images: predictions come back 2x too large
    resize = v2.Compose([detection_transforms(train=False), v2.Resize((192, 192))])
    ds = CocoDetection(*canvases["val"], transforms=resize, with_masks=True)
    oracle = _oracle_for(ds).train()
    scores = evaluate_coco(oracle, ds, iou_types=("bbox", "segm"), device="cpu")
    assert oracle.training  # mode restored
    assert scores["bbox"]["mAP"] == ONE
    assert scores["segm"]["mAP50"] == ONE and scores["segm"]["mAP"] > 0.9
    # without the mapping back, the same predictions are mostly wrong
    results = [dict(image_id=t["image_id"], category_id=int(lab), score=1.0,
                    bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]])
               for _, t in ds for b, lab in zip(t["boxes"].tolist(), t["labels"], strict=True)]
    assert score_predictions(ds.coco, results)["bbox"]["mAP"] < 0.2


def test_evaluate_a_plain_dataset_builds_the_ground_truth(canvases):
    coco_ds = CocoDetection(*canvases["val"], with_masks=True)
    plain = [coco_ds[i] for i in range(len(coco_ds))]  # a list: no .coco attribute
    scores = evaluate_coco(_oracle_for(plain), plain, iou_types=("bbox", "segm"),
                           device="cpu")
    assert scores["bbox"]["mAP"] == ONE and scores["segm"]["mAP"] == ONE
    coco = coco_from_targets([t for _, t in plain], [img.shape[-2:] for img, _ in plain],
                             categories=range(1, 11))
    assert len(coco.dataset["annotations"]) == len(coco_ds.coco.dataset["annotations"])
    assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, 11))
