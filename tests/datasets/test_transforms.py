import pytest
import torch

from pyg_vig.datasets import build_transform


def test_eval_transform_normalises_only():
    x = torch.rand(1, 8, 8)
    t = build_transform(False, 8, (0.5,), (0.25,), crop_padding=2, hflip=1.0, reprob=1.0)
    assert torch.allclose(t(x), (x - 0.5) / 0.25)


def test_train_transform_is_torchvision_and_timm():
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    t = build_transform(True, 8, (0.0,), (1.0,), crop_padding=2, hflip=0.5, reprob=0.25)
    kinds = [type(s) for s in t.transforms]
    assert kinds == [T.RandomCrop, T.RandomHorizontalFlip, T.Normalize, RandomErasing]
    # the padded crop keeps the size and shifts the content
    x = torch.arange(64.0).view(1, 8, 8)
    outs = {tuple(t.transforms[0](x).flatten().tolist()) for _ in range(50)}
    assert len(outs) > 5 and all(len(o) == 64 for o in outs)


def test_flip_and_crop_follow_torch_seed():
    t = build_transform(True, 8, (0.0,), (1.0,), crop_padding=2, hflip=0.5, reprob=0.0)
    x = torch.rand(1, 8, 8)
    torch.manual_seed(3)
    a = [t(x) for _ in range(5)]
    torch.manual_seed(3)
    b = [t(x) for _ in range(5)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_resize_to_image_size():
    x = torch.rand(1, 28, 28)
    t = build_transform(False, 32, (0.0,), (1.0,), resize=True)
    assert t(x).shape == (1, 32, 32)
    ref = torch.nn.functional.interpolate(x[None], size=(32, 32), mode="bilinear",
                                          antialias=True)[0]
    assert torch.allclose(t(x), ref, atol=1e-5)


def test_rand_augment_policy_grayscale_and_rgb():
    for c in (1, 3):
        t = build_transform(True, 16, (0.5,) * c, (0.5,) * c, crop_padding=0, hflip=0.0,
                            reprob=0.0, auto_augment="rand-m9-mstd0.5-inc1")
        torch.manual_seed(0)
        x = torch.rand(c, 16, 16)
        y = t(x)
        assert y.shape == (c, 16, 16) and y.dtype == torch.float32
        assert -1.0 - 1e-6 <= y.min() and y.max() <= 1.0 + 1e-6  # [0, 1] normalised by 0.5
    with pytest.raises(ValueError, match="unknown auto-augment policy 'nonsense'"):
        build_transform(True, 16, (0.5,), (0.5,), auto_augment="nonsense")
