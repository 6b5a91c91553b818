"""Checks every ViG graph convolution must pass (PyG's conv test pattern), run for all four."""

import copy
import warnings

import pytest
import torch
from dense_reference import (
    CountPaths,
    dense_to_nodes,
    nodes_to_dense,
    plain,
    random_graph,
    reference_of,
    shuffle_edges,
)
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_csc_tensor

from pyg_vig.nn import EdgeConv, GINConv, MRConv, SAGEConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4


@pytest.fixture(params=[MRConv, EdgeConv, GINConv, SAGEConv], ids=lambda c: c.__name__)
def conv_cls(request):
    return request.param


def make(conv_cls, **kwargs):
    return conv_cls(C, OUT, **kwargs)


def updates(conv):
    """The MultiHeadUpdate modules of a conv (SAGE has two)."""
    return [conv.nn1, conv.nn2] if hasattr(conv, "nn2") else [conv.nn]


def last_update(conv):
    return conv.nn2 if hasattr(conv, "nn2") else conv.nn


def csc_t(edge_index, num_src, num_dst):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # beta-state sparse CSC warnings
        return to_torch_csc_tensor(edge_index, size=(num_src, num_dst)).t()


@pytest.mark.parametrize("train", [False, True])
def test_fused_path_equals_generic(conv_cls, train):
    conv = make(conv_cls).train(train)
    x, _, _, edge_index = random_graph(B, N, C, K)
    with CountPaths(conv) as paths:
        fused = conv(x, edge_index)  # KNNEdgeIndex: message_and_aggregate
        assert (paths.fused, paths.generic) == (1, 0)
        generic = conv(x, plain(edge_index))  # plain tensor: message -> aggregate
        shuffled = conv(x, shuffle_edges(edge_index))
        assert (paths.fused, paths.generic) == (1, 2)
    assert fused.shape == (B * N, OUT)
    torch.testing.assert_close(fused, generic, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled, generic, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_dense_reference(conv_cls, train, dilation):
    conv = make(conv_cls).train(train)
    ref = reference_of(conv)
    x, _, dense, edge_index = random_graph(B, N, C, K, dilation=dilation)
    expected = dense_to_nodes(ref(nodes_to_dense(x, B), dense))
    torch.testing.assert_close(conv(x, edge_index), expected, rtol=1e-5, atol=1e-5)
    if train:  # the BatchNorm running statistics moved the same way
        norm, ref_norm = last_update(conv)[1], last_update(ref).norm
        torch.testing.assert_close(norm.running_mean, ref_norm.running_mean)
        torch.testing.assert_close(norm.running_var, ref_norm.running_var)


@pytest.mark.parametrize("train", [False, True])
def test_edge_order_invariance(conv_cls, train):
    conv = make(conv_cls).train(train)
    x, _, _, edge_index = random_graph(B, N, C, K)
    out = conv(x, edge_index)
    for _ in range(2):
        torch.testing.assert_close(conv(x, shuffle_edges(edge_index)), out, rtol=1e-5, atol=1e-5)


def test_torch_sparse_adjacency(conv_cls):
    conv = make(conv_cls).eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    adj = csc_t(plain(edge_index), B * N, B * N)
    torch.testing.assert_close(conv(x, adj), conv(x, edge_index), rtol=1e-5, atol=1e-5)


def test_torch_sparse_adjacency_propagate(conv_cls):
    # The generic path itself handles the sparse layout (bipartite: not mistaken for k-regular).
    conv = make(conv_cls).eval()
    x, y, _, edge_index = random_graph(B, N, C, K, M=M)
    adj = csc_t(plain(edge_index), B * M, B * N)
    torch.testing.assert_close(conv((y, x), adj), conv((y, x), edge_index), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch-sparse is not installed")
def test_sparse_tensor(conv_cls):
    conv = make(conv_cls).eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    adj = SparseTensor.from_edge_index(plain(edge_index), sparse_sizes=(B * N, B * N))
    torch.testing.assert_close(conv(x, adj.t()), conv(x, edge_index), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_bipartite(conv_cls, train):
    conv = make(conv_cls).train(train)
    ref = reference_of(conv)
    x, y, dense, edge_index = random_graph(B, N, C, K, M=M)
    out = conv((y, x), edge_index)
    assert out.shape == (B * N, OUT)
    expected = dense_to_nodes(ref(nodes_to_dense(x, B), dense, nodes_to_dense(y, B)))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with CountPaths(conv) as paths:
        generic = conv((y, x), shuffle_edges(edge_index))
    assert (paths.fused, paths.generic) == (0, 1)
    torch.testing.assert_close(generic, out, rtol=1e-5, atol=1e-5)


def test_permutation_equivariance(conv_cls):
    conv = make(conv_cls).eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    perm = torch.randperm(B * N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(B * N)
    out = conv(x, edge_index)
    out_perm = conv(x[perm], inv[plain(edge_index)])
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bipartite", [False, True])
def test_gradients_reach_everything(conv_cls, bipartite):
    conv = make(conv_cls).train()
    x, y, _, edge_index = random_graph(B, N, C, K, M=M if bipartite else None)
    x.requires_grad_()
    inputs = x
    if bipartite:
        y.requires_grad_()
        inputs = (y, x)
    out = conv(inputs, edge_index)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    if bipartite:
        assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("generic", [False, True])
def test_gradcheck(conv_cls, generic):
    conv = conv_cls(4, 8, heads=2).double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for update in updates(conv):
            update[1].running_mean.uniform_(-0.5, 0.5)
            update[1].running_var.uniform_(0.5, 2.0)
    x, _, _, edge_index = random_graph(1, 5, 4, 3, dtype=torch.float64)
    if generic:
        edge_index = shuffle_edges(edge_index)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: conv(t, edge_index), (x,))


def test_reset_parameters(conv_cls):
    conv = make(conv_cls)
    before = copy.deepcopy(conv.state_dict())
    first = updates(conv)[0][0]
    with torch.no_grad():
        first.weight.zero_()
    conv.reset_parameters()
    assert first.weight.abs().sum() > 0
    assert {k: v.shape for k, v in conv.state_dict().items()} == {
        k: v.shape for k, v in before.items()}
