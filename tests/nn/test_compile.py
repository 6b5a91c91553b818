"""torch.compile of the ViG layers matches eager.

The default suite uses the ``aot_eager`` backend (it traces through AOTAutograd like inductor but
skips code generation, which takes ~40 s per graph on 2 CPU cores); ``FULL_TEST=1`` adds inductor.
"""

import os
import warnings

import pytest
import torch

from pyg_vig.data import GridLayout
from pyg_vig.nn import EdgeConv, GINConv, Grapher, MRConv, SAGEConv, knn_graph

BACKENDS = ["aot_eager"]
if os.environ.get("FULL_TEST") == "1":
    BACKENDS.append(pytest.param("inductor", marks=pytest.mark.slow))

C = 16


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("conv_cls", [MRConv, EdgeConv, GINConv, SAGEConv])
@pytest.mark.parametrize("fused", [True, False], ids=["KNNEdgeIndex", "tensor"])
def test_conv_has_no_graph_breaks(conv_cls, fused):
    x = torch.randn(32, C)
    edge_index = knn_graph(x, 4)
    if not fused:
        edge_index = edge_index.as_tensor()
    explain = torch._dynamo.explain(conv_cls(C, 2 * C).eval())(x, edge_index)
    assert explain.graph_break_count == 0, explain.break_reasons


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [False, True])
def test_compiled_mr_conv_matches_eager(backend, train):
    x = torch.randn(32, C)
    edge_index = knn_graph(x, 4)
    module = (lambda c, k: c)(MRConv(C, 2 * C), 4).train(train)
    compiled = torch.compile(module, backend=backend)
    torch.testing.assert_close(compiled(x, edge_index), module(x, edge_index),
                               rtol=1e-5, atol=1e-5)
    if train:
        x.requires_grad_()
        compiled(x, edge_index).pow(2).sum().backward()
        grad = x.grad.clone()
        x.grad = None
        module(x, edge_index).pow(2).sum().backward()
        torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-5)


def test_compiled_conv_dynamic_sizes():
    module = (lambda c, k: c)(MRConv(C, 2 * C).eval(), 3)
    compiled = torch.compile(module, backend="aot_eager", dynamic=True)
    for n in (10, 17, 25):
        x = torch.randn(n, C)
        edge_index = knn_graph(x, 3)
        torch.testing.assert_close(compiled(x, edge_index), module(x, edge_index),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_grapher_matches_eager(backend):
    layout = GridLayout.uniform_grid(2, 4, 4)
    x = torch.randn(32, C)
    grapher = Grapher(C, k=4, dilation=2).eval()
    explain = torch._dynamo.explain(grapher)(x, None, layout)
    assert explain.graph_break_count == 0, explain.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(grapher, backend=backend)
    torch.testing.assert_close(compiled(x, layout=layout), grapher(x, layout=layout),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction,relative_pos", [(2, "official"), (1, "geometric")])
def test_compiled_pyramid_grapher_matches_eager(reduction, relative_pos):
    layout = GridLayout.uniform_grid(2, 4, 4)
    x = torch.randn(32, C)
    grapher = Grapher(C, k=3, reduction=reduction, relative_pos=relative_pos).eval()
    compiled = torch.compile(grapher, backend="aot_eager")
    torch.testing.assert_close(compiled(x, layout=layout), grapher(x, layout=layout),
                               rtol=1e-5, atol=1e-5)


def test_compiled_grapher_with_batch_vector_matches_eager():
    # knn_graph reads graph sizes from `batch` (a graph break is fine); results must agree.
    counts = [12, 20]
    x = torch.randn(sum(counts), C)
    batch = torch.arange(2).repeat_interleave(torch.tensor(counts))
    grapher = Grapher(C, k=4, conv="edge").eval()
    compiled = torch.compile(grapher, backend="aot_eager")
    torch.testing.assert_close(compiled(x, batch), grapher(x, batch), rtol=1e-5, atol=1e-5)
