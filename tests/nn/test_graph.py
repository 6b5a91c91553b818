import importlib.util
import itertools
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from dense_reference import dense_knn

import pyg_vig.nn.graph as graph_mod
from pyg_vig.nn import KNNEdgeIndex, LowRankBias, available_backends
from pyg_vig.nn import knn_graph as pyg_knn_graph
from pyg_vig.nn.graph import batched_sources, knn_index, resolve_backend, select_ranks
from pyg_vig.nn.pos_embed import relative_position_bias, relative_position_factors

HAS_CLUSTER = importlib.util.find_spec("torch_cluster") is not None
needs_cluster = pytest.mark.skipif(not HAS_CLUSTER, reason="torch-cluster is not installed")

C = 8
# (targets, sources) per graph: mixed sizes, including a repeated size (grouped together).
SIZES = [(12, 12), (9, 9), (12, 12), (16, 16)]
SIZES_BIPARTITE = [(12, 8), (9, 10), (12, 8), (16, 9)]

# ViG's graph (normalised features, self-loops); PyG's defaults are tested in test_knn_pyg.py
knn_graph = partial(pyg_knn_graph, loop=True, normalize=True)


# --------------------------------------------------------------------------- helpers
def make_graphs(sizes, bipartite, dtype=torch.float32):
    """Random features of graphs with ``sizes`` [(n_g, m_g)], plus batch vectors."""
    n = [s[0] for s in sizes]
    m = [s[1] for s in sizes]
    x = torch.randn(sum(n), C, dtype=dtype)
    batch = torch.arange(len(n)).repeat_interleave(torch.tensor(n))
    if not bipartite:
        return x, batch, None, None
    y = torch.randn(sum(m), C, dtype=dtype)
    batch_y = torch.arange(len(m)).repeat_interleave(torch.tensor(m))
    return x, batch, y, batch_y


def random_lowrank(n, m, dim=6, dtype=torch.float32):
    # Key factors of equal norm, as sin-cos embeddings have (needed by the cluster folding).
    key = F.normalize(torch.randn(m, dim, dtype=dtype), dim=-1) * 0.7
    return LowRankBias(torch.randn(n, dim, dtype=dtype) * 0.7, key)


def make_bias(kind, sizes, dtype=torch.float32):
    """``None``, one shared tensor, a dict per size, or a dict of LowRankBias per size."""
    if kind is None:
        return None
    distinct = sorted(set(sizes))
    if kind == "tensor":
        assert len(distinct) == 1
        n, m = distinct[0]
        return torch.randn(n, m, dtype=dtype) * 0.5
    if kind == "dict":
        return {(n, m): torch.randn(n, m, dtype=dtype) * 0.5 for n, m in distinct}
    if kind == "lowrank":
        return {(n, m): random_lowrank(n, m, dtype=dtype) for n, m in distinct}
    raise AssertionError(kind)


def bias_tensor(bias, n, m):
    if bias is None:
        return None
    if isinstance(bias, dict):
        bias = bias[(n, m)]
    return bias.dense() if isinstance(bias, LowRankBias) else bias


def reference_edges(x, batch, y, batch_y, sizes, k, dilation, bias):
    """Per-graph dense reference, turned into the global ``[2, N*k]`` layout."""
    srcs, ptr_x, ptr_y = [], 0, 0
    for n, m in sizes:
        xg = x[ptr_x : ptr_x + n].t().reshape(1, C, n, 1)
        yg = None if y is None else y[ptr_y : ptr_y + m].t().reshape(1, C, m, 1)
        ei = dense_knn(xg, k, dilation, yg, bias_tensor(bias, n, m))
        srcs.append(ei[0, 0] + ptr_y)  # (n, k)
        ptr_x, ptr_y = ptr_x + n, ptr_y + m
    src = torch.cat(srcs, dim=0).reshape(-1)
    dst = torch.arange(x.size(0)).repeat_interleave(k)
    return torch.stack([src, dst], dim=0)


def assert_valid_layout(edge_index, num_targets, k, self_first):
    assert edge_index.shape == (2, num_targets * k)
    assert edge_index.dtype == torch.long
    dst = edge_index[1]
    assert torch.equal(dst, torch.arange(num_targets).repeat_interleave(k))  # sorted, k each
    assert torch.equal(torch.bincount(dst, minlength=num_targets), torch.full((num_targets,), k))
    if self_first:
        assert torch.equal(edge_index[0].view(-1, k)[:, 0], torch.arange(num_targets))


def edge_sets(edge_index, k):
    return [set(row) for row in edge_index[0].view(-1, k).tolist()]


# --------------------------------------------------------------------------- dense vs reference
COMBOS = list(itertools.product([1, 3], [1, 2], [None, "dict", "lowrank"], [False, True]))


@pytest.mark.parametrize("k,dilation,bias_kind,bipartite", COMBOS)
def test_dense_matches_reference_mixed_sizes(k, dilation, bias_kind, bipartite):
    sizes = SIZES_BIPARTITE if bipartite else SIZES
    x, batch, y, batch_y = make_graphs(sizes, bipartite)
    bias = make_bias(bias_kind, sizes)
    out = knn_graph(x, k, batch, y=y, batch_y=batch_y, dilation=dilation, bias=bias,
                    backend="dense")
    assert_valid_layout(out, x.size(0), k, self_first=not bipartite and bias_kind is None)
    ref = reference_edges(x, batch, y, batch_y, sizes, k, dilation, bias)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("k,dilation", [(2, 1), (3, 2)])
def test_dense_matches_reference_single_tensor_bias(k, dilation, bipartite):
    sizes = [(10, 6)] * 3 if bipartite else [(10, 10)] * 3
    x, batch, y, batch_y = make_graphs(sizes, bipartite)
    bias = make_bias("tensor", sizes)
    out = knn_graph(x, k, batch, y=y, batch_y=batch_y, dilation=dilation, bias=bias)
    assert torch.equal(out, reference_edges(x, batch, y, batch_y, sizes, k, dilation, bias))


def test_no_batch_is_one_graph():
    x = torch.randn(20, C)
    out = knn_graph(x, 4, dilation=2)
    assert torch.equal(out, reference_edges(x, None, None, None, [(20, 20)], 4, 2, None))
    assert torch.equal(out, knn_graph(x, 4, torch.zeros(20, dtype=torch.long), dilation=2))


def test_self_edge_first_with_relative_position_bias():
    # The official bias is -1 on the diagonal (the strongest), so the node stays its own rank 0.
    h, w = 4, 5
    x = torch.randn(2 * h * w, 16)
    batch = torch.arange(2).repeat_interleave(h * w)
    bias = relative_position_bias(h, w, 16)
    out = knn_graph(x, 5, batch, dilation=2, bias=bias)
    assert_valid_layout(out, x.size(0), 5, self_first=True)


def test_normalize_flag():
    # Scaling a node changes unnormalised distances only.
    x = torch.randn(15, C)
    x_scaled = x * torch.linspace(0.1, 10.0, 15).unsqueeze(-1)
    assert torch.equal(knn_graph(x, 4), knn_graph(x_scaled, 4))
    raw = knn_graph(x_scaled, 4, normalize=False)
    d = torch.cdist(x_scaled, x_scaled)
    expected = d.topk(4, largest=False).indices
    assert torch.equal(raw[0].view(15, 4), expected)


def test_batched_sources_to_knn_edge_index():
    idx = torch.tensor([[[0, 1], [1, 0]], [[1, 2], [0, 2]]])  # (B=2, n=2, k=2), m=3
    ei = KNNEdgeIndex.from_sources(batched_sources(idx, num_keys=3), 6)
    assert ei.tolist() == [[0, 1, 1, 0, 4, 5, 3, 5], [0, 0, 1, 1, 2, 2, 3, 3]]
    assert ei.k == 2 and ei.is_sorted_by_col and ei.sparse_size() == (6, 4)


def test_knn_index_shape_and_order():
    xq = torch.randn(3, 10, C)
    xk = torch.randn(3, 7, C)
    idx = knn_index(xq, xk, 3, dilation=2)
    assert idx.shape == (3, 10, 3)
    ref = dense_knn(xq.transpose(1, 2).unsqueeze(-1), 3, 2, xk.transpose(1, 2).unsqueeze(-1))
    assert torch.equal(idx, ref[0])


def test_no_grad_through_graph():
    x = torch.randn(10, C, requires_grad=True)
    out = knn_graph(x, 3)
    assert not out.requires_grad


# --------------------------------------------------------------------------- backends agree
@needs_cluster
@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("k,dilation", [(1, 1), (3, 1), (3, 2), (2, 4)])
def test_cluster_matches_dense(k, dilation, bipartite):
    sizes = SIZES_BIPARTITE if bipartite else SIZES
    x, batch, y, batch_y = make_graphs(sizes, bipartite, dtype=torch.float64)
    kw = dict(y=y, batch_y=batch_y, dilation=dilation)
    dense = knn_graph(x, k, batch, backend="dense", **kw)
    cluster = knn_graph(x, k, batch, backend="cluster", **kw)
    assert torch.equal(cluster[1], dense[1])
    assert edge_sets(cluster, k) == edge_sets(dense, k)
    if dilation > 1:  # dilation picks ranks, so the distance order must agree too
        assert torch.equal(cluster, dense)


@needs_cluster
@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_cluster_folds_lowrank_bias_like_dense(dilation, bipartite):
    sizes = SIZES_BIPARTITE if bipartite else SIZES
    x, batch, y, batch_y = make_graphs(sizes, bipartite, dtype=torch.float64)
    bias = make_bias("lowrank", sizes, dtype=torch.float64)
    kw = dict(y=y, batch_y=batch_y, dilation=dilation, bias=bias)
    dense = knn_graph(x, 3, batch, backend="dense", **kw)
    cluster = knn_graph(x, 3, batch, backend="cluster", **kw)
    assert torch.equal(cluster, dense)


@needs_cluster
@pytest.mark.parametrize("r", [1, 2])
def test_cluster_folds_sincos_factors(r):
    h, w, dim = 6, 6, 16
    q, kf = relative_position_factors(h, w, dim, r)
    bias = LowRankBias(q.double(), kf.double())
    x = torch.randn(2 * h * w, dim, dtype=torch.float64)
    batch = torch.arange(2).repeat_interleave(h * w)
    y = batch_y = None
    if r > 1:
        m = (h // r) * (w // r)
        y = torch.randn(2 * m, dim, dtype=torch.float64)
        batch_y = torch.arange(2).repeat_interleave(m)
    kw = dict(y=y, batch_y=batch_y, dilation=2, bias=bias)
    assert torch.equal(knn_graph(x, 4, batch, backend="cluster", **kw),
                       knn_graph(x, 4, batch, backend="dense", **kw))




def test_lowrank_bias_folding_is_exact():
    """The augmented-feature distance of the cluster/pyg backends must equal D + R + row const.

    Runs without torch-cluster: it checks ``graph._augment`` directly.
    """
    xq = F.normalize(torch.randn(1, 7, C, dtype=torch.float64), dim=-1)
    xk = F.normalize(torch.randn(1, 5, C, dtype=torch.float64), dim=-1)
    bias = random_lowrank(7, 5, dtype=torch.float64)
    aq, ak = graph_mod._augment(xq, xk, bias)
    folded = torch.cdist(aq[0], ak[0]).pow(2)
    wanted = torch.cdist(xq[0], xk[0]).pow(2) + bias.dense()
    diff = folded - wanted
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff))


def test_auto_is_dense():
    assert resolve_backend("auto") == "dense"
    x, batch, _, _ = make_graphs(SIZES, False)
    assert torch.equal(knn_graph(x, 3, batch, backend="auto"),
                       knn_graph(x, 3, batch, backend="dense"))


def test_available_backends():
    backends = available_backends()
    assert backends[:3] == ["auto", "dense", "torch"]
    assert ("cluster" in backends) == HAS_CLUSTER
    assert ("pyg" in backends) == graph_mod._has_pyg_lib()


# --------------------------------------------------------------------------- stochastic dilation
def test_select_ranks_deterministic():
    idx = torch.arange(12).view(1, 1, 12).expand(2, 3, 12)
    assert select_ranks(idx, 4, 3).tolist() == [[[0, 3, 6, 9]] * 3] * 2
    # stochastic with epsilon=0 never draws a random subset
    assert torch.equal(select_ranks(idx, 4, 3, stochastic=True, epsilon=0.0), idx[..., ::3])


def test_select_ranks_random_subset():
    idx = torch.arange(12).view(1, 1, 12).expand(2, 3, 12) + 100
    seen = set()
    for _ in range(20):
        out = select_ranks(idx, 4, 3, stochastic=True, epsilon=1.0)
        assert out.shape == (2, 3, 4)
        row = out[0, 0].tolist()
        assert len(set(row)) == 4 and all(100 <= v < 112 for v in row)
        assert (out == out[0, 0]).all()  # the same ranks for every node and batch element
        seen.add(tuple(row))
    assert len(seen) > 1


def test_knn_graph_stochastic():
    x, batch, _, _ = make_graphs(SIZES, False)
    k, d = 3, 3
    det = knn_graph(x, k, batch, dilation=d)
    # not stochastic -> deterministic dilation, whatever epsilon says
    assert torch.equal(knn_graph(x, k, batch, dilation=d, epsilon=1.0), det)
    candidates = edge_sets(knn_graph(x, k * d, batch), k * d)
    differs = False
    for _ in range(5):
        out = knn_graph(x, k, batch, dilation=d, stochastic=True, epsilon=1.0)
        assert_valid_layout(out, x.size(0), k, self_first=False)
        for cand, got in zip(candidates, out[0].view(-1, k).tolist(), strict=True):
            assert len(set(got)) == k and set(got) <= cand
        differs |= not torch.equal(out, det)
    assert differs


# --------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("chunk", [1, 50, 300])
def test_chunking_gives_identical_output(monkeypatch, chunk, bipartite):
    sizes = SIZES_BIPARTITE if bipartite else SIZES
    x, batch, y, batch_y = make_graphs(sizes, bipartite)
    bias = make_bias("dict", sizes)
    kw = dict(y=y, batch_y=batch_y, dilation=2, bias=bias)
    full = knn_graph(x, 3, batch, **kw)
    monkeypatch.setattr(graph_mod, "_CHUNK_ELEMENTS", chunk)
    assert torch.equal(knn_graph(x, 3, batch, **kw), full)


# --------------------------------------------------------------------------- errors
def test_too_few_candidates_gives_what_exists():
    # As PyG: a small graph gets all the candidates it has (every dilation-th), not an error.
    x = torch.randn(9, C)
    batch = torch.tensor([0] * 6 + [1] * 3)
    out = knn_graph(x, 2, batch, dilation=2)
    assert not isinstance(out, KNNEdgeIndex) and out.is_sorted_by_col
    degree = torch.bincount(out[1], minlength=9)
    assert degree.tolist() == [2] * 6 + [2] * 3  # graph 1: ranks 0 and 2 of its 3 nodes
    y, batch_y = torch.randn(5, C), torch.tensor([0, 0, 0, 0, 1])
    out = knn_graph(x, 2, batch, y=y, batch_y=batch_y)
    assert torch.bincount(out[1], minlength=9).tolist() == [2] * 6 + [1] * 3
    assert (out[0][out[1] >= 6] == 4).all()  # graph 1's only source


@pytest.mark.parametrize("k,dilation", [(0, 1), (2, 0), (-1, 1)])
def test_error_k_dilation_positive(k, dilation):
    with pytest.raises(ValueError, match="k and dilation must be >= 1"):
        knn_graph(torch.randn(10, C), k, dilation=dilation)


def test_error_shapes():
    with pytest.raises(ValueError, match=r"'x' must be a \[N, C\]"):
        knn_graph(torch.randn(2, 10, C), 3)
    with pytest.raises(ValueError, match=r"'y' must be a \[M, C\] matrix with the channels"):
        knn_graph(torch.randn(10, C), 3, y=torch.randn(10, C + 1))
    with pytest.raises(ValueError, match=r"'y' must be a \[M, C\]"):
        knn_graph(torch.randn(10, C), 3, y=torch.randn(10))


def test_error_bias_shape_and_missing_size():
    x, batch, _, _ = make_graphs([(10, 10), (10, 10)], False)
    with pytest.raises(ValueError, match=r"bias must have shape \[N_g, M_g\] = \[10, 10\]"):
        knn_graph(x, 3, batch, bias=torch.randn(10, 9))
    x, batch, _, _ = make_graphs(SIZES, False)
    with pytest.raises(ValueError, match=r"no bias given for graphs with 9 targets"):
        knn_graph(x, 3, batch, bias={(12, 12): torch.zeros(12, 12)})


def test_error_batch_vectors():
    x = torch.randn(10, C)
    with pytest.raises(ValueError, match="'batch' must be a 1-D vector with one entry per node"):
        knn_graph(x, 2, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch' must be a 1-D vector"):
        knn_graph(x, 2, torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch' must be sorted.*sort the nodes first"):
        knn_graph(x, 2, torch.tensor([0, 1] * 5))
    y = torch.randn(6, C)
    batch = torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match="'batch_y' must be a 1-D vector"):
        knn_graph(x, 2, batch, y=y, batch_y=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch_y' must be sorted"):
        knn_graph(x, 2, batch, y=y, batch_y=torch.tensor([1, 1, 1, 0, 0, 0]))
    with pytest.raises(ValueError, match="'batch' describes 2 graphs but 'batch_y' describes 3"):
        knn_graph(x, 2, batch, y=y, batch_y=torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match="pass both 'batch' and 'batch_y'"):
        knn_graph(x, 2, batch, y=y)
    with pytest.raises(ValueError, match="pass both 'batch' and 'batch_y'"):
        knn_graph(x, 2, y=y, batch_y=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch_y' was given without source features 'y'"):
        knn_graph(x, 2, batch, batch_y=batch)


def test_error_unknown_backend():
    with pytest.raises(ValueError, match="unknown k-NN backend 'faiss'; choose one of auto, dense"):
        knn_graph(torch.randn(10, C), 3, backend="faiss")


def test_error_pyg_lib_missing():
    with pytest.raises(ImportError, match="'pyg' requires the 'pyg-lib' package.*backend='dense'"):
        knn_graph(torch.randn(10, C), 3, backend="pyg")


def _hide_module(monkeypatch, name):
    real = importlib.util.find_spec

    def find_spec(module, *args, **kwargs):
        return None if module == name else real(module, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _fake_module(monkeypatch, name):
    real = importlib.util.find_spec

    def find_spec(module, *args, **kwargs):
        return object() if module == name else real(module, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_error_cluster_missing(monkeypatch):
    _hide_module(monkeypatch, "torch_cluster")
    assert "cluster" not in available_backends()
    with pytest.raises(ImportError, match="'cluster' requires the 'torch-cluster' package"):
        knn_graph(torch.randn(10, C), 3, backend="cluster")


def test_error_cluster_dense_bias(monkeypatch):
    # Checked before torch_cluster is imported, so it runs without the package.
    _fake_module(monkeypatch, "torch_cluster")
    with pytest.raises(ValueError, match="cannot apply a dense bias table.*LowRankBias"):
        knn_graph(torch.randn(10, C), 3, backend="cluster", bias=torch.zeros(10, 10))


def test_error_cluster_lowrank_unequal_key_norms(monkeypatch):
    _fake_module(monkeypatch, "torch_cluster")
    bias = LowRankBias(torch.randn(10, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="same norm.*backend='dense'"):
        knn_graph(torch.randn(10, C), 3, backend="cluster", bias=bias)


def test_pyg_backend_uses_pyg_when_flagged(monkeypatch):
    # With the pyg-lib flag set, 'pyg' resolves (no ImportError) and is listed.
    import torch_geometric.typing

    monkeypatch.setattr(torch_geometric.typing, "WITH_KNN", True)
    assert resolve_backend("pyg") == "pyg"
    assert "pyg" in available_backends()


# --------------------------------------------------------------------------- dense == torch
@pytest.mark.parametrize("bias_kind", [None, "tensor", "lowrank"])
@pytest.mark.parametrize("dilation", [1, 3])
def test_dense_and_torch_backends_build_the_same_graph(bias_kind, dilation):
    # "dense" selects with the compiled operator where it is built; "torch" always uses
    # torch.topk on the same distances. The README promises the same graph, edge for edge.
    torch.manual_seed(0)
    sizes = [(40, 40)] * 3
    x, batch, _, _ = make_graphs(sizes, False)
    bias = make_bias(bias_kind, sizes)
    a = knn_graph(x, 5, batch, dilation=dilation, bias=bias, backend="dense")
    b = knn_graph(x, 5, batch, dilation=dilation, bias=bias, backend="torch")
    assert torch.equal(a.as_tensor(), b.as_tensor())


def test_knn_graph_returns_knn_edge_index():
    x, batch, _, _ = make_graphs(SIZES, False)
    ei = knn_graph(x, 3, batch)
    assert isinstance(ei, KNNEdgeIndex) and ei.k == 3
    assert ei.is_sorted_by_col and ei.sparse_size() == (x.size(0), x.size(0))
    assert torch.equal(ei.get_indptr(), torch.arange(x.size(0) + 1) * 3)
    # any edit returns a plain EdgeIndex, which no longer claims k-regularity
    from torch_geometric.utils import dropout_edge

    pruned, _ = dropout_edge(ei, p=0.5)
    assert type(pruned) is not KNNEdgeIndex or pruned.k is None


def test_l2_normalize_is_f_normalize_bit_for_bit_and_exports_without_expand():
    import torch.nn.functional as F

    from pyg_vig.nn.graph import _l2_normalize

    x = torch.randn(3, 50, 24) * 5
    x[0, 0] = 0.0  # a zero row: both clamp the norm at eps
    assert torch.equal(_l2_normalize(x), F.normalize(x, p=2.0, dim=-1))

    class Norm(torch.nn.Module):
        def forward(self, x):
            return _l2_normalize(x)

    ops = {n.target for n in torch.export.export(Norm(), (x,)).graph.nodes
           if n.op == "call_function"}
    assert torch.ops.aten.expand.default not in ops
