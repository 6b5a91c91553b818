"""A weighted sparse adjacency in ``GINConv`` means what it means in PyG's ``GINConv``.

PyG sums the neighbours weighted by the values of a ``torch.sparse`` adjacency (``spmm``), and
ignores the values of a ``torch_sparse.SparseTensor`` (``set_value(None)``); an ``EdgeIndex``
has no values. Each case is compared with :class:`torch_geometric.nn.GINConv` holding our update
as its ``nn``, on the same inputs.
"""

import warnings

import pytest
import torch
import torch_geometric.nn as pyg_nn
from dense_reference import CountPaths
from torch_geometric import EdgeIndex
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from pyg_vig.nn import GINConv

N_SRC, N_DST, C, OUT, E = 9, 7, 8, 16, 30


def setup(aggr="add"):
    torch.manual_seed(0)
    ours = GINConv(C, OUT, eps=0.5, aggr=aggr).double().eval()
    with torch.no_grad():
        ours.nn[1].running_mean.uniform_(-0.5, 0.5)
        ours.nn[1].running_var.uniform_(0.5, 2.0)
    theirs = pyg_nn.GINConv(ours.nn, eps=0.5, train_eps=True, aggr=aggr)
    x_src = torch.randn(N_SRC, C, dtype=torch.float64)
    x_dst = torch.randn(N_DST, C, dtype=torch.float64)
    ei = torch.stack([torch.randint(0, N_SRC, (E,)), torch.randint(0, N_DST, (E,))])
    ei = torch.unique(ei, dim=1).contiguous()  # no duplicates: one matrix in every layout
    w = torch.rand(ei.size(1), dtype=torch.float64) + 0.5
    return ours, theirs, (x_src, x_dst), ei, w


def adjacencies(ei, w):
    """The transposed weighted adjacency ``adj_t`` [targets, sources] in each torch layout."""
    size = (N_DST, N_SRC)
    t = ei.flip(0)
    sorted_ei = EdgeIndex(ei, sparse_size=(N_SRC, N_DST)).sort_by("col")
    sorted_w = w[sorted_ei.indices]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # beta sparse CSC/CSR warnings
        return {
            "coo": to_torch_coo_tensor(t, w, size),
            "csr": to_torch_csr_tensor(t, w, size),
            "csc_t": to_torch_csc_tensor(ei, w, (N_SRC, N_DST)).t(),
            "edge_index_csc_t": sorted_ei.values.to_sparse_csc(value=sorted_w).t(),
        }


@pytest.mark.parametrize("aggr", ["add", "mean", "max"])
@pytest.mark.parametrize("layout", ["coo", "csr", "csc_t", "edge_index_csc_t"])
def test_weighted_torch_sparse_equals_pyg(layout, aggr):
    ours, theirs, x, ei, w = setup(aggr)
    adj_t = adjacencies(ei, w)[layout]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyG: "converting to CSR" hints
        expected = theirs(x, adj_t)
        with CountPaths(ours) as paths:
            out = ours(x, adj_t)
    assert paths.fused == 1
    torch.testing.assert_close(out, expected)
    # the weights count: not the unweighted result
    unweighted = ours(x, ei)
    assert (out - unweighted).abs().max() > 1e-3
    if aggr == "add":  # and by hand: nn((1 + eps) x_i + sum_j w_ij x_j)
        h = 1.5 * x[1] + torch.zeros_like(x[1]).index_add_(0, ei[1], w[:, None] * x[0][ei[0]])
        torch.testing.assert_close(out, ours.nn(h))


def test_weight_gradients_and_unit_weights():
    ours, theirs, x, ei, w = setup()
    w = w.clone().requires_grad_()
    adj_t = to_torch_csr_tensor(ei.flip(0), w, (N_DST, N_SRC))
    ours(x, adj_t).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # unit weights: the plain graph's result (fused and generic paths agree)
    ones = to_torch_csr_tensor(ei.flip(0), torch.ones_like(w), (N_DST, N_SRC))
    torch.testing.assert_close(ours(x, ones.detach()), ours(x, ei))


def test_float32_weights_with_float64_features():
    # PyG's spmm would raise on the dtype mismatch; ours casts the weights to the features'.
    ours, _, x, ei, w = setup()
    adj32 = to_torch_csr_tensor(ei.flip(0), w.float(), (N_DST, N_SRC))
    adj64 = to_torch_csr_tensor(ei.flip(0), w, (N_DST, N_SRC))
    torch.testing.assert_close(ours(x, adj32), ours(x, adj64), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch-sparse is not installed")
def test_sparse_tensor_values_ignored_as_pyg():
    ours, theirs, x, ei, w = setup()
    adj_t = SparseTensor(row=ei[1], col=ei[0], value=w, sparse_sizes=(N_DST, N_SRC))
    torch.testing.assert_close(ours(x, adj_t), theirs(x, adj_t))
    torch.testing.assert_close(ours(x, adj_t), ours(x, ei))
