"""Every MessagePassing option means on our convs what it means in PyG, on every graph.

The walk of a PyG user: build a k-NN graph, pass ``aggr``/``flow``/``node_dim``/
``decomposed_layers``, prune it with ``dropout_edge``, shuffle it, use pooled keys, explain it
with GNNExplainer, hook into messages. Each result is compared with a hand-written per-node
reference and with PyG's generic path (a plain ``edge_index`` tensor).
"""

from functools import partial

import pytest
import torch
from dense_reference import CountPaths, plain
from torch_geometric import EdgeIndex
from torch_geometric.explain import Explainer, GNNExplainer
from torch_geometric.nn.aggr import MeanAggregation, SoftmaxAggregation
from torch_geometric.utils import dropout_edge

from pyg_vig.nn import EdgeConv, GINConv, Grapher, KNNEdgeIndex, MRConv, SAGEConv
from pyg_vig.nn import knn_graph as pyg_knn_graph
from pyg_vig.nn.conv._utils import interleave

C, OUT, N, M, K = 8, 16, 30, 12, 5
CONVS = [MRConv, EdgeConv, GINConv, SAGEConv]
AGGRS = ["mean", "max", "min", "sum"]

# ViG's graph (normalised features, self-loops); PyG's defaults are tested in test_knn_pyg.py
knn_graph = partial(pyg_knn_graph, loop=True, normalize=True)


def _reduce(values, aggr, channels):
    if values.numel() == 0:  # PyG: an empty neighbourhood aggregates to 0
        n = len(aggr) if isinstance(aggr, list) else 1
        return torch.zeros(n * channels, dtype=torch.float64)
    if isinstance(aggr, list):
        return torch.cat([_reduce(values, a, channels) for a in aggr])
    return {"mean": values.mean(0), "max": values.amax(0), "min": values.amin(0),
            "sum": values.sum(0), "add": values.sum(0)}[aggr]


@torch.no_grad()
def reference(conv, x_src, x_dst, edge_index, aggr):
    """The conv's equation evaluated node by node (eval mode, float64)."""
    src, dst = plain(edge_index)
    rows = []
    for i in range(x_dst.size(0)):
        nb = src[dst == i]
        xi, xj = x_dst[i : i + 1], x_src[nb]
        if isinstance(conv, MRConv):
            m = _reduce(xj - xi, aggr, C).unsqueeze(0)
            h = interleave(xi, m) if m.size(1) == C else torch.cat([xi, m], -1)
            rows.append(conv.nn(h))
        elif isinstance(conv, EdgeConv):
            msg = conv.nn(torch.cat([xi.expand_as(xj), xj - xi], -1))
            rows.append(_reduce(msg, aggr, OUT).unsqueeze(0))
        elif isinstance(conv, GINConv):
            rows.append(conv.nn((1 + conv.eps) * xi + _reduce(xj, aggr, C).unsqueeze(0)))
        else:
            m = _reduce(conv.nn1(xj), aggr, C).unsqueeze(0)
            rows.append(conv.nn2(torch.cat([xi, m], -1)))
    return torch.cat(rows, 0)


def randomize(conv):
    with torch.no_grad():
        for m in conv.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return conv.double().eval()


def graphs(bipartite=False):
    """k-NN graph, its plain tensor, a shuffled and a pruned (irregular) version."""
    torch.manual_seed(0)
    x = torch.randn(2 * N, C, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(N)
    y, batch_y = None, None
    if bipartite:
        y = torch.randn(2 * M, C, dtype=torch.float64)
        batch_y = torch.arange(2).repeat_interleave(M)
    ei = knn_graph(x, K, batch, y=y, batch_y=batch_y)
    shuffled = plain(ei)[:, torch.randperm(ei.size(1))]
    pruned, _ = dropout_edge(ei, p=0.4, training=True)
    # and a target left without any edge (PyG aggregates an empty neighbourhood to 0)
    keep = plain(pruned)[1] != 3
    lonely = EdgeIndex(plain(pruned)[:, keep], sparse_size=pruned.sparse_size(),
                       sort_order="col")
    return x, y, {"knn": ei, "tensor": plain(ei), "shuffled": shuffled, "pruned": pruned,
                  "lonely": lonely}


@pytest.fixture(params=["compiled", "pure_torch"])
def kernels(request, monkeypatch):
    """Run with the compiled operators (where they build) and with the pure-torch fallback."""
    import pyg_vig.ops._build as build_mod

    if request.param == "pure_torch":  # ops.compiled_for, the one dispatch point, says no
        monkeypatch.setattr(build_mod, "available", lambda: False)
    return request.param


@pytest.mark.parametrize("aggr", AGGRS)
@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bipartite", [False, True], ids=["self", "bipartite"])
def test_aggr_on_every_graph(conv_cls, aggr, bipartite, kernels):
    x, y, gs = graphs(bipartite)
    conv = randomize(conv_cls(C, OUT, aggr=aggr))
    inputs = x if y is None else (y, x)
    x_src = x if y is None else y
    for name, ei in gs.items():
        expected = reference(conv, x_src, x, ei, aggr)
        torch.testing.assert_close(conv(inputs, ei), expected, rtol=1e-9, atol=1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")
    default = {MRConv: ("max",), EdgeConv: ("max",), SAGEConv: ("max",),
               GINConv: ("add", "sum")}[conv_cls]
    assert str(conv).endswith(")" if aggr in default else f"aggr={aggr})")


def test_mean_is_not_max_on_a_knn_graph():
    # The bug of the first round: the k-regular path always took the max.
    x, _, gs = graphs()
    conv_max, conv_mean = randomize(MRConv(C, OUT)), randomize(MRConv(C, OUT, aggr="mean"))
    conv_mean.load_state_dict(conv_max.state_dict())
    ei = gs["knn"]
    assert (conv_max(x, ei) - conv_mean(x, ei)).abs().max() > 1e-2
    pruned_mean = conv_mean(x, gs["pruned"])
    torch.testing.assert_close(pruned_mean, reference(conv_mean, x, x, gs["pruned"], "mean"))


@pytest.mark.parametrize("aggr", AGGRS)
@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_which_graphs_take_the_fused_path(conv_cls, aggr):
    # What docs/graph.md promises: every target-sorted EdgeIndex (k-NN, pruned by dropout_edge,
    # with an empty neighbourhood) takes the fused gather-reduce for sum/mean/max/min; a plain
    # or shuffled tensor takes PyG's generic path. Both give the reference result.
    x, _, gs = graphs()
    conv = randomize(conv_cls(C, OUT, aggr=aggr))
    for name, ei in gs.items():
        with CountPaths(conv) as paths:
            out = conv(x, ei)
        fused = name in ("knn", "pruned", "lonely")
        assert (paths.fused, paths.generic) == ((1, 0) if fused else (0, 1)), name
        torch.testing.assert_close(out, reference(conv, x, x, ei, aggr), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("conv_cls", [MRConv, EdgeConv, SAGEConv], ids=lambda c: c.__name__)
@pytest.mark.parametrize("aggr", [["mean", "max"], "list"])
def test_aggregation_lists_and_modules(conv_cls, aggr):
    x, _, gs = graphs()
    if aggr == "list":
        aggr = [MeanAggregation(), SoftmaxAggregation(t=1.0)]
        conv = randomize(conv_cls(C, OUT, aggr=aggr))
        # SoftmaxAggregation has no hand reference here: the plain path is PyG's own.
        with CountPaths(conv) as paths:
            out = conv(x, gs["knn"])
        assert paths.fused == 0 and paths.generic == 1  # not fusable: PyG's generic path
        torch.testing.assert_close(out, conv(x, gs["shuffled"]))
        return
    conv = randomize(conv_cls(C, OUT, aggr=aggr))
    for ei in gs.values():
        torch.testing.assert_close(conv(x, ei), reference(conv, x, x, ei, aggr))


def test_aggregation_module_equals_string():
    x, _, gs = graphs()
    by_name = randomize(MRConv(C, OUT, aggr="mean"))
    by_module = randomize(MRConv(C, OUT, aggr=MeanAggregation()))
    by_module.load_state_dict(by_name.state_dict())
    for ei in gs.values():
        torch.testing.assert_close(by_module(x, ei), by_name(x, ei))


def test_gin_rejects_channel_changing_aggregation():
    with pytest.raises(ValueError, match="must keep the channel count.*MultiAggregation"):
        GINConv(C, OUT, aggr=["mean", "max"])


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_flow_target_to_source(conv_cls):
    x, _, gs = graphs()
    default = randomize(conv_cls(C, OUT))
    flipped = randomize(conv_cls(C, OUT, flow="target_to_source"))
    flipped.load_state_dict(default.state_dict())
    ei = gs["knn"]
    # target_to_source reads row 0 as targets: the same graph with its rows swapped.
    torch.testing.assert_close(flipped(x, plain(ei).flip(0)), default(x, ei))
    knn_t2s = knn_graph(x, K, torch.arange(2).repeat_interleave(N), flow="target_to_source")
    assert torch.equal(plain(knn_t2s), plain(ei).flip(0))
    torch.testing.assert_close(flipped(x, knn_t2s), default(x, ei))
    # Given the source_to_target k-NN graph, a target_to_source conv aggregates over the
    # reversed edges, exactly like PyG's generic path does (no fused shortcut).
    torch.testing.assert_close(flipped(x, ei), flipped(x, plain(ei)))
    torch.testing.assert_close(flipped(x, ei), default(x, plain(ei).flip(0)))


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_node_dim(conv_cls):
    x, _, gs = graphs()
    a = randomize(conv_cls(C, OUT))
    b = randomize(conv_cls(C, OUT, node_dim=0))
    b.load_state_dict(a.state_dict())
    for ei in gs.values():
        torch.testing.assert_close(b(x, ei), a(x, ei))


@pytest.mark.parametrize("conv_cls", [MRConv, GINConv], ids=lambda c: c.__name__)
def test_decomposed_layers(conv_cls):
    x, _, gs = graphs()
    a = randomize(conv_cls(C, OUT))
    b = randomize(conv_cls(C, OUT, decomposed_layers=2))
    b.load_state_dict(a.state_dict())
    for ei in gs.values():
        torch.testing.assert_close(b(x, ei), a(x, ei))


@pytest.mark.parametrize("conv_cls", [EdgeConv, SAGEConv], ids=lambda c: c.__name__)
def test_decomposed_layers_unsupported(conv_cls):
    with pytest.raises(ValueError, match="per-edge message.*decomposed_layers=2"):
        conv_cls(C, OUT, decomposed_layers=2)


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_message_hooks_run_and_see_every_edge(conv_cls):
    x, _, gs = graphs()
    conv = randomize(conv_cls(C, OUT))
    ei = gs["knn"]
    before = conv(x, ei)
    seen = []
    handle = conv.register_message_forward_hook(lambda m, inputs, out: seen.append(out.size(0)))
    with CountPaths(conv) as paths:
        hooked = conv(x, ei)
    handle.remove()
    assert seen == [ei.size(1)] and paths.generic == 1 and paths.fused == 0
    torch.testing.assert_close(hooked, before)
    # A hook that changes messages changes the output, as in PyG.
    handle = conv.register_message_forward_hook(lambda m, inputs, out: out * 0)
    zeroed = conv(x, ei)
    handle.remove()
    assert (zeroed - before).abs().max() > 1e-3


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_sparse_adjacency_with_other_aggr(conv_cls):
    x, _, gs = graphs()
    conv = randomize(conv_cls(C, OUT, aggr="mean"))
    ei = gs["pruned"]
    adj_t = torch.sparse_coo_tensor(plain(ei).flip(0), torch.ones(ei.size(1)),
                                    (2 * N, 2 * N)).coalesce().to_sparse_csr()
    torch.testing.assert_close(conv(x, adj_t), reference(conv, x, x, ei, "mean"))


# --------------------------------------------------------------------------- explainers
class _ConvModel(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv, self.head = conv, torch.nn.Linear(OUT, 3)

    def forward(self, x, edge_index):
        return self.head(self.conv(x, edge_index))


class _GrapherModel(torch.nn.Module):
    """A Grapher run on a given graph (``edge_index=``), as an explainer drives it."""

    def __init__(self):
        super().__init__()
        self.grapher, self.head = Grapher(C, k=K), torch.nn.Linear(C, 3)

    def forward(self, x, edge_index):
        return self.head(self.grapher(x, edge_index=edge_index))


def _explain(model, x, edge_index):
    explainer = Explainer(
        model=model, algorithm=GNNExplainer(epochs=3), explanation_type="model",
        node_mask_type="attributes", edge_mask_type="object",
        model_config=dict(mode="multiclass_classification", task_level="node",
                          return_type="raw"))
    return explainer(x, edge_index, index=0)


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_gnn_explainer(conv_cls):
    torch.manual_seed(0)
    x = torch.randn(2 * N, C)
    ei = knn_graph(x, K, torch.arange(2).repeat_interleave(N))
    model = _ConvModel(conv_cls(C, OUT)).eval()
    explanation = _explain(model, x, ei)
    mask = explanation.edge_mask
    assert mask.shape == (ei.size(1),)
    # Only edges into node 0 (and through it) can matter for node 0's prediction.
    into_0 = plain(ei)[1] == 0
    assert mask[into_0].abs().sum() > 0
    assert torch.all(mask[~into_0] == 0)
    assert not model.conv.explain  # the explainer restored the layer


def test_gnn_explainer_on_grapher():
    torch.manual_seed(0)
    model = _GrapherModel().eval()
    x = torch.randn(N, C)
    ei = knn_graph(model.grapher.fc1(x).detach(), K)
    explanation = _explain(model, x, ei)
    mask = explanation.edge_mask
    assert mask.shape == (ei.size(1),)
    assert mask[plain(ei)[1] == 0].abs().sum() > 0


def test_grapher_given_graph_equals_built_graph():
    g = randomize(Grapher(C, k=K)).float()
    x = torch.randn(N, C)
    out, ei = g(x, return_edge_index=True)
    assert isinstance(ei, KNNEdgeIndex)
    torch.testing.assert_close(g(x, edge_index=ei), out)
    torch.testing.assert_close(g(x, edge_index=plain(ei)), out, rtol=1e-5, atol=1e-5)
