import pytest
import torch

from pyg_vig.datasets import (
    Compose,
    Mixup,
    Normalize,
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    build_transform,
    one_hot_smooth,
)


def test_random_crop_with_padding():
    x = torch.arange(16.0).view(1, 4, 4)
    outs = {tuple(RandomCrop(4, padding=1)(x).flatten().tolist()) for _ in range(200)}
    assert len(outs) == 9  # every offset in [0, 2]^2 occurs
    assert tuple(x.flatten().tolist()) in outs
    assert RandomCrop(3)(x).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(5)(x)


def test_flip_and_normalize():
    x = torch.arange(6.0).view(1, 2, 3)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    y = Normalize([1.0, 2.0], [2.0, 4.0])(torch.ones(2, 2, 2) * 3)
    assert torch.allclose(y[0], torch.full((2, 2), 1.0)) and torch.allclose(
        y[1], torch.full((2, 2), 0.25)
    )


def test_random_erasing():
    x = torch.zeros(3, 20, 20)
    assert torch.equal(RandomErasing(p=0.0)(x), x)
    erased = [RandomErasing(p=1.0, mode="pixel")(x) for _ in range(20)]
    frac = [(e != 0).float().mean().item() for e in erased]
    assert all(0 < f <= 1 / 3 + 0.05 for f in frac)
    assert torch.equal(x, torch.zeros(3, 20, 20))  # input untouched
    const = RandomErasing(p=1.0, mode="const")(torch.ones(1, 20, 20))
    assert 0 < (const == 0).float().mean() <= 0.4


def test_transforms_reproducible_from_seed():
    t = build_transform(True, 28, (0.3,), (0.35,), crop_padding=2, hflip=0.5, reprob=0.5)
    x = torch.rand(1, 28, 28)
    torch.manual_seed(3)
    a = [t(x) for _ in range(5)]
    torch.manual_seed(3)
    b = [t(x) for _ in range(5)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert isinstance(t, Compose) and "RandomErasing" in repr(t)
    e = build_transform(False, 28, (0.3,), (0.35,))
    assert torch.allclose(e(x), (x - 0.3) / 0.35)


def test_one_hot_smooth_matches_cross_entropy_label_smoothing():
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    soft = one_hot_smooth(y, 5, 0.1)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(torch.nn.functional.cross_entropy(logits, soft), ref, atol=1e-6)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_soft_targets(mixup, cutmix):
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])
    y = torch.tensor([0, 1, 2, 3])
    m = Mixup(4, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0)
    xm, t = m(x, y)
    assert xm.shape == x.shape and t.shape == (4, 4)
    assert torch.allclose(t.sum(1), torch.ones(4))
    # each mixed image pairs with the reversed batch; its mean equals the target-weighted mean
    lam = t[0, 0]
    assert torch.allclose(t[0, 3], 1 - lam)
    assert torch.allclose(xm[0].mean(), lam * 0 + (1 - lam) * 3, atol=1e-5)


def test_mixup_disabled_gives_smoothed_one_hot():
    m = Mixup(3, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.3)
    assert not m.enabled
    x = torch.rand(2, 1, 4, 4)
    xm, t = m(x, torch.tensor([2, 0]))
    assert torch.equal(xm, x)
    assert torch.allclose(t[0], torch.tensor([0.1, 0.1, 0.8]))


def test_resize_and_build_transform_resize():
    from pyg_vig.datasets import Resize

    x = torch.rand(1, 28, 28)
    assert Resize(32)(x).shape == (1, 32, 32)
    assert Resize((28, 28))(x) is x
    t = build_transform(False, 32, (0.0,), (1.0,), resize=True)
    assert t(x).shape == (1, 32, 32)
