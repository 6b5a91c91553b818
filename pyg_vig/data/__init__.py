"""Images as PyG graphs of patch nodes."""

from pyg_vig.data.grid import GridLayout
from pyg_vig.data.image_graph import batch_to_images, images_to_batch

__all__ = ["GridLayout", "images_to_batch", "batch_to_images"]
