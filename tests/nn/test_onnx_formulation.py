"""The ONNX Runtime-friendly formulation that the ONNX graph takes (pyg_vig.nn.knn._onnx_topk,
pyg_vig.nn.linear._pair_linear_dense): same results as the eager formulation."""

import pytest
import torch
import torch.nn.functional as F

from pyg_vig.nn.knn import LowRankBias, _dense_topk, _onnx_topk
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


@pytest.mark.parametrize("channels,heads", [(8, 4), (12, 2), (16, 1)])
def test_pair_linear_dense_equals_grouped_interleaved(channels, heads):
    torch.manual_seed(1)
    x, m = torch.randn(30, channels), torch.randn(30, channels)
    out = 2 * channels
    w, b = torch.randn(out, 2 * channels // heads), torch.randn(out)
    ref = grouped_linear(interleave(x, m), w, b, heads)
    torch.testing.assert_close(_pair_linear_dense(x, m, w, b, heads), ref, rtol=1e-5, atol=1e-5)


def test_onnx_graph_shape(tmp_path):
    # The exported pyramid graph: one TopK per Grapher fed by the scores (one MatMul, then
    # the official table subtracted), no [2, E] int64 edge tensor.
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from pyg_vig.export import to_onnx
    from pyg_vig.models import create_model

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
