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

Next to our backends it times what a PyG user would compare against, on the same inputs and
for the same graph (PyG's defaults: raw Euclidean distances, no self-loops):
``torch_cluster.knn_graph`` (``torch_cluster.knn`` for pooled keys), a plain ``torch.cdist`` +
``topk``, and ``torch_geometric.nn.knn_graph`` / ``knn`` where its backend is installed.
They run at points without a bias term; the tree-based ones only at dilation 1.

For every point the script reports the median time and the extra peak memory of each backend
(see ``benchmarks/common.py`` for what the memory number measures), the fastest concrete
backend, whether ``auto`` is within 10% of it, and for every backend the fraction of its edges
equal to those of the reference backend (``torch`` when it exists, else ``dense``): exact
selections give 1.0 (our backends: the same edges in the same order; the others: the same
edge set).

Timing: all candidates of a point run in interleaved rounds until, for each of them, the
spread ``(max - min) / median`` of its last ``--window`` times is at most ``--max-spread``, or
``--max-rounds`` rounds pass (``common.time_until_stable``); the table prints the largest
spread of the point and whether it settled. Before and after each point the script reads the
1-minute load average and ``/proc/stat``: ``busy_other`` is the share of the machine's CPU
capacity that *other* processes used meanwhile, and ``busy`` flags points above
``--busy-threshold``. Do not quote numbers from busy points.

    python benchmarks/graph_construction.py           # full run (a few minutes on 2 cores)
    python benchmarks/graph_construction.py --quick   # about a minute, smaller sweep
    python benchmarks/graph_construction.py --device cuda   # writes *_cuda.csv / .png
    python benchmarks/graph_construction.py --tiny    # seconds: checks that the script works
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
    time_until_stable,
    write_csv,
)
from harness import busy_fraction, read_cpu  # noqa: E402

import pyg_vig.nn.knn as graph  # noqa: E402
from pyg_vig.nn.graph import LowRankBias, available_backends, knn_graph  # noqa: E402
from pyg_vig.nn.pos_embed import (  # noqa: E402
    relative_position_bias,
    relative_position_factors,
)

CONCRETE = tuple(b for b in graph.BACKENDS if b != "auto")
REFERENCE = "torch" if "torch" in CONCRETE else "dense"  # the edges every backend is compared to
SPARSE = ("cluster", "pyg")  # KD-tree / pyg-lib: no dense bias table, slow at large batches
# What a PyG user compares against (not our code): same graph, their own functions.
COMPETITORS = ("torch_cluster.knn_graph", "cdist+topk", "pyg.knn_graph")
TREE_COMPETITORS = ("torch_cluster.knn_graph", "pyg.knn_graph")  # slow at large batches


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


def sweep(quick: bool, tiny: bool = False) -> list[Point]:
    pts: list[Point] = []
    if tiny:  # checks that every part of the script runs; the numbers mean nothing
        return [Point("N", 1, 49, 16, 4), Point("N", 2, 49, 16, 4),
                Point("pvig", 2, 64, 16, 4, r=2, bias="table"),
                Point("dilation", 2, 49, 16, 4, d=2)]
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


def edge_set_agreement(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Fraction of the edges of ``ref`` that ``out`` also has, in any order (0 when ``ref`` is
    empty and ``out`` is not); for functions that return the same graph in another order.
    """
    out, ref = _plain(out), _plain(ref)
    if ref.size(1) == 0:
        return 1.0 if out.size(1) == 0 else 0.0
    n = int(max(out.max(), ref.max())) + 1 if out.numel() else int(ref.max()) + 1
    key_out = out[1] * n + out[0]  # (target, source) pairs as one integer
    key_ref = ref[1] * n + ref[0]
    return torch.isin(key_ref, key_out).double().mean().item()


def _pyg_knn_missing() -> str | None:
    """Why ``torch_geometric.nn.knn_graph`` cannot run here (None when it can)."""
    try:
        from torch_geometric.nn import knn_graph as pyg_knn_graph

        pyg_knn_graph(torch.zeros(2, 1), 1)
    except Exception as e:  # ImportError without torch-cluster / pyg-lib
        return f"{type(e).__name__}: {e}".splitlines()[0][:80]
    return None


def competitor_supports(name: str, p: Point) -> str | None:
    """Why competitor ``name`` does not run ``p`` (None when it does)."""
    if p.bias != "none":
        return "unsupported (no bias term)"
    if name == "cdist+topk":
        return None
    if p.d != 1:  # neighbours come back in no guaranteed distance order: no [::d]
        return "unsupported (dilation)"
    if name == "torch_cluster.knn_graph":
        try:
            import torch_cluster  # noqa: F401
        except ImportError as e:
            return f"unavailable ({e})"
        return None
    why = _pyg_knn_missing()
    return f"unavailable ({why})" if why else None


def _competitor_caller(name: str, p: Point, inputs: dict) -> Callable[[], torch.Tensor]:
    x, k, batch = inputs["x"], inputs["k"], inputs["batch"]
    y, batch_y = inputs.get("y"), inputs.get("batch_y")
    if name == "cdist+topk":
        def cdist_topk() -> torch.Tensor:
            q = x.view(p.B, p.n, -1)  # (B*n, C) -> (B, n, C): equally sized graphs
            keys = q if y is None else y.view(p.B, p.m, -1)
            dist = torch.cdist(q, keys)  # (B, n, m)
            if y is None:  # no self-loops, as PyG's default
                dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
            idx = dist.topk(k * p.d, dim=-1, largest=False).indices[..., :: p.d]  # (B, n, k)
            src = idx + torch.arange(p.B, device=x.device).view(p.B, 1, 1) * p.m
            dst = torch.arange(p.B * p.n, device=x.device).view(p.B, p.n, 1).expand_as(src)
            return torch.stack([src.reshape(-1), dst.reshape(-1)])

        return cdist_topk
    if name == "torch_cluster.knn_graph":
        import torch_cluster

        if y is None:
            return lambda: torch_cluster.knn_graph(x, k, batch, loop=False)
        # knn(x=keys, y=queries) -> [query, key] pairs; edges go key -> query
        return lambda: torch_cluster.knn(y, x, k, batch_y, batch).flip(0)
    from torch_geometric.nn import knn as pyg_knn
    from torch_geometric.nn import knn_graph as pyg_knn_graph

    if y is None:
        return lambda: pyg_knn_graph(x, k, batch, loop=False)
    return lambda: pyg_knn(y, x, k, batch_y, batch).flip(0)


@dataclass(frozen=True)
class LoadSample:
    """Machine load at one moment: 1-min load average, ``/proc/stat`` and our own CPU time."""

    load_1m: float
    cpu: object  # harness.CpuSample or None
    own_cpu_s: float


def load_sample() -> LoadSample:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return LoadSample(load, read_cpu(), time.process_time())


def machine_load(before: LoadSample, after: LoadSample, threshold: float) -> dict:
    """Load columns of one point: load average before and after, the share of CPU capacity
    used by other processes in between (our process's CPU time subtracted) and ``busy``.
    """
    other = float("nan")
    if before.cpu is not None and after.cpu is not None:
        other = busy_fraction(before.cpu, after.cpu, after.own_cpu_s - before.own_cpu_s)
    return dict(load_before=round(before.load_1m, 2), load_after=round(after.load_1m, 2),
                busy_other=round(other, 3), busy=bool(other > threshold))


def measure_point(
    p: Point, backends: list[str], inputs: dict, opts: argparse.Namespace, history: dict
) -> dict[str, dict]:
    """Peak memory, median time and agreement with the reference of every backend (ours and
    the competitors in ``COMPETITORS``) at a point.

    Each backend's first call measures its memory, keeps its edges for the comparison and
    serves as its warm-up. A backend whose first call is slower than ``opts.slow_s`` keeps that
    time as its measurement (runs=1); the others are then timed together in interleaved rounds
    until their spread settles (see ``common.time_until_stable``).
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
            spread=float("nan"),
            stable=None,
            peak_mem_mb=float("nan"),
            mem_method="",
            agree=float("nan"),
            status="ok",
        )
        rows[backend] = row
        competitor = backend in COMPETITORS
        why = competitor_supports(backend, p) if competitor else supports(backend, p)
        # Skip a slow sparse backend whose batch-1 run already predicts more than the budget.
        ref = history.get((backend, p.n, p.m, p.C, p.k, p.d, p.bias))
        sparse = backend in SPARSE or backend in TREE_COMPETITORS
        if why is None and sparse and ref is not None and ref * p.B > 1e3 * opts.max_call_s:
            why = f"skipped (est. {ref * p.B / 1e3:.0f} s per call)"
        if why:
            row["status"] = why
            continue
        fn = _competitor_caller(backend, p, inputs) if competitor else _caller(backend, inputs)

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
        timings = time_until_stable(
            fast, window=opts.window, max_spread=opts.max_spread, max_rounds=opts.max_rounds,
            max_time=opts.max_time, device=opts.device,
        )
        for backend, t in timings.items():
            rows[backend].update(median_ms=t["median_ms"], min_ms=t["min_ms"], runs=int(t["runs"]),
                                 spread=t["spread"], stable=bool(t["stable"]))
    ref = edges.get(REFERENCE, edges.get("dense"))
    for backend, out in edges.items():
        if ref is not None:
            same = edge_set_agreement if backend in COMPETITORS else agreement
            rows[backend]["agree"] = same(out, ref)
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
            auto_over_competitor=float("nan"),
        )
    best = min(ok, key=lambda b: ok[b]["median_ms"])
    ratio = auto["median_ms"] / ok[best]["median_ms"]
    best_min = min(r["min_ms"] for r in ok.values())
    theirs = [r["median_ms"] for b, r in rows.items() if b in COMPETITORS and r["status"] == "ok"]
    return dict(
        best_backend=best,
        auto_over_best=ratio,
        auto_within_10pct=bool(ratio <= 1.10),
        auto_over_best_min=auto["min_ms"] / best_min,
        auto_over_competitor=auto["median_ms"] / min(theirs) if theirs else float("nan"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sweep, about a minute")
    parser.add_argument("--tiny", action="store_true",
                        help="four tiny points in seconds, to check that the script works")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=5,
                        help="timings whose spread must settle (default: 5)")
    parser.add_argument("--max-spread", type=float, default=0.10,
                        help="settled when (max - min) / median of the window is at most this")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="cap on interleaved rounds per point (default: 40, quick 15)")
    parser.add_argument("--busy-threshold", type=float, default=0.10,
                        help="flag a point busy when other processes used more than this share "
                             "of the CPU capacity meanwhile (default: 0.10)")
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
    short = args.quick or args.tiny
    args.max_rounds = args.max_rounds or (15 if short else 40)
    args.max_time = 2.0 if short else 6.0  # stop repeating slow calls after this much time
    args.slow_s = 1.0 if short else 2.0  # a first call slower than this is measured once
    args.max_call_s = 3.0 if short else 15.0  # skip sparse calls predicted slower than this

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
    for b in COMPETITORS:
        why = competitor_supports(b, Point("any", 1, 49, 8, 1))
        if why:
            print(f"  {b} (what a PyG user compares against): {why}")
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
    for p in sweep(args.quick, args.tiny):
        inputs = make_inputs(p, gen, args.device)
        backends = [*CONCRETE, "auto", *COMPETITORS]
        if p.section == "full":
            backends.insert(backends.index("dense") + 1, "dense-unchunked")
        before = load_sample()
        rows = measure_point(p, backends, inputs, args, history)
        load = machine_load(before, load_sample(), args.busy_threshold)
        s = summarise(rows)
        for b, r in rows.items():
            r.update(load)
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
            best=s["best_backend"], auto_x=s["auto_over_best"], auto_ok=s["auto_within_10pct"],
            auto_vs_pyg=s["auto_over_competitor"],
            spread=max((r["spread"] for r in rows.values() if r["spread"] == r["spread"]),
                       default=float("nan")),
            settled=all(r["stable"] is not False for r in rows.values()),
            busy_other=load["busy_other"], busy=load["busy"],
            load=f"{load['load_before']:.1f}->{load['load_after']:.1f}",
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
            )
            + f"; spread {line['spread']:.2f}{'' if line['settled'] else ' (not settled)'}"
            + (f"; BUSY: others used {load['busy_other']:.0%} of the CPU" if load["busy"] else ""),
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
    busy = [x for x in summary if x["busy"]]
    unsettled = [x for x in summary if not x["settled"]]
    print(f"machine busy (others > {args.busy_threshold:.0%} of the CPU) at {len(busy)}/"
          f"{len(summary)} points; spread above {args.max_spread:.0%} after "
          f"{args.max_rounds} rounds at {len(unsettled)}/{len(summary)} points"
          + (": do not quote the busy points" if busy else ""))
    print(f"total {time.perf_counter() - t_start:.0f} s")

    for r in all_rows:
        r["machine"] = machine
        r["threads"] = args.threads
        r["device"] = args.device.type
    out = args.out
    if args.tiny or args.quick:
        out = out.replace(".csv", "_tiny.csv" if args.tiny else "_quick.csv")
    print(f"wrote {write_csv(out, all_rows)}")
    plot_path = out.replace(".csv", ".png")
    load_lo = min(min(r["load_before"], r["load_after"]) for r in all_rows)
    load_hi = max(max(r["load_before"], r["load_after"]) for r in all_rows)
    n_busy = len({(r["section"], r["B"], r["n"], r["C"], r["k"], r["d"], r["r"], r["bias"])
                  for r in all_rows if r["busy"]})
    panels = []
    for metric, label in (
        ("median_ms", "median time per call (ms)"),
        ("peak_mem_mb", "extra peak memory (MiB)"),
    ):
        series = {}
        markers = ["ob", "dc", "sg", "^m", "vy", "<k", ">g", "pc", "hm"]
        sizes = sorted({r["B"] for r in all_rows if r["section"] == "N"})
        for B in sizes:
            fmt = "-" if B == sizes[-1] else "--"
            for i, b in enumerate([*CONCRETE, "auto", *COMPETITORS]):
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
        panels.append((f"k-NN graph, no bias: {metric}", label, series))
    loglog_plot(
        plot_path,
        panels,
        xlabel="nodes per graph N (keys = queries)",
        title="pyg_vig.nn.knn_graph backends and what a PyG user compares against",
        note=f"{machine}; 1-min load average during the run: {load_lo:.1f}-{load_hi:.1f}; "
             f"busy points: {n_busy}",
    )
    print(f"wrote {plot_path}")


if __name__ == "__main__":
    main()
