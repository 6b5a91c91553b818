"""Time and peak memory of ViG's dynamic k-NN graph construction, per backend.

Measures :func:`pyg_vig.nn.knn_graph` with every backend name in
``pyg_vig.nn.graph.BACKENDS`` (for example ``dense``, the chunked matmul distances with the
library's exact selection; ``torch``, the same distances with :func:`torch.topk`; ``cluster``,
``torch_cluster.knn``; ``pyg``, pyg-lib; and ``auto``), on batches of equally sized graphs.
Backends that cannot run here are listed with the reason. A new backend added to ``BACKENDS``
is measured without any change here.

The full cartesian product of the axes is far too slow on a small CPU, so the sweeps vary one
axis at a time around the ViG defaults and then run the graphs that the ViG models build:

* ``N``: nodes per graph 49 … 3136 (C=192, k=9, d=1, no bias) at batch 1 and 16 (the plot);
* ``C``, ``k``, ``dilation``: around N=196, C=192, k=9, d=1, batch 16;
* ``vig``: isotropic ViG layers (N=196, C=192/320/640, k=9…18, d=1…4);
* ``pvig``: the four pyramid-ViG stages (queries vs pooled keys, stage widths, stage dilations),
  each without bias, with the relative-position bias as a dense ``[N, M]`` table
  (``relative_position_bias(mode="official")``, what the official models add) and as a
  :class:`~pyg_vig.nn.graph.LowRankBias` built from ``relative_position_factors`` (which the
  tree backends can fold into the features);
* ``full``: the 56x56 grid with no key reduction (3136 x 3136), including the dense backend with
  chunking switched off (``dense-unchunked``), to show that chunking bounds the memory.

For every point the script reports the median time and the extra peak memory of each backend
(see ``benchmarks/common.py`` for what the memory number measures), the fastest concrete
backend, whether ``auto`` is within 10% of it, and for every backend the fraction of its edges
equal to those of the reference backend (``torch`` when it exists, else ``dense``): exact
selections give 1.0.

    python benchmarks/graph_construction.py           # full run (a few minutes on 2 cores)
    python benchmarks/graph_construction.py --quick   # about a minute, smaller sweep
    python benchmarks/graph_construction.py --device cuda   # writes *_cuda.csv / .png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    RESULTS_DIR,
    loglog_plot,
    machine_description,
    peak_memory_mb,
    print_table,
    time_interleaved,
    write_csv,
)

import pyg_vig.nn.knn as graph  # noqa: E402
from pyg_vig.nn.graph import LowRankBias, available_backends, knn_graph  # noqa: E402
from pyg_vig.nn.pos_embed import (  # noqa: E402
    relative_position_bias,
    relative_position_factors,
)

CONCRETE = tuple(b for b in graph.BACKENDS if b != "auto")
REFERENCE = "torch" if "torch" in CONCRETE else "dense"  # the edges every backend is compared to
SPARSE = ("cluster", "pyg")  # KD-tree / pyg-lib: no dense bias table, slow at large batches


@dataclass(frozen=True)
class Point:
    """One graph-construction workload: B graphs of n query nodes and m = n / r² key nodes."""

    section: str
    B: int
    n: int
    C: int
    k: int
    d: int = 1
    r: int = 1
    bias: str = "none"  # "none", "table" (dense [n, m] tensor) or "lowrank" (LowRankBias)

    @property
    def side(self) -> int:
        return math.isqrt(self.n)

    @property
    def m(self) -> int:
        return (self.side // self.r) ** 2


def sweep(quick: bool) -> list[Point]:
    pts: list[Point] = []
    if quick:
        for n in (49, 196, 784):
            pts.append(Point("N", 1, n, 192, 9))
        for n in (49, 196):
            pts.append(Point("N", 16, n, 192, 9))
        pts += [Point("C", 16, 196, 48, 9)]
        pts += [Point("k", 16, 196, 192, 18), Point("dilation", 16, 196, 192, 9, d=3)]
        pts += [Point("pvig", 16, 784, 96, 9, r=2, bias=b) for b in ("none", "table", "lowrank")]
        pts += [Point("full", 16, 3136, 48, 9)]  # 16 x 3136² fp32 = 629 MB: three chunks
        return _unique(pts)

    for B in (1, 16):  # batch 1 first: its cluster timings decide what is too slow at 16
        pts += [Point("N", B, n, 192, 9) for n in (49, 196, 784, 3136)]
    pts += [Point("C", 16, 196, c, 9) for c in (48, 192, 384, 640)]
    pts += [Point("k", 16, 196, 192, k) for k in (9, 18)]
    pts += [Point("dilation", 16, 196, 192, 9, d=d) for d in (1, 2, 3)]
    # Isotropic ViG: ti/s/b widths, first block (k=9, d=1) and last block (k=18, d=3 or 4).
    for C, d_last in ((192, 3), (320, 3), (640, 4)):
        pts += [Point("vig", 16, 196, C, 9, d=1), Point("vig", 16, 196, C, 18, d=d_last)]
    # Pyramid ViG (ti widths): (queries, reduction, width, dilation) of the four stages.
    for n, r, C, d in ((3136, 4, 48, 1), (784, 2, 96, 1), (196, 1, 240, 2), (49, 1, 384, 3)):
        pts += [Point("pvig", 16, n, C, 9, d=d, r=r, bias=b) for b in ("none", "table", "lowrank")]
    pts += [Point("full", B, 3136, 48, 9) for B in (1, 16)]
    return _unique(pts)


def _unique(pts: list[Point]) -> list[Point]:
    # The sweeps share their centre point (N=196, C=192, k=9, d=1, B=16): measure it once.
    seen, out = set(), []
    for p in pts:
        key = (p.B, p.n, p.C, p.k, p.d, p.r, p.bias)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def make_inputs(p: Point, gen: torch.Generator, device: torch.device) -> dict:
    x = torch.randn(p.B * p.n, p.C, generator=gen).to(device)
    kw: dict = dict(batch=torch.arange(p.B, device=device).repeat_interleave(p.n), dilation=p.d)
    if p.r > 1:
        kw["y"] = torch.randn(p.B * p.m, p.C, generator=gen).to(device)
        kw["batch_y"] = torch.arange(p.B, device=device).repeat_interleave(p.m)
    if p.bias == "table":
        kw["bias"] = relative_position_bias(p.side, p.side, p.C, p.r, mode="official").to(device)
    elif p.bias == "lowrank":
        q, k = relative_position_factors(p.side, p.side, p.C, p.r)
        kw["bias"] = LowRankBias(q.to(device), k.to(device))
    return dict(x=x, k=p.k, **kw)


def supports(backend: str, p: Point) -> str | None:
    """Why ``backend`` cannot run ``p`` (None when it can)."""
    concrete = "dense" if backend == "dense-unchunked" else backend
    if concrete not in available_backends():
        try:
            graph.resolve_backend(concrete)
        except (ImportError, ValueError) as e:
            return f"unavailable ({e})"
        return "unavailable"
    if p.bias == "table" and concrete in SPARSE:
        return "unsupported (dense bias table)"
    if backend == "dense-unchunked" and not hasattr(graph, "_CHUNK_ELEMENTS"):
        return "unavailable (no chunk size to switch off)"
    return None


def _caller(backend: str, inputs: dict) -> Callable[[], torch.Tensor]:
    call_backend = "dense" if backend == "dense-unchunked" else backend

    def fn() -> torch.Tensor:
        if backend != "dense-unchunked":
            return _knn(call_backend, inputs)
        saved = graph._CHUNK_ELEMENTS
        graph._CHUNK_ELEMENTS = 1 << 62  # a single chunk: the whole (B, n, m) distance matrix
        try:
            return _knn(call_backend, inputs)
        finally:
            graph._CHUNK_ELEMENTS = saved

    return fn


def _knn(backend: str, inputs: dict) -> torch.Tensor:
    return knn_graph(
        inputs["x"],
        inputs["k"],
        inputs["batch"],
        y=inputs.get("y"),
        batch_y=inputs.get("batch_y"),
        dilation=inputs["dilation"],
        bias=inputs.get("bias"),
        backend=backend,
    )


def _plain(edge_index: torch.Tensor) -> torch.Tensor:
    # knn_graph may return a torch_geometric EdgeIndex subclass; compare plain tensors
    return edge_index.as_subclass(torch.Tensor) if type(edge_index) is not torch.Tensor else (
        edge_index
    )


def agreement(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Fraction of edges (columns) of ``out`` equal to those of ``ref`` (0 for other shapes)."""
    out, ref = _plain(out), _plain(ref)
    if out.shape != ref.shape:
        return 0.0
    return (out == ref).all(0).double().mean().item()


def measure_point(
    p: Point, backends: list[str], inputs: dict, opts: argparse.Namespace, history: dict
) -> dict[str, dict]:
    """Peak memory, median time and agreement with the reference of every backend at a point.

    Each backend's first call measures its memory, keeps its edges for the comparison and
    serves as its warm-up. A backend whose first call is slower than ``opts.slow_s`` keeps that
    time as its measurement (runs=1); the others are then timed together in interleaved rounds
    (see ``common.time_interleaved``).
    """
    rows: dict[str, dict] = {}
    fast: dict[str, Callable[[], torch.Tensor]] = {}
    edges: dict[str, torch.Tensor] = {}
    for backend in backends:
        row = dict(
            asdict(p),
            m=p.m,
            backend=backend,
            median_ms=float("nan"),
            min_ms=float("nan"),
            runs=0,
            peak_mem_mb=float("nan"),
            mem_method="",
            agree=float("nan"),
            status="ok",
        )
        rows[backend] = row
        why = supports(backend, p)
        # Skip a slow sparse backend whose batch-1 run already predicts more than the budget.
        ref = history.get((backend, p.n, p.m, p.C, p.k, p.d, p.bias))
        sparse = backend in SPARSE
        if why is None and sparse and ref is not None and ref * p.B > 1e3 * opts.max_call_s:
            why = f"skipped (est. {ref * p.B / 1e3:.0f} s per call)"
        if why:
            row["status"] = why
            continue
        fn = _caller(backend, inputs)

        def first_call(fn: Callable[[], torch.Tensor] = fn, backend: str = backend) -> None:
            edges[backend] = fn()

        try:
            t0 = time.perf_counter()
            row["peak_mem_mb"], row["mem_method"] = peak_memory_mb(first_call, opts.device)
            first = time.perf_counter() - t0
        except Exception as e:  # report it and carry on with the sweep
            row["status"] = f"error: {type(e).__name__}: {e}"[:120]
            continue
        if first > opts.slow_s:
            row.update(median_ms=1e3 * first, min_ms=1e3 * first, runs=1)
        else:
            fast[backend] = fn
    if fast:
        timings = time_interleaved(
            fast, warmup=0, repeat=opts.repeat, min_time=opts.min_time, max_time=opts.max_time,
            device=opts.device,
        )
        for backend, t in timings.items():
            rows[backend].update(median_ms=t["median_ms"], min_ms=t["min_ms"], runs=int(t["runs"]))
    ref = edges.get(REFERENCE, edges.get("dense"))
    for backend, out in edges.items():
        if ref is not None:
            rows[backend]["agree"] = agreement(out, ref)
    for backend, row in rows.items():
        if row["status"] == "ok":
            history.setdefault((backend, p.n, p.m, p.C, p.k, p.d, p.bias), row["median_ms"] / p.B)
    return rows


def summarise(rows: dict[str, dict]) -> dict:
    ok = {b: r for b, r in rows.items() if b in CONCRETE and r["status"] == "ok"}
    auto = rows.get("auto", {})
    if not ok or auto.get("status") != "ok":
        return dict(
            best_backend=None,
            auto_over_best=float("nan"),
            auto_within_10pct=None,
            auto_over_best_min=float("nan"),
        )
    best = min(ok, key=lambda b: ok[b]["median_ms"])
    ratio = auto["median_ms"] / ok[best]["median_ms"]
    best_min = min(r["min_ms"] for r in ok.values())
    return dict(
        best_backend=best,
        auto_over_best=ratio,
        auto_within_10pct=bool(ratio <= 1.10),
        auto_over_best_min=auto["min_ms"] / best_min,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sweep, about a minute")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", default=None,
                        help="CSV path (default: results/graph_construction[_cuda].csv)")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device: torch {torch.__version__} reports "
                 f"torch.cuda.is_available() = False (CUDA build: {torch.version.cuda})")
    suffix = "" if args.device.type == "cpu" else f"_{args.device.type}"
    args.out = args.out or os.path.join(RESULTS_DIR, f"graph_construction{suffix}.csv")
    args.repeat = args.repeat or (5 if args.quick else 10)
    args.min_time = 0.1 if args.quick else 0.3  # keep timing short calls until this much time
    args.max_time = 1.0 if args.quick else 3.0  # stop repeating slow calls after this much time
    args.slow_s = 1.0 if args.quick else 2.0  # a first call slower than this is measured once
    args.max_call_s = 3.0 if args.quick else 15.0  # skip sparse calls predicted slower than this

    torch.set_num_threads(args.threads)
    machine = machine_description(args.device)
    print(f"machine: {machine}")
    print(
        f"available backends: {available_backends()}; auto -> {graph.resolve_backend('auto')}",
        flush=True,
    )

    for b in CONCRETE:
        why = supports(b, Point("any", 1, 49, 8, 1))
        if why:
            print(f"  {b}: {why}")
    print(f"edges compared with the {REFERENCE!r} backend (column *_agree)", flush=True)

    gen = torch.Generator().manual_seed(0)
    # One untimed call first, so that one-off costs (thread pool, lazy imports) land nowhere.
    warm = make_inputs(Point("warm-up", 2, 196, 192, 9), gen, args.device)
    for b in available_backends():
        _knn(b, warm)
    t_start = time.perf_counter()
    all_rows: list[dict] = []
    summary: list[dict] = []
    history: dict = {}
    for p in sweep(args.quick):
        inputs = make_inputs(p, gen, args.device)
        backends = [*CONCRETE, "auto"]
        if p.section == "full":
            backends.insert(backends.index("dense") + 1, "dense-unchunked")
        rows = measure_point(p, backends, inputs, args, history)
        s = summarise(rows)
        for b, r in rows.items():
            r["load_avg_1m"] = round(os.getloadavg()[0], 2)
            all_rows.append(dict(r, **(s if b == "auto" else {})))
        line = dict(section=p.section, B=p.B, n=p.n, m=p.m, C=p.C, k=p.k, d=p.d, bias=p.bias)
        for b, r in rows.items():
            line[f"{b}_ms"] = r["median_ms"] if r["status"] == "ok" else r["status"].split()[0]
        for b, r in rows.items():
            if r["status"] == "ok" and b not in SPARSE:
                line[f"{b}_MB"] = r["peak_mem_mb"]
        for b, r in rows.items():
            if r["status"] == "ok" and b != REFERENCE:
                line[f"{b}_agree"] = r["agree"]
        line.update(
            best=s["best_backend"], auto_x=s["auto_over_best"], auto_ok=s["auto_within_10pct"]
        )
        summary.append(line)
        print(
            f"[{time.perf_counter() - t_start:6.1f}s] {p.section:8s} B={p.B:<2d} "
            f"{p.n}x{p.m} C={p.C} k={p.k} d={p.d} bias={p.bias}: "
            + ", ".join(
                f"{b} {r['median_ms']:.2f} ms"
                if r["status"] == "ok"
                else f"{b} {r['status'].split(' (')[0]}"
                for b, r in rows.items()
            ),
            flush=True,
        )

    print()
    columns: list[str] = []
    for line in summary:
        columns += [c for c in line if c not in columns]
    print_table(summary, columns)
    failing = [x for x in summary if x["auto_ok"] is False]
    print(
        f"\nauto within 10% of the fastest backend at {len(summary) - len(failing)}/"
        f"{len(summary)} points"
    )
    for x in failing:
        print(
            f"  not within 10%: {x['section']} B={x['B']} {x['n']}x{x['m']} C={x['C']} "
            f"k={x['k']} d={x['d']} bias={x['bias']}: best {x['best']}, auto x{x['auto_x']:.2f}"
        )
    print(f"total {time.perf_counter() - t_start:.0f} s")

    for r in all_rows:
        r["machine"] = machine
        r["threads"] = args.threads
        r["device"] = args.device.type
    out = args.out if not args.quick else args.out.replace(".csv", "_quick.csv")
    print(f"wrote {write_csv(out, all_rows)}")
    plot_path = out.replace(".csv", ".png")
    load_lo = min(r["load_avg_1m"] for r in all_rows)
    load_hi = max(r["load_avg_1m"] for r in all_rows)
    panels = []
    for metric, label in (
        ("median_ms", "median time per call (ms)"),
        ("peak_mem_mb", "extra peak memory (MiB)"),
    ):
        series = {}
        markers = ["ob", "dc", "sg", "^m", "vy", "<k"]
        for B, fmt in ((1, "--"), (16, "-")):
            for i, b in enumerate([*CONCRETE, "auto"]):
                marker = "xr" if b == "auto" else markers[i % len(markers)]
                pts = sorted(
                    (r["n"], r[metric])
                    for r in all_rows
                    if r["section"] == "N"
                    and r["B"] == B
                    and r["backend"] == b
                    and r["status"] == "ok"
                )
                if pts:
                    series[f"{b} (B={B})"] = (
                        [q[0] for q in pts],
                        [q[1] for q in pts],
                        marker + fmt,
                    )
        panels.append((f"k-NN graph, C=192, k=9, no bias: {metric}", label, series))
    loglog_plot(
        plot_path,
        panels,
        xlabel="nodes per graph N (keys = queries)",
        title="pyg_vig.nn.knn_graph backends",
        note=f"{machine}; 1-min load average during the run: {load_lo:.1f}-{load_hi:.1f}",
    )
    print(f"wrote {plot_path}")


if __name__ == "__main__":
    main()
