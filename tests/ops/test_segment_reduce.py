import pytest
import torch
from torch_geometric.utils import dropout_edge, scatter

from pyg_vig.ops import REDUCES, gather_segment_reduce


def _ptr(dst, N):
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(dst, minlength=N).cumsum(0)])


def _graph(kind, seed=0):
    """(M, N, src, ptr): edges sorted by target."""
    g = torch.Generator().manual_seed(seed)
    if kind == "regular":  # k-NN layout: k edges per target
        N, k = 40, 9
        src = torch.randint(0, N, (N * k,), generator=g)
        return N, N, src, torch.arange(N + 1) * k
    if kind == "irregular":  # degrees 0..6, empty segments included
        N = 50
        deg = torch.randint(0, 7, (N,), generator=g)
        deg[:3] = 0
        deg[-1] = 0
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), deg.cumsum(0)])
        return N, N, torch.randint(0, N, (int(ptr[-1]),), generator=g), ptr
    if kind == "bipartite":  # 30 sources, 45 targets, duplicate edges allowed
        M, N = 30, 45
        deg = torch.randint(0, 5, (N,), generator=g)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), deg.cumsum(0)])
        return M, N, torch.randint(0, M, (int(ptr[-1]),), generator=g), ptr
    if kind == "dropout":  # a k-NN graph after dropout_edge, re-sorted by target
        N, k = 40, 9
        edge_index = torch.stack([torch.randint(0, N, (N * k,), generator=g),
                                  torch.arange(N).repeat_interleave(k)])
        torch.manual_seed(seed)
        edge_index, _ = dropout_edge(edge_index, p=0.4)
        order = torch.argsort(edge_index[1], stable=True)
        src, dst = edge_index[0, order], edge_index[1, order]
        return N, N, src, _ptr(dst, N)
    raise ValueError(kind)


GRAPHS = ["regular", "irregular", "bipartite", "dropout"]


def _pyg(x, src, ptr, reduce):
    """PyG's generic message passing path: gather messages x_j, then scatter by target."""
    N = ptr.numel() - 1
    dst = torch.repeat_interleave(torch.arange(N), ptr[1:] - ptr[:-1])
    return scatter(x.index_select(0, src), dst, 0, dim_size=N, reduce=reduce)


def _features(M, C, reduce, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    if reduce in ("max", "min"):
        # Many exact ties between edges, but no result exactly 0 (see test_zero_result_gradient).
        return (torch.randint(-4, 4, (M, C), generator=g) + 0.5).to(dtype)
    return torch.randn(M, C, generator=g).to(dtype)


def _run(fn, x, grad):
    x = x.clone().requires_grad_()
    out = fn(x)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("kind", GRAPHS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_equals_pyg_forward_and_backward(impl, kind, reduce):
    M, N, src, ptr = _graph(kind)
    x = _features(M, 12, reduce)
    grad = torch.randn(N, 12)
    out, gx = _run(lambda x: gather_segment_reduce(x, src, ptr, reduce, impl=impl), x, grad)
    ref_out, ref_gx = _run(lambda x: _pyg(x, src, ptr, reduce), x, grad)
    if reduce in ("max", "min"):  # no rounding involved: exact
        assert torch.equal(out, ref_out)
        assert torch.equal(gx, ref_gx)
    else:
        torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gx, ref_gx, rtol=1e-6, atol=1e-6)
    empty = ptr[1:] == ptr[:-1]
    assert bool((out[empty] == 0).all())


@pytest.mark.parametrize("kind", GRAPHS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_gradcheck_double(impl, kind, reduce):
    M, N, src, ptr = _graph(kind, seed=3)
    x = torch.randn(M, 3, dtype=torch.float64, requires_grad=True)  # no ties: differentiable
    assert torch.autograd.gradcheck(
        lambda x: gather_segment_reduce(x, src, ptr, reduce, impl=impl), (x,)
    )


@pytest.mark.parametrize("reduce", REDUCES)
def test_compiled_equals_torch_path(compiled, reduce):
    M, N, src, ptr = _graph("irregular", seed=5)
    x = _features(M, 33, reduce, seed=6)
    grad = torch.randn(N, 33)
    a = _run(lambda x: gather_segment_reduce(x, src, ptr, reduce, impl="cpp"), x, grad)
    b = _run(lambda x: gather_segment_reduce(x, src, ptr, reduce, impl="torch"), x, grad)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_ties_split_gradient_evenly(impl, reduce):
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0]], requires_grad=True)
    if reduce == "min":
        x = (-x).detach().requires_grad_()
    src = torch.tensor([0, 1, 2, 3, 1, 1])  # target 0: three edges; target 1: the same node twice
    ptr = torch.tensor([0, 3, 4, 6])
    out = gather_segment_reduce(x, src, ptr, reduce, impl=impl)
    out.sum().backward()
    # target 0: nodes 1 and 2 tie (1/2 each); target 1: node 3; target 2: node 1 twice (1/2 + 1/2)
    assert x.grad.view(-1).tolist() == [0.0, 1.5, 0.5, 1.0]


def test_regular_max_gradient_equals_amax(impl):
    # The k-regular fast path of the convs (gather, view, amax) splits ties the same way.
    M, N, src, ptr = _graph("regular", seed=7)
    x = _features(M, 16, "max")
    grad = torch.randn(N, 16)
    out, gx = _run(lambda x: gather_segment_reduce(x, src, ptr, "max", impl=impl), x, grad)
    ref, ref_gx = _run(lambda x: x.index_select(0, src).view(N, 9, 16).amax(1), x, grad)
    assert torch.equal(out, ref) and torch.equal(gx, ref_gx)


def test_zero_result_gradient(impl):
    # PyG's CPU scatter max (scatter_reduce_ with include_self=False into zeros) lets the zero
    # initial value take a share of the gradient wherever the maximum is exactly 0.0; we give the
    # whole gradient to the edge that is the maximum, as torch.amax does.
    x = torch.tensor([[0.0], [-1.0]], requires_grad=True)
    gather_segment_reduce(x, torch.tensor([0, 1]), torch.tensor([0, 2]), "max", impl=impl).sum(
    ).backward()
    assert x.grad.view(-1).tolist() == [1.0, 0.0]


def test_max_relative_message(impl):
    # max_j (x_j - x_i) == max_j x_j - x_i exactly (rounding is monotonic), so MRConv needs no
    # separate operator.
    M, N, src, ptr = _graph("regular", seed=8)
    x = torch.randn(M, 8)
    dst = torch.arange(N).repeat_interleave(9)
    ref = scatter(x[src] - x[dst], dst, 0, dim_size=N, reduce="max")
    assert torch.equal(gather_segment_reduce(x, src, ptr, "max", impl=impl) - x, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduce", REDUCES)
def test_other_dtypes(compiled, dtype, reduce):
    M, N, src, ptr = _graph("irregular", seed=9)
    x = _features(M, 10, reduce, dtype=dtype)
    grad = torch.randn(N, 10).to(dtype)
    out, gx = _run(lambda x: gather_segment_reduce(x, src, ptr, reduce, impl="cpp"), x, grad)
    ref_out, ref_gx = _run(lambda x: _pyg(x, src, ptr, reduce), x, grad)
    assert out.dtype == gx.dtype == dtype
    if reduce in ("max", "min"):
        assert torch.equal(out, ref_out)
    else:  # sums accumulate in float, as PyG's scatter_add does for reduced floats
        torch.testing.assert_close(out, ref_out)
    # gradients of reduced floats accumulate in float here; PyG's index_add_ may round per edge
    torch.testing.assert_close(gx, ref_gx, rtol=1e-2, atol=1e-2)


def test_degenerate_sizes(impl):
    x = torch.randn(5, 3, requires_grad=True)
    no_edges, ptr = torch.zeros(0, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    out = gather_segment_reduce(x, no_edges, ptr, "max", impl=impl)
    assert torch.equal(out, torch.zeros(3, 3))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros(5, 3))
    empty = gather_segment_reduce(x, torch.zeros(0, dtype=torch.long),
                                  torch.zeros(1, dtype=torch.long), "sum", impl=impl)
    assert empty.shape == (0, 3)
    no_channels = gather_segment_reduce(torch.randn(5, 0), torch.tensor([1, 2]),
                                        torch.tensor([0, 2]), "mean", impl=impl)
    assert no_channels.shape == (1, 0)


def test_invalid_graphs(impl):
    x = torch.randn(5, 3)
    error = (RuntimeError,) if impl == "cpp" else (ValueError, IndexError)
    with pytest.raises(error, match="ptr"):
        gather_segment_reduce(x, torch.tensor([0, 1, 2]), torch.tensor([0, 2]), "sum", impl=impl)
    with pytest.raises(error, match="ptr"):
        gather_segment_reduce(x, torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1, 3]), "sum",
                              impl=impl)
    with pytest.raises(error, match="out of range|outside"):
        gather_segment_reduce(x, torch.tensor([0, 5]), torch.tensor([0, 2]), "max", impl=impl)
    with pytest.raises(ValueError, match="reduce must be one of"):
        gather_segment_reduce(x, torch.tensor([0, 1]), torch.tensor([0, 2]), "prod", impl=impl)
    with pytest.raises(TypeError, match="int64"):
        gather_segment_reduce(x, torch.tensor([0, 1]).int(), torch.tensor([0, 2]), "sum",
                              impl=impl)
    with pytest.raises(TypeError, match="floating point"):
        gather_segment_reduce(x.long(), torch.tensor([0, 1]), torch.tensor([0, 2]), "sum",
                              impl=impl)


def test_fallback_for_other_devices(compiled):
    M, N, src, ptr = _graph("regular")
    x = torch.randn(M, 4)
    meta = gather_segment_reduce(x.to("meta"), src.to("meta"), ptr.to("meta"), "max")
    assert meta.shape == (N, 4) and meta.device.type == "meta"
    with pytest.raises(RuntimeError, match="does not support tensors on meta"):
        gather_segment_reduce(x.to("meta"), src.to("meta"), ptr.to("meta"), "max", impl="cpp")
    with pytest.raises(ValueError, match="impl must be one of"):
        gather_segment_reduce(x, src, ptr, "max", impl="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("reduce", REDUCES)
def test_cuda_uses_torch_path(reduce):
    M, N, src, ptr = _graph("irregular")
    x = _features(M, 8, reduce)
    grad = torch.randn(N, 8)
    out, gx = _run(lambda x: gather_segment_reduce(x.cuda(), src.cuda(), ptr.cuda(), reduce), x,
                   grad.cuda())
    ref_out, ref_gx = _run(lambda x: gather_segment_reduce(x, src, ptr, reduce, impl="torch"), x,
                           grad)
    torch.testing.assert_close(out.cpu(), ref_out)
    torch.testing.assert_close(gx, ref_gx)


class _Aggregate(torch.nn.Module):
    def __init__(self, reduce):
        super().__init__()
        self.reduce = reduce

    def forward(self, x, src, ptr):
        return gather_segment_reduce(x, src, ptr, self.reduce).relu()


@pytest.mark.parametrize("reduce", REDUCES)
def test_compile_fullgraph_with_backward(compiled, reduce):
    from torch._dynamo.testing import CompileCounterWithBackend

    M, N, src, ptr = _graph("irregular", seed=11)
    x = _features(M, 6, reduce)
    grad = torch.randn(N, 6)
    module = _Aggregate(reduce)
    counter = CompileCounterWithBackend("aot_eager")
    compiled_module = torch.compile(module, backend=counter, fullgraph=True)
    out, gx = _run(lambda x: compiled_module(x, src, ptr), x, grad)
    ref_out, ref_gx = _run(lambda x: module(x, src, ptr), x, grad)
    assert torch.equal(out, ref_out) and torch.equal(gx, ref_gx)
    targets = [str(node.target) for node in counter.graphs[0].graph.nodes]
    assert "pyg_vig.gather_segment_reduce" in targets

    dynamic = torch.compile(module, backend="aot_eager", fullgraph=True, dynamic=True)
    for N in (5, 8, 13):
        ptr = torch.arange(N + 1) * 3
        src = torch.randint(0, M, (3 * N,))
        assert torch.equal(dynamic(x, src, ptr), module(x, src, ptr))


def test_export(compiled):
    M, N, src, ptr = _graph("regular")
    x = torch.randn(M, 6)
    ep = torch.export.export(_Aggregate("max"), (x, src, ptr))
    targets = [node.target for node in ep.graph.nodes if node.op == "call_function"]
    assert torch.ops.pyg_vig.gather_segment_reduce.default in targets
    assert torch.equal(ep.module()(x, src, ptr), _Aggregate("max")(x, src, ptr))


@pytest.mark.parametrize("reduce", ["max", "min", "sum", "mean"])
def test_reduce_edges_on_a_knn_graph_equals_the_reshape(compiled, reduce):
    # reduce_edges sends k-regular max/min through the compiled segment reduction (faster in
    # training): values and gradients, ties included, must be those of the k-regular reshape.
    from pyg_vig.nn import KNNEdgeIndex
    from pyg_vig.nn.graph import reduce_edges, reduce_regular

    N, k, C = 50, 6, 8
    src = torch.randint(0, N, (N, k))
    ei = KNNEdgeIndex.from_sources(src, N)
    msg = torch.randint(-3, 3, (N * k, C)).float()  # many exact ties
    a = msg.clone().requires_grad_()
    b = msg.clone().requires_grad_()
    out = reduce_edges(a, ei, reduce)
    ref = reduce_regular(b, k, reduce)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    w = torch.randn(N, C)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
