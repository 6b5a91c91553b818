import math

import pytest
import torch

pytest.importorskip("torchvision")

from torchvision.models.detection import MaskRCNN, RetinaNet  # noqa: E402

from pyg_vig.detection import maskrcnn_pvig_fpn, retinanet_pvig_fpn  # noqa: E402
from pyg_vig.nn.grapher import Grapher  # noqa: E402

TINY = dict(img_size=64, min_size=96, max_size=128)
# fewer proposals and sampled RoIs than the COCO defaults: the same code paths, faster
SMALL_RCNN = dict(rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
                  box_batch_size_per_image=64, box_detections_per_img=50)


def _targets(masks: bool):
    """Two images of different sizes with 1 and 2 objects (category ids 3, 1 and 10)."""
    images = [torch.rand(3, 96, 128), torch.rand(3, 112, 96)]
    boxes = [torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
             torch.tensor([[5.0, 5.0, 40.0, 90.0], [50.0, 50.0, 90.0, 100.0]])]
    labels = [torch.tensor([3]), torch.tensor([1, 10])]
    targets = []
    for img, b, lab in zip(images, boxes, labels, strict=True):
        t = dict(boxes=b, labels=lab)
        if masks:
            m = torch.zeros(len(b), *img.shape[-2:], dtype=torch.uint8)
            for j, (x1, y1, x2, y2) in enumerate(b.int().tolist()):
                m[j, y1:y2, x1:x2] = 1
            t["masks"] = m
        targets.append(t)
    return images, targets


def test_retinanet_builder():
    m = retinanet_pvig_fpn("pvig_ti", num_classes=11, score_thresh=0.2, **TINY)
    assert isinstance(m, RetinaNet)
    assert m.transform.min_size == (96,) and m.transform.max_size == 128
    assert m.transform.image_mean == [0.5, 0.5, 0.5] and m.transform.image_std == [0.5] * 3
    assert m.score_thresh == 0.2
    assert m.backbone.strides == [8, 16, 32, 64, 128]  # P3-P7
    sizes = m.anchor_generator.sizes
    assert len(sizes) == 5 and [s[0] for s in sizes] == [32, 64, 128, 256, 512]
    assert m.head.classification_head.num_anchors == 9
    assert m.head.classification_head.num_classes == 11


def test_maskrcnn_builder():
    m = maskrcnn_pvig_fpn("pvig_ti", num_classes=11, **TINY)
    assert isinstance(m, MaskRCNN)
    assert m.backbone.strides == [4, 8, 16, 32, 64]  # P2-P6
    assert [s[0] for s in m.rpn.anchor_generator.sizes] == [32, 64, 128, 256, 512]
    assert m.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]
    assert m.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 11
    assert m.roi_heads.box_predictor.cls_score.out_features == 11


def test_backbone_kwargs_are_routed():
    m = retinanet_pvig_fpn("pvig_ti", trainable_stages=2, batch_norm="frozen", **TINY)
    assert m.backbone.frozen_parts == ["stem", "stages.0", "stages.1"]
    with pytest.raises(ValueError, match="unknown argument.*'min_sise'"):
        retinanet_pvig_fpn("pvig_ti", min_sise=100, img_size=64)


@pytest.mark.parametrize("build", [retinanet_pvig_fpn, maskrcnn_pvig_fpn])
def test_train_step_reaches_every_trainable_grapher(build):
    # stages 2-3 train, stem and stages 0-1 are frozen: the frozen Graphers get no gradient
    extra = SMALL_RCNN if build is maskrcnn_pvig_fpn else {}
    model = build("pvig_ti", num_classes=11, trainable_stages=2, **TINY, **extra).train()
    images, targets = _targets(masks=build is maskrcnn_pvig_fpn)
    losses = model(images, targets)
    assert losses and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    graphers = [(n, g) for n, g in model.backbone.body.model.named_modules()
                if isinstance(g, Grapher)]
    assert len(graphers) == 12
    for name, g in graphers:
        params = list(g.parameters())
        if name.startswith(("stages.0", "stages.1")):
            assert all(p.grad is None and not p.requires_grad for p in params), name
        else:
            trainable = [p for p in params if p.requires_grad]
            assert trainable, name
            for p in trainable:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert any(p.grad.abs().sum() > 0 for p in trainable), name


def test_eval_outputs_are_in_original_coordinates():
    # the detector resizes 96x128 images to 192x256 inside; its detections come back in 96x128
    model = maskrcnn_pvig_fpn("pvig_ti", num_classes=11, img_size=64, min_size=192,
                              max_size=256, box_score_thresh=0.0, **SMALL_RCNN)
    image = torch.rand(3, 96, 128)
    with torch.no_grad():
        # an untrained ViG needs batch-norm statistics for eval mode: take them from one batch
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch sets the statistics
        model.train()
        model.backbone(model.transform([image])[0].tensors)
        model.eval()
        internal, _ = model.transform([image])
        out = model([image])[0]
    assert internal.tensors.shape[-2:] == (192, 256)
    assert len(out["boxes"]) > 10
    assert out["masks"].shape[-2:] == (96, 128)
    x2, y2 = out["boxes"][:, 2].max(), out["boxes"][:, 3].max()
    assert x2 <= 128 and y2 <= 96
    assert x2 > 96 and y2 > 72  # boxes span the image, not a corner of the resized one
