import pytest
import torch
import torch.nn.functional as F

from pyg_vig.ops import knn_select


def _inputs(B, n, m, C=16, dtype=torch.float32, bias=False, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if ties:  # small integer features: many exactly equal distances
        q = torch.randint(0, 3, (B, n, C), generator=g).to(dtype)
        k = torch.randint(0, 3, (B, m, C), generator=g).to(dtype)
        b = torch.randint(0, 2, (n, m), generator=g).to(dtype) if bias else None
    else:
        q = F.normalize(torch.randn(B, n, C, generator=g), dim=-1).to(dtype)
        k = F.normalize(torch.randn(B, m, C, generator=g), dim=-1).to(dtype)
        b = (0.1 * torch.randn(n, m, generator=g)).to(dtype) if bias else None
    dot = torch.bmm(q, k.transpose(1, 2))
    q_sq = (q * q).sum(-1, keepdim=True)
    k_sq = (k * k).sum(-1).unsqueeze(1)
    return dot, q_sq, k_sq, b


def _graph_reference(dot, q_sq, k_sq, bias, kd):
    # The in-place sequence of pyg_vig.nn.graph._dense_topk, on a copy of the bmm result.
    dist = dot.clone().mul_(-2)
    dist.add_(q_sq).add_(k_sq)
    if bias is not None:
        dist.add_(bias.unsqueeze(0))
    return torch.topk(dist.neg_(), kd, dim=-1).indices


SHAPES = [  # (B, n, m, kd)
    (1, 7, 49, 1),
    (2, 13, 49, 9),
    (4, 5, 49, 45),
    (1, 9, 49, 49),
    (3, 31, 196, 9),
    (2, 17, 196, 18),
    (1, 23, 196, 27),
    (2, 11, 196, 45),
    (1, 6, 196, 90),
    (2, 9, 784, 9),
    (1, 5, 784, 36),
    (1, 4, 3136, 9),
    (2, 3, 3136, 48),
    (1, 3, 3136, 90),
    (1, 2, 12544, 9),
]


@pytest.mark.parametrize("B,n,m,kd", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_random_equals_topk(compiled, B, n, m, kd, bias):
    dot, q_sq, k_sq, b = _inputs(B, n, m, bias=bias, seed=B * n + m + kd)
    out = knn_select(dot, q_sq, k_sq, b, kd, impl="cpp")
    assert out.shape == (B, n, kd) and out.dtype == torch.long
    assert torch.equal(out, knn_select(dot, q_sq, k_sq, b, kd, impl="torch"))
    assert torch.equal(out, _graph_reference(dot, q_sq, k_sq, b, kd))


@pytest.mark.parametrize("B,n,m,kd", [(2, 9, 49, 9), (1, 8, 196, 18), (2, 5, 196, 45),
                                      (1, 6, 640, 9), (1, 3, 3136, 9), (1, 4, 3136, 90)])
@pytest.mark.parametrize("bias", [False, True])
def test_exact_ties_follow_topk(compiled, B, n, m, kd, bias):
    # Both of torch.topk's CPU regimes (partial_sort when 64 * kd <= m, nth_element otherwise).
    dot, q_sq, k_sq, b = _inputs(B, n, m, C=4, bias=bias, ties=True)
    assert torch.equal(knn_select(dot, q_sq, k_sq, b, kd, impl="cpp"),
                       knn_select(dot, q_sq, k_sq, b, kd, impl="torch"))


@pytest.mark.parametrize("m,kd", [(49, 9), (196, 9), (196, 27), (784, 12), (3136, 9)])
def test_occasional_ties(compiled, m, kd):
    # Mostly distinct distances with a few exact duplicates: ties that sometimes fall inside the
    # selection, sometimes on its boundary and sometimes outside it.
    g = torch.Generator().manual_seed(m + kd)
    B, n = 2, 64
    dot = torch.randint(-40, 40, (B, n, m), generator=g).float() / 8
    q_sq = torch.zeros(B, n, 1)
    k_sq = torch.zeros(B, 1, m)
    assert torch.equal(knn_select(dot, q_sq, k_sq, None, kd, impl="cpp"),
                       knn_select(dot, q_sq, k_sq, None, kd, impl="torch"))


def test_all_equal_rows_follow_topk(compiled):
    for m, kd in [(20, 5), (640, 5), (49, 49)]:
        dot, q_sq, k_sq = torch.zeros(1, 3, m), torch.zeros(1, 3, 1), torch.zeros(1, 1, m)
        expected = torch.topk(torch.zeros(1, 3, m), kd, dim=-1).indices
        assert torch.equal(knn_select(dot, q_sq, k_sq, None, kd, impl="cpp"), expected)


def test_topk_tie_order_is_not_index_order():
    # Why the kernel replays torch.topk on tied rows: torch's order of equal values comes from
    # std::nth_element / std::partial_sort and is not "lower index first".
    idx = torch.topk(torch.zeros(1, 20), 5).indices
    assert not torch.equal(idx, torch.arange(5).view(1, 5))


def test_nan_distances_rank_first_like_topk(compiled):
    dot, q_sq, k_sq, _ = _inputs(2, 6, 60)
    dot[0, 1, 3] = float("nan")
    dot[1, 2, :5] = float("nan")
    k_sq[1, 0, 7] = float("nan")
    out = knn_select(dot, q_sq, k_sq, None, 7, impl="cpp")
    assert torch.equal(out, knn_select(dot, q_sq, k_sq, None, 7, impl="torch"))
    assert out[0, 1, 0] == 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ties", [False, True])
def test_other_dtypes_round_like_torch(compiled, dtype, ties):
    # Reduced floats round after every op (to bf16/fp16), as the separate torch ops do.
    for B, n, m, kd in [(2, 9, 49, 9), (1, 11, 196, 18), (1, 3, 1000, 10)]:
        dot, q_sq, k_sq, b = _inputs(B, n, m, dtype=dtype, bias=True, ties=ties)
        assert torch.equal(knn_select(dot, q_sq, k_sq, b, kd, impl="cpp"),
                           knn_select(dot, q_sq, k_sq, b, kd, impl="torch"))


def test_low_rank_bias_is_negated_product(compiled):
    # graph.py applies a LowRankBias as dist.sub_(bq @ bk.T); bias = -(bq @ bk.T) is the same.
    dot, q_sq, k_sq, _ = _inputs(2, 50, 196)
    bq, bk = torch.randn(50, 8), torch.randn(196, 8)
    dist = dot.clone().mul_(-2)
    dist.add_(q_sq).add_(k_sq)
    dist.sub_((bq @ bk.t()).unsqueeze(0))
    expected = torch.topk(dist.neg_(), 18, dim=-1).indices
    assert torch.equal(knn_select(dot, q_sq, k_sq, -(bq @ bk.t()), 18, impl="cpp"), expected)


def test_strided_inputs_and_no_mutation(impl):
    dot, q_sq, k_sq, b = _inputs(2, 10, 49, bias=True)
    expected = knn_select(dot, q_sq, k_sq, b, 9, impl="torch")
    before = dot.clone()
    dot_t = dot.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    b_t = b.t().contiguous().t()
    q_e = q_sq[:1].expand(2, -1, -1)  # broadcast view (stride 0)
    expected_e = knn_select(dot, q_e.contiguous(), k_sq, b, 9, impl="torch")
    assert torch.equal(knn_select(dot_t, q_sq, k_sq, b_t, 9, impl=impl), expected)
    assert torch.equal(knn_select(dot, q_e, k_sq, b, 9, impl=impl), expected_e)
    assert torch.equal(dot, before)


def test_inputs_requiring_grad(impl):
    q = torch.randn(1, 8, 4, requires_grad=True)
    dot = torch.bmm(q, q.transpose(1, 2))
    q_sq = (q * q).sum(-1, keepdim=True)
    out = knn_select(dot, q_sq, q_sq.transpose(1, 2), None, 3, impl=impl)
    assert not out.requires_grad and out.shape == (1, 8, 3)


def test_empty_batch(impl):
    out = knn_select(torch.zeros(0, 4, 10), torch.zeros(0, 4, 1), torch.zeros(0, 1, 10), None, 3,
                     impl=impl)
    assert out.shape == (0, 4, 3)


def test_fallback_for_other_devices_and_dtypes(compiled):
    # meta tensors stand in for CUDA here: not CPU, so "auto" takes the torch path.
    dot, q_sq, k_sq = (t.to("meta") for t in _inputs(2, 5, 30)[:3])
    assert knn_select(dot, q_sq, k_sq, None, 4).shape == (2, 5, 4)
    with pytest.raises(RuntimeError, match="does not support tensors on meta"):
        knn_select(dot, q_sq, k_sq, None, 4, impl="cpp")
    dot, q_sq, k_sq = (t.mul(8).long() for t in _inputs(1, 5, 30)[:3])
    assert torch.equal(knn_select(dot, q_sq, k_sq, None, 4),
                       knn_select(dot, q_sq, k_sq, None, 4, impl="torch"))
    with pytest.raises(RuntimeError, match="does not support dtype torch.int64"):
        knn_select(dot, q_sq, k_sq, None, 4, impl="cpp")
    dot, q_sq, k_sq, _ = _inputs(1, 5, 30)
    with pytest.raises(RuntimeError, match="different dtypes"):
        knn_select(dot, q_sq.double(), k_sq, None, 4, impl="cpp")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_torch_path():
    dot, q_sq, k_sq, b = (t.cuda() for t in _inputs(2, 9, 49, bias=True))
    out = knn_select(dot, q_sq, k_sq, b, 9)
    assert out.is_cuda
    assert torch.equal(out, knn_select(dot, q_sq, k_sq, b, 9, impl="torch"))


def test_argument_errors():
    dot, q_sq, k_sq, b = _inputs(2, 5, 30, bias=True)
    with pytest.raises(ValueError, match="impl must be one of"):
        knn_select(dot, q_sq, k_sq, b, 4, impl="fast")
    with pytest.raises(ValueError, match="1 <= kd <= m"):
        knn_select(dot, q_sq, k_sq, b, 31)
    with pytest.raises(ValueError, match="1 <= kd <= m"):
        knn_select(dot, q_sq, k_sq, b, 0)
    with pytest.raises(ValueError, match="'q_sq' must be"):
        knn_select(dot, q_sq.transpose(1, 2), k_sq, b, 4)
    with pytest.raises(ValueError, match="'k_sq' must be"):
        knn_select(dot, q_sq, q_sq, b, 4)
    with pytest.raises(ValueError, match="'bias' must be"):
        knn_select(dot, q_sq, k_sq, b.t(), 4)
    with pytest.raises(ValueError, match="'dot' must be"):
        knn_select(dot[0], q_sq, k_sq, b, 4)


def _knn(q, k, bias, kd):
    dot = torch.bmm(q, k.transpose(1, 2))
    return knn_select(dot, (q * q).sum(-1, keepdim=True), (k * k).sum(-1).unsqueeze(1), bias, kd)


def test_compile_fullgraph(compiled):
    from torch._dynamo.testing import CompileCounterWithBackend

    q, k = torch.randn(2, 20, 8), torch.randn(2, 49, 8)
    bias = torch.randn(20, 49)
    counter = CompileCounterWithBackend("aot_eager")
    fn = torch.compile(_knn, backend=counter, fullgraph=True)
    assert torch.equal(fn(q, k, bias, 9), _knn(q, k, bias, 9))
    targets = [str(node.target) for node in counter.graphs[0].graph.nodes]
    assert "pyg_vig.knn_select" in targets

    dyn = torch.compile(_knn, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (5, 11, 17):
        q = torch.randn(2, n, 8)
        assert torch.equal(dyn(q, k, None, 9), _knn(q, k, None, 9))


def test_export(compiled):
    class KNN(torch.nn.Module):
        def forward(self, q, k, bias):
            return _knn(q, k, bias, 9)

    q, k, bias = torch.randn(2, 20, 8), torch.randn(2, 49, 8), torch.randn(20, 49)
    ep = torch.export.export(KNN(), (q, k, bias))
    targets = [node.target for node in ep.graph.nodes if node.op == "call_function"]
    assert torch.ops.pyg_vig.knn_select.default in targets
    assert torch.equal(ep.module()(q, k, bias), _knn(q, k, bias, 9))
