import pytest
import torch
from torch.utils.data import Subset

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from pyg_vig.detection import (  # noqa: E402
    CocoDetection,
    collate,
    detection_transforms,
    evaluate_coco,
    retinanet_pvig_fpn,
)


def test_overfit_a_few_canvases_lowers_the_loss(canvases):
    ds = CocoDetection(*canvases["train"], transforms=detection_transforms(train=False))
    images, targets = collate([ds[i] for i in range(2)])
    model = retinanet_pvig_fpn("pvig_ti", num_classes=11, img_size=64, min_size=96,
                               max_size=96).train()
    # the paper's optimiser (AdamW, weight decay 0.05) with clipped gradients: from scratch, on
    # two images, the focal loss of RetinaNet spikes without clipping at larger rates
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    losses = []
    for _ in range(6):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < 0.75 * losses[0], losses
    # the whole path runs: COCO evaluation of the trained model on its canvases (a Subset)
    scores = evaluate_coco(model, Subset(ds, [0, 1]), device="cpu")
    assert set(scores) == {"bbox"} and 0.0 <= scores["bbox"]["mAP50"] <= 1.0
    assert model.training
