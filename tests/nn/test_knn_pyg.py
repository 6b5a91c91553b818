"""knn_graph as a drop-in for torch_geometric.nn.knn_graph / torch_cluster.knn_graph."""

import copy
import importlib.util

import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_vig.nn import KNNEdgeIndex, knn_graph

HAS_CLUSTER = importlib.util.find_spec("torch_cluster") is not None


def edges(edge_index):
    t = edge_index.as_tensor() if hasattr(edge_index, "as_tensor") else edge_index
    return set(map(tuple, t.t().tolist()))


def brute_force(x, k, batch, loop, cosine=False):
    """(source, target) pairs: for every target its k nearest sources of the same graph."""
    if cosine:
        x = torch.nn.functional.normalize(x, dim=-1)
    d = torch.cdist(x.double(), x.double())
    d[batch.view(-1, 1) != batch.view(1, -1)] = float("inf")
    if not loop:
        d.fill_diagonal_(float("inf"))
    out = set()
    for i in range(x.size(0)):
        available = int(torch.isfinite(d[i]).sum())
        for j in d[i].topk(min(k, available), largest=False).indices.tolist():
            out.add((j, i))
    return out


@pytest.fixture
def points():
    torch.manual_seed(0)
    x = torch.randn(60, 5)
    batch = torch.tensor([0] * 25 + [1] * 30 + [2] * 5)  # graph 2 has fewer than k + 1 nodes
    return x, batch


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_defaults_and_options_match_brute_force(points, loop, cosine):
    x, batch = points
    out = knn_graph(x, 6, batch, loop=loop, cosine=cosine)
    assert edges(out) == brute_force(x, 6, batch, loop, cosine)
    if not loop:
        assert not (out[0] == out[1]).any()


def test_positional_defaults_are_pygs(points):
    x, batch = points
    # PyG: knn_graph(x, k, batch, loop=False, flow="source_to_target", cosine=False)
    assert edges(knn_graph(x, 4, batch)) == edges(knn_graph(x, 4, batch, False,
                                                             "source_to_target", False))
    assert edges(knn_graph(x, 4, batch)) == brute_force(x, 4, batch, loop=False)
    # raw features: scaling one point changes its neighbours (ViG's normalize=True would not)
    y = x.clone()
    y[0] *= 10
    assert edges(knn_graph(x, 4, batch)) != edges(knn_graph(y, 4, batch))
    assert edges(knn_graph(x, 4, batch, normalize=True)) == edges(
        knn_graph(y, 4, batch, normalize=True))


@pytest.mark.skipif(not HAS_CLUSTER, reason="torch-cluster is not installed")
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize("k", [3, 6, 30])
def test_same_graph_as_torch_cluster(points, loop, flow, k):
    import torch_cluster

    x, batch = points
    ours = knn_graph(x, k, batch, loop=loop, flow=flow)
    theirs = torch_cluster.knn_graph(x, k, batch, loop=loop, flow=flow)
    assert ours.shape == theirs.shape
    assert edges(ours) == edges(theirs)


def test_flow_swaps_rows(points):
    x, batch = points
    a = knn_graph(x, 4, batch)
    b = knn_graph(x, 4, batch, flow="target_to_source")
    assert edges(a) == {(j, i) for i, j in edges(b)}
    assert b.is_sorted_by_row


def test_k_regular_result_keeps_knn_edge_index(points):
    x, batch = points
    out = knn_graph(x[:55], 4, batch[:55])
    assert isinstance(out, KNNEdgeIndex) and out.k == 4
    fewer = knn_graph(x, 6, batch)  # graph 2: 4 neighbours each
    assert not isinstance(fewer, KNNEdgeIndex) and fewer.is_sorted_by_col
    assert torch.bincount(fewer[1]).tolist() == [6] * 55 + [4] * 5


def test_empty_input():
    out = knn_graph(torch.empty(0, 3), 4)
    assert out.shape == (2, 0) and out.dtype == torch.long
    out = knn_graph(torch.randn(1, 3), 4)  # one node, no self-loop: no edge
    assert out.shape == (2, 0)
    assert knn_graph(torch.randn(1, 3), 4, loop=True).tolist() == [[0], [0]]


def test_nan_features_are_nobodys_neighbour():
    torch.manual_seed(1)
    x = torch.randn(40, 4)
    x[7, 2] = float("nan")
    for kw in ({}, {"loop": True, "normalize": True}):
        out = knn_graph(x, 5, **kw)
        assert not (out[0] == 7).any()
        keep = torch.arange(40) != 7
        clean = knn_graph(x[keep], 5, **kw)
        # the other nodes' neighbourhoods are those of the graph without the NaN node
        mapping = torch.arange(40)[keep]
        expected = {(int(mapping[j]), int(mapping[i])) for j, i in edges(clean)}
        assert {e for e in edges(out) if e[1] != 7} == expected


@pytest.mark.parametrize("backend", ["dense", "torch"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_keys_are_nobodys_neighbour(backend, bad):
    # Without normalisation an infinite feature gives infinite / NaN distances; as a key it
    # must be the farthest of all (also in a bipartite graph and on both selection paths).
    torch.manual_seed(2)
    x, y = torch.randn(30, 4), torch.randn(25, 4)
    y[3, 1] = bad
    for kw in ({"normalize": False}, {"normalize": True}):
        out = knn_graph(x, 4, y=y, backend=backend, **kw)
        assert not (out[0] == 3).any()
        keep = torch.arange(25) != 3
        clean = knn_graph(x, 4, y=y[keep], backend=backend, **kw)
        mapping = torch.arange(25)[keep]
        assert {(int(mapping[j]), int(i)) for j, i in edges(clean)} == set(edges(out))


def test_duplicates_keep_self_edge_with_loop():
    x = torch.randn(10, 3)
    x[5] = x[4]
    out = knn_graph(x, 2, loop=True, normalize=True)
    assert (out[0][out[1] == 4] == 4).any() or (out[0][out[1] == 4] == 5).all()
    no_loop = knn_graph(x, 2)
    assert set(no_loop[0][no_loop[1] == 4].tolist()) >= {5}
    assert not (no_loop[0] == no_loop[1]).any()


def test_autocast_does_not_change_the_graph():
    torch.manual_seed(0)
    x = torch.randn(500, 32)
    batch = torch.arange(2).repeat_interleave(250)
    for kw in ({}, {"loop": True, "normalize": True, "dilation": 2}):
        ref = knn_graph(x, 9, batch, **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = knn_graph(x, 9, batch, **kw)
        assert torch.equal(ref.as_tensor(), out.as_tensor())
    # bf16 features are compared in float32 too (not in bf16 arithmetic)
    xb = x.bfloat16()
    assert torch.equal(knn_graph(xb, 9).as_tensor(), knn_graph(xb.float(), 9).as_tensor())


def test_grapher_graph_is_the_same_under_autocast():
    from pyg_vig.data import GridLayout
    from pyg_vig.nn import Grapher

    layout = GridLayout.uniform_grid(2, 8, 8)
    x = torch.randn(128, 16)
    g = Grapher(16, k=5, reduction=2, relative_pos="official").eval()
    with torch.no_grad():
        h = g.fc1(x)
        y, layout_y = g.keys(h, layout)
        ref = g.graph(h, None, layout, y, layout_y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = g.graph(h, None, layout, y, layout_y)
    assert torch.equal(ref.as_tensor(), out.as_tensor())


def test_deepcopy_of_graphs_and_batches():
    x = torch.randn(20, 4)
    e = knn_graph(x, 3, loop=True)
    c = copy.deepcopy(e)
    assert type(c) is KNNEdgeIndex and c.k == 3 and torch.equal(c.as_tensor(), e.as_tensor())
    assert c.sparse_size() == e.sparse_size() and c.sort_order == e.sort_order
    c[0, 0] = 19  # a copy, not a view
    assert e[0, 0] != 19 or c.as_tensor().data_ptr() != e.as_tensor().data_ptr()
    data = Data(x=x, edge_index=e)
    assert type(copy.deepcopy(data).edge_index) is KNNEdgeIndex
    batch = Batch.from_data_list([data, data])
    assert torch.equal(copy.deepcopy(batch).edge_index, batch.edge_index)


def test_pyg_lib_backend_same_graph_when_installed(points):
    from pyg_vig.nn.graph import _has_pyg_lib

    if not _has_pyg_lib():
        pytest.skip("pyg-lib is not installed (no wheel for this torch build)")
    x, batch = points
    kw = dict(loop=True, normalize=True)
    assert torch.equal(knn_graph(x[:55], 4, batch[:55], backend="pyg", **kw),
                       knn_graph(x[:55], 4, batch[:55], backend="dense", **kw))


@pytest.mark.parametrize("conv_name", ["MRConv", "EdgeConv", "GINConv", "SAGEConv"])
@pytest.mark.parametrize("node_dim", [-2, 1])
@pytest.mark.parametrize("graph_type", ["knn", "tensor"])
def test_convs_on_3d_node_features(conv_name, node_dim, graph_type):
    # [T, N, C] input with node_dim, as PyG's convs take it: equal to a loop over T.
    import pyg_vig.nn as pnn

    x = torch.randn(30, 16)
    edge_index = knn_graph(x, 4, loop=True, normalize=True)
    if graph_type == "tensor":
        edge_index = edge_index.as_tensor()
    conv = getattr(pnn, conv_name)(16, 32).eval()
    xt = torch.randn(3, 30, 16)
    with torch.no_grad():
        ref = torch.stack([conv(xt[t], edge_index) for t in range(3)])
        conv.node_dim = node_dim
        out = conv(xt, edge_index)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_edge_conv_list_aggr_channels_as_pyg():
    # PyG's EdgeConv aggregates last, so a list of aggregations concatenates (2 x channels);
    # ours does the same. MRConv/SAGEConv aggregate before their update layer.
    import torch_geometric.nn as gnn

    from pyg_vig.nn import EdgeConv, MRConv

    x = torch.randn(30, 16)
    edge_index = knn_graph(x, 4, loop=True, normalize=True)
    ours = EdgeConv(16, 32, aggr=["mean", "max"])(x, edge_index)
    theirs = gnn.EdgeConv(torch.nn.Linear(32, 32), aggr=["mean", "max"])(x, edge_index.as_tensor())
    assert ours.shape == theirs.shape == (30, 64)
    assert MRConv(16, 32, aggr=["mean", "max"])(x, edge_index).shape == (30, 32)
