"""Graph layers of ViG: k-NN graph construction, graph convolutions, Grapher/FFN blocks."""

from pyg_vig.nn.conv import CONVS, EdgeConv, GINConv, MRConv, SAGEConv
from pyg_vig.nn.drop import DropPath
from pyg_vig.nn.edge_index import KNNEdgeIndex
from pyg_vig.nn.grapher import FFN, Grapher, ViGBlock
from pyg_vig.nn.knn import LowRankBias, available_backends, grid_knn_graph, knn_graph
from pyg_vig.nn.linear import MultiHeadLinear, MultiHeadUpdate
from pyg_vig.nn.official import to_official_numerics
from pyg_vig.nn.reduce import neighbor_reduce

__all__ = [
    "knn_graph",
    "grid_knn_graph",
    "available_backends",
    "KNNEdgeIndex",
    "LowRankBias",
    "neighbor_reduce",
    "MRConv",
    "EdgeConv",
    "GINConv",
    "SAGEConv",
    "CONVS",
    "MultiHeadLinear",
    "MultiHeadUpdate",
    "to_official_numerics",
    "DropPath",
    "Grapher",
    "FFN",
    "ViGBlock",
]
