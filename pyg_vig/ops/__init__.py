r"""Compiled CPU operators with pure-torch fallbacks.

* :func:`knn_select`: exact k-NN selection from one chunk of the dense distance matrix (the
  ``torch.topk`` step of the dense k-NN backend), with bit-identical distances and indices.
* :func:`gather_segment_reduce`: fused ``x[src]`` gather and sum/mean/max/min reduction over a
  target-sorted (CSR) graph, i.e. message passing with message :math:`x_j`, with autograd.
* :func:`linear_act` / :func:`feed_forward`: a linear map with its activation fused (oneDNN's
  kernel, shipped with PyTorch) and row-chunked node-wise MLPs for inference (see
  :mod:`pyg_vig.ops.rows`); :func:`fused_linear_for` decides where the fused kernel runs.

Every operator takes ``impl="auto" | "cpp" | "torch"``. The C++ kernels are registered with
:mod:`torch.library` in the ``pyg_vig`` namespace (``torch.ops.pyg_vig.*``) together with fake
kernels, so :func:`torch.compile` and :func:`torch.export.export` trace them. They are compiled
just in time on first use and cached (see :mod:`pyg_vig.ops._build`); prebuild them with
``python -m pyg_vig.ops --build``. Where they cannot be built, a single warning says why and the
pure-torch path runs; CUDA tensors and other dtypes always take the pure-torch path, and so does
``impl="auto"`` under :func:`torch.onnx.export` (ONNX has no ``pyg_vig`` operators). A program
saved with :func:`torch.export.save` that contains them needs :func:`pyg_vig.ops.load` before
:func:`torch.export.load`.

Note on max/min gradients: PyG's generic CPU path (``scatter(..., reduce="max")``, i.e.
``scatter_reduce_`` with ``include_self=False`` into zeros) splits the gradient among the edges
tied with the result, but where the result is exactly ``0.0`` the zero-initialised output counts
as one more winner and keeps a share (a segment ``[0.0, -1.0]`` passes 0.5 instead of 1 to its
maximum). :func:`gather_segment_reduce` splits among the tied edges only, as :func:`torch.amax`
does.
"""

from pyg_vig.ops._build import (
    COMPILED_DTYPES,
    IMPLS,
    available,
    build_directory,
    build_error,
    compiled_for,
    default_impl,
    fused_linear_for,
    library_path,
    load,
)
from pyg_vig.ops.knn import knn_select
from pyg_vig.ops.rows import feed_forward, linear_act
from pyg_vig.ops.segment import REDUCES, gather_segment_reduce

__all__ = [
    "COMPILED_DTYPES",
    "IMPLS",
    "REDUCES",
    "available",
    "build_directory",
    "build_error",
    "compiled_for",
    "default_impl",
    "feed_forward",
    "fused_linear_for",
    "gather_segment_reduce",
    "knn_select",
    "library_path",
    "linear_act",
    "load",
]
