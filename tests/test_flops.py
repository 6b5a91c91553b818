import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyg_vig.utils import count_macs, count_params


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@pytest.mark.parametrize("shape", [(5, 12), (2, 7, 12)])
def test_linear(shape):
    lin = nn.Linear(12, 20)
    rows = 5 if len(shape) == 2 else 14
    assert count_macs(lin, shape) == rows * 12 * 20
    # A transposed (non-contiguous) input goes through bmm instead of addmm.
    x = torch.randn(7, 2, 12).transpose(0, 1)
    assert count_macs(lin, input=x) == 14 * 12 * 20


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_grouped_conv2d(groups):
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=groups)
    # Output 5x5; each output element sums over (8 / groups) * 3 * 3 products.
    assert count_macs(conv, (2, 8, 10, 10)) == 2 * 16 * 5 * 5 * (8 // groups) * 9


def test_conv1x1_and_transposed():
    conv = nn.Conv2d(8, 16, 1, groups=4)
    assert count_macs(conv, (1, 8, 6, 6)) == 36 * 16 * 2
    deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
    assert count_macs(deconv, (1, 8, 5, 5)) == 25 * 8 * 4 * 4


def test_bmm_and_grouped_einsum():
    a, b = torch.randn(3, 5, 4), torch.randn(3, 4, 6)
    assert count_macs(Lambda(torch.bmm), input=(a, b)) == 3 * 5 * 4 * 6
    assert count_macs(Lambda(torch.matmul), input=(a, b)) == 3 * 5 * 4 * 6
    # Grouped linear as einsum: B=2, G=4 groups, N=7 nodes, C=3 -> O=5 channels per group.
    x, w = torch.randn(2, 4, 7, 3), torch.randn(4, 5, 3)
    grouped = Lambda(lambda x, w: torch.einsum("bgnc,goc->bgno", x, w))
    assert count_macs(grouped, input=(x, w)) == 2 * 4 * 7 * 5 * 3
    # A grouped 1x1 conv with the same shapes costs the same.
    conv = nn.Conv2d(12, 20, 1, groups=4, bias=False)
    assert count_macs(conv, (2, 12, 7, 1)) == 2 * 4 * 7 * 5 * 3


def test_ops_flop_counter_misses():
    a, v = torch.randn(5, 4), torch.randn(4)
    assert count_macs(Lambda(torch.mv), input=(a, v)) == 20
    assert count_macs(Lambda(torch.dot), input=(v, v)) == 4
    bias = torch.zeros(5)
    assert count_macs(Lambda(lambda a, v: torch.addmv(bias, a, v)), input=(a, v)) == 20
    x3, y3 = torch.randn(2, 5, 4), torch.randn(2, 4, 3)
    addbmm = Lambda(lambda x, y: torch.addbmm(torch.zeros(5, 3), x, y))
    assert count_macs(addbmm, input=(x3, y3)) == 2 * 5 * 4 * 3
    bilinear = nn.Bilinear(4, 5, 6, bias=False)
    assert count_macs(bilinear, input=(torch.randn(3, 4), torch.randn(3, 5))) == 3 * 4 * 5 * 6


@pytest.mark.parametrize("n,m", [(10, 20), (30, 40)])  # direct kernel / matmul-based kernel
def test_cdist_matches_knn_matmul(n, m):
    x, y = torch.randn(2, n, 8), torch.randn(2, m, 8)
    assert count_macs(Lambda(torch.cdist), input=(x, y)) == 2 * n * m * 8

    def expanded(x, y):  # |x|^2 - 2 x y^T + |y|^2, as the official k-NN does
        inner = -2 * x @ y.transpose(1, 2)
        return (x * x).sum(-1, keepdim=True) + inner + (y * y).sum(-1)[:, None]

    assert count_macs(Lambda(expanded), input=(x, y)) == 2 * n * m * 8


def test_attention():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    sdpa = Lambda(F.scaled_dot_product_attention)
    assert count_macs(sdpa, input=(q, k, v)) == 2 * 3 * 5 * 7 * (4 + 6)

    # Under no_grad and eval, nn.MultiheadAttention takes its fused inference path.
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    query, key = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    module = Lambda(lambda q, k: mha(q, k, k, need_weights=False)[0])
    proj = 2 * (5 + 9 + 9 + 5) * 16 * 16
    assert count_macs(module, input=(query, key)) == proj + 2 * 2 * 5 * 9 * 16

    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    x = torch.randn(3, 7, 16)
    expected = 3 * (4 * 7 * 16 * 16 + 2 * 7 * 7 * 16) + 3 * 7 * 2 * 16 * 32
    assert count_macs(layer, input=x) == expected
    assert layer.training


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")
def test_sparse_matmul_counts_nonzeros():
    adj = torch.eye(6)
    adj[0, 5] = 1.0
    x = torch.randn(6, 5)
    spmm = Lambda(torch.sparse.mm)
    assert count_macs(spmm, input=(adj.to_sparse(), x)) == 7 * 5
    assert count_macs(spmm, input=(adj.to_sparse_csr(), x)) == 7 * 5
    assert count_macs(Lambda(torch.mm), input=(adj, x)) == 6 * 6 * 5


def test_input_forms_dtype_and_state():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x, scale=1.0):
            return self.drop(self.bn(self.lin(x))) * scale

    model = TwoInputs().double()
    model.bn.eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    rng = torch.get_rng_state()
    assert count_macs(model, (5, 4)) == 5 * 4 * 3  # random input gets the model's dtype
    assert torch.equal(torch.get_rng_state(), rng)
    assert count_macs(model, input=x) == 60
    assert count_macs(model, input=(x, 2.0)) == 60
    assert count_macs(model, input={"x": x, "scale": 2.0}) == 60
    # Eval mode only while counting; every module gets its own mode back.
    assert model.training and model.lin.training and not model.bn.training


def test_count_params():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 4))
    model[1].weight = nn.Parameter(model[0].weight.t().detach().clone())
    frozen = nn.Parameter(torch.zeros(10), requires_grad=False)
    model.register_parameter("table", frozen)
    assert count_params(model) == 12 + 3 + 12 + 4
    assert count_params(model, trainable_only=False) == 12 + 3 + 12 + 4 + 10

    shared = nn.Linear(4, 4)
    tied = nn.Sequential(shared, shared)
    assert count_params(tied) == 20
