
import torch
from dense_reference import (
    random_graph,
)

from pyg_vig.nn import EdgeConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4


def make(**kwargs):
    return EdgeConv(C, OUT, **kwargs)


def test_repr():
    assert str(EdgeConv(16, 32, heads=4)) == "EdgeConv(16, 32, heads=4)"
    assert str(EdgeConv(16, 32)) == "EdgeConv(16, 32, heads=4)"
    assert str(EdgeConv(8, 16, heads=2)) == "EdgeConv(8, 16, heads=2)"


def test_update_per_edge_before_max():
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    x_j = x[edge_index[0]].view(B * N, K, C)
    x_i = x.unsqueeze(1).expand_as(x_j)
    expected = conv.nn(torch.cat([x_i, x_j - x_i], dim=-1)).amax(1)
    torch.testing.assert_close(conv(x, edge_index), expected, rtol=1e-5, atol=1e-5)
