
import torch
from dense_reference import (
    dense_to_nodes,
    nodes_to_dense,
    random_graph,
    reference_of,
)

from pyg_vig.nn import GINConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4


def make(**kwargs):
    return GINConv(C, OUT, **kwargs)


def test_repr():
    assert str(GINConv(16, 32, heads=4)) == "GINConv(16, 32, heads=4)"
    assert str(GINConv(16, 32)) == "GINConv(16, 32, heads=4)"
    assert str(GINConv(8, 16, heads=2)) == "GINConv(8, 16, heads=2)"


def test_eps():
    conv = GINConv(C, OUT, eps=0.5).eval()
    assert isinstance(conv.eps, torch.nn.Parameter) and conv.eps.item() == 0.5
    ref = reference_of(conv)
    x, _, dense, edge_index = random_graph(B, N, C, K)
    expected = dense_to_nodes(ref(nodes_to_dense(x, B), dense))
    torch.testing.assert_close(conv(x, edge_index), expected, rtol=1e-5, atol=1e-5)
    # (1 + eps) x_i + sum_j x_j before the update
    h = 1.5 * x + x[edge_index[0]].view(B * N, K, C).sum(1)
    torch.testing.assert_close(conv(x, edge_index), conv.nn(h), rtol=1e-5, atol=1e-5)

    frozen = GINConv(C, OUT, eps=0.5, train_eps=False)
    assert "eps" not in dict(frozen.named_parameters())
    assert "eps" in dict(frozen.named_buffers())
    frozen.eps.fill_(0.0)
    frozen.reset_parameters()
    assert frozen.eps.item() == 0.5
