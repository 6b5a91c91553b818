"""Feature-pyramid backbones: ``create_model(..., features_only=True)`` and intermediates."""

import pytest
import torch

from pyg_vig import create_model
from pyg_vig.models import FeatureExtractor


def _pvig_s(**kwargs):
    # Without dilation pvig_s accepts 128 px (its dilated last stage needs >= 164 px).
    return create_model("pvig_s", features_only=True, use_dilation=False, **kwargs).eval()


def test_features_only_pvig_s():
    model = _pvig_s(out_indices=(0, 1, 2, 3))
    assert isinstance(model, FeatureExtractor)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [80, 160, 400, 640]
    assert model.feature_info.module_name() == [f"stages.{i}" for i in range(4)]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = model(x)
    assert len(feats) == 4
    for f, info in zip(feats, model.feature_info, strict=True):
        stride = info["reduction"]
        assert f.shape == (2, info["num_chs"], 128 // stride, 128 // stride)
        assert torch.isfinite(f).all()


def test_features_only_default_and_dilated():
    model = create_model("pvig_ti", features_only=True).eval()  # all stages, official dilation
    assert model.out_indices == (0, 1, 2, 3)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    size = model.model.min_input_size()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [-(-size // r) for r in model.feature_info.reduction()]


@pytest.mark.parametrize("out_indices", [(1, 3), (2,), (-1,), (0, 1)])
def test_out_indices(out_indices):
    model = _pvig_s(out_indices=out_indices)
    n_stages = len(model.model.stages)
    keep = [i % 4 for i in out_indices]
    assert model.out_indices == tuple(keep)
    assert n_stages == max(keep) + 1  # later stages are pruned
    assert model.feature_info.reduction() == [4 * 2**i for i in keep]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [128 // r for r in model.feature_info.reduction()]


def test_features_match_full_model():
    full = create_model("pvig_mini").eval()
    feat = create_model("pvig_mini", features_only=True)
    feat.model.load_state_dict(full.state_dict(), strict=False)
    feat.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        last, maps = full.forward_intermediates(x)
        torch.testing.assert_close(full.forward_features(x), last)
        for a, b in zip(feat(x), maps, strict=True):
            torch.testing.assert_close(a, b)
    assert [m.shape[1] for m in maps] == [32, 64, 128]
    assert no_head(feat)


def no_head(extractor):
    names = [n for n, _ in extractor.named_parameters()]
    return not any(n.startswith("model.head.") for n in names)


def test_features_mixed_sizes():
    model = create_model("pvig_mini", features_only=True, out_indices=(0, 2)).eval()
    images = [torch.randn(1, 28, 28), torch.randn(1, 40, 32)]
    with torch.no_grad():
        feats = model(images)
        alone = [model(img.unsqueeze(0)) for img in images]
    assert len(feats) == 2
    for stage, maps in enumerate(feats):
        assert isinstance(maps, list) and len(maps) == 2
        for i, m in enumerate(maps):
            ref = alone[i][stage][0]
            assert m.shape == ref.shape
            # A fresh model's features reach ~1e4, so compare relative to the largest.
            assert (m - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_forward_intermediates_indices():
    model = create_model("pvig_mini").eval()
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [m.shape[1] for m in maps] == [64, 128]
        with pytest.raises(ValueError, match="out of range"):
            model.forward_intermediates(x, indices=[5])
    kept = model.prune_intermediate_layers((0, 1))
    assert kept == [0, 1] and len(model.stages) == 2


@pytest.mark.parametrize("name", ["vig_mini", "vig_ti"])
def test_isotropic_features_only_raises(name):
    with pytest.raises(RuntimeError, match="features_only is not supported"):
        create_model(name, features_only=True)


def test_bad_out_indices():
    with pytest.raises(ValueError, match="out of range"):
        create_model("pvig_mini", features_only=True, out_indices=(0, 3))


def test_features_backward():
    model = create_model("pvig_mini", features_only=True).train()
    feats = model(torch.randn(2, 1, 28, 28))
    sum(f.mean() for f in feats).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
