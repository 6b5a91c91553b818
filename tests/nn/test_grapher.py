import copy
import importlib.util
from functools import partial

import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, TransformerConv

from pyg_vig.data import GridLayout
from pyg_vig.nn import (
    CONVS,
    FFN,
    DropPath,
    Grapher,
    KNNEdgeIndex,
    LowRankBias,
    MRConv,
    ViGBlock,
)
from pyg_vig.nn import knn_graph as pyg_knn_graph
from pyg_vig.nn.pos_embed import relative_position_bias

C = 16
HAS_CLUSTER = importlib.util.find_spec("torch_cluster") is not None
# ViG's graph (normalised features, self-loops), what Grapher builds
knn_graph = partial(pyg_knn_graph, loop=True, normalize=True)


def nodes(layout, channels=C):
    return torch.randn(layout.num_nodes, channels)


def randomize_bn(module):
    """Non-trivial BatchNorm running statistics, so eval outputs are not a near-identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return module


# --------------------------------------------------------------------------- shapes, residual
@pytest.mark.parametrize("conv", ["mr", "edge", "gin", "sage"])
def test_grapher_shape_with_batch(conv):
    x = torch.randn(3 * 16, C)
    batch = torch.arange(3).repeat_interleave(16)
    g = Grapher(C, k=4, dilation=2, conv=conv)
    out, edge_index = g(x, batch, return_edge_index=True)
    assert out.shape == x.shape
    assert edge_index.shape == (2, 3 * 16 * 4)
    assert torch.equal(edge_index[1], torch.arange(48).repeat_interleave(4))
    assert isinstance(g.graph_conv, CONVS[conv]) and g.graph_conv.out_channels == 2 * C


def test_grapher_graph_is_built_on_fc1_features():
    g = Grapher(C, k=4).eval()
    x = torch.randn(20, C)
    _, edge_index = g(x, return_edge_index=True)
    assert torch.equal(edge_index, knn_graph(g.fc1(x), 4))


def test_grapher_residual():
    g = randomize_bn(Grapher(C, k=4)).eval()
    x = torch.randn(30, C)
    with torch.no_grad():
        g.fc2[1].weight.zero_()
        g.fc2[1].bias.zero_()
    torch.testing.assert_close(g(x), x)
    with torch.no_grad():
        g.fc2[1].bias.fill_(1.0)
    torch.testing.assert_close(g(x), x + 1.0)


def test_ffn_and_block():
    x = torch.randn(32, C)
    ffn = FFN(C).eval()
    assert ffn.fc1[0].out_features == 4 * C
    assert ffn(x).shape == x.shape
    with torch.no_grad():
        ffn.fc2[1].weight.zero_()
    torch.testing.assert_close(ffn(x), x + ffn.fc2[1].bias)
    block = ViGBlock(C, k=4, mlp_ratio=2.0).eval()
    layout = GridLayout.uniform_grid(2, 4, 4)
    out, edge_index = block(x, layout=layout, return_edge_index=True)
    assert out.shape == x.shape and edge_index.shape == (2, 32 * 4)
    manual = block.ffn(block.grapher(x, layout=layout), layout=layout)
    torch.testing.assert_close(out, manual)


# ---------------------------------------------------------------------- reduction, relative pos
@pytest.mark.parametrize("relative_pos", [None, "official", "geometric"])
def test_reduction_bipartite(relative_pos):
    layout = GridLayout.uniform_grid(2, 8, 8)
    g = Grapher(C, k=4, reduction=2, relative_pos=relative_pos).eval()
    x = nodes(layout)
    out, edge_index = g(x, layout=layout, return_edge_index=True)
    assert out.shape == x.shape and edge_index.shape == (2, 128 * 4)
    # sources are pooled keys (16 per graph) of the target's own graph
    assert int(edge_index[0].max()) < 2 * 16
    assert torch.equal(edge_index[0] // 16, edge_index[1] // 64)
    # the same as a bipartite knn_graph over the pooled fc1 features
    h = g.fc1(x)
    y, _ = layout.avg_pool(h, 2)
    bias = None if relative_pos is None else relative_position_bias(8, 8, C, 2, mode=relative_pos)
    expected = knn_graph(h, 4, layout.batch(), y=y, batch_y=torch.arange(2).repeat_interleave(16),
                         bias=bias)
    assert torch.equal(edge_index, expected)


@pytest.mark.parametrize("relative_pos", ["official", "geometric"])
def test_relative_pos_uses_table(relative_pos):
    layout = GridLayout.uniform_grid(2, 5, 5)
    g = Grapher(C, k=3, dilation=2, relative_pos=relative_pos).eval()
    x = nodes(layout)
    _, edge_index = g(x, layout=layout, return_edge_index=True)
    bias = relative_position_bias(5, 5, C, mode=relative_pos)
    expected = knn_graph(g.fc1(x), 3, layout.batch(), dilation=2, bias=bias)
    assert torch.equal(edge_index, expected)
    # the self edge keeps rank 0 (distance ~0 and the strongest bias)
    assert torch.equal(edge_index[0].view(-1, 3)[:, 0], torch.arange(50))
    def tensor(b):
        return b.query if isinstance(b, LowRankBias) else b

    table = tensor(g.relative_bias((5, 5), x.device, x.dtype))
    assert tensor(g.relative_bias((5, 5), x.device, x.dtype)) is table  # cached
    twin = copy.deepcopy(g)
    assert tensor(twin.relative_bias((5, 5), x.device, x.dtype)) is table  # shared
    g.double()  # tables follow the dtype (never below float32)
    assert tensor(g.relative_bias((5, 5), x.device, torch.float64)) is not table
    bf16 = g.relative_bias((5, 5), x.device, torch.bfloat16)
    assert (bf16.dtype if isinstance(bf16, torch.Tensor) else bf16.query.dtype) == torch.float32


def test_graph_transform_prunes_edges_once():
    # A graph transform (PyG's dropout_edge) sees the k-NN graph; fc1 runs once, so its
    # BatchNorm statistics move once per forward.
    from torch_geometric.utils import dropout_edge

    layout = GridLayout.uniform_grid(2, 4, 4)
    x = nodes(layout)
    seen = []

    def drop(edge_index):
        seen.append(edge_index.size(1))
        return dropout_edge(edge_index, p=0.5, training=True)[0]

    g = Grapher(C, k=4, graph_transform=drop).train()
    torch.manual_seed(0)
    out, edge_index = g(x, layout=layout, return_edge_index=True)
    assert seen == [32 * 4] and 0 < edge_index.size(1) < 32 * 4
    assert int(g.fc1[1].num_batches_tracked) == 1
    plain = Grapher(C, k=4).train()
    plain.load_state_dict(g.state_dict())
    full = plain(x, layout=layout)
    assert not torch.allclose(out, full)  # the pruned graph changed the messages
    with pytest.raises(TypeError, match="graph_transform must be a callable"):
        Grapher(C, graph_transform=0.5)


@pytest.mark.skipif(not HAS_CLUSTER, reason="torch-cluster is not installed")
def test_geometric_relative_pos_cluster_matches_dense():
    layout = GridLayout.uniform_grid(2, 6, 6)
    x = nodes(layout)
    dense = Grapher(C, k=4, reduction=2, relative_pos="geometric", backend="dense").eval()
    cluster = copy.deepcopy(dense)
    cluster.backend = "cluster"
    assert isinstance(cluster.relative_bias((6, 6), x.device, x.dtype), LowRankBias)
    _, e_dense = dense(x, layout=layout, return_edge_index=True)
    _, e_cluster = cluster(x, layout=layout, return_edge_index=True)
    assert torch.equal(e_cluster, e_dense)


# --------------------------------------------------------------------------- mixed-size layouts
@pytest.mark.parametrize(
    "reduction,relative_pos", [(1, None), (1, "official"), (2, "official"), (2, "geometric")]
)
def test_mixed_layout_equals_graphs_alone(reduction, relative_pos):
    sizes = [(4, 4), (6, 5)]
    layout = GridLayout(sizes + [(4, 4)])
    g = randomize_bn(Grapher(C, k=3, reduction=reduction, relative_pos=relative_pos)).eval()
    x = nodes(layout)
    out = g(x, layout=layout)
    for i, size in enumerate(layout.sizes):
        part = x[layout.ptr[i] : layout.ptr[i + 1]]
        alone = g(part, layout=GridLayout([size]))
        torch.testing.assert_close(out[layout.ptr[i] : layout.ptr[i + 1]], alone,
                                   rtol=1e-5, atol=1e-5)


def test_mixed_batch_vector_equals_graphs_alone():
    g = randomize_bn(Grapher(C, k=3, dilation=2, conv="edge")).eval()
    counts = [12, 20, 12]
    x = torch.randn(sum(counts), C)
    batch = torch.arange(3).repeat_interleave(torch.tensor(counts))
    out = g(x, batch)
    start = 0
    for n in counts:
        torch.testing.assert_close(out[start : start + n], g(x[start : start + n]),
                                   rtol=1e-5, atol=1e-5)
        start += n


# --------------------------------------------------------------------------- PyG conv factories
FACTORIES = {
    "GATConv": lambda i, o: GATConv(i, o, heads=2, concat=False),
    "GCNConv": lambda i, o: GCNConv(i, o),
    "TransformerConv": lambda i, o: TransformerConv(i, o),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_pyg_conv_factory(name):
    g = Grapher(C, k=4, conv=FACTORIES[name])
    assert type(g.graph_conv).__name__ == name
    x = torch.randn(2 * 16, C, requires_grad=True)
    batch = torch.arange(2).repeat_interleave(16)
    out = g(x, batch)
    assert out.shape == x.shape
    out.pow(2).sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in g.graph_conv.parameters())


@pytest.mark.parametrize("name", ["GATConv", "TransformerConv"])
def test_pyg_conv_factory_bipartite(name):
    layout = GridLayout.uniform_grid(2, 6, 6)
    g = Grapher(C, k=4, reduction=2, conv=FACTORIES[name])
    out = g(nodes(layout), layout=layout)
    assert out.shape == (72, C)


@pytest.mark.parametrize("fused", [True, False])
def test_grapher_hands_conv_the_knn_edge_index(monkeypatch, fused):
    # fused=True: the conv gets the KNNEdgeIndex (PyG may fuse); fused=False: a plain tensor,
    # so PyG's generic message -> aggregate runs. Both give the same output.
    g = Grapher(C, k=4, fused=fused).eval()
    seen = {}
    forward = MRConv.forward

    def spy(self, x, edge_index):
        seen["type"] = type(edge_index)
        return forward(self, x, edge_index)

    monkeypatch.setattr(MRConv, "forward", spy)
    x = torch.randn(20, C)
    out = g(x)
    assert seen["type"] is (KNNEdgeIndex if fused else torch.Tensor)
    other = Grapher(C, k=4, fused=not fused).eval()
    other.load_state_dict(g.state_dict())
    torch.testing.assert_close(other(x), out, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- errors
def test_errors():
    x = torch.randn(64, C)
    with pytest.raises(ValueError, match="need the grid sizes: pass layout=GridLayout"):
        Grapher(C, k=4, reduction=2)(x)
    with pytest.raises(ValueError, match="need the grid sizes: pass layout=GridLayout"):
        Grapher(C, k=4, relative_pos="official")(x)
    with pytest.raises(ValueError, match="relative_pos must be None or one of"):
        Grapher(C, relative_pos="sincos")
    with pytest.raises(ValueError, match="unknown graph conv 'gat'; choose one of"):
        Grapher(C, conv="gat")
    with pytest.raises(ValueError, match="unknown k-NN backend"):
        Grapher(C, backend="annoy")
    layout = GridLayout([(4, 4), (2, 2)])
    with pytest.raises(ValueError, match="a 2x2 node grid.*fewer candidates than k \\* dilation"):
        Grapher(C, k=3, dilation=2)(torch.randn(20, C), layout=layout)


# --------------------------------------------------------------------------- drop path, stochastic
def test_drop_path_only_in_train():
    layout = GridLayout.uniform_grid(8, 4, 4)
    x = nodes(layout)
    plain = randomize_bn(Grapher(C, k=3))
    dropped = copy.deepcopy(plain)
    dropped.drop_path = DropPath(0.5)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(x, layout=layout), plain(x, layout=layout))

    plain.train(), dropped.train()
    branch = (plain(x, layout=layout) - x).view(8, 16, C)
    torch.manual_seed(3)
    delta = (dropped(x, layout=layout) - x).view(8, 16, C)
    kept = [bool(d.abs().sum() > 0) for d in delta]
    assert any(kept) and not all(kept)  # whole graphs are dropped
    for d, b, keep in zip(delta, branch, kept, strict=True):
        torch.testing.assert_close(d, 2 * b if keep else torch.zeros_like(b),
                                   rtol=1e-5, atol=1e-5)


def test_drop_path_module():
    dp = DropPath(0.25)
    x = torch.randn(10, 4)
    assert dp.eval()(x) is x
    dp.train()
    out = dp(x, torch.tensor([0] * 5 + [1] * 5), 2)
    for sl in (slice(0, 5), slice(5, 10)):
        ratio = out[sl] / x[sl]
        assert torch.allclose(ratio, torch.zeros_like(ratio)) or torch.allclose(
            ratio, torch.full_like(ratio, 1 / 0.75))
    assert repr(dp) == "DropPath(p=0.25)"


def test_drop_path_p1_drops_everything():
    dp = DropPath(1.0).train()
    x = torch.randn(6, 4)
    assert torch.equal(dp(x, torch.tensor([0, 0, 0, 1, 1, 1]), 2), torch.zeros_like(x))


def test_stochastic_dilation_only_in_training():
    layout = GridLayout.uniform_grid(2, 5, 5)
    x = nodes(layout)
    det = Grapher(C, k=3, dilation=3)
    sto = copy.deepcopy(det)
    sto.stochastic, sto.epsilon = True, 1.0
    det.eval(), sto.eval()
    h = det.fc1(x)
    assert torch.equal(sto.build_graph(h, layout=layout)[0], det.build_graph(h, layout=layout)[0])
    sto.train()
    reference = det.build_graph(h, layout=layout)[0]
    graphs = [sto.build_graph(h, layout=layout)[0] for _ in range(4)]
    assert any(not torch.equal(e, reference) for e in graphs)
    candidates = knn_graph(h, 9, layout.batch())[0].view(-1, 9)
    for e in graphs:
        for cand, got in zip(candidates.tolist(), e[0].view(-1, 3).tolist(), strict=True):
            assert len(set(got)) == 3 and set(got) <= set(cand)
