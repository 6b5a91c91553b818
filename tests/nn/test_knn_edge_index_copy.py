"""copy.deepcopy of a KNNEdgeIndex and of Data/Batch objects holding one."""

import copy

import torch
from torch_geometric.data import Batch, Data

from pyg_vig.nn import KNNEdgeIndex, knn_graph
from pyg_vig.nn.edge_index import regular_degree


def test_deepcopy_knn_edge_index():
    ei = knn_graph(torch.randn(20, 4), 3)
    c = copy.deepcopy(ei)
    assert type(c) is KNNEdgeIndex and c.k == 3 and regular_degree(c) == 3
    assert torch.equal(c.as_tensor(), ei.as_tensor())
    assert c.sparse_size() == ei.sparse_size() and c.is_sorted_by_col
    assert c._data.data_ptr() != ei._data.data_ptr()  # a real copy
    assert torch.equal(c.get_indptr(), ei.get_indptr())


def test_deepcopy_data_and_batch_holding_one():
    x = torch.randn(12, 4)
    d = Data(x=x, edge_index=knn_graph(x, 3))
    d2 = copy.deepcopy(d)
    assert type(d2.edge_index) is KNNEdgeIndex
    assert torch.equal(d2.edge_index.as_tensor(), d.edge_index.as_tensor())
    b = Batch.from_data_list([d, d2])
    b2 = copy.deepcopy(b)
    assert torch.equal(torch.as_tensor(b2.edge_index), torch.as_tensor(b.edge_index))
