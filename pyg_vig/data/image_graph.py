"""Conversion between image tensors and PyG :class:`~torch_geometric.data.Batch` objects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_vig.data.grid import GridLayout

__all__ = ["images_to_batch", "batch_to_images", "layout_of"]


def _check_images(x: Tensor | Sequence[Tensor]) -> list[Tensor] | Tensor:
    if isinstance(x, Tensor):
        if x.dim() != 4:
            raise ValueError(
                f"expected a (B, C, H, W) image tensor or a list of (C, H, W) tensors, got a "
                f"tensor of shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)"
            )
        return x
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise ValueError("expected a (B, C, H, W) tensor or a non-empty list of (C, H, W) tensors")
    channels = None
    for i, img in enumerate(x):
        if not isinstance(img, Tensor) or img.dim() != 3:
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"image {i} must be a (C, H, W) tensor, got {shape}")
        if channels is None:
            channels = img.size(0)
        elif img.size(0) != channels:
            raise ValueError(
                f"all images need the same channel count: image 0 has {channels}, image {i} has "
                f"{img.size(0)}"
            )
    return list(x)


def images_to_batch(x: Tensor | Sequence[Tensor]) -> Batch:
    r"""Turn images into a PyG batch of pixel (patch) nodes.

    Every pixel of a ``(C, H, W)`` image becomes a node with a ``C``-dimensional feature vector.
    Nodes are ordered row-major (node ``h * W + w``), the order of the official ViG code.

    .. code-block:: python

        imgs = [torch.randn(3, 4, 5), torch.randn(3, 2, 2)]
        batch = images_to_batch(imgs)
        batch.x.shape, batch.pos[:3], batch.grid_size
        # torch.Size([24, 3]), [[0, 0], [0, 1], [0, 2]], [[4, 5], [2, 2]]

    Args:
        x (Tensor or list of Tensor): a ``(B, C, H, W)`` tensor, or a list of ``(C, H_i, W_i)``
            tensors of possibly different sizes.

    :rtype: :class:`torch_geometric.data.Batch` with ``x`` ``[N, C]``, ``pos`` ``[N, 2]``
        (row, col, floating point), ``batch`` ``[N]``, ``ptr`` and ``grid_size`` ``[B, 2]`` (H, W).
    """
    x = _check_images(x)
    nodes, layout = GridLayout.from_images(x)
    device = nodes.device
    # float positions, as PyG's point/graph layers expect (and as forward_graph returns them)
    pos = layout.pos(device).to(nodes.dtype if nodes.is_floating_point()
                                else torch.get_default_dtype())
    data_list = []
    for i, (h, w) in enumerate(layout.sizes):
        sl = slice(layout.ptr[i], layout.ptr[i + 1])
        data_list.append(
            Data(x=nodes[sl], pos=pos[sl], grid_size=torch.tensor([[h, w]], device=device))
        )
    return Batch.from_data_list(data_list)


def layout_of(batch: Batch) -> GridLayout:
    """Read the :class:`GridLayout` of a batch made by :func:`images_to_batch`."""
    if not hasattr(batch, "grid_size") or batch.grid_size is None:
        raise ValueError(
            "this Batch has no 'grid_size' attribute; build it with pyg_vig.data.images_to_batch"
        )
    sizes = [tuple(s) for s in batch.grid_size.view(-1, 2).tolist()]
    layout = GridLayout(sizes)
    if layout.num_nodes != batch.num_nodes:
        raise ValueError(
            f"grid sizes {sizes} account for {layout.num_nodes} nodes but the batch has "
            f"{batch.num_nodes}"
        )
    return layout


def batch_to_images(batch: Batch, x: Tensor | None = None) -> Tensor | list[Tensor]:
    """Inverse of :func:`images_to_batch`.

    Args:
        batch (Batch): a batch made by :func:`images_to_batch` (it carries ``grid_size``).
        x (Tensor, optional): node features to scatter back instead of ``batch.x``, e.g. the
            output of a GNN layer with another channel count. (default: :obj:`None`)

    Returns:
        A ``(B, C, H, W)`` tensor when all grids have the same size, else a list of
        ``(C, H_i, W_i)`` tensors.
    """
    layout = layout_of(batch)
    feats = batch.x if x is None else x
    out = layout.to_images(feats)
    if isinstance(out, Tensor):
        return out.contiguous()
    return [o.contiguous() for o in out]
