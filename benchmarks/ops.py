"""Micro-benchmark of the compiled CPU operators in ``pyg_vig.ops`` against their torch paths.

``knn``: :func:`pyg_vig.ops.knn_select` on the k-NN shapes of pvig_ti (the four stages, queries
against pooled keys, with the dense relative-position bias of the official models) and of the
isotropic vig_ti (196 x 196, no bias), batch 16, over the ``k * dilation`` values the models use:

* ``select``: the selection alone, from a given ``bmm`` result: the torch path
  (``knn_select(impl="torch")``: ``mul``, ``add_`` x2-3, ``neg_``, ``topk``) vs the compiled
  kernel;
* ``with bmm``: ``torch.bmm`` + selection, where the torch side is the exact in-place sequence of
  ``pyg_vig.nn.graph``'s dense backend before this operator existed.

``segment``: :func:`pyg_vig.ops.gather_segment_reduce` with ``max`` on k-regular graphs (k-NN
layout, neighbours drawn within each image of the batch), eval (no grad) and train (forward +
backward), against ``x.index_select(0, src).view(N, k, C).amax(1)`` (the convs' k-regular path),
PyG's ``scatter(x.index_select(0, src), dst, reduce="max")`` (the generic path),
``torch_scatter.segment_csr`` when it is installed, and the operator's own torch path. ``sum``
and ``mean`` rows use the sum/mean versions of the same baselines.

Every row checks that both sides agree (indices equal; outputs and gradients equal up to float
rounding) and records the machine and the 1-minute load average: on a shared machine a load well
above the thread count inflates the times.

    python benchmarks/ops.py                # results/ops.csv, about 3 minutes on 2 cores
    python benchmarks/ops.py --threads 1    # results/ops_1threads.csv
    python benchmarks/ops.py --quick        # a few representative rows (ops_quick.csv)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    RESULTS_DIR,
    machine_description,
    print_table,
    time_interleaved,
    write_csv,
)

from pyg_vig import ops  # noqa: E402

# (model, stage, B, n, m, C, kd values, bias)
KNN_SHAPES = [
    ("pvig_ti", 0, 16, 3136, 196, 48, (9,), True),
    ("pvig_ti", 1, 16, 784, 196, 96, (18,), True),
    ("pvig_ti", 2, 16, 196, 196, 240, (27, 36, 45), True),
    ("pvig_ti", 3, 16, 49, 49, 384, (9, 18, 27, 36, 45), True),
    ("vig_ti", "-", 16, 196, 196, 192, (9, 18, 27, 36), False),
]
KNN_QUICK = [
    ("pvig_ti", 0, 16, 3136, 196, 48, (9,), True),
    ("pvig_ti", 2, 16, 196, 196, 240, (27,), True),
    ("vig_ti", "-", 16, 196, 196, 192, (9,), False),
]
# (N, k, C, reduce, per-image nodes)
SEGMENT_SHAPES = [
    (16 * 3136, 9, 96, "max", 3136),
    (16 * 196, 9, 192, "max", 196),
    (16 * 196, 18, 192, "max", 196),
    (16 * 196, 9, 192, "sum", 196),
    (16 * 196, 9, 192, "mean", 196),
]
SEGMENT_QUICK = SEGMENT_SHAPES[:2]


def _dense_reference(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, kd: int):
    # pyg_vig.nn.graph's dense backend before knn_select: in place on the bmm result.
    dist = torch.bmm(q, k.transpose(1, 2)).mul_(-2)
    dist.add_((q * q).sum(-1, keepdim=True)).add_((k * k).sum(-1).unsqueeze(1))
    if bias is not None:
        dist.add_(bias.unsqueeze(0))
    return torch.topk(dist.neg_(), kd, dim=-1).indices


def _with_op(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, kd: int):
    dot = torch.bmm(q, k.transpose(1, 2))
    q_sq, k_sq = (q * q).sum(-1, keepdim=True), (k * k).sum(-1).unsqueeze(1)
    return ops.knn_select(dot, q_sq, k_sq, bias, kd, impl="cpp")


def _knn_row(q, k, bias, kd: int, repeat: int) -> dict:
    dot = torch.bmm(q, k.transpose(1, 2))
    q_sq, k_sq = (q * q).sum(-1, keepdim=True), (k * k).sum(-1).unsqueeze(1)
    same = torch.equal(ops.knn_select(dot, q_sq, k_sq, bias, kd, impl="cpp"),
                       _dense_reference(q, k, bias, kd))
    t = time_interleaved({
        "bmm": lambda: torch.bmm(q, k.transpose(1, 2)),
        "torch": lambda: ops.knn_select(dot, q_sq, k_sq, bias, kd, impl="torch"),
        "cpp": lambda: ops.knn_select(dot, q_sq, k_sq, bias, kd, impl="cpp"),
        "torch+bmm": lambda: _dense_reference(q, k, bias, kd),
        "cpp+bmm": lambda: _with_op(q, k, bias, kd),
    }, warmup=1, repeat=repeat, max_time=20)
    ms = {name: v["median_ms"] for name, v in t.items()}
    return dict(
        bmm_ms=ms["bmm"], torch_ms=ms["torch"], cpp_ms=ms["cpp"],
        speedup=ms["torch"] / ms["cpp"],
        torch_with_bmm_ms=ms["torch+bmm"], cpp_with_bmm_ms=ms["cpp+bmm"],
        speedup_with_bmm=ms["torch+bmm"] / ms["cpp+bmm"], indices_equal=same,
    )


def bench_knn(shapes, repeat: int, machine: str) -> list[dict]:
    rows = []
    for model, stage, B, n, m, C, kds, with_bias in shapes:
        g = torch.Generator().manual_seed(n + m)
        q = F.normalize(torch.randn(B, n, C, generator=g), dim=-1)
        k = F.normalize(torch.randn(B, m, C, generator=g), dim=-1)
        bias = torch.randn(n, m, generator=g) * 0.05 if with_bias else None
        for kd in kds:
            row = dict(op="knn_select", model=model, stage=stage, B=B, n=n, m=m, C=C, kd=kd,
                       bias="dense" if with_bias else "none")
            row.update(_knn_row(q, k, bias, kd, repeat))
            row.update(threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 2),
                       machine=machine)
            rows.append(row)
            print_table(rows[-1:], ["model", "stage", "n", "m", "kd", "torch_ms", "cpp_ms",
                                    "speedup", "torch_with_bmm_ms", "cpp_with_bmm_ms",
                                    "speedup_with_bmm", "indices_equal", "load_avg"])
    return rows


def _segment_baselines(N: int, k: int, C: int, reduce: str, src, ptr, dst):
    from torch_geometric.utils import scatter

    regular = {"max": lambda t: t.amax(1), "sum": lambda t: t.sum(1), "mean": lambda t: t.mean(1)}
    fns = {
        "cpp": lambda x: ops.gather_segment_reduce(x, src, ptr, reduce, impl="cpp"),
        "gather+view": lambda x: regular[reduce](x.index_select(0, src).view(N, k, C)),
        "pyg_scatter": lambda x: scatter(x.index_select(0, src), dst, 0, dim_size=N,
                                         reduce=reduce),
        "ops_torch_path": lambda x: ops.gather_segment_reduce(x, src, ptr, reduce, impl="torch"),
    }
    try:
        from torch_scatter import segment_csr

        fns["segment_csr"] = lambda x: segment_csr(x.index_select(0, src), ptr, reduce=reduce)
    except ImportError:
        pass
    return fns


def _segment_rows(N: int, k: int, C: int, reduce: str, per: int, repeat: int) -> list[dict]:
    g = torch.Generator().manual_seed(N + k + C)
    x = torch.randn(N, C, generator=g)
    # k-NN layout: k neighbours per node, drawn from the node's own image
    src = (torch.arange(N * k) // (per * k)) * per + torch.randint(0, per, (N * k,), generator=g)
    ptr = torch.arange(N + 1) * k
    dst = torch.arange(N).repeat_interleave(k)
    grad = torch.randn(N, C, generator=g)
    fns = _segment_baselines(N, k, C, reduce, src, ptr, dst)
    xg = x.clone().requires_grad_()

    def train(fn):
        xg.grad = None
        fn(xg).backward(grad)
        return xg.grad

    with torch.no_grad():
        ref_out, out = fns["gather+view"](x), fns["cpp"](x)
    ref_grad = train(fns["gather+view"]).clone()
    matches = torch.allclose(out, ref_out, rtol=1e-5, atol=1e-6) and torch.allclose(
        train(fns["cpp"]), ref_grad, rtol=1e-5, atol=1e-6)
    rows = []
    for mode in ("eval", "train"):
        if mode == "eval":
            with torch.no_grad():
                t = time_interleaved({name: (lambda fn=fn: fn(x)) for name, fn in fns.items()},
                                     warmup=1, repeat=repeat, max_time=30)
        else:
            t = time_interleaved({name: (lambda fn=fn: train(fn)) for name, fn in fns.items()},
                                 warmup=1, repeat=repeat, max_time=30)
        ms = {name: v["median_ms"] for name, v in t.items()}
        row = dict(op="gather_segment_reduce", reduce=reduce, mode=mode, N=N, k=k, C=C)
        row.update({f"{name}_ms": v for name, v in ms.items()})
        row.update(speedup_vs_gather_view=ms["gather+view"] / ms["cpp"],
                   speedup_vs_pyg=ms["pyg_scatter"] / ms["cpp"], matches=matches)
        rows.append(row)
    return rows


def bench_segment(shapes, repeat: int, machine: str) -> list[dict]:
    rows = []
    for N, k, C, reduce, per in shapes:
        for row in _segment_rows(N, k, C, reduce, per, repeat):
            row.update(threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 2),
                       machine=machine)
            rows.append(row)
            print_table([row], [c for c in row if c not in ("op", "machine", "threads")])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a few representative rows")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds per row")
    parser.add_argument("--only", choices=("knn", "segment"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not ops.available():
        raise SystemExit(f"pyg_vig.ops could not be built: {ops.build_error()}")
    machine = machine_description()
    print(machine)
    rows = []
    if args.only in (None, "knn"):
        rows += bench_knn(KNN_QUICK if args.quick else KNN_SHAPES, args.repeat, machine)
    if args.only in (None, "segment"):
        rows += bench_segment(SEGMENT_QUICK if args.quick else SEGMENT_SHAPES, args.repeat,
                              machine)
    name = "ops" + ("_quick" if args.quick else "")
    name += "" if args.threads == 2 else f"_{args.threads}threads"
    name += ".csv"
    print("wrote", write_csv(os.path.join(RESULTS_DIR, name), rows))


if __name__ == "__main__":
    main()
