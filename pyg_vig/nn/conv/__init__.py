"""ViG graph convolutions as PyG :class:`~torch_geometric.nn.conv.MessagePassing` layers."""

from pyg_vig.nn.conv.edge_conv import EdgeConv
from pyg_vig.nn.conv.gin_conv import GINConv
from pyg_vig.nn.conv.mr_conv import MRConv
from pyg_vig.nn.conv.sage_conv import SAGEConv

__all__ = ["MRConv", "EdgeConv", "GINConv", "SAGEConv", "CONVS"]

#: Short names of the paper's graph convolutions (Table 6).
CONVS = {"mr": MRConv, "edge": EdgeConv, "gin": GINConv, "sage": SAGEConv}
