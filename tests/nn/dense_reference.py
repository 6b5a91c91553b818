"""Dense ``(B, C, N, k)`` reference of the official ViG graph and graph convolutions.

Written from ``shared/official/SPEC.md`` §2.2-2.5 only, independently of ``pyg_vig``: image-style
tensors ``(B, C, N, 1)``, the distance expanded in the official evaluation order, ``topk`` of
``-D``, ``[..., ::d]`` dilation, ``batched_index_select`` and the ``BasicConv`` update as a
grouped 1x1 ``conv2d`` + ``BatchNorm2d`` + activation. The reference modules copy the weights of
our ``MultiHeadUpdate`` layers, so both implementations compute with the same parameters.

The bottom of the file holds small helpers shared by the conv tests (layout conversions).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric import EdgeIndex

from pyg_vig.nn import KNNEdgeIndex


# --------------------------------------------------------------------------- graph (SPEC 2.2)
def dense_knn(x: Tensor, k: int, dilation: int = 1, y: Tensor | None = None,
              relative_pos: Tensor | None = None) -> Tensor:
    """``x`` ``(B, C, N, 1)``, ``y`` ``(B, C, M, 1)``, ``relative_pos`` ``(1, N, M)`` or ``(N, M)``.

    Returns the official ``edge_index`` ``(2, B, N, k)``: row 0 neighbour, row 1 centre.
    """
    with torch.no_grad():
        x = F.normalize(x, p=2.0, dim=1)
        y = x if y is None else F.normalize(y, p=2.0, dim=1)
        xs = x.transpose(2, 1).squeeze(-1)  # (B, N, C)
        ys = y.transpose(2, 1).squeeze(-1)  # (B, M, C)
        x_sq = torch.sum(xs * xs, dim=-1, keepdim=True)  # (B, N, 1)
        inner = -2 * torch.matmul(xs, ys.transpose(2, 1))  # (B, N, M)
        y_sq = torch.sum(ys * ys, dim=-1, keepdim=True).transpose(2, 1)  # (B, 1, M)
        dist = x_sq + inner + y_sq
        if relative_pos is not None:
            rp = relative_pos if relative_pos.dim() == 3 else relative_pos.unsqueeze(0)
            dist = dist + rp
        B, N = dist.shape[:2]
        nn_idx = torch.topk(-dist, k=k * dilation, dim=-1).indices  # (B, N, k*d)
        center = torch.arange(N, device=x.device).view(1, N, 1).expand_as(nn_idx)
        edge_index = torch.stack((nn_idx, center), dim=0)
        return edge_index[:, :, :, ::dilation]


def batched_index_select(x: Tensor, idx: Tensor) -> Tensor:
    """``x`` ``(B, C, M, 1)``, ``idx`` ``(B, N, k)`` → ``(B, C, N, k)``.

    ``out[b, c, n, j] = x[b, c, idx[b, n, j], 0]``.
    """
    B, C, M = x.shape[:3]
    _, N, k = idx.shape
    idx_base = torch.arange(B, device=idx.device).view(-1, 1, 1) * M
    flat_idx = (idx + idx_base).contiguous().view(-1)
    feats = x.transpose(2, 1).contiguous().view(B * M, C)  # (B*M, C)
    out = feats[flat_idx, :].view(B, N, k, C)
    return out.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- BasicConv
class RefBasicConv(nn.Module):
    """Grouped 1x1 Conv2d → BatchNorm2d → activation, weights copied from a ``MultiHeadUpdate``."""

    def __init__(self, update: nn.Module):
        super().__init__()
        lin = update[0]
        heads = lin.heads
        self.conv = nn.Conv2d(lin.in_channels, lin.out_channels, 1, groups=heads,
                              bias=lin.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(lin.weight.detach().view(lin.out_channels, -1, 1, 1))
            if lin.bias is not None:
                self.conv.bias.copy_(lin.bias.detach())
        self.conv = self.conv.to(lin.weight.dtype)
        self.norm = None
        rest = list(update)[1:]
        if rest and isinstance(rest[0], nn.BatchNorm1d):
            bn1 = rest.pop(0)
            self.norm = nn.BatchNorm2d(bn1.num_features, eps=bn1.eps, momentum=bn1.momentum)
            self.norm.load_state_dict(copy.deepcopy(bn1.state_dict()))
            self.norm = self.norm.to(lin.weight.dtype)
        self.act = rest[0] if rest else nn.Identity()
        self.train(update.training)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)


# --------------------------------------------------------------------------- convs (SPEC 2.3)
class RefMRConv(nn.Module):
    def __init__(self, conv: nn.Module, interleave: bool = True):
        super().__init__()
        self.nn = RefBasicConv(conv.nn)
        self.interleave = interleave

    def forward(self, x: Tensor, edge_index: Tensor, y: Tensor | None = None) -> Tensor:
        x_i = batched_index_select(x, edge_index[1])
        x_j = batched_index_select(x if y is None else y, edge_index[0])
        m, _ = torch.max(x_j - x_i, -1, keepdim=True)  # (B, C, N, 1)
        B, C, N, _ = x.shape
        if self.interleave:
            h = torch.cat([x.unsqueeze(2), m.unsqueeze(2)], dim=2).reshape(B, 2 * C, N, 1)
        else:
            h = torch.cat([x, m], dim=1)
        return self.nn(h)


class RefEdgeConv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.nn = RefBasicConv(conv.nn)

    def forward(self, x: Tensor, edge_index: Tensor, y: Tensor | None = None) -> Tensor:
        x_i = batched_index_select(x, edge_index[1])
        x_j = batched_index_select(x if y is None else y, edge_index[0])
        h = self.nn(torch.cat([x_i, x_j - x_i], dim=1))  # (B, O, N, k)
        return torch.max(h, -1, keepdim=True)[0]


class RefSAGEConv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.nn1 = RefBasicConv(conv.nn1)
        self.nn2 = RefBasicConv(conv.nn2)

    def forward(self, x: Tensor, edge_index: Tensor, y: Tensor | None = None) -> Tensor:
        x_j = batched_index_select(x if y is None else y, edge_index[0])
        x_j, _ = torch.max(self.nn1(x_j), -1, keepdim=True)
        return self.nn2(torch.cat([x, x_j], dim=1))


class RefGINConv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.nn = RefBasicConv(conv.nn)
        self.eps = nn.Parameter(conv.eps.detach().clone())

    def forward(self, x: Tensor, edge_index: Tensor, y: Tensor | None = None) -> Tensor:
        x_j = batched_index_select(x if y is None else y, edge_index[0])
        x_j = torch.sum(x_j, -1, keepdim=True)
        return self.nn((1 + self.eps) * x + x_j)


REFERENCE = {
    "MRConv": RefMRConv,
    "EdgeConv": RefEdgeConv,
    "SAGEConv": RefSAGEConv,
    "GINConv": RefGINConv,
}


def reference_of(conv: nn.Module) -> nn.Module:
    """The dense reference sharing ``conv``'s weights and train/eval mode."""
    ref = REFERENCE[type(conv).__name__](conv)
    return ref.train(conv.training)


# --------------------------------------------------------------------------- helpers
def nodes_to_dense(x: Tensor, B: int) -> Tensor:
    """``[B*N, C]`` node-major → ``(B, C, N, 1)``."""
    return x.view(B, -1, x.size(-1)).transpose(1, 2).unsqueeze(-1).contiguous()


def dense_to_nodes(x: Tensor) -> Tensor:
    """``(B, C, N, 1)`` → ``[B*N, C]``."""
    B, C, N, _ = x.shape
    return x.squeeze(-1).transpose(1, 2).reshape(B * N, C)


def dense_to_edge_index(edge_index: Tensor, num_src: int | None = None) -> Tensor:
    """Official ``(2, B, N, k)`` local indices → global PyG ``[2, B*N*k]`` (sorted by target)."""
    _, B, N, k = edge_index.shape
    M = N if num_src is None else num_src
    src = edge_index[0] + (torch.arange(B) * M).view(B, 1, 1)
    dst = edge_index[1] + (torch.arange(B) * N).view(B, 1, 1)
    return torch.stack([src.reshape(-1), dst.reshape(-1)], dim=0)


def random_graph(B: int = 2, N: int = 12, C: int = 8, k: int = 4, M: int | None = None,
                 dilation: int = 1, dtype: torch.dtype = torch.float32):
    """Random node features and their official k-NN graph.

    Returns ``x`` ``[B*N, C]``, ``y`` ``[B*M, C]`` (or ``None``), the dense ``(2, B, N, k)``
    graph and the matching :class:`KNNEdgeIndex` ``[2, B*N*k]`` (sorted by target, as
    ``knn_graph`` returns it).
    """
    x = torch.randn(B * N, C, dtype=dtype)
    y = None if M is None else torch.randn(B * M, C, dtype=dtype)
    dense = dense_knn(nodes_to_dense(x, B), k, dilation,
                      None if y is None else nodes_to_dense(y, B))
    ei = dense_to_edge_index(dense, M)
    return x, y, dense, KNNEdgeIndex.from_sources(ei[0].view(B * N, k), B * (M or N))


def shuffle_edges(edge_index: Tensor) -> Tensor:
    """Random edge order (no longer sorted by target, so the fast path is not detected)."""
    perm = torch.randperm(edge_index.size(1))
    out = plain(edge_index)[:, perm]
    assert not torch.equal(out[1], edge_index[1])
    return out


def plain(edge_index: Tensor) -> Tensor:
    """The ``[2, E]`` tensor of an :class:`EdgeIndex` (PyG's generic path for every conv)."""
    return edge_index.as_tensor() if isinstance(edge_index, EdgeIndex) else edge_index


class CountPaths:
    """Context manager counting which path a conv takes: ``generic`` (PyG's ``message`` →
    ``aggregate``) or ``fused`` (``message_and_aggregate``)."""

    def __init__(self, conv: nn.Module):
        self.conv, self.generic, self.fused = conv, 0, 0

    def __enter__(self):
        cls = type(self.conv)

        def message(*args, **kwargs):
            self.generic += 1
            return cls.message(self.conv, *args, **kwargs)

        def message_and_aggregate(*args, **kwargs):
            self.fused += 1
            return cls.message_and_aggregate(self.conv, *args, **kwargs)

        self.conv.message = message
        self.conv.message_and_aggregate = message_and_aggregate
        return self

    def __exit__(self, *exc):
        del self.conv.message
        del self.conv.message_and_aggregate
        return False
