"""Input errors a new user meets first: integer or double images, channels-last tensors."""

import pytest
import torch

import pyg_vig


@pytest.fixture(scope="module")
def model():
    return pyg_vig.create_model("vig_mini", in_chans=3).eval()


def test_uint8_images_get_dtype_and_range_advice(model):
    x = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    with pytest.raises(TypeError) as e:
        model(x)
    msg = str(e.value)
    assert "torch.uint8 images" in msg and "torch.float32" in msg
    # pretrained_cfg follows in_chans=3, so the advice names three-channel statistics
    assert "pixels / 255 - mean) / std" in msg and "mean=(0.5, 0.5, 0.5)" in msg
    assert "unsigned char" not in msg


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes_need_a_cast_or_autocast(model, dtype):
    x = torch.randn(2, 3, 28, 28, dtype=dtype)
    with pytest.raises(TypeError, match=rf"got {dtype} images but the model's weights are "
                                        r"torch.float32: pass x.to\(torch.float32\)"):
        model(x)
    with torch.no_grad():  # the advice works
        assert model(x.float()).shape == (2, 10)


def test_autocast_accepts_lower_precision(model):
    x = torch.randn(2, 3, 28, 28, dtype=torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).shape == (2, 10)


def test_channels_last_layout_gets_permute_advice(model):
    x = torch.randn(2, 28, 28, 3)
    with pytest.raises(ValueError, match=r"channels-last.*x.permute\(0, 3, 1, 2\)") as e:
        model(x)
    assert "in_chans=28" not in str(e.value)
    with pytest.raises(ValueError, match=r"img.permute\(2, 0, 1\)"):
        model([torch.randn(28, 28, 3)])
    # the channels_last *memory format* is a normal (B, C, H, W) tensor and just works
    nchw = x.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        assert model(nchw.contiguous(memory_format=torch.channels_last)).shape == (2, 10)
        # same stem features (logits are not compared: with random weights a near-tied
        # neighbour can flip on the other kernel's round-off)
        torch.testing.assert_close(
            model.stem(nchw.contiguous(memory_format=torch.channels_last)), model.stem(nchw),
            rtol=1e-4, atol=1e-4)


def test_wrong_channel_count_still_explained(model):
    with pytest.raises(ValueError, match="expects 3-channel images but got 1 channels"):
        model(torch.randn(2, 1, 28, 28))
