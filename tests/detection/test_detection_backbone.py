import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")

import pyg_vig  # noqa: E402
from pyg_vig.detection import ViGBackboneWithFPN, vig_fpn_backbone  # noqa: E402

# img_size=64 keeps every dilation at 1, so pvig_ti accepts 96-128 px images (fast tests)
TINY = dict(img_size=64)
PARTS = ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]


def _part(name: str) -> str:
    """The freezable part (stem or stages.i) a parameter of the ViG body belongs to."""
    name = name.removeprefix("body.model.")
    if name.startswith(("stem.", "pos_embed")):
        return "stem"
    return ".".join(name.split(".")[:2])


def test_backbone_follows_torchvision_contract():
    b = vig_fpn_backbone("pvig_ti", **TINY).eval()
    assert isinstance(b, ViGBackboneWithFPN) and b.out_channels == 256
    assert b.strides == [8, 16, 32, 64]
    with torch.no_grad():
        maps = b(torch.rand(2, 3, 96, 128))
    assert list(maps) == ["0", "1", "2", "pool"]
    assert [tuple(m.shape) for m in maps.values()] == [
        (2, 256, 12, 16), (2, 256, 6, 8), (2, 256, 3, 4), (2, 256, 2, 2)]
    cfg = pyg_vig.get_pretrained_cfg("pvig_ti")
    assert b.pretrained_cfg["mean"] == cfg["mean"] and b.pretrained_cfg["std"] == cfg["std"]


def test_p6p7_and_all_stages():
    b = vig_fpn_backbone("pvig_ti", returned_stages=(0, 1, 2, 3), extra_blocks="p6p7",
                         out_channels=64, **TINY).eval()
    assert b.strides == [4, 8, 16, 32, 64, 128]
    with torch.no_grad():
        maps = b(torch.rand(1, 3, 128, 128))
    assert list(maps) == ["0", "1", "2", "3", "p6", "p7"]
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4, 2, 1]
    assert b.fpn.extra_blocks.p6.in_channels == 384  # from the last stage's map (C5)


@pytest.mark.parametrize("trainable", [0, 1, 2, 3, 4, 5])
def test_trainable_stages_freezes_exactly_those(trainable):
    b = vig_fpn_backbone("pvig_ti", trainable_stages=trainable, batch_norm="train", **TINY)
    frozen = set(PARTS[:5 - trainable])
    assert b.frozen_parts == PARTS[:5 - trainable]
    for name, p in b.named_parameters():
        if name.startswith("fpn."):
            assert p.requires_grad, name
        else:
            assert p.requires_grad == (_part(name) not in frozen), name
    b.train()
    for name, m in b.body.model.named_modules():
        if name and name != "stages":
            assert m.training == (_part(name + ".") not in frozen), name


def test_frozen_batch_norm_keeps_statistics_and_affine():
    b = vig_fpn_backbone("pvig_ti", batch_norm="frozen", **TINY).train()
    bns = [m for m in b.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = [m.running_mean.clone() for m in bns]
    b(torch.rand(2, 3, 96, 96))
    assert all(torch.equal(x, m.running_mean) for x, m in zip(before, bns, strict=True))
    # ordinary batch norm moves its statistics
    b = vig_fpn_backbone("pvig_ti", batch_norm="train", **TINY).train()
    bn = next(m for m in b.body.model.stages.modules() if isinstance(m, nn.BatchNorm1d))
    before = bn.running_mean.clone()
    b(torch.rand(2, 3, 96, 96))
    assert not torch.equal(before, bn.running_mean)


def test_sync_batch_norm():
    b = vig_fpn_backbone("pvig_ti", batch_norm="sync", **TINY).eval()
    kinds = {type(m) for m in b.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {nn.SyncBatchNorm}
    with torch.no_grad():
        assert b(torch.rand(1, 3, 96, 96))["0"].shape == (1, 256, 12, 12)


@pytest.mark.parametrize("how", ["checkpoint", "pretrained"])
def test_weights_equal_the_classification_checkpoint(tmp_path, how):
    clf = pyg_vig.create_model("pvig_ti", **TINY)
    with torch.no_grad():  # random, but not the init: running statistics too
        for t in clf.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs())
    path = tmp_path / "pvig_ti.pth"
    torch.save(clf.state_dict(), path)
    kwargs = (dict(checkpoint=path) if how == "checkpoint"
              else dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path))))
    b = vig_fpn_backbone("pvig_ti", **kwargs, **TINY)
    want = clf.state_dict()
    got = b.body.model.state_dict()
    assert len(got) > 100
    for key, t in got.items():
        assert torch.equal(t, want[key]), key
    # weights loaded: frozen batch norm and a frozen stem by default
    assert b.batch_norm == "frozen" and b.frozen_parts == ["stem"]


def test_defaults_without_weights_train_everything():
    b = vig_fpn_backbone("pvig_ti", **TINY)
    assert b.batch_norm == "train" and b.frozen_parts == [] and b.trainable_stages == 5
    assert all(p.requires_grad for p in b.parameters())


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_norm="group"), "batch_norm must be one of"),
    (dict(trainable_stages=6), "trainable_stages must be 0 to 5"),
    (dict(returned_stages=(2, 1)), "returned_stages must be increasing"),
    (dict(returned_stages=(1, 4)), "out of range"),
    (dict(features_only=True), "set by vig_fpn_backbone"),
    (dict(extra_blocks="p5"), "extra_blocks must be"),
    (dict(num_knn_neighbours=3), "unknown argument"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vig_fpn_backbone("pvig_ti", **kwargs, **TINY)


def test_import_pyg_vig_does_not_import_detection():
    code = ("import sys, pyg_vig; bad = [m for m in ('pyg_vig.detection', 'pycocotools') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
