"""Graph layers of ViG: k-NN graph construction, graph convolutions, Grapher/FFN blocks."""

from pyg_vig.nn.conv import CONVS, EdgeConv, GINConv, MRConv, SAGEConv
from pyg_vig.nn.drop import DropPath
from pyg_vig.nn.graph import LowRankBias, available_backends, knn_graph
from pyg_vig.nn.grapher import FFN, Grapher, ViGBlock, grid_knn_graph
from pyg_vig.nn.linear import MultiHeadLinear, MultiHeadUpdate, NodeLinear
from pyg_vig.nn.numerics import official_numerics

__all__ = [
    "knn_graph",
    "grid_knn_graph",
    "available_backends",
    "LowRankBias",
    "MRConv",
    "EdgeConv",
    "GINConv",
    "SAGEConv",
    "CONVS",
    "MultiHeadLinear",
    "MultiHeadUpdate",
    "NodeLinear",
    "official_numerics",
    "DropPath",
    "Grapher",
    "FFN",
    "ViGBlock",
]
