r"""Dynamic dilated k-NN graphs over node features, the graph-construction step of ViG.

This is the only module that decides which k-NN backend runs:

* ``"dense"``: batched matmul distances, processed in chunks of query rows so that memory stays
  bounded as the graphs grow, then an exact selection of the nearest keys: the compiled
  :func:`pyg_vig.ops.knn_select` where it is built (CPU), :func:`torch.topk` elsewhere. The
  distances are the official ViG formula in the official evaluation order.
* ``"torch"``: the same distances with :func:`torch.topk` always (the pure-PyTorch reference).
* ``"cluster"``: :func:`torch_cluster.knn` (KD-tree on CPU, brute force on CUDA).
* ``"pyg"``: :func:`torch_geometric.nn.pool.knn`, which needs ``pyg-lib``.
* ``"auto"``: the dense backend. ``benchmarks/graph_construction.py`` measures all of them at ViG
  sizes; on CPU the dense path wins by 8-14x, and it is the only one that handles an arbitrary
  (non-factorisable) positional bias.

Whether the compiled kernels run is decided in one place, :func:`pyg_vig.ops.compiled_for`.
The graph type is in :mod:`pyg_vig.nn.edge_index`, message reduction in :mod:`pyg_vig.nn.reduce`.
"""
from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor
from torch_geometric import EdgeIndex

from pyg_vig.nn.edge_index import KNNEdgeIndex, batched_sources, regular_degree  # noqa: F401

__all__ = [
    "BACKENDS",
    "LowRankBias",
    "available_backends",
    "resolve_backend",
    "knn_graph",
    "grid_knn_graph",
    "knn_index",
    "knn_dtype",
    "select_ranks",
]

BACKENDS = ("auto", "dense", "torch", "cluster", "pyg")

# Upper bound for one chunk of the (B, n, m) distance matrix, in elements (256 MiB in fp32).
_CHUNK_ELEMENTS = 1 << 26
# The same for the compiled selection (4 MiB in fp32): measured fastest on pvig_ti stage 0
# (2^18 to 2^22 alike, 2^26 about 30% slower for that Grapher).
_COMPILED_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class LowRankBias:
    r"""An additive distance bias that factorises as :math:`R = -Q K^\top`.

    The sin-cos relative positional bias of ViG has this form. Because every key row of ``key``
    has the same norm, the bias can be folded exactly into augmented features
    :math:`[\hat{x}_i, q_i]` and :math:`[\hat{y}_j, k_j]`, which lets KD-tree backends that only
    know Euclidean distance build the same graph.

    Args:
        query (Tensor): ``[N_g, D]`` factors of the query (target) nodes of one graph.
        key (Tensor): ``[M_g, D]`` factors of the key (source) nodes of one graph.
    """

    query: Tensor
    key: Tensor

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.query.size(0), self.key.size(0)))

    def dense(self) -> Tensor:
        """The ``[N_g, M_g]`` bias matrix."""
        return -(self.query @ self.key.t())


BiasLike = Tensor | LowRankBias


def available_backends() -> list[str]:
    """Backends that can run in this environment (``"auto"``, ``"dense"`` and ``"torch"``
    always can).
    """
    out = ["auto", "dense", "torch"]
    if importlib.util.find_spec("torch_cluster") is not None:
        out.append("cluster")
    if _has_pyg_lib():
        out.append("pyg")
    return out


def _has_pyg_lib() -> bool:
    try:
        import torch_geometric.typing

        return bool(torch_geometric.typing.WITH_KNN)
    except Exception:  # pragma: no cover - a broken PyG install
        return False


def resolve_backend(backend: str) -> str:
    """Validate ``backend`` and turn ``"auto"`` into a concrete backend name.

    Raises:
        ValueError: for an unknown backend name.
        ImportError: for a backend whose package is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown k-NN backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        # Measured (benchmarks/graph_construction.py): batched matmul + topk beats the KD-tree of
        # torch_cluster and pyg-lib at every ViG size on CPU, and needs no extra package.
        return "dense"
    if backend == "cluster" and importlib.util.find_spec("torch_cluster") is None:
        raise ImportError(
            "k-NN backend 'cluster' requires the 'torch-cluster' package: "
            "pip install --no-build-isolation torch-cluster (or use backend='dense')"
        )
    if backend == "pyg" and not _has_pyg_lib():
        raise ImportError(
            "k-NN backend 'pyg' requires the 'pyg-lib' package (pip install pyg-lib from "
            "https://data.pyg.org/whl/); use backend='dense' instead"
        )
    return backend


def _real_tensors():
    """Leave the tracer's fake-tensor and proxy modes (torch.export / torch.compile)."""
    from contextlib import ExitStack

    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    stack = ExitStack()
    stack.enter_context(unset_fake_temporarily())
    stack.enter_context(disable_proxy_modes_tracing())
    return stack


# --------------------------------------------------------------------------- rank selection
def select_ranks(
    idx: Tensor, k: int, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.2
) -> Tensor:
    r"""Pick ``k`` of the ``k * dilation`` nearest candidates along the last axis.

    Deterministic dilation keeps ranks :math:`0, d, 2d, \ldots` (the nearest is always kept).
    With ``stochastic=True`` a uniformly random subset of ``k`` ranks (the same for every node,
    as in the paper) is kept with probability ``epsilon``; otherwise the deterministic ranks.
    """
    if stochastic and dilation > 1 and float(torch.rand(1)) < epsilon:
        ranks = torch.randperm(k * dilation)[:k].sort().values.to(idx.device)
        return idx.index_select(-1, ranks)
    return idx[..., ::dilation]


# --------------------------------------------------------------------------- dense backend
def _dense_topk(xq: Tensor, xk: Tensor, kd: int, bias: Tensor | LowRankBias | None,
                compiled: bool, official_order: bool = False) -> Tensor:
    """``(B, n, C)``, ``(B, m, C)`` → ``(B, n, kd)`` nearest key indices, nearest first.

    With ``compiled`` the selection runs in :func:`pyg_vig.ops.knn_select`, which evaluates the
    same float32 distance formula in the same order and returns the indices ``torch.topk``
    would; otherwise the distances are materialised chunk by chunk and ``torch.topk`` selects.
    """
    B, n, _ = xq.shape
    m = xk.size(1)
    # The official code evaluates |x|^2 + (-2 x.y) + |y|^2 in this order; keeping it keeps
    # float32 ties resolved the same way as the reference implementation.
    same = xk is xq
    xk_sq = (xk * xk).sum(-1)  # (B, m)
    # A key with NaN or infinite features would have NaN distances, which topk ranks first:
    # zero its features and give it an infinite squared norm, so it is the farthest key of
    # every query. Its squared norm tells (one value per key, no pass over the features).
    bad_k = ~torch.isfinite(xk_sq)
    if _may_hold(bad_k):
        xk = torch.where(bad_k.unsqueeze(-1), torch.zeros((), dtype=xk.dtype, device=xk.device),
                         xk)
        xk_sq = xk_sq.masked_fill(bad_k, float("inf"))
    xq = xk if same else xq
    xk_sq = xk_sq.unsqueeze(1)  # (B, 1, m)
    if torch.onnx.is_in_onnx_export() and not official_order:
        return _onnx_topk(xq, xk, xk_sq, kd, bias)
    # Traced programs (torch.export with a dynamic batch) must not depend on B: bound the
    # chunk per image there. The compiled selection reads each chunk once, right after the
    # bmm: a cache-sized chunk is faster there (and never a fresh multi-MB allocation).
    per_chunk = m if torch.compiler.is_compiling() else B * m
    limit = _COMPILED_CHUNK_ELEMENTS if compiled else _CHUNK_ELEMENTS
    rows = max(1, limit // max(1, per_chunk))
    out = []
    for s in range(0, n, rows):
        q = xq[:, s : s + rows]
        if compiled:
            out.append(_compiled_select(q, xk, xk_sq, bias, s, rows, kd))
            continue
        # In place, so that one chunk is alive at a time; a + b == b + a exactly in IEEE
        # arithmetic, so this equals (|x|^2 + (-2 x.y)) + |y|^2 bit for bit.
        dist = torch.bmm(q, xk.transpose(1, 2)).mul_(-2)
        dist.add_((q * q).sum(-1, keepdim=True)).add_(xk_sq)
        if isinstance(bias, LowRankBias):  # built chunk by chunk: never an (n, m) table
            dist.sub_((bias.query[s : s + rows] @ bias.key.t()).unsqueeze(0))
        elif bias is not None:
            dist.add_(bias[s : s + rows].unsqueeze(0))
        out.append(torch.topk(dist.neg_(), kd, dim=-1).indices)
    return out[0] if len(out) == 1 else torch.cat(out, dim=1)


def _onnx_topk(xq: Tensor, xk: Tensor, xk_sq: Tensor, kd: int,
               bias: Tensor | LowRankBias | None) -> Tensor:
    """The selection as an exported ONNX graph computes it: the largest scores
    ``q.k - |k|^2 / 2 - bias / 2`` of every query, from one GEMM over features augmented with
    the key norms (and a low-rank bias's factors). A score is ``(|q|^2 - distance) / 2``, so
    each query ranks its keys as by distance (halving is exact; near-ties may round apart as
    with any other GEMM), with four fewer passes over the ``(B, n, m)`` matrix than
    ``dist.mul_(-2).add_(...)``.

    With a relative-position bias the queries run in chunks, each with its keys in the order
    the bias favours them (see :func:`_onnx_key_orders`); the indices are mapped back.
    """
    q_parts = [xq, torch.ones_like(xq[..., :1])]
    k_parts = [xk, xk_sq.transpose(1, 2) * -0.5]
    if isinstance(bias, LowRankBias):  # bias = -(query @ key^T): score + query @ key^T / 2
        B = xq.size(0)
        q_parts.append(bias.query.expand(B, -1, -1))
        k_parts.append((bias.key * 0.5).expand(B, -1, -1))
    q, keys = torch.cat(q_parts, -1), torch.cat(k_parts, -1)
    orders = _onnx_key_orders(bias, xq.size(1), xk.size(1), q.size(-1))
    if orders is None:
        score = torch.bmm(q, keys.transpose(1, 2))
        if bias is not None and not isinstance(bias, LowRankBias):
            score = score - bias * 0.5
        return torch.topk(score, kd, dim=-1).indices
    chunks, table, offsets = orders
    # every chunk's keys in its order, by one Gather of whole feature rows
    keys = keys.index_select(1, table)
    m = xk.size(1)
    positions = []
    for i, (start, stop, half_bias) in enumerate(chunks):
        score = torch.bmm(q[:, start:stop], keys[:, i * m : (i + 1) * m].transpose(1, 2))
        if half_bias is not None:
            score = score - half_bias
        positions.append(torch.topk(score, kd, dim=-1).indices)
    # a chunk's position p is key table[chunk * m + p]: one Gather for all chunks
    positions = torch.cat(positions, dim=1) + offsets
    return table.index_select(0, positions.reshape(-1)).reshape(positions.shape)


# ONNX Runtime's TopK keeps a heap of the k best scores seen so far; its cost is the branches
# that a key which displaces one of them mispredicts. Where a relative-position bias favours
# nearby keys, the exported graph splits the queries into chunks of consecutive (spatially
# close) nodes and lists each chunk's keys in the order of its mean bias, so most keys that
# would displace one come first. Measured in ONNX Runtime (2-core Xeon, batch 16, pvig_ti):
# TopK alone 29-32 -> 17.7 ms for stage 0 (3,136 queries, 196 keys, k = 9); the whole
# selection 41.9 -> 31.2 ms (16 chunks) there, 12.2 -> 11.0 ms in stage 1 (4 chunks); the
# 196-query stage 2 lost with any chunking (its keys have 241 channels), so it keeps one.
_ONNX_TOPK_CHUNKS = 16
# below this many (query, key) pairs per image the selection is too small to gain
_ONNX_TOPK_MIN_PAIRS = 1 << 14


def _onnx_topk_rows(n: int, m: int, channels: int) -> int | None:
    """Queries per chunk of the ordered selection, ``None`` where one chunk would do. Every
    chunk gathers its own ``[m, channels]`` keys and runs a GEMM of its own: up to
    :data:`_ONNX_TOPK_CHUNKS` chunks of at least ``2 * channels`` queries each.
    """
    if n * m < _ONNX_TOPK_MIN_PAIRS:
        return None
    chunks = min(_ONNX_TOPK_CHUNKS, n // (2 * channels))
    return None if chunks < 2 else -(-n // chunks)


def _onnx_key_orders(bias: Tensor | LowRankBias | None, n: int, m: int, channels: int):
    """``(chunks, table, offsets)`` for :func:`_onnx_topk`, or ``None`` where there is no bias,
    the sizes are symbolic or chunking does not pay. ``chunks``: per chunk of consecutive
    queries ``(start, stop, half_bias)``, ``half_bias`` its dense bias rows halved, columns in
    the chunk's key order (``None`` for a low-rank bias, whose factors ride in the features).
    ``table`` ``[chunks * m]``: the key orders end to end, each listing first the keys that
    its chunk's mean bias favours; ``offsets`` ``[n, 1]``: ``chunk * m`` for every query.

    Built from real tensors while the exporter traces, so they enter the graph as constants.
    Keys of exactly equal score come out in the chunk's order (ONNX Runtime keeps the first),
    not by key index: a tie that PyTorch's ``topk`` resolves in no promised order either.
    """
    if bias is None or not isinstance(n, int) or not isinstance(m, int):
        return None
    rows = _onnx_topk_rows(n, m, channels)
    if rows is None:  # else at least two chunks
        return None
    chunks, orders = [], []
    with _real_tensors(), torch.no_grad():
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            if isinstance(bias, LowRankBias):
                mean = -(bias.query[start:stop].float().mean(0) @ bias.key.float().t())
            else:
                mean = bias[start:stop].float().mean(0)
            order = torch.argsort(mean, stable=True)  # lowest bias (most favoured) first
            half = None if isinstance(bias, LowRankBias) else \
                bias[start:stop].index_select(1, order) * 0.5
            chunks.append((start, stop, half))
            orders.append(order)
        table = torch.cat(orders)
        offsets = (torch.arange(n, device=table.device) // rows * m).unsqueeze(-1)
    return chunks, table, offsets


def _may_hold(mask: Tensor) -> bool:
    """Whether ``mask`` may have a ``True`` (known exactly on the CPU in eager mode; elsewhere
    assumed, so that no host sync and no data-dependent branch enters a traced program).
    """
    if mask.device.type != "cpu" or torch.compiler.is_compiling() or \
            torch.onnx.is_in_onnx_export():
        return True
    return bool(mask.any())


def _compiled_select(q: Tensor, xk: Tensor, xk_sq: Tensor, bias: Tensor | LowRankBias | None,
                     s: int, rows: int, kd: int) -> Tensor:
    from pyg_vig import ops

    dot = torch.bmm(q, xk.transpose(1, 2))
    if isinstance(bias, LowRankBias):
        b = -(bias.query[s : s + rows] @ bias.key.t())
    else:
        b = None if bias is None else bias[s : s + rows]
    return ops.knn_select(dot, (q * q).sum(-1, keepdim=True), xk_sq, b, kd, impl="auto")


def _use_compiled_select(x: Tensor, backend: str) -> bool:
    # autocast is off inside knn_index (distances in float32 at least), so no check here
    return backend == "dense" and _compiled_for(x)


def _compiled_for(x: Tensor) -> bool:
    """:func:`pyg_vig.ops.compiled_for`, the one dispatch point (False where ops cannot import)."""
    try:
        from pyg_vig import ops
    except ImportError:
        return False
    return ops.compiled_for(x)


# --------------------------------------------------------------------------- sparse backends
def _augment(xq: Tensor, xk: Tensor, bias: LowRankBias | None) -> tuple[Tensor, Tensor]:
    if bias is None:
        return xq, xk
    key_norm = bias.key.pow(2).sum(-1)
    if not torch.allclose(key_norm, key_norm[:1].expand_as(key_norm), rtol=1e-4, atol=1e-6):
        raise ValueError(
            "the 'cluster'/'pyg' k-NN backends can only fold a LowRankBias whose key factors "
            "all have the same norm (as sin-cos embeddings do); use backend='dense'"
        )
    B = xq.size(0)
    s = 0.5**0.5
    q = (bias.query * s).to(xq.dtype).unsqueeze(0).expand(B, -1, -1)
    k = (bias.key * s).to(xk.dtype).unsqueeze(0).expand(B, -1, -1)
    # |[x, q/√2] - [y, k/√2]|^2 = |x - y|^2 + (|q|^2 + |k|^2) / 2 - q.k
    #                           = |x - y|^2 + R + const(row), as |k| is the same for every key
    return torch.cat([xq, q], dim=-1), torch.cat([xk, k], dim=-1)


def _sparse_topk(xq: Tensor, xk: Tensor, kd: int, bias: LowRankBias | None, backend: str) -> Tensor:
    """KD-tree / pyg-lib k-NN, re-sorted by distance so that dilation picks the right ranks."""
    xq, xk = _augment(xq, xk, bias)
    B, n, C = xq.shape
    m = xk.size(1)
    q_flat, k_flat = xq.reshape(B * n, C), xk.reshape(B * m, C)
    bq = torch.arange(B, device=xq.device).repeat_interleave(n)
    bk = torch.arange(B, device=xq.device).repeat_interleave(m)
    if backend == "cluster":
        import torch_cluster

        assign = torch_cluster.knn(k_flat, q_flat, kd, bk, bq)
    else:
        from torch_geometric.nn.pool import knn

        assign = knn(k_flat, q_flat, kd, bk, bq)
    # assign[0]: query row, assign[1]: key row; order within a query is not guaranteed.
    order = torch.argsort(assign[0] * (B * m) + assign[1])  # group by query, stable layout
    q_idx, k_idx = assign[0][order], assign[1][order]
    if q_idx.numel() != B * n * kd:
        raise RuntimeError(
            f"{backend} k-NN returned {q_idx.numel()} edges, expected {B * n * kd}"
        )
    d = (q_flat[q_idx] - k_flat[k_idx]).pow(2).sum(-1).view(B * n, kd)
    k_idx = k_idx.view(B * n, kd)
    rank = torch.sort(d, dim=1, stable=True).indices
    k_idx = k_idx.gather(1, rank)
    local = k_idx - torch.arange(B, device=xq.device).repeat_interleave(n).unsqueeze(1) * m
    return local.view(B, n, kd)



# --------------------------------------------------------------------------- precision
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def knn_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype distances and the selection are computed in: ``float32`` for half-precision
    features (and for a bias meant for them), else ``dtype`` itself (``float32``/``float64``).
    """
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (e.g. "meta")
        return False


def full_precision(device_type: str):
    """A context that turns autocast off on ``device_type`` where it is on (else a no-op, so
    exported and compiled programs outside autocast stay as they are): k-NN distances and the
    top-k selection are then computed in the features' own (at least float32) precision, and
    the graph does not depend on the autocast state.
    """
    if _autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- batched entry
def _l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``F.normalize(x, dim=-1)``, bit for bit, with a broadcast instead of ``expand_as``: an
    exported graph then divides by the ``[..., 1]`` norms directly (ONNX ``Expand`` would
    materialise them at the size of ``x``).
    """
    return x / torch.linalg.vector_norm(x, 2, dim=-1, keepdim=True).clamp_min(eps)


def knn_index(
    xq: Tensor,
    xk: Tensor | None,
    k: int,
    *,
    dilation: int = 1,
    bias: BiasLike | None = None,
    stochastic: bool = False,
    epsilon: float = 0.2,
    normalize: bool = True,
    backend: str = "auto",
    loop: bool = True,
    official_order: bool = False,
) -> Tensor:
    r"""Dilated k-NN on batches of equally sized graphs, the dense layout of the official code.

    Args:
        xq (Tensor): ``(B, n, C)`` query (target) features.
        xk (Tensor, optional): ``(B, m, C)`` key (source) features; :obj:`None` means ``xq``.
        k (int): neighbours kept per query.
        dilation (int): keep every ``dilation``-th of the ``k * dilation`` nearest keys.
        bias (Tensor or LowRankBias, optional): ``[n, m]`` additive distance bias.
        stochastic (bool): random-subset dilation (see :func:`select_ranks`).
        epsilon (float): probability of the random subset when ``stochastic``.
        normalize (bool): L2-normalise features first (ViG does).
        backend (str): one of :data:`BACKENDS`.
        loop (bool): without ``xk``, whether a node may be its own neighbour. With
            ``loop=False`` the ``k * dilation`` candidates are the nearest nodes other than
            the query itself (needs ``n > k * dilation``).
        official_order (bool): evaluate the distances in the official operation order in an
            exported ONNX graph too. Eager runs always do (the compiled selection and the
            torch path alike); an ONNX graph otherwise ranks keys by ``q.k - |k|^2 / 2 -
            bias / 2`` from one GEMM of augmented features (the same ranking, fewer passes;
            a tie of a few ulps may resolve the other way).

    Distances and the selection run in at least float32 whatever the autocast state or the
    input precision. With the dense backends a node with a NaN feature is never anybody's
    neighbour (its own neighbours are arbitrary).

    Returns:
        ``(B, n, k)`` local key indices, nearest first.
    """
    backend = resolve_backend(backend)
    with torch.no_grad(), full_precision(xq.device.type):
        # Distances and the selection in float32 at least, whatever the autocast state.
        xq = xq.to(knn_dtype(xq.dtype))
        xk = None if xk is None else xk.to(knn_dtype(xk.dtype))
        if normalize:
            xq = _l2_normalize(xq)
            xk = xq if xk is None else _l2_normalize(xk)
        elif xk is None:
            xk = xq
        kd = k * dilation
        if not loop and xk is xq:
            idx = _drop_self(_knn_candidates(xq, xk, kd + 1, bias, backend, official_order))
        else:
            idx = _knn_candidates(xq, xk, kd, bias, backend, official_order)
        return select_ranks(idx, k, dilation, stochastic, epsilon)


def _knn_candidates(xq: Tensor, xk: Tensor, kd: int, bias: BiasLike | None,
                    backend: str, official_order: bool = False) -> Tensor:
    """``(B, n, kd)`` nearest keys, nearest first."""
    if backend in ("dense", "torch"):
        if isinstance(bias, LowRankBias):
            bias = LowRankBias(bias.query.to(xq.device, xq.dtype),
                               bias.key.to(xq.device, xq.dtype))
        elif bias is not None:
            bias = bias.to(device=xq.device, dtype=xq.dtype)
        return _dense_topk(xq, xk, kd, bias, _use_compiled_select(xq, backend),
                           official_order)
    if bias is not None and not isinstance(bias, LowRankBias):
        raise ValueError(
            f"the {backend!r} k-NN backend cannot apply a dense bias table (it only "
            "knows Euclidean distance); pass a LowRankBias (e.g. relative-position "
            "mode 'geometric') or use backend='dense'"
        )
    return _sparse_topk(xq, xk, kd, bias, backend)


def _drop_self(idx: Tensor) -> Tensor:
    """``(B, n, kd + 1)`` candidates → ``(B, n, kd)`` without the query itself (or, where the
    query is not among them, e.g. behind exact duplicates, without the farthest candidate).
    """
    B, n, kd1 = idx.shape
    keep = idx != torch.arange(n, device=idx.device).view(1, n, 1)
    keep[..., -1] &= ~keep.all(-1)
    return idx[keep].view(B, n, kd1 - 1)


# --------------------------------------------------------------------------- grouped k-NN core
@dataclass(frozen=True)
class _Group:
    """Graphs sharing a (targets, sources) size, hence one batched k-NN call."""

    key: Hashable  # what the bias is looked up by
    n: int
    m: int
    graphs: list[int]


def _grouped_sources(x: Tensor, y: Tensor | None, k: int, *, num_graphs: int | None,
                     ptr_x: Sequence[int] | None, ptr_y: Sequence[int] | None,
                     keys: Sequence[Hashable] | Hashable,
                     bias_for: Callable[[Hashable, int, int], BiasLike | None],
                     **opts) -> Tensor:
    """The one place where graphs are batched for k-NN → ``[N, k]`` global source indices.

    Either ``num_graphs`` equally sized graphs (``ptr_x``/``ptr_y`` ``None``, ``keys`` the one
    bias key; ``num_graphs`` may be symbolic under :func:`torch.export`), or per-graph node
    offsets ``ptr_x``/``ptr_y`` and one bias key per graph; graphs with equal sizes and keys
    are batched together.
    """
    src_feats = x if y is None else y
    if ptr_x is None:
        B = num_graphs
        n, m = x.size(0) // B, src_feats.size(0) // B
        # (B*n, C) -> (B, n, C)
        xq = rearrange(x, "(b n) c -> b n c", b=B)
        xk = None if y is None else rearrange(y, "(b m) c -> b m c", b=B)
        idx = knn_index(xq, xk, k, bias=bias_for(keys, n, m), **opts)  # (B, n, k) local
        return batched_sources(idx, m)

    assert ptr_y is not None and not isinstance(keys, (str, tuple))
    groups: dict[tuple, _Group] = {}
    for g, key in enumerate(keys):
        n, m = ptr_x[g + 1] - ptr_x[g], ptr_y[g + 1] - ptr_y[g]
        groups.setdefault((key, n, m), _Group(key, n, m, [])).graphs.append(g)
    src = torch.empty(x.size(0), k, dtype=torch.long, device=x.device)
    for grp in groups.values():
        if grp.n == 0:
            continue
        G = len(grp.graphs)
        rows_x = torch.cat([torch.arange(ptr_x[g], ptr_x[g] + grp.n) for g in grp.graphs])
        rows_x = rows_x.to(x.device)
        xq = rearrange(x.index_select(0, rows_x), "(g n) c -> g n c", g=G)
        xk = None
        if y is not None:
            rows_y = torch.cat([torch.arange(ptr_y[g], ptr_y[g] + grp.m) for g in grp.graphs])
            xk = rearrange(y.index_select(0, rows_y.to(x.device)), "(g m) c -> g m c", g=G)
        idx = knn_index(xq, xk, k, bias=bias_for(grp.key, grp.n, grp.m), **opts)  # (G, n, k)
        start = torch.tensor([ptr_y[g] for g in grp.graphs], device=x.device).view(G, 1, 1)
        src[rows_x] = rearrange(idx + start, "g n k -> (g n) k")
    return src


def _finish(src: Tensor, num_sources: int, flow: str) -> Tensor:
    edge_index = KNNEdgeIndex.from_sources(src, num_sources)
    if flow == "source_to_target":
        return edge_index
    # target_to_source: row 0 targets, row 1 sources (PyG's convention), sorted by row 0.
    return EdgeIndex(edge_index.as_tensor().flip(0), sparse_size=(src.size(0), num_sources),
                     sort_order="row")


def _check_flow(flow: str) -> None:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(
            f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}"
        )


# --------------------------------------------------------------------------- public API
def _counts(batch: Tensor | None, num: int, name: str) -> list[int]:
    if batch is None:
        return [num]
    if batch.dim() != 1 or batch.numel() != num:
        raise ValueError(
            f"'{name}' must be a 1-D vector with one entry per node ({num}), got shape "
            f"{tuple(batch.shape)}"
        )
    if num == 0:
        return []
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(
            f"'{name}' must be sorted (as PyG Batch objects are); sort the nodes first"
        )
    return torch.bincount(batch).tolist()


def _bias_for(bias: BiasLike | Mapping | None, n: int, m: int) -> BiasLike | None:
    if bias is None:
        return None
    if isinstance(bias, Mapping):
        if (n, m) not in bias:
            raise ValueError(
                f"no bias given for graphs with {n} targets and {m} sources; the bias mapping "
                f"has entries for {sorted(bias)}"
            )
        bias = bias[(n, m)]
    if tuple(bias.shape) != (n, m):
        raise ValueError(
            f"bias must have shape [N_g, M_g] = [{n}, {m}] for these graphs, got "
            f"{tuple(bias.shape)}"
        )
    return bias


def _ptr(counts: Sequence[int]) -> list[int]:
    out = [0]
    for c in counts:
        out.append(out[-1] + int(c))
    return out


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    y: Tensor | None = None,
    batch_y: Tensor | None = None,
    normalize: bool = False,
    dilation: int = 1,
    bias: BiasLike | Mapping[tuple[int, int], BiasLike] | None = None,
    stochastic: bool = False,
    epsilon: float = 0.2,
    backend: str = "auto",
) -> KNNEdgeIndex | EdgeIndex:
    r"""k-NN graph with the signature and meaning of :func:`torch_geometric.nn.knn_graph`,
    plus ViG's dilated, biased and bipartite variants as keyword arguments.

    With the positional arguments only it is a drop-in for PyG's / ``torch_cluster``'s
    ``knn_graph``: Euclidean distances on the raw features, no self-loops (``loop=False``),
    ``cosine=True`` ranks by cosine distance, ``flow`` as in PyG, and a graph with fewer than
    ``k`` other nodes gets all of them. ViG's graph (paper §3.1, §4) passes
    ``loop=True, normalize=True`` (what :class:`~pyg_vig.nn.Grapher` does): every target
    :math:`i` ranks the sources :math:`j` by

    .. math::
        d_{ij} = \lVert \hat{x}_i \rVert^2 - 2\,\hat{x}_i^\top \hat{y}_j + \lVert \hat{y}_j
        \rVert^2 + R_{ij}, \qquad \hat{x} = x / \lVert x \rVert_2,

    and keeps every ``dilation``-th of the ``k * dilation`` nearest, itself included.

    .. code-block:: python

        x = torch.randn(196 * 2, 192)
        batch = torch.arange(2).repeat_interleave(196)
        edge_index = knn_graph(x, k=9, batch=batch)                    # PyG's graph
        vig = knn_graph(x, 9, batch, loop=True, normalize=True, dilation=2)   # ViG's

    Differences from PyG that remain: the edges are sorted by target and nearest first (PyG's
    order within a target is unspecified); with exact duplicates of a node and ``loop=False``
    the duplicate, not the node, is dropped only if the node itself is ranked past the
    candidates (PyG then returns one edge more for that node); ``num_workers`` and
    ``batch_size`` are accepted for compatibility and have no effect. Distances are computed
    in float32 (float64 stays float64) whatever the autocast state, and a node with a NaN
    feature is never anybody's neighbour.

    Args:
        x (Tensor): ``[N, C]`` target (query) node features.
        k (int): neighbours per target node.
        batch (Tensor, optional): sorted ``[N]`` graph assignment of ``x``. (default: :obj:`None`)
        loop (bool, optional): keep self-loops: a node counts as one of its own ``k``
            neighbours (ViG: :obj:`True`). Without ``y`` only. (default: :obj:`False`)
        flow (str, optional): ``"source_to_target"`` (row 0 sources, row 1 targets) or
            ``"target_to_source"`` (the rows swapped), as in PyG. (default:
            :obj:`"source_to_target"`)
        cosine (bool, optional): rank by cosine distance; the same ranking as
            ``normalize=True``. (default: :obj:`False`)
        num_workers (int, optional): ignored (PyG's CPU threads of ``torch_cluster``).
        batch_size (int, optional): ignored (PyG infers the number of graphs).
        y (Tensor, optional): ``[M, C]`` source (key) features, e.g. spatially pooled nodes.
            (default: :obj:`None`, the sources are ``x``)
        batch_y (Tensor, optional): sorted ``[M]`` graph assignment of ``y``; required when
            ``y`` and ``batch`` are given. (default: :obj:`None`)
        normalize (bool, optional): L2-normalise the features first (ViG). (default:
            :obj:`False`)
        dilation (int, optional): dilation rate :math:`d`. (default: :obj:`1`)
        bias (Tensor, LowRankBias or dict, optional): additive ``[N_g, M_g]`` distance bias,
            shared by all graphs of that size; a dict maps ``(N_g, M_g)`` to the bias of graphs of
            that size. (default: :obj:`None`)
        stochastic (bool, optional): random-subset dilation with probability ``epsilon``; pass
            ``module.training`` so it only happens in training. (default: :obj:`False`)
        epsilon (float, optional): probability of a random subset. (default: :obj:`0.2`)
        backend (str, optional): one of :data:`BACKENDS`. (default: :obj:`"auto"`)

    :rtype: :class:`KNNEdgeIndex` ``[2, N * k]`` sorted by target, exactly ``k`` edges per
        target, nearest first. Where a graph has fewer candidates (fewer than ``k * dilation``
        sources, or ``k * dilation + 1`` nodes with ``loop=False``) its targets get every
        ``dilation``-th of all candidates and the result is a target-sorted
        :class:`~torch_geometric.EdgeIndex` (not k-regular). For
        ``flow="target_to_source"`` a row-sorted :class:`~torch_geometric.EdgeIndex` with the
        rows swapped; for empty input a ``[2, 0]`` one.
    """
    if x.dim() != 2:
        raise ValueError(f"'x' must be a [N, C] node feature matrix, got shape {tuple(x.shape)}")
    if y is not None:
        if y.dim() != 2 or y.size(1) != x.size(1):
            raise ValueError(
                f"'y' must be a [M, C] matrix with the channels of 'x' ({x.size(1)}), got shape "
                f"{tuple(y.shape)}"
            )
        if (batch is None) != (batch_y is None):
            raise ValueError(
                "pass both 'batch' and 'batch_y' (or neither) when source nodes 'y' are given"
            )
    elif batch_y is not None:
        raise ValueError("'batch_y' was given without source features 'y'")
    if int(k) < 1 or int(dilation) < 1:
        raise ValueError(f"k and dilation must be >= 1, got k={k}, dilation={dilation}")
    _check_flow(flow)
    resolve_backend(backend)
    if not torch.is_floating_point(x):
        raise ValueError(f"'x' must hold floating-point features, got {x.dtype}")
    normalize = normalize or cosine
    loop = loop or y is not None  # bipartite graphs have no self-loops to drop

    if batch is not None and torch.compiler.is_compiling():
        # Graph sizes come from the batch vector (a host read): build this graph eagerly, so
        # the compiled caller receives a finished KNNEdgeIndex.
        return _knn_graph_eager(x, k, batch, loop, flow, cosine, y=y, batch_y=batch_y,
                                normalize=normalize, dilation=dilation, bias=bias,
                                stochastic=stochastic, epsilon=epsilon, backend=backend)
    num_sources = x.size(0) if y is None else y.size(0)
    if x.size(0) == 0 or num_sources == 0:
        empty = torch.empty(2, 0, dtype=torch.long, device=x.device)
        size = (num_sources, x.size(0)) if flow == "source_to_target" else (x.size(0), num_sources)
        return EdgeIndex(empty, sparse_size=size,
                         sort_order="col" if flow == "source_to_target" else "row")
    counts_x = _counts(batch, x.size(0), "batch")
    counts_y = counts_x if y is None else _counts(batch_y, y.size(0), "batch_y")
    if len(counts_x) != len(counts_y):
        raise ValueError(
            f"'batch' describes {len(counts_x)} graphs but 'batch_y' describes {len(counts_y)}"
        )
    kd = k * dilation
    need = kd if loop else kd + 1
    opts = dict(dilation=dilation, stochastic=stochastic, epsilon=epsilon, normalize=normalize,
                backend=backend, loop=loop)
    if any(0 < m < need for n, m in zip(counts_x, counts_y, strict=True) if n > 0):
        return _small_graphs(x, y, k, counts_x, counts_y, bias, num_sources, flow, opts)
    uniform = len(set(counts_x)) <= 1 and len(set(counts_y)) <= 1
    if uniform:
        src = _grouped_sources(x, y, k, num_graphs=max(1, len(counts_x)), ptr_x=None,
                               ptr_y=None, keys=None,
                               bias_for=lambda _, n, m: _bias_for(bias, n, m), **opts)
    else:
        src = _grouped_sources(x, y, k, num_graphs=None, ptr_x=_ptr(counts_x),
                               ptr_y=_ptr(counts_y), keys=[None] * len(counts_x),
                               bias_for=lambda _, n, m: _bias_for(bias, n, m), **opts)
    return _finish(src, num_sources, flow)


def _small_graphs(x: Tensor, y: Tensor | None, k: int, counts_x: list[int],
                  counts_y: list[int], bias, num_sources: int, flow: str,
                  opts: dict) -> EdgeIndex:
    """:func:`knn_graph` where some graph has fewer candidates than ``k * dilation``: each graph
    gets as many neighbours as it has (every ``dilation``-th candidate), as PyG returns what
    exists; the result is a target-sorted :class:`~torch_geometric.EdgeIndex`.
    """
    dilation, loop = opts["dilation"], opts["loop"]
    ptr_x, ptr_y = _ptr(counts_x), _ptr(counts_y)
    srcs, dsts = [], []
    for g, (n, m) in enumerate(zip(counts_x, counts_y, strict=True)):
        candidates = m if loop else m - 1
        if n == 0 or candidates <= 0:
            continue
        xq = x[ptr_x[g]:ptr_x[g + 1]].unsqueeze(0)
        xk = None if y is None else y[ptr_y[g]:ptr_y[g + 1]].unsqueeze(0)
        ranked = knn_index(xq, xk, min(k * dilation, candidates), bias=_bias_for(bias, n, m),
                           **dict(opts, dilation=1, stochastic=False))[0]
        idx = ranked[:, ::dilation][:, :k]  # (n, k_g): every dilation-th of the candidates
        k_g = idx.size(1)
        srcs.append((idx + ptr_y[g]).reshape(-1))
        dsts.append(torch.arange(ptr_x[g], ptr_x[g + 1], device=x.device)
                    .repeat_interleave(k_g))
    src = torch.cat(srcs) if srcs else torch.empty(0, dtype=torch.long, device=x.device)
    dst = torch.cat(dsts) if dsts else torch.empty(0, dtype=torch.long, device=x.device)
    if flow == "source_to_target":
        return EdgeIndex(torch.stack([src, dst]), sparse_size=(num_sources, x.size(0)),
                         sort_order="col")
    return EdgeIndex(torch.stack([dst, src]), sparse_size=(x.size(0), num_sources),
                     sort_order="row")


_knn_graph_eager = torch.compiler.disable(knn_graph)


def grid_knn_graph(
    x: Tensor,
    layout,
    k: int,
    *,
    y: Tensor | None = None,
    layout_y=None,
    dilation: int = 1,
    bias_fn: Callable[[tuple[int, int]], BiasLike | None] | None = None,
    stochastic: bool = False,
    epsilon: float = 0.2,
    normalize: bool = True,
    flow: str = "source_to_target",
    backend: str = "auto",
) -> KNNEdgeIndex | EdgeIndex:
    r""":func:`knn_graph` for image grids (a :class:`~pyg_vig.data.GridLayout`).

    Unlike :func:`knn_graph`, which only sees node counts, this knows each graph's
    :math:`H \times W`, so the positional bias of a graph is built for its own grid
    (``bias_fn((H, W))``). Graphs of equal size are processed as one batch; a uniform batch
    needs no indexing and no device synchronisation, and its batch size may be symbolic
    (:func:`torch.export` with a dynamic batch dimension).

    Args:
        x (Tensor): ``[N, C]`` node features in ``layout``'s order.
        layout (GridLayout): grid size of every graph.
        k (int): neighbours per target node.
        y (Tensor, optional): ``[M, C]`` key features on ``layout_y`` (e.g. pooled nodes).
        layout_y (GridLayout, optional): grid of the keys (default: ``layout``).
        dilation (int, optional): dilation rate. (default: :obj:`1`)
        bias_fn (callable, optional): ``(H, W) -> bias`` of a query grid of that size.
        stochastic (bool, optional): random-subset dilation. (default: :obj:`False`)
        epsilon (float, optional): its probability. (default: :obj:`0.2`)
        normalize (bool, optional): L2-normalise features. (default: :obj:`True`)
        flow (str, optional): edge direction, as in :func:`knn_graph`.
        backend (str, optional): one of :data:`BACKENDS`. (default: :obj:`"auto"`)
    """
    _check_flow(flow)
    resolve_backend(backend)
    if y is None:
        layout_y = layout
    if layout_y is None:
        raise ValueError("pass 'layout_y', the grid of the key nodes 'y'")
    kd = k * dilation
    for (h, w), (hy, wy) in layout.size_pairs(layout_y):
        if hy * wy < kd:
            raise ValueError(
                f"a {h}x{w} node grid with {hy}x{wy} key nodes has fewer candidates than "
                f"k * dilation = {kd}; use a larger image or a smaller k / dilation"
            )
    opts = dict(dilation=dilation, stochastic=stochastic, epsilon=epsilon, normalize=normalize,
                backend=backend)

    def bias_for(size, n, m):
        if bias_fn is None:
            return None
        with full_precision(x.device.type):  # a bias table built in float32 under autocast too
            return bias_fn(size)

    num_sources = x.size(0) if y is None else y.size(0)
    if layout.uniform and layout_y.uniform:
        src = _grouped_sources(x, y, k, num_graphs=layout.num_graphs, ptr_x=None, ptr_y=None,
                               keys=layout.grid, bias_for=bias_for, **opts)
    else:
        src = _grouped_sources(x, y, k, num_graphs=None, ptr_x=layout.ptr, ptr_y=layout_y.ptr,
                               keys=layout.sizes, bias_for=bias_for, **opts)
    return _finish(src, num_sources, flow)
