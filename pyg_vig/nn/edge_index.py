r"""The k-regular, target-sorted :class:`torch_geometric.EdgeIndex` of a k-NN graph."""

from __future__ import annotations

import copy

import torch
from einops import rearrange
from torch import Tensor
from torch_geometric import EdgeIndex

__all__ = ["KNNEdgeIndex", "regular_degree", "batched_sources"]

class KNNEdgeIndex(EdgeIndex):
    r"""The :class:`torch_geometric.EdgeIndex` that :func:`knn_graph` returns.

    Row 0 holds sources (keys), row 1 targets (queries); the edges are sorted by target and
    every target has exactly :attr:`k` sources, nearest first. ``sparse_size`` is
    ``(num_sources, num_targets)``. Graph convolutions use these guarantees to aggregate with a
    reshape instead of a scatter. Any operation that changes the edges (masking, e.g.
    :func:`torch_geometric.utils.dropout_edge`, concatenation, re-sorting) returns a plain
    :class:`~torch_geometric.EdgeIndex` or tensor, so a pruned graph never claims to be
    k-regular.
    """

    #: Sources per target (``None`` on tensors derived from a k-NN graph by another operation).
    k: int | None = None

    # torch.compile / AOTAutograd rebuild subclass inputs from these; keep the type and k.
    def __tensor_flatten__(self):
        attrs, ctx = super().__tensor_flatten__()
        return attrs, (*ctx, self.k)

    @staticmethod
    def __tensor_unflatten__(inner_tensors, ctx, outer_size, outer_stride) -> KNNEdgeIndex:
        out = KNNEdgeIndex(inner_tensors["_data"], sparse_size=ctx[0], sort_order=ctx[1],
                           is_undirected=ctx[2])
        out._indptr = inner_tensors.get("_indptr", None)
        out._T_perm = inner_tensors.get("_T_perm", None)
        out._T_indptr = inner_tensors.get("_T_indptr", None)
        out._cat_metadata = ctx[3]
        out.k = ctx[4]
        return out

    def __deepcopy__(self, memo: dict) -> KNNEdgeIndex:
        # The wrapper-subclass default needs clone() to keep the type; copy the parts instead.
        if id(self) in memo:
            return memo[id(self)]
        attrs, ctx = self.__tensor_flatten__()
        inner = {a: copy.deepcopy(getattr(self, a), memo) for a in attrs}
        out = KNNEdgeIndex.__tensor_unflatten__(inner, copy.deepcopy(ctx, memo), None, None)
        memo[id(self)] = out
        return out

    @classmethod
    def from_sources(cls, src: Tensor, num_sources: int) -> KNNEdgeIndex:
        """``[N, k]`` global source indices (row ``i``: the sources of target ``i``)."""
        N, k = src.shape
        # (N, k) -> [N*k]: target i repeated k times, the layout of src.view(-1)
        dst = torch.arange(N, device=src.device).view(N, 1).expand(N, k).reshape(-1)
        out = cls(torch.stack([src.reshape(-1), dst], dim=0),
                  sparse_size=(num_sources, N), sort_order="col")
        out.k = k
        # The column pointer is known, so it is never computed (nor cached while tracing).
        out._indptr = torch.arange(N + 1, device=src.device) * k
        if torch.onnx.is_in_onnx_export():
            # Reductions read the sources from here, so that the exported graph does not build
            # the [2, E] tensor only to take its first row (unused, the exporter drops it).
            out._onnx_sources = src.reshape(-1)
        return out


def regular_degree(edge_index: object) -> int | None:
    """The ``k`` of a :class:`KNNEdgeIndex` that still holds its guarantees, else ``None``."""
    # Only KNNEdgeIndex.from_sources sets k; every operation on the tensor returns a plain
    # EdgeIndex (or a KNNEdgeIndex without k), so a k here still describes the edges.
    if type(edge_index) is not KNNEdgeIndex or edge_index.k is None:
        return None
    return edge_index.k if edge_index.is_sorted_by_col else None


def batched_sources(idx: Tensor, num_keys: int) -> Tensor:
    """``(B, n, k)`` local key indices of equally sized graphs → ``[B*n, k]`` global ones
    (keys of graph ``b`` are nodes ``b * num_keys ...``), for :meth:`KNNEdgeIndex.from_sources`.
    """
    B = idx.size(0)
    offset = torch.arange(B, device=idx.device).view(B, 1, 1) * num_keys
    return rearrange(idx + offset, "b n k -> (b n) k")
