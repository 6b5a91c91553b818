"""torch.compile of the ViG layers matches eager.

The default suite uses the ``aot_eager`` backend (it traces through AOTAutograd like inductor but
skips code generation, which takes ~40 s per graph on 2 CPU cores); ``FULL_TEST=1`` adds inductor.
"""

import os
import warnings
from functools import partial

import pytest
import torch

from pyg_vig.data import GridLayout
from pyg_vig.nn import EdgeConv, GINConv, Grapher, MRConv, SAGEConv
from pyg_vig.nn import knn_graph as pyg_knn_graph

BACKENDS = ["aot_eager"]
if os.environ.get("FULL_TEST") == "1":
    BACKENDS.append(pytest.param("inductor", marks=pytest.mark.slow))

C = 16

# ViG's graph (normalised features, self-loops); PyG's defaults are tested in test_knn_pyg.py
knn_graph = partial(pyg_knn_graph, loop=True, normalize=True)


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


def test_compiled_pyramid_model_keeps_tables_as_constants(monkeypatch):
    # The relative-position tables are read from the shared cache as constants of the compiled
    # graph: after the first call they are never rebuilt, and the output equals eager.
    import pyg_vig
    from pyg_vig.nn import pos_embed

    torch._dynamo.reset()
    pos_embed.relative_position_cache.cache_clear()
    model = pyg_vig.create_model("pvig_mini", num_classes=4).eval()
    x = torch.randn(2, 1, 32, 32)
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        compiled(x)

        def rebuilt(*args, **kwargs):
            raise AssertionError("relative-position table rebuilt in a compiled call")

        monkeypatch.setattr(pos_embed, "_bias_cpu", rebuilt)
        monkeypatch.setattr(pos_embed, "_factors_cpu", rebuilt)
        out = compiled(x)
        out2 = compiled(x + 0.5)
        ref, ref2 = model(x), model(x + 0.5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out2, ref2, rtol=1e-5, atol=1e-5)
