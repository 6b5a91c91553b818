"""The fused path returns one row per target node (``x_dst``), as PyG's generic path does,
also when the last targets have no edges and the ``EdgeIndex`` carries no ``sparse_size``
(its column pointer would otherwise stop at the largest target index).
"""

import pytest
import torch
import torch_geometric.nn as pyg_nn
from dense_reference import CountPaths
from torch_geometric import EdgeIndex

from pyg_vig.nn import EdgeConv, GINConv, MRConv, SAGEConv

N_SRC, N_DST, C, OUT = 9, 11, 8, 16
LAST_WITH_EDGES = 6  # targets 7..10 have no edges


def graph():
    torch.manual_seed(0)
    src = torch.randint(0, N_SRC, (25,))
    dst = torch.randint(0, LAST_WITH_EDGES + 1, (25,))
    dst[0] = LAST_WITH_EDGES
    ei = torch.stack([src, dst])[:, dst.argsort(stable=True)].contiguous()
    x_src = torch.randn(N_SRC, C, dtype=torch.float64)
    x_dst = torch.randn(N_DST, C, dtype=torch.float64)
    return ei, (x_src, x_dst)


def convs(aggr):
    for cls in (MRConv, EdgeConv, GINConv, SAGEConv):
        conv = cls(C, OUT, aggr=aggr).double().eval()
        with torch.no_grad():
            for m in conv.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5)
        yield conv


@pytest.mark.parametrize("aggr", ["sum", "mean", "max", "min"])
def test_unsized_edge_index_gives_x_dst_rows(aggr):
    ei, x = graph()
    for conv in convs(aggr):
        expected = conv(x, ei)  # plain tensor: PyG's generic path, N_DST rows
        assert expected.shape == (N_DST, OUT)
        for sized in (None, (N_SRC, N_DST)):
            edge_index = EdgeIndex(ei, sparse_size=sized, sort_order="col")
            for _ in range(2):  # PyG's propagate caches a size on the tensor: call twice
                with CountPaths(conv) as paths:
                    out = conv(x, edge_index)
                assert paths.fused == 1, type(conv).__name__
                torch.testing.assert_close(out, expected, msg=type(conv).__name__)
        # the rows of targets without edges: the update of an empty (zero) aggregation
        lonely = conv((x[0], x[1][LAST_WITH_EDGES + 1:]), torch.empty(2, 0, dtype=torch.long))
        torch.testing.assert_close(expected[LAST_WITH_EDGES + 1:], lonely)


@pytest.mark.parametrize("cls,theirs", [(GINConv, pyg_nn.GINConv), (EdgeConv, pyg_nn.EdgeConv)],
                         ids=["GINConv", "EdgeConv"])
def test_equals_pyg_conv(cls, theirs):
    ei, x = graph()
    ours = cls(C, OUT).double().eval()
    pyg_conv = theirs(ours.nn, train_eps=True) if cls is GINConv else theirs(ours.nn, aggr="max")
    expected = pyg_conv(x, ei)  # PyG on the plain tensor (PyG's own generic path)
    assert expected.shape == (N_DST, OUT)
    out = ours(x, EdgeIndex(ei, sort_order="col"))  # fused, no sparse_size
    torch.testing.assert_close(out, expected)


def test_more_targets_in_graph_than_rows_is_an_error():
    ei, x = graph()
    with pytest.raises(ValueError, match=r"edges into target 6, but x_dst has only 5 rows"):
        GINConv(C, OUT).double()((x[0], x[1][:5]), EdgeIndex(ei, sort_order="col"))
