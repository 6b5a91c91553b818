"""forward_graph hands PyG a Batch of valid graphs for every registered model."""

import pytest
import torch
import torch_geometric
from torch_geometric.nn import GCNConv, global_mean_pool

from pyg_vig import create_model, list_models


def _check_valid(batch):
    graphs = batch.to_data_list()
    for d in graphs:
        d.validate(raise_on_error=True)  # PyG's own check: 0 <= edge_index < num_nodes
        assert int(d.edge_index.min()) >= 0 and int(d.edge_index.max()) < d.num_nodes
        assert d.node_type.shape == (d.num_nodes,)
    return graphs


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_valid_graphs_pyg_can_use(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    side = model.min_input_size()
    stride = model.stem_stride
    # two images of different sizes: the graphs differ, their indices must stay local
    images = [torch.randn(model.in_chans, side, side),
              torch.randn(model.in_chans, side + 2 * stride, side)]
    with torch.no_grad():
        batch = model.forward_graph(images)
    graphs = _check_valid(batch)
    assert len(graphs) == 2
    # any PyG layer and pooling continue from here
    conv = GCNConv(batch.num_node_features, 8)
    h = conv(batch.x, batch.edge_index)
    pooled = global_mean_pool(h, batch.batch)
    assert h.shape == (batch.num_nodes, 8) and pooled.shape == (2, 8)
    assert torch.isfinite(pooled).all()


@pytest.mark.parametrize("reductions", [(2, 1, 2), (1, 2, 2), (2, 2, 1)])
def test_pooled_keys_are_nodes_of_each_graph(reductions):
    model = create_model("pvig_mini", reductions=reductions).eval()
    r = reductions[-1]
    with torch.no_grad():
        batch = model.forward_graph(torch.randn(2, 1, 64, 64))
        nodes, layout, *_ = model.forward_nodes(torch.randn(2, 1, 64, 64))
    graphs = _check_valid(batch)
    h, w = layout.sizes[0]
    n, m = h * w, (h // r) * (w // r) if r > 1 else 0
    for d in graphs:
        assert d.num_nodes == n + m
        assert int((d.node_type == 1).sum()) == m
        if r > 1:
            # every edge goes from a key to a patch node
            assert bool((d.node_type[d.edge_index[0]] == 1).all())
            assert bool((d.node_type[d.edge_index[1]] == 0).all())
            assert d.edge_index.size(1) == n * model.k
            # a key sits at the centre of its r x r cell
            first_key = d.pos[n]
            assert first_key.tolist() == [(r - 1) / 2, (r - 1) / 2]
        else:
            assert bool((d.node_type == 0).all())
    # the key features are the r x r means of the final patch features
    if r > 1:
        with torch.no_grad():
            x = torch.randn(1, 1, 64, 64)
            d = model.forward_graph(x).to_data_list()[0]
            maps = model.forward_features(x)[0]  # (C, h, w)
        pooled = torch.nn.functional.avg_pool2d(maps, r, r).flatten(1).t()
        torch.testing.assert_close(d.x[n:], pooled)


def test_graph_batch_matches_pyg_types():
    model = create_model("vig_mini").eval()
    with torch.no_grad():
        batch = model.forward_graph(torch.randn(3, 1, 28, 28))
    assert isinstance(batch, torch_geometric.data.Batch)
    assert batch.pos.dtype == batch.x.dtype  # float positions, as PyG point/graph layers expect
    assert len(batch.edge_indices) == len(model.blocks)
