
import torch
from dense_reference import (
    random_graph,
)

from pyg_vig.nn import SAGEConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4


def make(**kwargs):
    return SAGEConv(C, OUT, **kwargs)


def test_repr():
    assert str(SAGEConv(16, 32, heads=4)) == "SAGEConv(16, 32, heads=4)"
    assert str(SAGEConv(16, 32)) == "SAGEConv(16, 32, heads=4)"
    assert str(SAGEConv(8, 16, heads=2)) == "SAGEConv(8, 16, heads=2)"


def test_eval_transforms_each_source_once():
    # In eval the fast path applies nn1 per node then gathers; per edge (train layout) must agree.
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    per_edge = conv.nn1(x[edge_index[0]].view(B * N, K, C)).amax(1)
    expected = conv.nn2(torch.cat([x, per_edge], dim=-1))
    torch.testing.assert_close(conv(x, edge_index), expected, rtol=1e-5, atol=1e-5)


def test_train_batchnorm_statistics_over_edges():
    conv = make().train()
    x, _, _, edge_index = random_graph(B, N, C, K)
    conv(x, edge_index)
    h = conv.nn1[0](x[edge_index[0]])  # (E, C): statistics over all E = N * k edges
    momentum = conv.nn1[1].momentum
    torch.testing.assert_close(conv.nn1[1].running_mean, momentum * h.mean(0).detach(),
                               rtol=1e-5, atol=1e-6)
