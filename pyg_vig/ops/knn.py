"""Exact k-NN selection over one chunk of the dense distance matrix."""

from __future__ import annotations

import torch
from torch import Tensor

from pyg_vig.ops._build import use_compiled

__all__ = ["knn_select"]

_COMPILED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check(dot: Tensor, q_sq: Tensor, k_sq: Tensor, bias: Tensor | None, kd: int) -> None:
    if dot.dim() != 3:
        raise ValueError(f"knn_select: 'dot' must be (B, n, m), got shape {tuple(dot.shape)}")
    B, n, m = dot.shape
    if tuple(q_sq.shape) != (B, n, 1):
        raise ValueError(
            f"knn_select: 'q_sq' must be (B, n, 1) = {(B, n, 1)}, got {tuple(q_sq.shape)}"
        )
    if tuple(k_sq.shape) != (B, 1, m):
        raise ValueError(
            f"knn_select: 'k_sq' must be (B, 1, m) = {(B, 1, m)}, got {tuple(k_sq.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (n, m):
        raise ValueError(f"knn_select: 'bias' must be (n, m) = {(n, m)}, got {tuple(bias.shape)}")
    if not 1 <= kd <= m:
        raise ValueError(f"knn_select: need 1 <= kd <= m = {m}, got kd = {kd}")


def _unsupported(dot: Tensor, q_sq: Tensor, k_sq: Tensor, bias: Tensor | None) -> str | None:
    tensors = (dot, q_sq, k_sq) if bias is None else (dot, q_sq, k_sq, bias)
    if any(t.device.type != "cpu" for t in tensors):
        return f"tensors on {dot.device if dot.device.type != 'cpu' else 'several devices'}"
    if dot.dtype not in _COMPILED_DTYPES:
        return f"dtype {dot.dtype}"
    if any(t.dtype != dot.dtype for t in tensors):
        return "inputs of different dtypes"
    return None


def _knn_select_torch(
    dot: Tensor, q_sq: Tensor, k_sq: Tensor, bias: Tensor | None, kd: int
) -> Tensor:
    # The reference: the ops of pyg_vig.nn.graph's dense backend, in the same order.
    dist = dot.mul(-2)
    dist.add_(q_sq).add_(k_sq)
    if bias is not None:
        dist.add_(bias)
    return torch.topk(dist.neg_(), kd, dim=-1).indices


def knn_select(
    dot: Tensor,
    q_sq: Tensor,
    k_sq: Tensor,
    bias: Tensor | None,
    kd: int,
    *,
    impl: str = "auto",
) -> Tensor:
    r"""Indices of the ``kd`` nearest keys of every query, from a chunk's raw ``bmm`` result.

    The squared distance of query :math:`i` and key :math:`j` of batch :math:`b` is evaluated as

    .. math::
        d_{bij} = \big(((-2\,\mathrm{dot}_{bij}) + q_{bi}) + k_{bj}\big) + R_{ij},

    with every step rounded to the dtype of ``dot``, which is exactly what

    .. code-block:: python

        dist = dot.mul(-2).add_(q_sq).add_(k_sq).add_(bias)
        idx = torch.topk(dist.neg_(), kd, dim=-1).indices

    computes (the ``impl="torch"`` path), so the indices are the same, including the order in
    which :func:`torch.topk` returns exactly tied keys and its ranking of NaN distances as the
    nearest. The compiled CPU kernel never writes the distance matrix and selects each row with
    a bounded sorted list. A low-rank bias ``dist.sub_(p)`` is ``bias = -p`` (``a - b`` and
    ``a + (-b)`` round the same).

    Args:
        dot (Tensor): ``(B, n, m)`` query-key dot products,
            e.g. ``torch.bmm(q, k.transpose(1, 2))``.
        q_sq (Tensor): ``(B, n, 1)`` squared norms of the queries.
        k_sq (Tensor): ``(B, 1, m)`` squared norms of the keys.
        bias (Tensor, optional): ``(n, m)`` additive distance bias shared by the batch.
        kd (int): number of neighbours, ``1 <= kd <= m``.
        impl (str, optional): ``"auto"`` (compiled kernel when it is available and supports the
            inputs: CPU, float32/float64/bfloat16/float16, one dtype), ``"cpp"`` (compiled kernel
            or an error) or ``"torch"`` (the reference above). (default: :obj:`"auto"`)

    :rtype: :class:`torch.Tensor` ``(B, n, kd)`` int64 key indices, nearest first.
    """
    kd = int(kd)
    _check(dot, q_sq, k_sq, bias, kd)
    # Indices carry no gradient: detach, so that no autograd graph is recorded for them.
    dot, q_sq, k_sq = dot.detach(), q_sq.detach(), k_sq.detach()
    bias = None if bias is None else bias.detach()
    if use_compiled(impl, "knn_select", _unsupported(dot, q_sq, k_sq, bias)):
        return torch.ops.pyg_vig.knn_select(dot, q_sq, k_sq, bias, kd)
    return _knn_select_torch(dot, q_sq, k_sq, bias, kd)


def _register() -> None:
    """Fake (meta) kernel, so that torch.compile and torch.export can trace the compiled op."""

    @torch.library.register_fake("pyg_vig::knn_select")
    def _knn_select_fake(
        dot: Tensor, q_sq: Tensor, k_sq: Tensor, bias: Tensor | None, kd: int
    ) -> Tensor:
        torch._check(dot.dim() == 3, lambda: "knn_select: 'dot' must be (B, n, m)")
        torch._check(1 <= kd, lambda: "knn_select: kd must be >= 1")
        torch._check(kd <= dot.size(2), lambda: "knn_select: kd must be <= m")
        return dot.new_empty((dot.size(0), dot.size(1), kd), dtype=torch.long)
