import copy
import warnings

import pytest
import torch
from dense_reference import (
    CountPropagate,
    dense_to_nodes,
    nodes_to_dense,
    random_graph,
    reference_of,
    shuffle_edges,
)
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_csc_tensor

from pyg_vig.nn import SAGEConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4



def make(**kwargs):
    return SAGEConv(C, OUT, **kwargs)


def csc_t(edge_index, num_src, num_dst):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # beta-state sparse CSC warnings
        return to_torch_csc_tensor(edge_index, size=(num_src, num_dst)).t()


def test_repr():
    assert str(SAGEConv(16, 32, heads=4)) == "SAGEConv(16, 32, heads=4)"
    assert str(SAGEConv(16, 32)) == "SAGEConv(16, 32, heads=4)"
    assert str(SAGEConv(8, 16, heads=2)) == "SAGEConv(8, 16, heads=2)"


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
        torch.testing.assert_close(conv.nn2[1].running_mean, ref.nn2.norm.running_mean)
        torch.testing.assert_close(conv.nn2[1].running_var, ref.nn2.norm.running_var)


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
    conv = SAGEConv(4, 8, heads=2).double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for update in (conv.nn1, conv.nn2):
            update[1].running_mean.uniform_(-0.5, 0.5)
            update[1].running_var.uniform_(0.5, 2.0)
    x, _, _, edge_index = random_graph(1, 5, 4, 3, dtype=torch.float64)
    if generic:
        edge_index = shuffle_edges(edge_index)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: conv(t, edge_index), (x,))


def test_reset_parameters():
    conv = make()
    before = copy.deepcopy(conv.state_dict())
    with torch.no_grad():
        conv.nn1[0].weight.zero_()
    conv.reset_parameters()
    assert conv.nn1[0].weight.abs().sum() > 0
    assert conv.nn1[0].weight.shape == before["nn1.0.weight"].shape


def test_eval_transforms_each_source_once():
    # In eval the fast path applies nn1 per node then gathers; per edge (train layout) must agree.
    conv = make().eval()
    x, _, _, edge_index = random_graph(B, N, C, K)
    per_edge = conv.nn1(x[edge_index[0]].view(B * N, K, C)).amax(1)
    expected = conv.nn2(torch.cat([x, per_edge], dim=-1))
    torch.testing.assert_close(conv(x, edge_index, k=K), expected, rtol=1e-5, atol=1e-5)


def test_train_batchnorm_statistics_over_edges():
    conv = make().train()
    x, _, _, edge_index = random_graph(B, N, C, K)
    conv(x, edge_index, k=K)
    h = conv.nn1[0](x[edge_index[0]])  # (E, C): statistics over all E = N * k edges
    momentum = conv.nn1[1].momentum
    torch.testing.assert_close(conv.nn1[1].running_mean, momentum * h.mean(0).detach(),
                               rtol=1e-5, atol=1e-6)
