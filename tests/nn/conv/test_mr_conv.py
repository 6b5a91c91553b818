import copy
import warnings

import pytest
import torch
from dense_reference import (
    CountPropagate,
    RefMRConv,
    dense_to_nodes,
    nodes_to_dense,
    random_graph,
    reference_of,
    shuffle_edges,
)
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_csc_tensor

from pyg_vig.nn import MRConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4



def make(**kwargs):
    return MRConv(C, OUT, **kwargs)


def csc_t(edge_index, num_src, num_dst):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # beta-state sparse CSC warnings
        return to_torch_csc_tensor(edge_index, size=(num_src, num_dst)).t()


def test_repr():
    assert str(MRConv(16, 32, heads=4)) == "MRConv(16, 32, heads=4)"
    assert str(MRConv(16, 32)) == "MRConv(16, 32, heads=4)"
    assert str(MRConv(8, 16, heads=2)) == "MRConv(8, 16, heads=2)"


@pytest.mark.parametrize("train", [False, True])
def test_fast_path_equals_propagate(train):
    conv = make().train(train)
    x, _, _, edge_index = random_graph(B, N, C, K)
    with CountPropagate(conv) as counter:
        out_hint = conv(x, edge_index, k=K)
        out_detected = conv(x, edge_index)
        assert counter.calls == 0
        out_generic = conv(x, shuffle_edges(edge_index))
        assert counter.calls == 1
    assert out_hint.shape == (B * N, OUT)
    torch.testing.assert_close(out_detected, out_hint, rtol=0, atol=0)
    torch.testing.assert_close(out_generic, out_hint, rtol=1e-5, atol=1e-5)


def test_bad_k_hint():
    x, _, _, edge_index = random_graph(B, N, C, K)
    with pytest.raises(ValueError, match="k=5 given but edge_index has 96 edges for 24 targets"):
        make()(x, edge_index, k=5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_dense_reference(train, dilation):
    conv = make().train(train)
    ref = reference_of(conv)
    x, _, dense, edge_index = random_graph(B, N, C, K, dilation=dilation)
    expected = dense_to_nodes(ref(nodes_to_dense(x, B), dense))
    torch.testing.assert_close(conv(x, edge_index, k=K), expected, rtol=1e-5, atol=1e-5)
    if train:  # the BatchNorm running statistics moved the same way
        torch.testing.assert_close(conv.nn[1].running_mean, ref.nn.norm.running_mean)
        torch.testing.assert_close(conv.nn[1].running_var, ref.nn.norm.running_var)


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


@pytest.mark.parametrize("train", [False, True])
def test_edge_order_invariance(train):
    conv = make().train(train)
    x, _, _, edge_index = random_graph(B, N, C, K)
    out = conv(x, edge_index)
    for _ in range(2):
        torch.testing.assert_close(conv(x, shuffle_edges(edge_index)), out, rtol=1e-5, atol=1e-5)


def test_torch_sparse_adjacency():
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    adj = csc_t(edge_index, B * N, B * N)
    torch.testing.assert_close(conv(x, adj), conv(x, edge_index), rtol=1e-5, atol=1e-5)


def test_torch_sparse_adjacency_propagate():
    # The generic path itself handles the sparse layout (bipartite: not mistaken for k-regular).
    conv = make().eval()
    x, y, _, edge_index = random_graph(B, N, C, K, M=M)
    adj = csc_t(edge_index, B * M, B * N)
    torch.testing.assert_close(conv((y, x), adj), conv((y, x), edge_index), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch-sparse is not installed")
def test_sparse_tensor():
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    adj = SparseTensor.from_edge_index(edge_index, sparse_sizes=(B * N, B * N))
    torch.testing.assert_close(conv(x, adj.t()), conv(x, edge_index), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_bipartite(train):
    conv = make().train(train)
    ref = reference_of(conv)
    x, y, dense, edge_index = random_graph(B, N, C, K, M=M)
    out = conv((y, x), edge_index, k=K)
    assert out.shape == (B * N, OUT)
    expected = dense_to_nodes(ref(nodes_to_dense(x, B), dense, nodes_to_dense(y, B)))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with CountPropagate(conv) as counter:
        generic = conv((y, x), shuffle_edges(edge_index))
    assert counter.calls == 1
    torch.testing.assert_close(generic, out, rtol=1e-5, atol=1e-5)


def test_permutation_equivariance():
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    perm = torch.randperm(B * N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(B * N)
    out = conv(x, edge_index)
    out_perm = conv(x[perm], inv[edge_index])
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bipartite", [False, True])
def test_gradients_reach_everything(bipartite):
    conv = make().train()
    x, y, _, edge_index = random_graph(B, N, C, K, M=M if bipartite else None)
    x.requires_grad_()
    inputs = x
    if bipartite:
        y.requires_grad_()
        inputs = (y, x)
    out = conv(inputs, edge_index, k=K)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    if bipartite:
        assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("generic", [False, True])
def test_gradcheck(generic):
    conv = MRConv(4, 8, heads=2).double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        conv.nn[1].running_mean.uniform_(-0.5, 0.5)
        conv.nn[1].running_var.uniform_(0.5, 2.0)
    x, _, _, edge_index = random_graph(1, 5, 4, 3, dtype=torch.float64)
    if generic:
        edge_index = shuffle_edges(edge_index)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: conv(t, edge_index), (x,))


def test_reset_parameters():
    conv = make()
    before = copy.deepcopy(conv.state_dict())
    with torch.no_grad():
        conv.nn[0].weight.zero_()
    conv.reset_parameters()
    assert conv.nn[0].weight.abs().sum() > 0
    assert conv.nn[0].weight.shape == before["nn.0.weight"].shape


def test_training_gradient_matches_torch_max_formulation():
    # The fast path sends the gradient to one winning neighbour per channel, like the official
    # torch.max(x_j - x_i, dim) does.
    from pyg_vig.nn import knn_graph

    x = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    edge_index = knn_graph(x.detach(), 5)
    conv = MRConv(16, 32).double().train()
    out = conv(x, edge_index, k=5)
    (g_fast,) = torch.autograd.grad(out.square().sum(), x)
    x_j = x[edge_index[0]].view(50, 5, 16)
    m, _ = torch.max(x_j - x.unsqueeze(1), dim=1)
    ref = conv.nn(torch.stack([x, m], dim=-1).reshape(50, 32))
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(out, ref)
    assert torch.allclose(g_fast, g_ref)
