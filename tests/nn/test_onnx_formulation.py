"""The ONNX Runtime-friendly formulation that the ONNX graph takes (pyg_vig.nn.knn._onnx_topk,
pyg_vig.nn.linear._pair_linear_dense): same results as the eager formulation."""

import pytest
import torch
import torch.nn.functional as F

from pyg_vig.nn.knn import LowRankBias, _dense_topk, _onnx_key_orders, _onnx_topk
from pyg_vig.nn.linear import _pair_linear_dense, grouped_linear, interleave


def _keys_and_norms(B=3, n=40, m=25, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xq = F.normalize(torch.randn(B, n, C, generator=g), dim=-1)
    xk = F.normalize(torch.randn(B, m, C, generator=g), dim=-1)
    return xq, xk


def _onnx(xq, xk, kd, bias):
    xk_sq = (xk * xk).sum(-1)
    bad = ~torch.isfinite(xk_sq)
    xk = torch.where(bad.unsqueeze(-1), torch.zeros(()), xk)
    xk_sq = xk_sq.masked_fill(bad, float("inf")).unsqueeze(1)
    return _onnx_topk(xq, xk, xk_sq, kd, bias)


@pytest.mark.parametrize("bias_kind", [None, "dense", "low_rank"])
def test_onnx_scores_rank_keys_as_distances(bias_kind):
    xq, xk = _keys_and_norms()
    bias = None
    if bias_kind == "dense":
        bias = torch.randn(40, 25) * 0.1
    elif bias_kind == "low_rank":
        bias = LowRankBias(torch.randn(40, 4) * 0.3, torch.randn(25, 4) * 0.3)
    ref = _dense_topk(xq, xk, 7, bias, compiled=False)
    assert torch.equal(_onnx(xq, xk, 7, bias), ref)  # random data: no near-ties to round apart


def test_onnx_scores_keep_non_finite_keys_farthest():
    xq, xk = _keys_and_norms()
    xk[1, 4, 2] = float("nan")
    xk[2, 9, 0] = float("inf")
    out = _onnx(xq, xk, 24, None)  # all keys but one: the bad key must be the one left out
    assert not (out[1] == 4).any() and not (out[2] == 9).any()
    assert torch.equal(out[0], _dense_topk(xq[:1], xk[:1], 24, None, compiled=False)[0])


def _bias(kind, n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "dense":
        return torch.randn(n, m, generator=g) * 0.1
    return LowRankBias(torch.randn(n, 4, generator=g) * 0.3, torch.randn(m, 4, generator=g) * 0.3)


@pytest.mark.parametrize("kind", ["dense", "low_rank"])
def test_onnx_key_orders_list_each_chunks_favoured_keys_first(kind):
    n, m, C = 300, 64, 8
    bias = _bias(kind, n, m)
    chunks, table, offsets = _onnx_key_orders(bias, n, m, C + 1)
    assert len(chunks) == 16 and chunks[0][0] == 0 and chunks[-1][1] == n  # 300 // 18 > 16
    dense = bias.dense() if kind == "low_rank" else bias
    for i, (start, stop, half) in enumerate(chunks):
        order = table[i * m : (i + 1) * m]
        assert torch.equal(order.sort().values, torch.arange(m))  # a permutation of the keys
        mean = dense[start:stop].mean(0)[order]
        assert (mean[1:] >= mean[:-1] - 1e-6).all()  # most favoured (lowest bias) first
        assert torch.equal(offsets[start:stop, 0], torch.full((stop - start,), i * m))
        if kind == "dense":
            assert torch.equal(half, dense[start:stop, order] * 0.5)
        else:
            assert half is None
    assert _onnx_key_orders(None, n, m, C + 1) is None  # no bias: keys in index order
    assert _onnx_key_orders(bias, 20, m, C + 1) is None  # too few queries to split


@pytest.mark.parametrize("kind", ["dense", "low_rank"])
def test_onnx_ordered_selection_equals_eager(kind):
    # Chunks of queries, each ranking its keys in its own order: mapped back, the neighbours
    # (and their order) are the eager selection's.
    xq, xk = _keys_and_norms(B=2, n=300, m=64, C=8, seed=3)
    bias = _bias(kind, 300, 64, seed=4)
    for kd in (9, 18):
        assert torch.equal(_onnx(xq, xk, kd, bias), _dense_topk(xq, xk, kd, bias, compiled=False))


class _Select(torch.nn.Module):
    def __init__(self, kd, bias):
        super().__init__()
        self.kd, self.bias = kd, bias

    def forward(self, xq, xk):
        return _onnx(xq, xk, self.kd, self.bias)


@pytest.mark.parametrize("ties", [False, True])
def test_onnx_runtime_runs_the_ordered_selection(tmp_path, ties):
    # The exported graph: 16 chunks (16 TopK nodes, keys gathered once in every chunk's
    # order); ONNX Runtime returns the eager neighbours. With exactly tied keys (duplicated
    # features and bias columns) it may keep another of the tied keys than torch.topk does,
    # but every query's selected distances are the eager ones.
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    xq, xk = _keys_and_norms(B=2, n=300, m=64, C=8, seed=5)
    bias = _bias("dense", 300, 64, seed=6)
    if ties:
        xk[:, 40:] = xk[:, 16:40]  # keys 40.. repeat keys 16..39 exactly
        bias[:, 40:] = bias[:, 16:40]
    kd = 12
    with torch.no_grad():
        program = torch.onnx.export(_Select(kd, bias).eval(), (xq, xk), dynamo=True, verbose=False)
    program.save(str(tmp_path / "s.onnx"))
    assert sum(n.op_type == "TopK" for n in onnx.load(str(tmp_path / "s.onnx")).graph.node) == 16
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = torch.from_numpy(sess.run(None, dict(zip(names, (xq.numpy(), xk.numpy()),
                                                   strict=True)))[0])
    want = _dense_topk(xq, xk, kd, bias, compiled=False)
    assert got.shape == want.shape
    if not ties:
        assert torch.equal(got, want)
        return
    dist = torch.cdist(xq, xk).pow(2) + bias

    def picked(idx):
        return dist.gather(-1, idx).sort(-1).values

    assert torch.equal(dist[..., 40:], dist[..., 16:40])  # the ties are exact
    torch.testing.assert_close(picked(got), picked(want), rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels,heads", [(8, 4), (12, 2), (16, 1)])
def test_pair_linear_dense_equals_grouped_interleaved(channels, heads):
    torch.manual_seed(1)
    x, m = torch.randn(30, channels), torch.randn(30, channels)
    out = 2 * channels
    w, b = torch.randn(out, 2 * channels // heads), torch.randn(out)
    ref = grouped_linear(interleave(x, m), w, b, heads)
    torch.testing.assert_close(_pair_linear_dense(x, m, w, b, heads), ref, rtol=1e-5, atol=1e-5)


def test_onnx_graph_shape(tmp_path, monkeypatch):
    # The exported pyramid graph with one query chunk: one TopK per Grapher fed by the scores
    # (one MatMul, then the official table subtracted), no [2, E] int64 edge tensor.
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from pyg_vig.export import to_onnx
    from pyg_vig.models import create_model
    from pyg_vig.nn import knn

    monkeypatch.setattr(knn, "_ONNX_TOPK_CHUNKS", 1)

    model = create_model("pvig_mini", img_size=32).eval()  # grids 16, 8, 4: the native ones
    path = to_onnx(model, tmp_path / "m.onnx", torch.randn(2, 1, 32, 32), dynamic_batch=False,
                   verify=False)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    nodes = proto.graph.node
    graphers = sum(1 for n, _ in model.named_modules() if n.endswith(".grapher"))
    assert sum(n.op_type == "TopK" for n in nodes) == graphers
    producer = {o: n for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type == "TopK":
            scores = producer[n.input[0]]
            assert scores.op_type == "Sub" and producer[scores.input[0]].op_type == "MatMul"
    int64_2e = [v.name for v in proto.graph.value_info
                if v.type.tensor_type.elem_type == onnx.TensorProto.INT64
                and len(v.type.tensor_type.shape.dim) == 2
                and v.type.tensor_type.shape.dim[0].dim_value == 2]
    assert int64_2e == []


class _GatherReduce(torch.nn.Module):
    def __init__(self, reduce):
        super().__init__()
        self.reduce = reduce

    def forward(self, x, src):
        from pyg_vig.nn.edge_index import KNNEdgeIndex
        from pyg_vig.nn.reduce import neighbor_reduce

        return neighbor_reduce(x, KNNEdgeIndex.from_sources(src, x.size(0)), self.reduce)


@pytest.mark.parametrize("reduce", ["max", "mean", "sum"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_gather_reduce_chunks_rows_with_identical_result(tmp_path, monkeypatch, reduce,
                                                               dynamic):
    # With fixed shapes the exported neighbour gather + reduction runs in row chunks (one
    # Gather of features per chunk); each row reduces the same k values in the same order, so
    # ONNX Runtime gives exactly the eager result. A dynamic row count keeps one Gather.
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pyg_vig.nn import reduce as reduce_mod

    N, C, k = 50, 6, 5
    monkeypatch.setattr(reduce_mod, "_ONNX_GATHER_CHUNK_BYTES", 12 * k * C * 4)  # 12 rows
    g = torch.Generator().manual_seed(0)
    x, src = torch.randn(N, C, generator=g), torch.randint(0, N, (N, k), generator=g)
    module = _GatherReduce(reduce).eval()
    rows = torch.export.Dim("rows", min=2)
    shapes = ({0: rows}, {0: rows}) if dynamic else None
    with torch.no_grad():
        program = torch.onnx.export(module, (x, src), dynamo=True, verbose=False,
                                    dynamic_shapes=shapes)
    program.save(str(tmp_path / "r.onnx"))
    proto = onnx.load(str(tmp_path / "r.onnx"))
    feature_gathers = [n for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == "x"]
    assert len(feature_gathers) == (1 if dynamic else 5)  # ceil(50 / 12) chunks
    sess = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, (x.numpy(), src.numpy()), strict=True)))[0]
    want = module(x, src)
    assert torch.equal(torch.from_numpy(got), want)


def test_static_batch_model_export_chunks_the_gather(tmp_path, monkeypatch):
    # The walk of `pyg-vig export --static-batch`: to_onnx(dynamic_batch=False) of a pyramid
    # model writes the chunked gather (more ReduceMax nodes than Graphers) and still passes
    # its own onnxruntime verification against the eager model.
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pyg_vig.export import ExportedModel, to_onnx
    from pyg_vig.models import create_model
    from pyg_vig.nn import reduce as reduce_mod

    monkeypatch.setattr(reduce_mod, "_ONNX_GATHER_CHUNK_BYTES", 4096)
    torch.manual_seed(0)
    model = create_model("pvig_mini", img_size=32).eval()
    x = torch.randn(2, 1, 32, 32)
    path = to_onnx(model, tmp_path / "m.onnx", x, dynamic_batch=False, verify=True)
    nodes = onnx.load(str(path)).graph.node
    graphers = sum(1 for n, _ in model.named_modules() if n.endswith(".grapher"))
    assert sum(n.op_type == "ReduceMax" for n in nodes) > 2 * graphers
    with torch.no_grad():
        want = model(x)
    got = ExportedModel(path)(x)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-2
