"""Parameter and multiply-accumulate (MAC) counting.

:func:`count_macs` follows the convention of the ViG model tables: MACs are half the FLOPs that
:class:`torch.utils.flop_counter.FlopCounterMode` reports, so only operations that multiply and
accumulate are counted (matrix products, convolutions, attention, distance matrices); bias
additions, normalisation, activations, pooling, gathering and scatter reductions are free.

``FlopCounterMode`` runs composite operators (``linear``, ``matmul``, ``einsum``, ``conv2d``,
``cdist``, ...) through their decompositions and counts the leaf operators. Out of the box it
knows ``mm``, ``addmm``, ``bmm``, ``baddbmm`` and every convolution (grouped and transposed
included, since its formula uses the weight shape ``(C_out, C_in / groups, *kernel)``). This module
adds the leaves it leaves at zero:

* matrix-vector and vector products: ``mv``, ``addmv``, ``dot``, ``vdot``, ``addr``, ``addbmm``;
* fused linear + activation: ``_addmm_activation`` and oneDNN's ``mkldnn._linear_pointwise``;
* distance matrices behind :func:`torch.cdist`: ``_euclidean_dist`` and ``_cdist_forward``
  (``N * M * C`` MACs for ``N`` queries, ``M`` keys and ``C`` channels, the same as the
  ``x @ y.T`` of an explicit k-NN distance);
* :func:`torch.nn.functional.bilinear` (``_trilinear``);
* attention kernels that the CPU and the ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
  inference fast paths call: ``_scaled_dot_product_flash_attention_for_cpu``,
  ``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd``;
* sparse operands: ``mm`` / ``addmm`` / ``bmm`` with a sparse matrix (e.g. ``torch.sparse.mm`` or
  a CSR adjacency, as PyG's ``spmm`` uses) count ``nnz * n`` MACs instead of the dense product;
  ``_sparse_addmm`` is added as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from pyg_vig.ops._build import _has_fused_linear

__all__ = ["count_macs", "count_params"]

aten = torch.ops.aten


def _nnz(t: Tensor) -> int | None:
    """Stored elements of a sparse tensor, or :obj:`None` for a dense one."""
    if t.layout == torch.strided:
        return None
    if t.layout == torch.sparse_coo:
        return t._values().numel()
    return t.values().numel()  # CSR, CSC, BSR, BSC (block values include their padding)


def _matmul_macs(a: Tensor, b: Tensor) -> int:
    # (m, k) @ (k, n); a sparse operand only costs its stored elements times the other side.
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = math.prod(a.shape[:-2])
    nnz_a, nnz_b = _nnz(a), _nnz(b)
    if nnz_a is not None:
        return nnz_a * n
    if nnz_b is not None:
        return nnz_b * m
    return batch * m * k * n


def _mm(a: Tensor, b: Tensor, *args: Any, **kwargs: Any) -> int:
    return _matmul_macs(a, b)


def _addmm(bias: Any, a: Tensor, b: Tensor, *args: Any, **kwargs: Any) -> int:
    return _matmul_macs(a, b)


def _mv(a: Tensor, v: Tensor, *args: Any, **kwargs: Any) -> int:
    nnz = _nnz(a)
    return nnz if nnz is not None else a.shape[0] * a.shape[1]


def _addmv(bias: Any, a: Tensor, v: Tensor, *args: Any, **kwargs: Any) -> int:
    return _mv(a, v)


def _dot(a: Tensor, b: Tensor, *args: Any, **kwargs: Any) -> int:
    return a.numel()


def _addr(bias: Any, u: Tensor, v: Tensor, *args: Any, **kwargs: Any) -> int:
    return u.numel() * v.numel()


def _distance(x1: Tensor, x2: Tensor, *args: Any, **kwargs: Any) -> int:
    # (*, N, C) against (*, M, C): one multiply-accumulate per pair and channel.
    batch = math.prod(torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
    return batch * x1.shape[-2] * x2.shape[-2] * x1.shape[-1]


def _trilinear(
    i1: Tensor,
    i2: Tensor,
    i3: Tensor,
    expand1: Sequence[int],
    expand2: Sequence[int],
    expand3: Sequence[int],
    *args: Any,
    **kwargs: Any,
) -> int:
    # Each input is unsqueezed at its `expand` dims, the three are multiplied with broadcasting
    # and summed; count one multiply-accumulate per element of the broadcast product.
    shapes = []
    for t, expand in ((i1, expand1), (i2, expand2), (i3, expand3)):
        shape = list(t.shape)
        for dim in sorted(expand):
            shape.insert(dim, 1)
        shapes.append(shape)
    return math.prod(torch.broadcast_shapes(*shapes))


def _sdpa(q: Tensor, k: Tensor, v: Tensor, *args: Any, **kwargs: Any) -> int:
    # (B, H, L, E) queries, (B, H, S, E) keys, (B, H, S, Ev) values: Q K^T then P V.
    batch = math.prod(q.shape[:-2])
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _attention_block(batch: int, len_q: int, len_k: int, embed_dim: int) -> int:
    # q/k/v input projections, Q K^T and P V summed over heads, output projection.
    proj = (2 * len_q + 2 * len_k) * embed_dim * embed_dim
    return batch * (proj + 2 * len_q * len_k * embed_dim)


def _native_mha(
    query: Tensor, key: Tensor, value: Tensor, embed_dim: int, *args: Any, **kwargs: Any
) -> int:
    # Batch-first (B, L, E) inputs (the only layout of the fast path); unbatched is (L, E).
    batch = query.shape[0] if query.dim() == 3 else 1
    return _attention_block(batch, query.shape[-2], key.shape[-2], embed_dim)


def _encoder_layer(src: Tensor, embed_dim: int, *args: Any, **kwargs: Any) -> int:
    # Self-attention plus the two feed-forward linears, (B, L, E) or nested (unpadded) input.
    lengths = [t.shape[-2] for t in src.unbind()] if src.is_nested else None
    # args start at num_heads; ffn_weight_1 (hidden, E) is the 15th operand of the op.
    ffn_weight_1 = args[12] if len(args) > 12 else kwargs["ffn_weight_1"]
    hidden = ffn_weight_1.shape[0]
    if lengths is None:
        batch = src.shape[0] if src.dim() == 3 else 1
        lengths = [src.shape[-2]] * batch
    attention = sum(_attention_block(1, n, n, embed_dim) for n in lengths)
    return attention + sum(lengths) * 2 * embed_dim * hidden


def _as_flops(count_macs: Callable[..., int]) -> Callable[..., int]:
    # FlopCounterMode calls formulas as f(*args, **kwargs, out_val=out) and sums FLOPs (= 2 MACs).
    # `_get_raw` makes it pass the tensors themselves, so sparse layouts can be inspected.
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        return 2 * count_macs(*args, **kwargs)

    formula._get_raw = True  # type: ignore[attr-defined]
    return formula


_MAC_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.mm: _mm,
    aten.addmm: _addmm,
    aten._addmm_activation: _addmm,
    aten._sparse_addmm: _addmm,
    aten.bmm: _mm,
    aten.baddbmm: _addmm,
    aten.addbmm: _addmm,
    aten.mv: _mv,
    aten.addmv: _addmv,
    aten.dot: _dot,
    aten.vdot: _dot,
    aten.addr: _addr,
    aten._euclidean_dist: _distance,
    aten._cdist_forward: _distance,
    aten._trilinear: _trilinear,
    aten._native_multi_head_attention: _native_mha,
    aten._transformer_encoder_layer_fwd: _encoder_layer,
}
if _has_fused_linear():
    # oneDNN's fused linear + activation (pyg_vig.ops.linear_act in CPU inference):
    # x (..., K) @ W(N, K)^T.
    _MAC_FORMULAS[torch.ops.mkldnn._linear_pointwise] = (
        lambda x, w, *args, **kwargs: x.numel() // x.shape[-1] * w.shape[0] * w.shape[1])
if aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry:
    _MAC_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa

_CUSTOM_MAPPING = {op: _as_flops(fn) for op, fn in _MAC_FORMULAS.items()}


def _example_input(model: nn.Module, input_size: Sequence[int]) -> Tensor:
    reference = next(
        (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None
    )
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    # A private generator leaves the global RNG untouched.
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(input_size), generator=generator).to(device=device, dtype=dtype)


def count_macs(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 224, 224),
    *,
    input: Tensor | Sequence[Any] | Mapping[str, Any] | None = None,
) -> int:
    r"""Multiply-accumulate operations of one forward pass in eval mode.

    Counts with :class:`~torch.utils.flop_counter.FlopCounterMode` and halves its FLOPs, the
    convention of the ViG tables (``vig_ti_224_gelu``: 1.301 GMACs, ``pvig_ti_224_gelu``: 1.700),
    extended to the multiply-accumulating operators it misses (see the module docstring). The
    k-NN distance matrix is included; bias additions, normalisations, activations and pooling are
    not. The model runs under :func:`torch.no_grad` in eval mode and gets its previous
    train/eval state back afterwards.

    .. code-block:: python

        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
        count_macs(model, (1, 3, 4, 4))  # 16 * 8 * 27 + 128 * 10 = 4736

    Args:
        model (torch.nn.Module): the model.
        input_size (sequence of int, optional): shape of a random input, created on the device
            and with the dtype of the model's first floating-point parameter.
            (default: :obj:`(1, 3, 224, 224)`)
        input (torch.Tensor or sequence or mapping, optional): the input to use instead: a tensor,
            a sequence of positional arguments or a mapping of keyword arguments for
            ``model(...)``. (default: :obj:`None`)

    Returns:
        int: the number of MACs (divide by :obj:`1e9` for GMACs).

    :rtype: :class:`int`
    """
    if input is None:
        args, kwargs = (_example_input(model, input_size),), {}
    elif isinstance(input, Tensor):
        args, kwargs = (input,), {}
    elif isinstance(input, Mapping):
        args, kwargs = (), dict(input)
    else:
        args, kwargs = tuple(input), {}

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_MAPPING)
    try:
        with torch.no_grad():
            # A first pass outside the counter fills lazy caches (e.g. the relative-position
            # tables of pyramid ViG), which are set-up cost, not per-image compute.
            model(*args, **kwargs)
        with torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        for module, training in modes:
            module.training = training
    return counter.get_total_flops() // 2


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    r"""Number of parameters of a model, each shared tensor counted once.

    With :obj:`trainable_only`, parameters with ``requires_grad=False`` are left out, such as the
    frozen ``relative_pos`` tables of pyramid ViG (``pvig_ti_224_gelu``: 10.714M trainable,
    12.486M in all).

    Args:
        model (torch.nn.Module): the model.
        trainable_only (bool, optional): count only parameters that require gradients.
            (default: :obj:`True`)

    Returns:
        int: the number of scalar parameters.

    :rtype: :class:`int`
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
