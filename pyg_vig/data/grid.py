"""Layout of a batch of image grids stored node-major (``[sum_i H_i*W_i, C]``).

ViG keeps node features graph-first: one ``[N, C]`` matrix for the whole batch plus a ``batch``
vector, exactly like a PyG :class:`~torch_geometric.data.Batch`. A few operations (the stem, the
pyramid downsampling convolutions, key pooling) need the 2-D grid back. :class:`GridLayout` records
the grid size of every graph with plain Python integers, so converting between the two views never
needs a device synchronisation and stays friendly to :func:`torch.compile`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GridLayout"]


class GridLayout:
    r"""Grid sizes :math:`(H_i, W_i)` of the graphs in a batch, nodes ordered row-major.

    Node :math:`(h, w)` of graph :math:`i` sits at row ``ptr[i] + h * W_i + w`` of the node
    matrix, the order of the official ViG code.

    Args:
        sizes (sequence of (int, int)): grid height and width of each graph.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]]):
        sizes = [(int(h), int(w)) for h, w in sizes]
        if len(sizes) == 0:
            raise ValueError("GridLayout needs at least one grid; got an empty list of sizes")
        for h, w in sizes:
            if h <= 0 or w <= 0:
                raise ValueError(f"grid sizes must be positive, got {(h, w)}")
        self.sizes = sizes
        self.uniform = all(s == sizes[0] for s in sizes)
        self.counts = [h * w for h, w in sizes]
        self.ptr = [0]
        for c in self.counts:
            self.ptr.append(self.ptr[-1] + c)

    @classmethod
    def uniform_grid(cls, batch_size: int, height: int, width: int) -> GridLayout:
        r"""``batch_size`` graphs on the same :math:`H \times W` grid."""
        return cls([(height, width)] * batch_size)

    @property
    def num_graphs(self) -> int:
        return len(self.sizes)

    @property
    def num_nodes(self) -> int:
        return self.ptr[-1]

    def __repr__(self) -> str:
        if self.uniform:
            return f"GridLayout({self.num_graphs} x {self.sizes[0]})"
        return f"GridLayout({self.sizes})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridLayout) and other.sizes == self.sizes

    def __hash__(self) -> int:
        return hash(tuple(self.sizes))

    def batch(self, device: torch.device | str | None = None) -> Tensor:
        """The PyG ``batch`` vector assigning every node to its graph."""
        if self.uniform:
            return torch.arange(self.num_graphs, device=device).repeat_interleave(self.counts[0])
        counts = torch.tensor(self.counts, device=device)
        return torch.arange(self.num_graphs, device=device).repeat_interleave(counts)

    def pos(self, device: torch.device | str | None = None) -> Tensor:
        """Integer ``(row, col)`` grid position of every node, ``[num_nodes, 2]``."""
        out = []
        for h, w in self.sizes:
            rows = torch.arange(h, device=device).repeat_interleave(w)
            cols = torch.arange(w, device=device).repeat(h)
            out.append(torch.stack([rows, cols], dim=1))
        return torch.cat(out, dim=0)

    def groups(self) -> list[tuple[tuple[int, int], list[int]]]:
        """Graphs grouped by grid size: ``[((H, W), [graph indices]), ...]`` in first-seen order."""
        order: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(self.sizes):
            order.setdefault(s, []).append(i)
        return list(order.items())

    # ---------------------------------------------------------------- node <-> image views
    def to_images(self, x: Tensor) -> Tensor | list[Tensor]:
        """``[N, C]`` node features → ``(B, C, H, W)`` (uniform) or a list of ``(C, H_i, W_i)``."""
        self._check_nodes(x)
        C = x.size(-1)
        if self.uniform:
            H, W = self.sizes[0]
            # (B*H*W, C) -> (B, C, H, W)
            return x.view(self.num_graphs, H, W, C).permute(0, 3, 1, 2)
        return [
            x[self.ptr[i] : self.ptr[i + 1]].view(h, w, C).permute(2, 0, 1)
            for i, (h, w) in enumerate(self.sizes)
        ]

    @staticmethod
    def from_images(images: Tensor | Sequence[Tensor]) -> tuple[Tensor, GridLayout]:
        """``(B, C, H, W)`` or a list of ``(C, H_i, W_i)`` → ``[N, C]`` node features and layout."""
        if isinstance(images, Tensor):
            B, C, H, W = images.shape
            # (B, C, H, W) -> (B*H*W, C)
            nodes = images.permute(0, 2, 3, 1).reshape(B * H * W, C)
            return nodes, GridLayout.uniform_grid(B, H, W)
        xs = [img.permute(1, 2, 0).reshape(-1, img.size(0)) for img in images]
        return torch.cat(xs, dim=0), GridLayout([tuple(img.shape[-2:]) for img in images])

    def apply_grid_op(self, x: Tensor, fn) -> tuple[Tensor, GridLayout]:
        """Run an image-space op ``fn((B, C, H, W)) -> (B, C', H', W')`` on node features.

        Graphs of the same size are processed together; the result keeps the graph order.
        """
        if self.uniform:
            y = fn(self.to_images(x))
            return GridLayout.from_images(y)[0], GridLayout.uniform_grid(
                self.num_graphs, y.size(2), y.size(3)
            )
        imgs = self.to_images(x)
        outs: list[Tensor | None] = [None] * self.num_graphs
        for _, idx in self.groups():
            y = fn(torch.stack([imgs[i] for i in idx], dim=0))
            for j, i in enumerate(idx):
                outs[i] = y[j]
        return GridLayout.from_images(outs)  # type: ignore[arg-type]

    def avg_pool(self, x: Tensor, r: int) -> tuple[Tensor, GridLayout]:
        """Average-pool every grid with an ``r x r`` window and stride ``r`` (floor sizes)."""
        if r == 1:
            return x, self
        for h, w in self.sizes:
            if h < r or w < r:
                raise ValueError(
                    f"cannot pool a {h}x{w} grid with reduction ratio {r}: use a larger image "
                    f"or a smaller reduction ratio"
                )
        return self.apply_grid_op(x, lambda img: F.avg_pool2d(img, r, r))

    def _check_nodes(self, x: Tensor) -> None:
        if x.dim() != 2 or x.size(0) != self.num_nodes:
            raise ValueError(
                f"expected node features of shape [{self.num_nodes}, C] for {self!r}, "
                f"got {tuple(x.shape)}"
            )
