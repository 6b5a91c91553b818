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
from einops import rearrange
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
        self.uniform = all(s == sizes[0] for s in sizes)
        self._num_graphs = len(sizes)
        self._grid = sizes[0] if self.uniform else None
        self._sizes: list[tuple[int, int]] | None = sizes

    @classmethod
    def uniform_grid(cls, batch_size: int, height: int, width: int) -> GridLayout:
        r"""``batch_size`` graphs on the same :math:`H \times W` grid.

        ``batch_size`` may be a symbolic size (``torch.export`` with a dynamic batch): a uniform
        layout never turns it into a Python list.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"grid sizes must be positive, got {(height, width)}")
        out = cls.__new__(cls)
        out.uniform = True
        out._num_graphs = batch_size
        out._grid = (int(height), int(width))
        out._sizes = None
        return out

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of every graph (for a uniform layout this fixes the batch size)."""
        if self._sizes is None:
            return [self._grid] * int(self._num_graphs)
        return self._sizes

    @property
    def grid(self) -> tuple[int, int]:
        """The common ``(H, W)`` of a uniform layout."""
        if not self.uniform:
            raise ValueError(f"{self!r} has grids of several sizes")
        return self._grid

    @property
    def counts(self) -> list[int]:
        """Nodes per graph."""
        return [h * w for h, w in self.sizes]

    @property
    def ptr(self) -> list[int]:
        """Offsets of every graph's first node, plus the total (PyG's ``ptr``)."""
        out = [0]
        for c in self.counts:
            out.append(out[-1] + c)
        return out

    @property
    def num_graphs(self) -> int:
        return self._num_graphs

    @property
    def num_nodes(self) -> int:
        if self.uniform:
            return self._num_graphs * self._grid[0] * self._grid[1]
        return sum(self.counts)

    def distinct_sizes(self) -> list[tuple[int, int]]:
        """The different grid sizes, in first-seen order."""
        return [self._grid] if self.uniform else list(dict.fromkeys(self.sizes))

    def size_pairs(self, other: GridLayout) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Distinct ``(size here, size in other)`` pairs of corresponding graphs."""
        if self.uniform and other.uniform:
            return [(self._grid, other._grid)]
        return list(dict.fromkeys(zip(self.sizes, other.sizes, strict=True)))

    def __repr__(self) -> str:
        if self.uniform:
            return f"GridLayout({self.num_graphs} x {self._grid})"
        return f"GridLayout({self.sizes})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridLayout):
            return False
        if self.uniform and other.uniform:
            return self._grid == other._grid and self.num_graphs == other.num_graphs
        return other.sizes == self.sizes

    def __hash__(self) -> int:
        return hash((self._grid, self.num_graphs)) if self.uniform else hash(tuple(self.sizes))

    def batch(self, device: torch.device | str | None = None) -> Tensor:
        """The PyG ``batch`` vector assigning every node to its graph."""
        if self.uniform:
            n = self._grid[0] * self._grid[1]
            return torch.arange(self.num_graphs, device=device).repeat_interleave(n)
        counts = torch.tensor(self.counts, device=device)
        return torch.arange(self.num_graphs, device=device).repeat_interleave(counts)

    def pos(self, device: torch.device | str | None = None) -> Tensor:
        """Integer ``(row, col)`` grid position of every node, ``[num_nodes, 2]``."""
        def one(h: int, w: int) -> Tensor:
            rows = torch.arange(h, device=device).repeat_interleave(w)
            cols = torch.arange(w, device=device).repeat(h)
            return torch.stack([rows, cols], dim=1)

        if self.uniform:
            return one(*self._grid).repeat(self.num_graphs, 1)
        return torch.cat([one(h, w) for h, w in self.sizes], dim=0)

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
        if self.uniform:
            H, W = self._grid
            return rearrange(x, "(b h w) c -> b c h w", h=H, w=W)  # a view, no copy
        return [
            rearrange(x[self.ptr[i] : self.ptr[i + 1]], "(h w) c -> c h w", h=h, w=w)
            for i, (h, w) in enumerate(self.sizes)
        ]

    @staticmethod
    def from_images(images: Tensor | Sequence[Tensor]) -> tuple[Tensor, GridLayout]:
        """``(B, C, H, W)`` or a list of ``(C, H_i, W_i)`` → ``[N, C]`` node features and layout."""
        if isinstance(images, Tensor):
            B, _, H, W = images.shape
            nodes = rearrange(images, "b c h w -> (b h w) c")
            return nodes, GridLayout.uniform_grid(B, H, W)
        xs = [rearrange(img, "c h w -> (h w) c") for img in images]
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
        for h, w in self.distinct_sizes():
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
