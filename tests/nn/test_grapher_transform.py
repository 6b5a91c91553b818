"""Grapher(graph_transform=...): a transform of the k-NN graph, fc1 run once."""

import pytest
import torch
from torch_geometric.utils import dropout_edge

from pyg_vig.nn import Grapher


def test_graph_transform_dropout_edge():
    torch.manual_seed(0)
    x = torch.randn(3 * 20, 16)
    batch = torch.arange(3).repeat_interleave(20)
    g = Grapher(16, k=5, conv="mr").eval()
    seen = []

    def transform(ei):
        seen.append(ei.size(1))
        return dropout_edge(ei, p=0.5, training=True)[0]

    # reference: fc1 by hand, the graph, the same dropout draw, then the graph given explicitly
    with torch.no_grad():
        ei = g.build_graph(g.fc1(x), batch)[0]
        torch.manual_seed(7)
        pruned = dropout_edge(ei, p=0.5, training=True)[0]
        ref = g(x, batch, edge_index=pruned)
        full = g(x, batch)
        g.graph_transform = transform
        torch.manual_seed(7)
        out, used = g(x, batch, return_edge_index=True)
    assert seen == [3 * 20 * 5]
    assert 0 < used.size(1) < 3 * 20 * 5
    assert torch.equal(used.as_tensor() if hasattr(used, "as_tensor") else used,
                       pruned.as_tensor() if hasattr(pruned, "as_tensor") else pruned)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert not torch.allclose(out, full)


def test_graph_transform_runs_fc1_once_in_training():
    torch.manual_seed(0)
    g = Grapher(16, k=4, graph_transform=lambda ei: dropout_edge(ei, p=0.2, training=True)[0])
    g.train()
    bn = [m for m in g.fc1.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)][0]
    before = int(bn.num_batches_tracked)
    g(torch.randn(30, 16))
    assert int(bn.num_batches_tracked) == before + 1


def test_graph_transform_must_be_callable():
    with pytest.raises(TypeError, match="graph_transform must be a callable"):
        Grapher(16, graph_transform=0.1)
