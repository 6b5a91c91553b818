"""The k-NN graph does not depend on the autocast state: distances, bias and top-k selection
are computed in float32 whatever autocast does."""

import pytest
import torch

from pyg_vig import create_model
from pyg_vig.nn import knn_graph
from pyg_vig.nn.grapher import Grapher

AUTOCAST = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("batched", [False, True])
def test_knn_graph_autocast_equals_fp32(normalize, batched):
    torch.manual_seed(0)
    # Many near-ties: bf16 distances (8 mantissa bits) would reorder neighbours.
    x = torch.randn(2 * 196, 96)
    batch = torch.arange(2).repeat_interleave(196) if batched else None
    ref = knn_graph(x, 9, batch, normalize=normalize)
    with torch.autocast(**AUTOCAST):
        out = knn_graph(x, 9, batch, normalize=normalize)
    assert torch.equal(out.as_tensor(), ref.as_tensor())


def test_knn_graph_half_features_selected_in_fp32():
    torch.manual_seed(1)
    x = torch.randn(300, 64).bfloat16()
    ref = knn_graph(x.float(), 9)
    assert torch.equal(knn_graph(x, 9).as_tensor(), ref.as_tensor())


@pytest.mark.parametrize("name", ["vig_ti", "pvig_ti"])
def test_model_graphs_autocast_equal_fp32(name, monkeypatch):
    """Every Grapher's graph in a bf16-autocast forward equals the fp32 graph of the same
    features (the features themselves differ with the precision; the graph of given
    features must not)."""
    calls = []
    graph = Grapher.graph

    def recording(self, x, batch, layout, y, layout_y, normalize=True):
        out = graph(self, x, batch, layout, y, layout_y, normalize)
        calls.append((self, x.detach(), batch, layout, None if y is None else y.detach(),
                      layout_y, normalize, out))
        return out

    monkeypatch.setattr(Grapher, "graph", recording)
    torch.manual_seed(0)
    model = create_model(name).eval()
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), torch.autocast(**AUTOCAST):
        model(img)
    assert len(calls) >= 12
    assert any(c[1].dtype == torch.bfloat16 for c in calls)  # autocast really was on
    monkeypatch.setattr(Grapher, "graph", graph)
    for mod, x, batch, layout, y, layout_y, normalize, out in calls:
        ref = mod.graph(x.float(), batch, layout, None if y is None else y.float(), layout_y,
                        normalize)
        assert torch.equal(out.as_tensor(), ref.as_tensor())


def test_one_dispatch_point(monkeypatch):
    """Graph code asks pyg_vig.ops.compiled_for; with the kernels unavailable nothing compiled
    runs (and the result is the same)."""
    import pyg_vig.ops._build as build_mod
    from pyg_vig import ops

    torch.manual_seed(0)
    x = torch.randn(50, 8)
    ref = knn_graph(x, 5)
    monkeypatch.setattr(build_mod, "available", lambda: False)
    assert not ops.compiled_for(x) and ops.default_impl(x) == "torch"

    def boom(*a, **k):
        raise AssertionError("compiled kernel called")

    monkeypatch.setattr(torch.ops.pyg_vig, "knn_select", boom, raising=False)
    assert torch.equal(knn_graph(x, 5).as_tensor(), ref.as_tensor())
    assert not ops.compiled_for(torch.randn(3, device="meta"))
