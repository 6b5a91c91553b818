"""to_official_numerics refuses what the official code cannot compute and honours edge_index=."""

import pytest
import torch
from torch_geometric.utils import dropout_edge

import pyg_vig
from pyg_vig.data import GridLayout
from pyg_vig.nn import Grapher, MRConv, to_official_numerics


@pytest.mark.parametrize("conv, aggr", [("mr", "mean"), ("edge", "sum"), ("gin", "max"),
                                        ("sage", "mean")])
def test_refuses_non_official_aggr(conv, aggr):
    model = pyg_vig.create_model("vig_mini", num_classes=3, conv=conv)
    for m in model.modules():
        if hasattr(m, "aggr") and hasattr(m, "propagate"):
            m.aggr = aggr
    with pytest.raises(ValueError, match=rf"aggr='{aggr}'.*official code does not have"):
        to_official_numerics(model)
    # nothing was converted half-way
    assert all("Official" not in type(m).__name__ for m in model.modules())


def test_refuses_graph_transform_and_flow():
    g = Grapher(16, k=3, graph_transform=lambda ei: dropout_edge(ei, p=0.2)[0])
    with pytest.raises(ValueError, match="graph_transform"):
        to_official_numerics(g)
    conv = MRConv(16, 32, flow="target_to_source")
    with pytest.raises(ValueError, match="flow='target_to_source'"):
        to_official_numerics(conv)


def test_official_conversion_still_works_with_official_options():
    model = pyg_vig.create_model("vig_mini", num_classes=3).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        out = to_official_numerics(model)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_official_grapher_honours_edge_index():
    layout = GridLayout.uniform_grid(2, 4, 4)
    x = torch.randn(32, 16)
    g = to_official_numerics(Grapher(16, k=3).eval())
    with torch.no_grad():
        out, edge_index = g(x, layout=layout, return_edge_index=True)
        again = g(x, layout=layout, edge_index=edge_index)
        torch.testing.assert_close(again, out, rtol=0, atol=0)
        # another k-regular graph changes the result: the given graph is used
        shifted = type(edge_index).from_sources(edge_index[0].view(32, 3).roll(1, dims=0), 32)
        assert not torch.allclose(g(x, layout=layout, edge_index=shifted), out)
        with pytest.raises(ValueError, match="k-regular"):
            g(x, layout=layout, edge_index=edge_index.as_tensor()[:, ::2])
