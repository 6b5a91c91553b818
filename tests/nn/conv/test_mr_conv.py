import torch
from dense_reference import (
    RefMRConv,
    dense_to_nodes,
    nodes_to_dense,
    random_graph,
)

from pyg_vig.nn import MRConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4


def make(**kwargs):
    return MRConv(C, OUT, **kwargs)


def test_repr():
    assert str(MRConv(16, 32, heads=4)) == "MRConv(16, 32, heads=4)"
    assert str(MRConv(16, 32)) == "MRConv(16, 32, heads=4)"
    assert str(MRConv(8, 16, heads=2)) == "MRConv(8, 16, heads=2)"


def test_interleaved_channel_order():
    conv = make().eval()
    x, _, dense, edge_index = random_graph(B, N, C, K)
    out = conv(x, edge_index)
    xd = nodes_to_dense(x, B)
    interleaved = dense_to_nodes(RefMRConv(conv, interleave=True).eval()(xd, dense))
    block = dense_to_nodes(RefMRConv(conv, interleave=False).eval()(xd, dense))
    torch.testing.assert_close(out, interleaved, rtol=1e-5, atol=1e-5)
    assert (out - block).abs().max() > 1e-2
    # Directly: channel 2c of the update input is x_c, channel 2c+1 is max_j(x_j - x_i)_c.
    m = x[edge_index[0]].view(B * N, K, C).amax(1) - x
    h = torch.stack([x, m], dim=-1).reshape(B * N, 2 * C)
    assert torch.equal(h[:, 0::2], x)
    torch.testing.assert_close(conv.nn(h), out)


def test_training_gradient_matches_torch_max_formulation():
    # Without ties (random doubles) the fused path's gradient is the official torch.max one:
    # one winning neighbour per channel.
    from pyg_vig.nn import knn_graph

    x = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    edge_index = knn_graph(x.detach(), 5, loop=True, normalize=True)
    conv = MRConv(16, 32).double().train()
    out = conv(x, edge_index)
    (g_fast,) = torch.autograd.grad(out.square().sum(), x)
    x_j = x[edge_index[0]].view(50, 5, 16)
    m, _ = torch.max(x_j - x.unsqueeze(1), dim=1)
    ref = conv.nn(torch.stack([x, m], dim=-1).reshape(50, 32))
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(out, ref)
    assert torch.allclose(g_fast, g_ref)
