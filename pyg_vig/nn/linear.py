"""Grouped ("multi-head") linear layers and the update MLP of ViG graph convolutions."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.nn.parameter import UninitializedParameter

from pyg_vig.ops.rows import chunk_rows

__all__ = ["LinearBN", "MultiHeadLinear", "MultiHeadUpdate", "get_act", "ACTIVATIONS",
           "folded_linear_params", "grouped_linear", "can_fold", "interleave"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "leakyrelu": lambda: nn.LeakyReLU(0.2),
    "prelu": lambda: nn.PReLU(init=0.2),
    "hswish": nn.Hardswish,
    "silu": nn.SiLU,
}


def get_act(act: str | Callable[[], nn.Module] | None) -> nn.Module:
    """An activation module from a name (``"gelu"``, ``"relu"``, ...), a factory or ``None``."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[act.lower()]()
    return act()


def interleave(x: Tensor, m: Tensor) -> Tensor:
    """``[N, C]``, ``[N, C]`` → ``[N, 2C]`` with channels ``x_0, m_0, x_1, m_1, ...``."""
    return rearrange(torch.stack([x, m], dim=-1), "... c two -> ... (c two)")


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor | None, heads: int) -> Tensor:
    """``x [..., C]`` times a grouped weight ``[O, C / heads]`` (head h: its own channel slice)."""
    if heads == 1:
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    G = heads
    xg = rearrange(x, "... (g c) -> g (...) c", g=G)  # (G, M, C/G)
    w = rearrange(weight, "(g o) c -> g c o", g=G)  # (G, C/G, O/G)
    if bias is not None:
        out = torch.baddbmm(rearrange(bias, "(g o) -> g 1 o", g=G), xg, w)
    else:
        out = torch.bmm(xg, w)
    out = rearrange(out, "g m o -> m (g o)")  # (M, O)
    return out.reshape(*lead, out.size(-1))


# Up to this many channels per input of the pair, the ONNX graph runs the grouped update of an
# (x, m) pair as two dense GEMMs with block-diagonal weights (see _pair_linear_dense).
_ONNX_DENSE_MAX = 128


def _pair_linear_dense(x: Tensor, m: Tensor, weight: Tensor, bias: Tensor | None, heads: int
                       ) -> Tensor:
    """``grouped_linear(interleave(x, m), weight, bias, heads)`` as one dense GEMM of
    ``[x, m]`` with ``[Wx, Wm]``, where ``Wx`` and ``Wm`` are block-diagonal (the even and odd
    input columns of each head). ``heads`` times the multiply-adds of the grouped form, which
    for the few channels of the first stages costs less in ONNX Runtime than the interleave,
    transposes and bias pass around a batched MatMul (measured for 50,176 x 48 inputs: 8.7 ms
    against 20 ms; the same maths, float sums in another order).
    """
    out_per_head = weight.size(0) // heads
    wx = torch.block_diag(*weight[:, 0::2].split(out_per_head))  # (O, C)
    wm = torch.block_diag(*weight[:, 1::2].split(out_per_head))
    return F.linear(torch.cat([x, m], -1), torch.cat([wx, wm], 1), bias)


def folded_linear_params(weight: Tensor, bias: Tensor | None, bn: nn.Module
                         ) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(linear(x))`` as one linear map (``bn`` in eval mode)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias * scale + shift
    return w, b


def can_fold(seq: nn.Sequential) -> bool:
    """Whether ``seq[1]``, a BatchNorm after the linear ``seq[0]``, can be folded into it now
    (eval mode, running statistics tracked).
    """
    bn = seq[1] if len(seq) > 1 else None
    return (not seq.training and isinstance(bn, nn.BatchNorm1d) and bn.track_running_stats
            and bn.running_var is not None)


class LinearBN(nn.Sequential):
    """:class:`torch.nn.Linear` followed by ``BatchNorm1d`` (children ``0`` and ``1``).

    In eval mode the normalisation is folded into the linear map on the fly, so inference does
    one GEMM and no separate normalisation pass (same result up to float rounding).
    """

    def __init__(self, in_channels: int, out_channels: int, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__(nn.Linear(in_channels, out_channels, **dd),
                         nn.BatchNorm1d(out_channels, **dd))

    def forward(self, x: Tensor) -> Tensor:
        if can_fold(self):
            w, b = folded_linear_params(self[0].weight, self[0].bias, self[1])
            return F.linear(x, w, b)
        return super().forward(x)


class MultiHeadLinear(nn.Module):
    r"""Linear layer split into ``heads`` independent blocks (paper Eq. 5).

    The input channels are split into ``heads`` contiguous groups and group :math:`h` is
    mapped by its own weight :math:`W^h` to output group :math:`h`, which is a 1x1 convolution
    with ``groups=heads`` acting on node features ``[..., in_channels]``.

    Args:
        in_channels (int): input channels, divisible by ``heads``; ``-1`` infers them from the
            first input (lazy initialisation, as :class:`torch_geometric.nn.Linear`).
        out_channels (int): output channels, divisible by ``heads``.
        heads (int, optional): number of heads. (default: :obj:`4`)
        bias (bool, optional): add a learnable bias. (default: :obj:`True`)
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if out_channels % heads or (in_channels > 0 and in_channels % heads):
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by heads ({heads})"
            )
        dd = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        if in_channels > 0:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels // heads, **dd))
        else:  # materialised by the first forward (or a loaded state dict)
            self.weight = UninitializedParameter(**dd)
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self.reset_parameters()

    @property
    def is_lazy(self) -> bool:
        """Whether the weight still waits for its input channels."""
        return isinstance(self.weight, UninitializedParameter)

    def reset_parameters(self) -> None:
        # The official code initialises every conv with kaiming_normal_ (fan_in) and zero bias.
        if not self.is_lazy:
            nn.init.normal_(self.weight, std=math.sqrt(2.0 / self.weight.size(1)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @torch.no_grad()
    def materialize(self, in_channels: int) -> None:
        """Give a lazy layer its input channels (and initialise its weight); on a layer that has
        them, check that ``in_channels`` agrees.
        """
        if not self.is_lazy:
            if in_channels != self.in_channels:
                raise ValueError(f"{type(self).__name__} expects {self.in_channels} input "
                                 f"channels, got {in_channels}")
            return
        if in_channels % self.heads:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by heads "
                             f"({self.heads})")
        self.in_channels = in_channels
        self.weight.materialize((self.out_channels, in_channels // self.heads))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / self.weight.size(1)))

    def forward(self, x: Tensor) -> Tensor:
        if self.is_lazy or x.size(-1) != self.in_channels:
            self.materialize(x.size(-1))  # sizes a lazy layer; else a clear error
        return grouped_linear(x, self.weight, self.bias, self.heads)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.is_lazy:  # an uninitialised weight cannot be detached; save it as it is
            destination[prefix + "weight"] = self.weight
            if self.bias is not None:
                destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()
            return
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if self.is_lazy and weight is not None and not isinstance(weight, UninitializedParameter):
            self.materialize(weight.size(1) * self.heads)  # the saved shape gives the channels
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, "
                f"bias={self.bias is not None}")


class MultiHeadUpdate(nn.Sequential):
    """Multi-head linear → BatchNorm → activation: the update MLP of every ViG graph conv
    (``in_channels=-1``: lazy, see :class:`MultiHeadLinear`).

    Sub-module indices (``0`` linear, ``1`` norm, ``2`` activation) mirror the official
    ``BasicConv`` so that checkpoint keys map one to one.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, bias: bool = True,
                 norm: bool = True, act: str | Callable[[], nn.Module] | None = "gelu",
                 device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = [MultiHeadLinear(in_channels, out_channels, heads, bias, **dd)]
        if norm:
            layers.append(nn.BatchNorm1d(out_channels, **dd))
        layers.append(get_act(act))
        super().__init__(*layers)
        self.out_channels = out_channels

    @property
    def in_channels(self) -> int:
        """Input channels (``-1`` until a lazy update has seen its first input)."""
        return self[0].in_channels

    def forward(self, x: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """Args: ``x`` ``[..., in_channels]``, or a pair ``(x, m)`` of ``[M, in_channels / 2]``
        tensors that stands for their interleaving ``x_0, m_0, x_1, m_1, ...`` (the input of
        the max-relative update), which inference on many nodes then never builds whole.
        """
        pair = isinstance(x, tuple)
        channels = 2 * x[0].size(-1) if pair else x.size(-1)
        if self[0].is_lazy or channels != self[0].in_channels:
            self[0].materialize(channels)  # sizes a lazy update; else a clear error
        if can_fold(self):
            lin = self[0]
            w, b = folded_linear_params(lin.weight, lin.bias, self[1])
            if pair and torch.onnx.is_in_onnx_export() and x[0].size(-1) <= _ONNX_DENSE_MAX:
                return self[2](_pair_linear_dense(x[0], x[1], w, b, lin.heads))
            parts = x if pair else (x,)
            num_rows = parts[0].size(0)
            rows = chunk_rows(parts[0], max(channels, self.out_channels))
            if rows is None or rows >= num_rows:
                return self[2](grouped_linear(interleave(*parts) if pair else x, w, b,
                                              lin.heads))
            # Inference on many nodes: the same maths in cache-sized row chunks.
            out = None
            for s in range(0, num_rows, rows):
                chunk = [p[s : s + rows] for p in parts]
                y = self[2](grouped_linear(interleave(*chunk) if pair else chunk[0], w, b,
                                           lin.heads))
                if out is None:
                    out = y.new_empty((num_rows, y.size(1)))
                out[s : s + rows] = y
            return out
        if pair:
            x = interleave(*x)
        if x.dim() > 2:  # e.g. per-edge inputs (N, k, C): BatchNorm1d wants (M, C)
            return super().forward(x.reshape(-1, x.size(-1))).view(*x.shape[:-1], -1)
        return super().forward(x)

    def reset_parameters(self) -> None:
        for m in self:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
