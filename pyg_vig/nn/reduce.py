r"""Message reduction over target-sorted graphs.

The only module that decides how messages are reduced (:func:`neighbor_reduce`): the compiled
fused gather + segment reduction where :func:`pyg_vig.ops.compiled_for` allows it, a reshape
for graphs known to be k-regular (:class:`~pyg_vig.nn.KNNEdgeIndex`), PyG's scatter otherwise.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor
from torch_geometric import EdgeIndex

from pyg_vig.nn.edge_index import regular_degree
from pyg_vig.nn.knn import _compiled_for

__all__ = ["to_target_sorted", "reduce_regular", "reduce_edges", "neighbor_reduce"]

def to_target_sorted(adj: object, num_targets: int | None = None) -> EdgeIndex:
    """A sparse adjacency (``torch.sparse`` or ``torch_sparse.SparseTensor``, given transposed
    as PyG's ``adj_t``: rows are targets) or an :class:`~torch_geometric.EdgeIndex` → a
    target-sorted :class:`~torch_geometric.EdgeIndex` ``[2, E]`` (row 0 sources).

    ``num_targets`` (the rows of ``x_dst``) sizes the result: targets after the last one with
    an edge get an empty neighbourhood, as in PyG's generic path, instead of the graph being cut
    at its largest target index (what an :class:`~torch_geometric.EdgeIndex` without
    ``sparse_size`` infers, and what PyG's ``propagate`` caches on it before a fused call).
    """
    if isinstance(adj, EdgeIndex):
        out = adj if adj.is_sorted_by_col else adj.sort_by("col")[0]
    else:
        if isinstance(adj, Tensor) and adj.is_sparse or (
                isinstance(adj, Tensor) and adj.layout in (torch.sparse_csr, torch.sparse_csc)):
            coo = adj.to_sparse_coo().coalesce()  # rows sorted: targets
            tgt, src = coo.indices()
        else:  # torch_sparse.SparseTensor
            tgt, src, _ = adj.coo()
        out = EdgeIndex(torch.stack([src, tgt], dim=0), sparse_size=(adj.size(1), adj.size(0)),
                        sort_order="col")
    if num_targets is None:
        return out
    # the attribute, not sparse_size(): dynamo traces a subclass' metadata, not its methods
    have = out._sparse_size[1]
    if have == num_targets:
        return out
    if (have is None or have > num_targets) and out.size(1) > 0:
        # unsized (PyG infers the size from the largest index, a host sync, as here)
        last = int(out.as_tensor()[1, -1])  # sorted by target: the largest one
        if last >= num_targets:
            raise ValueError(f"the graph has edges into target {last}, but x_dst has only "
                             f"{num_targets} rows")
    # Same edges, sized by x_dst (the column pointer is rebuilt for that size).
    return EdgeIndex(out.as_tensor(), sparse_size=(out._sparse_size[0], num_targets),
                     sort_order="col")


_REDUCE_DIM = {
    "max": lambda t: t.amax(dim=1),
    "min": lambda t: t.amin(dim=1),
    "sum": lambda t: t.sum(dim=1),
    "add": lambda t: t.sum(dim=1),
    "mean": lambda t: t.mean(dim=1),
}


def reduce_regular(messages: Tensor, k: int, reduce: str) -> Tensor:
    """Reduce ``[N*k, C]`` messages of a k-regular target-sorted graph → ``[N, C]``."""
    # (N*k, C) -> (N, k, C) -> (N, C)
    return _REDUCE_DIM[reduce](rearrange(messages, "(n k) c -> n k c", k=k))


def reduce_edges(messages: Tensor, edge_index: EdgeIndex, reduce: str) -> Tensor:
    """Reduce per-edge ``messages`` ``[E, C]`` (in ``edge_index`` order, sorted by target) per
    target → ``[N, C]``; empty neighbourhoods give 0, as PyG's scatter.
    """
    reduce = "sum" if reduce == "add" else reduce
    k = regular_degree(edge_index)
    compiled = _use_compiled_reduce(messages)
    # k-regular: a reshape and a reduction over k, except for max/min where the compiled
    # segment reduction is faster (measured, benchmarks/sparse_paths.py: 2.5-4.7x in training,
    # where amax's backward is slow) and equal (a max is exact in any order)
    if k is not None and not (compiled and reduce in ("max", "min")):
        return reduce_regular(messages, k, reduce)
    ptr = edge_index.get_indptr()
    if compiled:
        from pyg_vig import ops

        # a segment reduction is a gather-reduce with the identity gather
        identity = torch.arange(messages.size(0), device=messages.device)
        return ops.gather_segment_reduce(messages, identity, ptr, reduce, impl="auto")
    if reduce in ("max", "min"):
        # torch's segment reduction hands the full gradient to every tied maximum (EdgeConv's
        # x_i half ties on all edges into i, so gradients came out k times too large on CUDA);
        # scatter's amax/amin shares it among the ties, as the reshape path's amax does.
        from torch_geometric.utils import scatter

        targets = edge_index.as_tensor()[1]
        return scatter(messages, targets, 0, dim_size=ptr.numel() - 1, reduce=reduce)
    from torch_geometric.utils import segment

    return segment(messages, ptr, reduce=reduce)


def neighbor_reduce(x: Tensor, edge_index: EdgeIndex, reduce: str, impl: str = "auto"
                    ) -> Tensor:
    r""":math:`\bigoplus_{j \in \mathcal{N}(i)} x_j` over a target-sorted graph → ``[N, C]``.

    The result equals PyG's generic ``x.index_select(0, edge_index[0])`` followed by
    ``scatter(..., edge_index[1], reduce=reduce)`` (empty neighbourhoods give 0), and so does
    its gradient, with one deliberate exception: where a max/min is exactly ``0.0``, PyG's CPU
    scatter lets its zero initial value take a share of the gradient; here, as in
    :func:`torch.amax`, the tied edges share it alone.

    ``impl``: ``"auto"`` (the compiled fused op on CPU where it is built, a reshape for a
    :class:`KNNEdgeIndex`, else PyG's scatter) or ``"torch"`` (never the compiled op).
    """
    if reduce not in _REDUCE_DIM:
        raise ValueError(f"reduce must be one of {sorted(_REDUCE_DIM)}, got {reduce!r}")
    reduce = "sum" if reduce == "add" else reduce
    ei = edge_index.as_tensor()
    if impl == "auto" and _use_compiled_reduce(x):
        from pyg_vig import ops

        return ops.gather_segment_reduce(x, ei[0], edge_index.get_indptr(), reduce, impl="auto")
    k = regular_degree(edge_index)
    src = getattr(edge_index, "_onnx_sources", None) if k is not None else None
    if src is not None:
        return _onnx_gather_reduce(x, src, k, reduce)
    x_j = x.index_select(0, ei[0])
    if k is not None:
        return reduce_regular(x_j, k, reduce)
    from torch_geometric.utils import scatter

    return scatter(x_j, ei[1], 0, edge_index.get_indptr().numel() - 1, reduce=reduce)


# In an ONNX graph of fixed shapes, the neighbour gather and its reduction run in row chunks
# of about this many bytes of gathered features: each chunk's [rows * k, C] array stays in a
# core's cache between the Gather that writes it and the Reduce that reads it. Measured in ONNX
# Runtime (2-core Xeon, 4 MiB L2 per core, batch 16): pvig_ti 31.7 -> 33.8 img/s, vig_ti
# 46.8 -> 50.0 img/s; chunking the k-NN scores or the FFN the same way gained nothing there.
_ONNX_GATHER_CHUNK_BYTES = 2**20


def _onnx_gather_reduce(x: Tensor, src: Tensor, k: int, reduce: str) -> Tensor:
    """``reduce_regular(x[src], k, reduce)`` as an exported graph computes it: in row chunks
    when the number of rows is fixed (a static-batch export), whole otherwise. Each target's
    reduction is the same either way (the same k values in the same order), so the result is
    identical.
    """
    n_rows = src.numel() // k
    rows = max(1, _ONNX_GATHER_CHUNK_BYTES // (k * x.size(1) * x.element_size()))
    if not isinstance(n_rows, int) or n_rows <= rows:  # symbolic (dynamic batch) or small
        return reduce_regular(x.index_select(0, src), k, reduce)
    return torch.cat([reduce_regular(x.index_select(0, src[s * k : (s + rows) * k]), k, reduce)
                      for s in range(0, n_rows, rows)])


def _use_compiled_reduce(x: Tensor) -> bool:
    return _compiled_for(x)
