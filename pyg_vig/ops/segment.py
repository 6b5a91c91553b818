"""Fused neighbour gather + segment reduction over a target-sorted (CSR) graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyg_vig.ops._build import use_compiled

__all__ = ["REDUCES", "gather_segment_reduce"]

REDUCES = ("sum", "mean", "max", "min")
_COMPILED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check(x: Tensor, src: Tensor, ptr: Tensor, reduce: str) -> None:
    if reduce not in REDUCES:
        raise ValueError(
            f"gather_segment_reduce: reduce must be one of {', '.join(map(repr, REDUCES))}, "
            f"got {reduce!r}"
        )
    if x.dim() != 2:
        raise ValueError(f"gather_segment_reduce: 'x' must be [M, C], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"gather_segment_reduce: 'x' must be floating point, got {x.dtype}")
    if src.dim() != 1 or ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(
            "gather_segment_reduce: 'src' must be [E] and 'ptr' [N + 1] (1-D, ptr non-empty), "
            f"got {tuple(src.shape)} and {tuple(ptr.shape)}"
        )
    if src.dtype != torch.long or ptr.dtype != torch.long:
        raise TypeError("gather_segment_reduce: 'src' and 'ptr' must be int64 tensors")


def _check_values(x: Tensor, src: Tensor, ptr: Tensor) -> None:
    # For the torch path (the compiled kernel checks its inputs itself). Only on CPU in eager
    # mode: elsewhere reading the values would synchronise or break the graph.
    if ptr.device.type == "cpu" and not torch.compiler.is_compiling():
        E = src.numel()
        if int(ptr[0]) != 0 or int(ptr[-1]) != E or bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(
                "gather_segment_reduce: 'ptr' must be non-decreasing, start at 0 and end at "
                f"src.numel() = {E}"
            )
        if E > 0 and (int(src.min()) < 0 or int(src.max()) >= x.size(0)):
            raise IndexError(
                f"gather_segment_reduce: 'src' holds indices outside [0, {x.size(0)})"
            )


def _unsupported(x: Tensor, src: Tensor, ptr: Tensor) -> str | None:
    if any(t.device.type != "cpu" for t in (x, src, ptr)):
        return f"tensors on {x.device if x.device.type != 'cpu' else 'several devices'}"
    if x.dtype not in _COMPILED_DTYPES:
        return f"dtype {x.dtype}"
    return None


def _gather_segment_reduce_torch(x: Tensor, src: Tensor, ptr: Tensor, reduce: str) -> Tensor:
    N, C, E = ptr.numel() - 1, x.size(1), src.numel()
    deg = ptr[1:] - ptr[:-1]
    # (E,) target of every edge: count the segment ends at or before each edge. (Unlike
    # repeat_interleave, these ops also export to ONNX.)
    ends = torch.zeros(E + 1, dtype=torch.long, device=x.device)
    dst = ends.index_add_(0, ptr[1:], torch.ones_like(ptr[1:])).cumsum(0)[:E]
    msg = x.index_select(0, src)  # (E, C)
    index = dst.view(-1, 1).expand(-1, C)
    if reduce in ("sum", "mean"):
        out = x.new_zeros((N, C)).scatter_add(0, index, msg)
        if reduce == "mean":
            out = out / deg.clamp(min=1).to(x.dtype).view(-1, 1)
        return out
    # scatter_reduce(include_self=False) on a NaN base: the base never equals a result, so the
    # gradient is split among the tied edges only (a zero base would take a share of it wherever
    # the result is exactly 0); empty segments are then set to 0.
    out = x.new_full((N, C), float("nan")).scatter_reduce(
        0, index, msg, reduce="amax" if reduce == "max" else "amin", include_self=False
    )
    return torch.where((deg > 0).view(-1, 1), out, x.new_zeros(()))


def gather_segment_reduce(
    x: Tensor, src: Tensor, ptr: Tensor, reduce: str, *, impl: str = "auto"
) -> Tensor:
    r"""Gather source rows along a target-sorted graph and reduce them per target.

    .. math::
        \mathrm{out}_i = \mathop{\mathrm{reduce}}_{e = \mathrm{ptr}_i}^{\mathrm{ptr}_{i+1} - 1}
        x_{\mathrm{src}_e}

    This is PyG message passing with the message :math:`x_j` and aggregation ``reduce`` for a
    graph whose edges are sorted by target (``ptr`` is the CSR pointer of the targets), e.g. a
    k-NN graph (``ptr = arange(N + 1) * k``) or any sorted ``edge_index``. It equals
    ``scatter(x.index_select(0, src), dst, reduce=reduce)`` without the ``[E, C]`` message
    matrix; empty segments give 0. For max and min the gradient is split evenly among the edges
    that tie exactly with the result (as :func:`torch.amax` does; PyG's CPU scatter does the same
    except where the result is exactly 0, see the module notes in :mod:`pyg_vig.ops`).

    .. code-block:: python

        x = torch.randn(6, 4)
        src = torch.tensor([0, 2, 1, 5, 3])       # sources, grouped by target
        ptr = torch.tensor([0, 2, 2, 5])          # target 0: edges 0-1, 1: none, 2: edges 2-4
        out = gather_segment_reduce(x, src, ptr, "max")  # [3, 4]

    Args:
        x (Tensor): ``[M, C]`` source node features.
        src (Tensor): ``[E]`` int64 source node of every edge, edges grouped by target.
        ptr (Tensor): ``[N + 1]`` int64 non-decreasing CSR pointer, ``ptr[0] = 0``,
            ``ptr[-1] = E``.
        reduce (str): ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``.
        impl (str, optional): ``"auto"`` (compiled kernel when it is available and supports the
            inputs: CPU, float32/float64/bfloat16/float16), ``"cpp"`` (compiled kernel or an
            error) or ``"torch"`` (``index_select`` + ``scatter``). (default: :obj:`"auto"`)

    :rtype: :class:`torch.Tensor` ``[N, C]``
    """
    _check(x, src, ptr, reduce)
    if use_compiled(impl, "gather_segment_reduce", _unsupported(x, src, ptr)):
        return torch.ops.pyg_vig.gather_segment_reduce(x, src, ptr, reduce)
    _check_values(x, src, ptr)
    return _gather_segment_reduce_torch(x, src, ptr, reduce)


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, src, ptr, reduce = inputs
    ctx.reduce = reduce
    ctx.num_src = x.size(0)
    if reduce in ("max", "min"):  # the winners are found again from x and the result
        ctx.save_for_backward(src, ptr, x, output)
    else:
        ctx.save_for_backward(src, ptr)


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    if ctx.reduce in ("max", "min"):
        src, ptr, x, out = ctx.saved_tensors
    else:
        (src, ptr), x, out = ctx.saved_tensors, None, None
    grad_x = torch.ops.pyg_vig.gather_segment_reduce_backward(
        grad, x, src, ptr, out, ctx.num_src, ctx.reduce
    )
    return grad_x, None, None, None


def _register() -> None:
    """Fake kernels and autograd of the compiled ops (for torch.compile / torch.export)."""

    @torch.library.register_fake("pyg_vig::gather_segment_reduce")
    def _forward_fake(x: Tensor, src: Tensor, ptr: Tensor, reduce: str) -> Tensor:
        torch._check(x.dim() == 2, lambda: "gather_segment_reduce: 'x' must be [M, C]")
        return x.new_empty((ptr.size(0) - 1, x.size(1)))

    @torch.library.register_fake("pyg_vig::gather_segment_reduce_backward")
    def _backward_fake(
        grad: Tensor,
        x: Tensor | None,
        src: Tensor,
        ptr: Tensor,
        out: Tensor | None,
        num_src: int,
        reduce: str,
    ) -> Tensor:
        return grad.new_empty((num_src, grad.size(1)))

    torch.library.register_autograd(
        "pyg_vig::gather_segment_reduce", _backward, setup_context=_setup_context
    )
