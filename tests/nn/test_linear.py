import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pyg_vig.nn import MultiHeadLinear, MultiHeadUpdate
from pyg_vig.nn.linear import get_act


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_multi_head_linear_is_grouped_conv(heads, bias):
    lin = MultiHeadLinear(8, 12, heads=heads, bias=bias)
    if bias:
        nn.init.normal_(lin.bias)
    x = torch.randn(10, 8)
    conv_out = F.conv2d(x.t().reshape(1, 8, 10, 1), lin.weight.view(12, 8 // heads, 1, 1),
                        lin.bias, groups=heads)
    torch.testing.assert_close(lin(x), conv_out.reshape(12, 10).t(), rtol=1e-5, atol=1e-5)


def test_multi_head_linear_heads_are_independent():
    lin = MultiHeadLinear(8, 8, heads=4)
    x = torch.randn(5, 8)
    x2 = x.clone()
    x2[:, :2] += 1.0  # only head 0 sees these channels
    diff = (lin(x) - lin(x2)).abs().sum(0)
    assert diff[:2].sum() > 0 and diff[2:].sum() == 0


def test_multi_head_linear_leading_dims_and_repr():
    lin = MultiHeadLinear(8, 16, heads=4)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(lin(x), lin(x.view(15, 8)).view(3, 5, 16))
    assert lin.weight.shape == (16, 2)
    assert repr(lin) == "MultiHeadLinear(8, 16, heads=4, bias=True)"


def test_multi_head_linear_init():
    lin = MultiHeadLinear(64, 256, heads=4)
    assert torch.equal(lin.bias, torch.zeros(256))
    std = lin.weight.std().item()
    assert abs(std - (2.0 / 16) ** 0.5) < 0.03  # kaiming normal, fan_in = 64 / 4


@pytest.mark.parametrize("in_c,out_c", [(6, 8), (8, 6)])
def test_multi_head_linear_indivisible(in_c, out_c):
    with pytest.raises(ValueError, match=r"must be divisible by heads \(4\)"):
        MultiHeadLinear(in_c, out_c, heads=4)


def test_multi_head_update_layers_and_edges():
    upd = MultiHeadUpdate(8, 16, heads=4, act="relu")
    assert isinstance(upd[0], MultiHeadLinear)
    assert isinstance(upd[1], nn.BatchNorm1d)
    assert isinstance(upd[2], nn.ReLU)
    assert list(dict(upd.named_parameters())) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    upd.eval()
    with torch.no_grad():
        upd[1].running_mean.normal_()
    x = torch.randn(5, 3, 8)  # per-edge input (nodes, k, C)
    torch.testing.assert_close(upd(x), upd(x.view(15, 8)).view(5, 3, 16))
    upd.train()
    out = upd(x)
    assert out.shape == (5, 3, 16)


def test_multi_head_update_without_norm_or_act():
    upd = MultiHeadUpdate(8, 16, norm=False, act=None)
    x = torch.randn(4, 8)
    torch.testing.assert_close(upd(x), upd[0](x))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in upd)


def test_get_act():
    assert isinstance(get_act("gelu"), nn.GELU)
    assert isinstance(get_act("GELU"), nn.GELU)
    assert isinstance(get_act(None), nn.Identity)
    assert isinstance(get_act(nn.SiLU), nn.SiLU)
    with pytest.raises(ValueError, match="unknown activation 'swish2'; choose one of"):
        get_act("swish2")
