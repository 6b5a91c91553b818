r"""Dynamic dilated k-NN graphs over node features, the graph-construction step of ViG.

This is the only module that decides which k-NN backend runs:

* ``"dense"``: pure PyTorch. Batched matmul distances and :func:`torch.topk`, processed in
  chunks of query rows so that memory stays bounded as the graphs grow. Works everywhere and
  reproduces the official ViG graph exactly (same distance formula and evaluation order).
* ``"cluster"``: :func:`torch_cluster.knn` (KD-tree on CPU, brute force on CUDA).
* ``"pyg"``: :func:`torch_geometric.nn.pool.knn`, which needs ``pyg-lib``.
* ``"auto"``: the dense backend. ``benchmarks/graph_construction.py`` measures all of them at ViG
  sizes; on CPU the dense path wins by 8-14x, and it is the only one that handles an arbitrary
  (non-factorisable) positional bias.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_vig.nn import numerics

__all__ = [
    "BACKENDS",
    "LowRankBias",
    "available_backends",
    "resolve_backend",
    "knn_graph",
    "knn_index",
    "select_ranks",
    "index_to_edge_index",
]

BACKENDS = ("auto", "dense", "cluster", "pyg")

# Upper bound for one chunk of the (B, n, m) distance matrix, in elements (256 MiB in fp32).
_CHUNK_ELEMENTS = 1 << 26


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
    """Backends that can run in this environment (``"auto"`` and ``"dense"`` always can)."""
    out = ["auto", "dense"]
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


def resolve_backend(backend: str, bias: object = None) -> str:
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
def _dense_topk(xq: Tensor, xk: Tensor, kd: int, bias: Tensor | LowRankBias | None) -> Tensor:
    """``(B, n, C)``, ``(B, m, C)`` → ``(B, n, kd)`` nearest key indices, nearest first."""
    B, n, _ = xq.shape
    m = xk.size(1)
    # The official code evaluates |x|^2 + (-2 x.y) + |y|^2 in this order; keeping it keeps
    # float32 ties resolved the same way as the reference implementation.
    xk_sq = (xk * xk).sum(-1).unsqueeze(1)  # (B, 1, m)
    rows = max(1, _CHUNK_ELEMENTS // max(1, B * m))
    out = []
    for s in range(0, n, rows):
        q = xq[:, s : s + rows]
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


# --------------------------------------------------------------------------- batched entry
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
        backend (str): ``"auto"``, ``"dense"``, ``"cluster"`` or ``"pyg"``.

    Returns:
        ``(B, n, k)`` local key indices, nearest first.
    """
    backend = resolve_backend(backend, bias)
    with torch.no_grad():
        if normalize and numerics.is_official():
            xq = numerics.normalize_nodes(xq)
            xk = xq if xk is None else numerics.normalize_nodes(xk)
        elif normalize:
            xq = F.normalize(xq, p=2.0, dim=-1)
            xk = xq if xk is None else F.normalize(xk, p=2.0, dim=-1)
        elif xk is None:
            xk = xq
        kd = k * dilation
        if backend == "dense":
            if isinstance(bias, LowRankBias):
                bias = LowRankBias(bias.query.to(xq.device, xq.dtype),
                                   bias.key.to(xq.device, xq.dtype))
            elif bias is not None:
                bias = bias.to(device=xq.device, dtype=xq.dtype)
            idx = _dense_topk(xq, xk, kd, bias)
        else:
            if bias is not None and not isinstance(bias, LowRankBias):
                raise ValueError(
                    f"the {backend!r} k-NN backend cannot apply a dense bias table (it only "
                    "knows Euclidean distance); pass a LowRankBias (e.g. relative-position "
                    "mode 'geometric') or use backend='dense'"
                )
            idx = _sparse_topk(xq, xk, kd, bias, backend)
        return select_ranks(idx, k, dilation, stochastic, epsilon)


def index_to_edge_index(idx: Tensor, num_keys: int | None = None) -> Tensor:
    """``(B, n, k)`` local key indices → ``[2, B*n*k]`` global ``edge_index`` sorted by target.

    Row 0 holds the source (key) node, row 1 the target (query) node, PyG's
    ``source_to_target`` convention. ``num_keys`` is ``m``, the keys per graph (default ``n``).
    """
    B, n, k = idx.shape
    m = n if num_keys is None else num_keys
    offset = (torch.arange(B, device=idx.device) * m).view(B, 1, 1)
    src = (idx + offset).reshape(-1)
    dst = torch.arange(B * n, device=idx.device).repeat_interleave(k)
    return torch.stack([src, dst], dim=0)


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


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    *,
    y: Tensor | None = None,
    batch_y: Tensor | None = None,
    dilation: int = 1,
    bias: BiasLike | Mapping[tuple[int, int], BiasLike] | None = None,
    stochastic: bool = False,
    epsilon: float = 0.2,
    normalize: bool = True,
    backend: str = "auto",
) -> Tensor:
    r"""Dynamic dilated k-NN graph of ViG (paper §3.1, "dilated aggregation" of §4).

    For every target node :math:`i` of ``x`` the ``k * dilation`` nearest source nodes :math:`j`
    of ``y`` in the same graph are ranked by

    .. math::
        d_{ij} = \lVert \hat{x}_i \rVert^2 - 2\,\hat{x}_i^\top \hat{y}_j + \lVert \hat{y}_j
        \rVert^2 + R_{ij}, \qquad \hat{x} = x / \lVert x \rVert_2,

    and every ``dilation``-th of them is kept. Without ``y`` the sources are ``x`` itself and
    every node is its own nearest neighbour (the self-edge is kept, as in the official graph).

    .. code-block:: python

        x = torch.randn(196 * 2, 192)
        batch = torch.arange(2).repeat_interleave(196)
        edge_index = knn_graph(x, k=9, batch=batch, dilation=2)  # [2, 392 * 9]

    Args:
        x (Tensor): ``[N, C]`` target (query) node features.
        k (int): neighbours per target node.
        batch (Tensor, optional): sorted ``[N]`` graph assignment of ``x``. (default: :obj:`None`)
        y (Tensor, optional): ``[M, C]`` source (key) features, e.g. spatially pooled nodes.
            (default: :obj:`None`, the sources are ``x``)
        batch_y (Tensor, optional): sorted ``[M]`` graph assignment of ``y``; required when
            ``y`` and ``batch`` are given. (default: :obj:`None`)
        dilation (int, optional): dilation rate :math:`d`. (default: :obj:`1`)
        bias (Tensor, LowRankBias or dict, optional): additive ``[N_g, M_g]`` distance bias,
            shared by all graphs of that size; a dict maps ``(N_g, M_g)`` to the bias of graphs of
            that size. (default: :obj:`None`)
        stochastic (bool, optional): random-subset dilation with probability ``epsilon``; pass
            ``module.training`` so it only happens in training. (default: :obj:`False`)
        epsilon (float, optional): probability of a random subset. (default: :obj:`0.2`)
        normalize (bool, optional): L2-normalise features. (default: :obj:`True`)
        backend (str, optional): ``"auto"``, ``"dense"``, ``"cluster"`` or ``"pyg"``.
            (default: :obj:`"auto"`)

    :rtype: :class:`torch.Tensor` ``[2, N * k]``: row 0 source, row 1 target, sorted by target,
        exactly ``k`` edges per target.
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
    resolve_backend(backend)

    counts_x = _counts(batch, x.size(0), "batch")
    counts_y = counts_x if y is None else _counts(batch_y, y.size(0), "batch_y")
    if len(counts_x) != len(counts_y):
        raise ValueError(
            f"'batch' describes {len(counts_x)} graphs but 'batch_y' describes {len(counts_y)}"
        )
    kd = k * dilation
    for g, (n, m) in enumerate(zip(counts_x, counts_y, strict=False)):
        if m < kd and n > 0:
            raise ValueError(
                f"graph {g} has only {m} candidate source nodes but k * dilation = {k} * "
                f"{dilation} = {kd}; lower k or the dilation, or use larger inputs"
            )

    src_feats = x if y is None else y
    opts = dict(
        dilation=dilation, stochastic=stochastic, epsilon=epsilon, normalize=normalize,
        backend=backend,
    )
    B = len(counts_x)
    if all(c == counts_x[0] for c in counts_x) and all(c == counts_y[0] for c in counts_y):
        n, m = counts_x[0], counts_y[0]
        xq = x.view(B, n, -1)
        xk = None if y is None else y.view(B, m, -1)
        idx = knn_index(xq, xk, k, bias=_bias_for(bias, n, m), **opts)
        return index_to_edge_index(idx, m)

    # Graphs of different sizes: one batched k-NN per (n, m) group.
    ptr_x = [0] + torch.tensor(counts_x).cumsum(0).tolist()
    ptr_y = [0] + torch.tensor(counts_y).cumsum(0).tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for g, (n, m) in enumerate(zip(counts_x, counts_y, strict=False)):
        groups.setdefault((n, m), []).append(g)
    src = torch.empty(x.size(0), k, dtype=torch.long, device=x.device)
    for (n, m), members in groups.items():
        if n == 0:
            continue
        rows_x = torch.cat([torch.arange(ptr_x[g], ptr_x[g] + n) for g in members]).to(x.device)
        rows_y = torch.cat([torch.arange(ptr_y[g], ptr_y[g] + m) for g in members]).to(x.device)
        xq = x.index_select(0, rows_x).view(len(members), n, -1)
        xk = None if y is None else src_feats.index_select(0, rows_y).view(len(members), m, -1)
        idx = knn_index(xq, xk, k, bias=_bias_for(bias, n, m), **opts)  # (G, n, k)
        start_y = torch.tensor([ptr_y[g] for g in members], device=x.device).view(-1, 1, 1)
        src[rows_x] = (idx + start_y).view(-1, k)
    dst = torch.arange(x.size(0), device=x.device).repeat_interleave(k)
    return torch.stack([src.view(-1), dst], dim=0)
