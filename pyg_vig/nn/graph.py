"""Compatibility module: the k-NN graph code now lives in :mod:`pyg_vig.nn.knn` (construction,
backends), :mod:`pyg_vig.nn.edge_index` (:class:`KNNEdgeIndex`) and :mod:`pyg_vig.nn.reduce`
(message reduction). Old imports from here keep working.
"""

from pyg_vig.nn.edge_index import KNNEdgeIndex, batched_sources, regular_degree
from pyg_vig.nn.knn import (  # noqa: F401 (private names kept for old imports)
    _CHUNK_ELEMENTS,
    BACKENDS,
    BiasLike,
    LowRankBias,
    _augment,
    _dense_topk,
    _has_pyg_lib,
    _l2_normalize,
    available_backends,
    full_precision,
    grid_knn_graph,
    knn_dtype,
    knn_graph,
    knn_index,
    resolve_backend,
    select_ranks,
)
from pyg_vig.nn.reduce import neighbor_reduce, reduce_edges, reduce_regular, to_target_sorted

__all__ = [
    "BACKENDS",
    "LowRankBias",
    "KNNEdgeIndex",
    "available_backends",
    "resolve_backend",
    "knn_graph",
    "grid_knn_graph",
    "knn_index",
    "knn_dtype",
    "select_ranks",
    "neighbor_reduce",
    "to_target_sorted",
    "batched_sources",
    "regular_degree",
    "reduce_edges",
    "reduce_regular",
]
