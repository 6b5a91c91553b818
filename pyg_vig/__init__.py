"""pyg_vig: Vision GNN built from PyTorch Geometric parts."""

from pyg_vig.version import __version__

__all__ = ["__version__"]
