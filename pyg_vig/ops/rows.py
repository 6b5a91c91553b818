"""Row-wise inference helpers: a linear map with its activation fused, and row chunking.

Node-wise layers of ViG (the FFN, the update of a graph convolution) map ``[M, C]`` to
``[M, H]`` with ``M = B * n`` rows. In stage 0 of a pyramid model at batch 16, ``M`` is 50,176
and a ``[M, 4C]`` hidden tensor is 38 MB: every call allocates it afresh (large blocks come
straight from the kernel, page by page) and streams it through memory twice. Run in chunks of a
few thousand rows, the same GEMMs keep their intermediates in cache and reuse small blocks.
Every row is computed by the same maths with the same reduction length; the results equal the
unchunked ones up to float rounding (bit for bit on the model shapes measured here, where the
chunks have hundreds to thousands of rows; BLAS may pick another kernel for a tiny chunk).

:func:`linear_act` evaluates ``act(x @ W^T + b)`` with oneDNN's fused linear + post-op kernel
(``torch.ops.mkldnn._linear_pointwise``, part of every x86/ARM PyTorch build) where
:func:`pyg_vig.ops.fused_linear_for` allows it: CPU float32, no gradient wanted, not while
:func:`torch.compile` / :func:`torch.export` / ONNX export trace. Elsewhere, or with
``impl="torch"``, it is ``act(F.linear(x, W, b))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from pyg_vig.ops._build import IMPLS, fused_linear_for

__all__ = ["linear_act", "feed_forward", "chunk_rows", "CHUNK_ELEMENTS"]

#: largest intermediate of one row chunk, in elements (4 MiB of float32)
CHUNK_ELEMENTS = 1 << 20
#: arrays below this many elements are not chunked (no gain measured below it)
_MIN_CHUNKED = 1 << 22


def _post_op(act: nn.Module | None) -> tuple[str, str] | None:
    """The oneDNN ``(attr, algorithm)`` of ``act``, or ``None`` where it has no such post-op."""
    if act is None or type(act) is nn.Identity:
        return "none", ""
    if type(act) is nn.GELU:
        return "gelu", act.approximate
    if type(act) is nn.ReLU:
        return "relu", ""
    return None


def _wants_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear_act(x: Tensor, weight: Tensor, bias: Tensor | None,
               act: nn.Module | Callable[[Tensor], Tensor] | None = None, *,
               impl: str = "auto") -> Tensor:
    r"""``act(F.linear(x, weight, bias))``, with the activation fused into the GEMM where it can.

    Args:
        x (Tensor): ``[..., C]`` input.
        weight (Tensor): ``[H, C]`` weight.
        bias (Tensor, optional): ``[H]`` bias.
        act (nn.Module, optional): the activation (``nn.GELU``, ``nn.ReLU``, ``nn.Identity`` or
            :obj:`None` fuse; any other callable is applied after the linear map).
        impl (str, optional): ``"auto"`` (the fused oneDNN kernel where
            :func:`~pyg_vig.ops.fused_linear_for` allows it), ``"cpp"`` (the fused kernel or
            an error) or ``"torch"``. (default: :obj:`"auto"`)
    """
    if impl not in IMPLS:
        raise ValueError(f"linear_act: impl must be one of {', '.join(map(repr, IMPLS))}, "
                         f"got {impl!r}")
    post = _post_op(act) if isinstance(act, nn.Module) or act is None else None
    fused = impl != "torch" and post is not None and not _wants_grad(x, weight, bias)
    fused = fused and fused_linear_for(x) and weight.dtype == x.dtype
    if impl == "cpp" and not fused:
        raise RuntimeError(
            "linear_act(impl='cpp'): the fused oneDNN kernel cannot run here (it needs a CPU "
            "float32 input, a PyTorch built with oneDNN, no gradient, eager mode and a GELU, "
            "ReLU or no activation); use impl='auto' or impl='torch'"
        )
    if fused:
        lead = x.shape[:-1]
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.size(-1)), weight, bias,
                                                 post[0], [], post[1] or None)
        return out.view(*lead, weight.size(0))
    y = F.linear(x, weight, bias)
    return y if act is None else act(y)


def chunk_rows(x: Tensor, width: int) -> int | None:
    """Rows per chunk for row-wise work on ``x`` whose widest intermediate has ``width``
    columns, or :obj:`None` where chunking does not pay or does not apply (small inputs, other
    devices, autograd, autocast, tracing).
    """
    # Tracing first: a traced program keeps one shape-independent graph (no size guards).
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.is_grad_enabled():
        return None
    if torch.is_autocast_enabled("cpu"):
        return None
    if x.dim() != 2 or x.device.type != "cpu" or x.size(0) * width < _MIN_CHUNKED:
        return None
    return max(1, CHUNK_ELEMENTS // max(1, width))


def feed_forward(x: Tensor, w1: Tensor, b1: Tensor | None, act: nn.Module | None,
                 w2: Tensor, b2: Tensor | None, shortcut: Tensor | None = None, *,
                 impl: str = "auto") -> Tensor:
    r"""``F.linear(act(F.linear(x, w1, b1)), w2, b2) + shortcut``, in row chunks in inference.

    The result equals the unchunked expression up to float rounding (see the module notes);
    the ``[M, H]`` hidden array exists one chunk at a time.
    """
    rows = chunk_rows(x, w1.size(0))
    if rows is None or rows >= x.size(0):
        y = F.linear(linear_act(x, w1, b1, act, impl=impl), w2, b2)
        return y if shortcut is None else y + shortcut
    out = None
    for s in range(0, x.size(0), rows):
        y = F.linear(linear_act(x[s : s + rows], w1, b1, act, impl=impl), w2, b2)
        if out is None:  # the unchunked result's dtype (autocast may make y reduced)
            dtype = y.dtype if shortcut is None else torch.promote_types(y.dtype, shortcut.dtype)
            out = y.new_empty((x.size(0), y.size(1)), dtype=dtype)
        if shortcut is None:
            out[s : s + rows] = y
        else:
            torch.add(y, shortcut[s : s + rows], out=out[s : s + rows])
    return out
