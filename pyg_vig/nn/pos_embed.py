r"""Fixed 2-D sin-cos embeddings and the relative position bias of pyramid ViG Graphers.

Pyramid ViG (`"Vision GNN: An Image is Worth Graph of Nodes" <https://arxiv.org/abs/2206.00272>`_)
adds a frozen table :math:`R \in [-1, 1]^{N \times M}` to the squared feature distance before
picking the :math:`k` nearest neighbours, so nodes close on the image grid are more likely to be
linked. The table is the negated, rescaled Gram matrix of 2-D sin-cos embeddings
(`MAE <https://arxiv.org/abs/2111.06377>`_ convention):

.. math::
    R_{ij} = -\frac{2}{C}\, \mathbf{p}_i^\top \mathbf{p}_j
           = -\frac{2}{C} \sum_{t} \big[\cos((w_i - w_j)\,\omega_t)
             + \cos((h_i - h_j)\,\omega_t)\big],
    \qquad \omega_t = 10000^{-4t/C},

which is :math:`-1` for a node and itself. Two ways to build it are offered:

* ``mode="official"`` reproduces the table of the original code bit for bit, including the way it
  handles pooled keys (r > 1): the :math:`N \times N` table is bicubically resampled along the
  *flattened* key index, so a pooled key's bias does not match its 2-D position.
* ``mode="geometric"`` evaluates the formula above at the true centres of the pooled
  :math:`r \times r` windows. It equals the official table when r = 1, up to float32 rounding.

Tables live in one shared, bounded cache (:data:`relative_position_cache`): Graphers with the same
configuration share one table per input size, device and dtype; the least recently used tables are
evicted once the cache holds more than ``maxsize`` tables or ``max_bytes`` bytes (the newest is
always kept), so memory does not grow with the number of input sizes a model sees (detection).
The public functions return fresh copies that the caller may modify.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TableCache",
    "relative_position_cache",
    "cached_relative_position_bias",
    "cached_relative_position_factors",
    "sincos_2d",
    "relative_position_bias",
    "relative_position_factors",
]

_MODES = ("official", "geometric")
_CHUNK_ELEMENTS = 1 << 24  # float64 elements of one row chunk of the Gram matrix (128 MiB)


def _check_dim(dim: int) -> None:
    if dim <= 0 or dim % 4 != 0:
        raise ValueError(
            f"sin-cos position embedding needs dim divisible by 4 (sin and cos of row and "
            f"column each take dim / 4 channels), got dim={dim}"
        )


def _check_grid(grid_h: int, grid_w: int, r: int) -> None:
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"grid size must be positive, got {(grid_h, grid_w)}")
    if r <= 0:
        raise ValueError(f"reduction ratio r must be a positive integer, got {r}")
    if r > grid_h or r > grid_w:
        raise ValueError(
            f"reduction ratio r={r} is larger than the {grid_h}x{grid_w} grid, "
            f"so pooling would leave no keys"
        )


def _grid_positions(grid_h: int, grid_w: int, dtype: torch.dtype) -> Tensor:
    # Row-major node order: node h * grid_w + w sits at (h, w). -> (grid_h * grid_w, 2)
    rows = torch.arange(grid_h, dtype=dtype)
    cols = torch.arange(grid_w, dtype=dtype)
    hh, ww = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([hh.reshape(-1), ww.reshape(-1)], dim=1)


def _pooled_centres(grid_h: int, grid_w: int, r: int, dtype: torch.dtype) -> Tensor:
    # Centre of the r x r window (a, b) in query-grid units; windows that do not fit entirely are
    # dropped, as `avg_pool2d(kernel_size=r, stride=r)` does. -> ((grid_h // r) * (grid_w // r), 2)
    offset = (r - 1) / 2
    return _grid_positions(grid_h // r, grid_w // r, dtype) * r + offset


def sincos_2d(
    grid_h: int,
    grid_w: int,
    dim: int,
    *,
    positions: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""2-D sin-cos position embedding in the MAE convention.

    With :math:`q = \text{dim} / 4` frequencies :math:`\omega_t = 10000^{-t/q}`, the node at
    (row :math:`h`, column :math:`w`) is embedded as
    :math:`[\sin(w\omega), \cos(w\omega), \sin(h\omega), \cos(h\omega)]`.

    .. code-block:: python

        pos = sincos_2d(14, 14, 96)  # (196, 96), row-major nodes
        centres = torch.tensor([[1.5, 1.5], [1.5, 5.5]])
        pos = sincos_2d(0, 0, 96, positions=centres)  # (2, 96); grid size is ignored

    Args:
        grid_h (int): number of grid rows (ignored when :obj:`positions` is given).
        grid_w (int): number of grid columns (ignored when :obj:`positions` is given).
        dim (int): embedding size; must be divisible by 4.
        positions (torch.Tensor, optional): ``[N, 2]`` (row, column) coordinates, possibly
            fractional, e.g. the centres of pooled cells. If :obj:`None`, the integer positions of
            the ``grid_h x grid_w`` grid in row-major order are used. (default: :obj:`None`)
        dtype (torch.dtype, optional): dtype of the computation and of the result.
            (default: :obj:`torch.float64`)

    Returns:
        torch.Tensor: the ``[N, dim]`` embedding.

    Raises:
        ValueError: if :obj:`dim` is not a positive multiple of 4 or :obj:`positions` is not
            ``[N, 2]``.

    :rtype: :class:`torch.Tensor`
    """
    _check_dim(dim)
    if positions is None:
        positions = _grid_positions(grid_h, grid_w, dtype)
    elif positions.dim() != 2 or positions.size(1) != 2:
        raise ValueError(f"positions must have shape [N, 2], got {list(positions.shape)}")
    positions = positions.to(dtype)

    q = dim // 4
    omega = torch.arange(q, dtype=dtype) / q
    omega = 1.0 / 10000**omega  # (q,)
    # The MAE code puts the column embedding first, then the row embedding.
    cols = positions[:, 1, None] * omega  # (N, q)
    rows = positions[:, 0, None] * omega  # (N, q)
    return torch.cat([cols.sin(), cols.cos(), rows.sin(), rows.cos()], dim=1)


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int
    maxsize: int
    nbytes: int
    max_bytes: int


class TableCache:
    """A least-recently-used cache of tensors bounded by entry count and total bytes.

    Like :func:`functools.lru_cache` (``cache_info()``, ``cache_clear()``), but it counts the
    bytes of what it holds: once over ``maxsize`` entries or ``max_bytes`` bytes it evicts the
    least recently used ones, always keeping the newest. Thread-safe.

    Args:
        maxsize (int): most entries held. (default: :obj:`16`)
        max_bytes (int): most bytes held (the newest entry is kept even if larger).
            (default: 1 GiB)
    """

    def __init__(self, maxsize: int = 16, max_bytes: int = 1 << 30):
        self.maxsize, self.max_bytes = int(maxsize), int(max_bytes)
        self._data: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    @staticmethod
    def _nbytes(value) -> int:
        tensors = value if isinstance(value, tuple) else (value,)
        return sum(t.numel() * t.element_size() for t in tensors)

    def nbytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(self._nbytes(v) for v in self._data.values())

    def get(self, key: Hashable, build: Callable[[], object]):
        """The value under ``key``, built with ``build()`` (outside the lock) on a miss."""
        with self._lock:
            if key in self._data:
                self._hits += 1
                self._data.move_to_end(key)
                return self._data[key]
            self._misses += 1
        value = build()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            total = sum(self._nbytes(v) for v in self._data.values())
            while len(self._data) > 1 and (len(self._data) > self.maxsize
                                           or total > self.max_bytes):
                _, old = self._data.popitem(last=False)
                total -= self._nbytes(old)
        return value

    def peek(self, key: Hashable):
        """The value under ``key`` or ``None``, without counting or reordering (lock-free, so
        that :func:`torch.compile` can trace it).
        """
        return self._data.get(key)

    def cache_info(self) -> CacheInfo:
        with self._lock:
            nbytes = sum(self._nbytes(v) for v in self._data.values())
            return CacheInfo(self._hits, self._misses, len(self._data), self.maxsize, nbytes,
                             self.max_bytes)

    def cache_clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._hits = self._misses = 0


#: The one cache of relative-position tables and factors, shared by every Grapher. Set its
#: ``maxsize`` / ``max_bytes`` to trade memory for rebuilds (a stage-0 "official" table at a
#: detection size such as 800 x 1216 is 60,800 x 3,800 float32 = 924 MB).
relative_position_cache = TableCache()


def _factors_cpu(grid_h: int, grid_w: int, dim: int, r: int) -> tuple[Tensor, Tensor]:
    _check_dim(dim)
    _check_grid(grid_h, grid_w, r)
    scale = math.sqrt(2.0 / dim)
    pos_q = sincos_2d(grid_h, grid_w, dim)
    pos_k = (
        pos_q
        if r == 1
        else sincos_2d(0, 0, dim, positions=_pooled_centres(grid_h, grid_w, r, torch.float64))
    )
    return (pos_q * scale).float(), (pos_k * scale).float()


def _bias_cpu(grid_h: int, grid_w: int, dim: int, r: int, mode: str) -> Tensor:
    _check_dim(dim)
    _check_grid(grid_h, grid_w, r)
    num_keys = (grid_h // r) * (grid_w // r)
    if mode == "geometric":
        factor_q, factor_k = _factors_cpu(grid_h, grid_w, dim, r)
        return -(factor_q @ factor_k.t())

    # Official recipe: Gram matrix in float64, rounded to float32, then resampled as an image.
    pos = sincos_2d(grid_h, grid_w, dim)  # (N, dim)
    num_nodes = pos.size(0)
    out = torch.empty(num_nodes, num_keys)
    # Rows are independent: the bicubic weights along an unchanged axis are exactly (0, 1, 0, 0),
    # so building the table in row chunks gives the same bits while the float64 (N, N) Gram
    # matrix never exists at once (it would be 20 GB for a 224 x 224 grid).
    rows = max(1, _CHUNK_ELEMENTS // num_nodes)
    for s in range(0, num_nodes, rows):
        sim = (2 * (pos[s : s + rows] @ pos.t()) / dim).float()  # (rows, N)
        if r > 1:
            # (rows, N) -> (1, 1, rows, num_keys): the key axis is squeezed along the
            # flattened node index, as the official code does.
            sim = F.interpolate(
                sim[None, None], size=(sim.size(0), num_keys), mode="bicubic",
                align_corners=False,
            )[0, 0]
        out[s : s + rows] = sim
    return out.neg_()


def relative_position_factors(
    grid_h: int,
    grid_w: int,
    dim: int,
    r: int = 1,
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Low-rank factors of the geometric relative position bias.

    Returns float32 matrices :math:`P_q = \sqrt{2/C}\, P` on the query grid and
    :math:`P_k = \sqrt{2/C}\, P'` on the pooled-cell centres, such that
    ``relative_position_bias(grid_h, grid_w, dim, r, mode="geometric")`` equals
    ``-(Pq @ Pk.T)``. Folding them into the features, e.g. :math:`[\hat{x}, P_q]` for queries and
    :math:`[\hat{y}, P_k]` for keys, turns "distance plus bias" into a plain inner-product search
    that a tree-based k-NN backend can handle.

    .. code-block:: python

        pq, pk = relative_position_factors(28, 28, 96, r=2)  # (784, 96), (196, 96)

    Args:
        grid_h (int): query grid height.
        grid_w (int): query grid width.
        dim (int): embedding size (the Grapher's channels); must be divisible by 4.
        r (int, optional): key reduction ratio (keys are ``r x r`` average-pooled cells).
            (default: :obj:`1`)
        device (torch.device or str, optional): device of the returned tensors.
            (default: :obj:`None`, the CPU)

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``Pq`` ``[grid_h * grid_w, dim]`` and ``Pk``
        ``[(grid_h // r) * (grid_w // r), dim]``, fresh copies that the caller may modify.

    :rtype: (:class:`torch.Tensor`, :class:`torch.Tensor`)
    """
    factor_q, factor_k = cached_relative_position_factors(grid_h, grid_w, dim, r)
    device = torch.device("cpu") if device is None else device
    return (
        factor_q.to(device=device, copy=True),
        factor_k.to(device=device, copy=True),
    )


def relative_position_bias(
    grid_h: int,
    grid_w: int,
    dim: int,
    r: int = 1,
    mode: str = "official",
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Relative position bias added to the squared feature distance of a pyramid ViG Grapher.

    The result is a *negated* similarity in :math:`[-1, 1]`: the smaller the entry, the more the
    k-NN search favours that (query, key) pair; a node and itself get :math:`-1`. (With r > 1 the
    bicubic resampling of the official mode can overshoot that range by a few percent.)

    * ``"official"``: the float64 Gram matrix :math:`S = 2PP^\top / C` is rounded to float32,
      resampled with ``F.interpolate(S[None, None], size=(N, M), mode="bicubic",
      align_corners=False)`` and negated, exactly as the original code does. The original code
      uses ``M = N // r**2``; here ``M = (grid_h // r) * (grid_w // r)``, the number of cells that
      ``avg_pool2d(kernel_size=r, stride=r)`` produces. Both agree on square grids whose side is
      divisible by :obj:`r` (all official models), so the tables match bit for bit there.
      Because the key axis is resampled along the flattened node index, the bias of a pooled key
      does not follow its 2-D position when r > 1.
    * ``"geometric"``: :math:`-\frac{2}{C} P_q P_k^\top` with the keys placed at the centres
      :math:`(a r + \frac{r-1}{2},\ b r + \frac{r-1}{2})` of their pooling windows, computed as
      ``-(Pq @ Pk.T)`` from :func:`relative_position_factors`. For r = 1 it equals the official
      table up to float32 rounding. For r > 1 and a large enough :obj:`dim`, a query's most
      favoured key is the pooled cell that contains it. (With very small :obj:`dim` the few
      frequencies alias on large grids and this may fail.)

    .. code-block:: python

        bias = relative_position_bias(56, 56, 48, r=4)  # (3136, 196)
        dist = dist + bias  # dist: (B, 3136, 196) squared distances to the pooled keys

    Args:
        grid_h (int): query grid height.
        grid_w (int): query grid width.
        dim (int): embedding size (the Grapher's channels); must be divisible by 4.
        r (int, optional): key reduction ratio (keys are ``r x r`` average-pooled cells).
            (default: :obj:`1`)
        mode (str, optional): ``"official"`` or ``"geometric"``. (default: :obj:`"official"`)
        device (torch.device or str, optional): device of the result.
            (default: :obj:`None`, the CPU)

    Returns:
        torch.Tensor: float32 ``[grid_h * grid_w, (grid_h // r) * (grid_w // r)]`` table, a fresh
        copy of the cached one that the caller may modify.

    :rtype: :class:`torch.Tensor`
    """
    bias = cached_relative_position_bias(grid_h, grid_w, dim, r, mode)
    device = torch.device("cpu") if device is None else device
    return bias.to(device=device, copy=True)


def table_key(mode: str, grid_h: int, grid_w: int, dim: int, r: int, device, dtype) -> tuple:
    """The :data:`relative_position_cache` key of a table (``mode="geometric"``: its factors)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    return (mode, int(grid_h), int(grid_w), int(dim), int(r), device, dtype)


def cached_relative_position_bias(grid_h: int, grid_w: int, dim: int, r: int = 1,
                                  mode: str = "official", *, device=None,
                                  dtype: torch.dtype = torch.float32) -> Tensor:
    """:func:`relative_position_bias` from :data:`relative_position_cache`, on ``device`` in
    ``dtype``: the shared table itself (read it, never modify it).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    # "geometric" alone keys its factors (what Graphers use); its dense table is cached apart.
    key = table_key(mode if mode == "official" else "geometric-table", grid_h, grid_w, dim, r,
                    device, dtype)
    device = key[-2]

    def build():
        table = _bias_cpu(int(grid_h), int(grid_w), int(dim), int(r), mode)
        return table.to(device=device, dtype=dtype)

    return relative_position_cache.get(key, build)


def cached_resampled_official_bias(native_h: int, native_w: int, grid_h: int, grid_w: int,
                                   dim: int, r: int = 1, *, device=None,
                                   dtype: torch.dtype = torch.float32) -> Tensor:
    """The official table of a ``native_h x native_w`` grid resampled to a ``grid_h x grid_w``
    one, as the official Grapher does when its input grid differs from the one it was built for:
    ``F.interpolate(table[None, None], size=(N, M), mode="bicubic", align_corners=False)``, with
    ``N = grid_h * grid_w`` and ``M = (grid_h // r) * (grid_w // r)`` key cells (the official
    ``N // r**2`` where the grid divides). Cheap at any size (no ``N x N`` Gram matrix) and, at the
    native grid, the native table itself. From :data:`relative_position_cache` (read it, never
    modify it).
    """
    native = cached_relative_position_bias(native_h, native_w, dim, r, "official",
                                           device=device, dtype=dtype)
    _check_grid(int(grid_h), int(grid_w), int(r))
    size = (int(grid_h) * int(grid_w), (int(grid_h) // int(r)) * (int(grid_w) // int(r)))
    if tuple(native.shape) == size:  # the official code keeps its table whenever H * W == n
        return native
    key = ("official-resampled", int(native_h), int(native_w)) + table_key(
        "official", grid_h, grid_w, dim, r, device, dtype)[1:]

    def build():
        return F.interpolate(native[None, None], size=size, mode="bicubic",
                             align_corners=False)[0, 0]

    return relative_position_cache.get(key, build)


def cached_relative_position_factors(grid_h: int, grid_w: int, dim: int, r: int = 1, *,
                                     device=None, dtype: torch.dtype = torch.float32
                                     ) -> tuple[Tensor, Tensor]:
    """:func:`relative_position_factors` from :data:`relative_position_cache` (shared tensors:
    read them, never modify them).
    """
    key = table_key("geometric", grid_h, grid_w, dim, r, device, dtype)
    device = key[-2]

    def build():
        q, k = _factors_cpu(int(grid_h), int(grid_w), int(dim), int(r))
        return q.to(device=device, dtype=dtype), k.to(device=device, dtype=dtype)

    return relative_position_cache.get(key, build)
