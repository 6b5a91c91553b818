"""Cost versus image size: eval time, peak memory and the k-NN's share of the time.

    python benchmarks/scaling.py                          # pvig_ti at 224, 448, 896
    python benchmarks/scaling.py --models pvig_ti vig_ti --sizes 224 320 448 --batch 1

For every size it reports the forward time of one batch, the extra peak memory of that forward,
and the time spent inside graph construction (``knn_index``, measured by wrapping it), so one can
read off where the O(N^2) k-NN starts to dominate. Writes ``results/scaling.csv`` and
``results/scaling.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import pyg_vig  # noqa: E402
import pyg_vig.nn.knn as graph  # noqa: E402


class _KnnTimer:
    """Accumulates wall time spent in ``knn_index`` (patched in pyg_vig.nn.graph)."""

    def __init__(self):
        self.seconds = 0.0
        self._orig = graph.knn_index

    def __enter__(self):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = self._orig(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            return out

        graph.knn_index = timed
        return self

    def __exit__(self, *exc):
        graph.knn_index = self._orig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["pvig_ti"])
    ap.add_argument("--sizes", type=int, nargs="*", default=[224, 448, 896])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--relative-pos", default=None, choices=[None, "official", "geometric"],
                    help="override the relative-position mode of pyramid models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "scaling"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {common.machine_description(device)}, {args.threads} threads, batch {args.batch}, "
          f"k-NN chunk {graph._CHUNK_ELEMENTS} elements")
    rows = []
    for name in args.models:
        kw = {}
        if args.relative_pos and name.startswith("pvig"):
            kw["relative_pos"] = args.relative_pos
        model = pyg_vig.create_model(name, **kw).to(device).eval()
        for size in args.sizes:
            x = torch.randn(args.batch, 3, size, size, device=device)
            with torch.inference_mode():
                model(x)  # warm-up; builds and caches the relative-position tables
                with _KnnTimer() as kt:
                    t0 = time.perf_counter()
                    model(x)
                    common.sync(device)
                    total = time.perf_counter() - t0

                def run(model=model, x=x):
                    with torch.inference_mode():
                        model(x)

                mem, method = common.peak_memory_mb(run, device)
            nodes0 = (size // model.stem_stride) ** 2
            row = dict(model=name, size=size, batch=args.batch, stage0_nodes=nodes0,
                       time_s=total, knn_s=kt.seconds, knn_share=kt.seconds / total,
                       img_s=args.batch / total, peak_mem_mb=mem, mem_method=method)
            rows.append(row)
            print("  ".join(f"{k}={common._fmt(v)}" for k, v in row.items()), flush=True)
    print()
    common.print_table(rows)
    common.write_csv(args.out + ".csv", rows)
    _plot(rows, args.out + ".png", common.machine_description(device))


def _plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in sorted({r["model"] for r in rows}):
        rs = [r for r in rows if r["model"] == name]
        sizes = [r["size"] for r in rs]
        a1.plot(sizes, [r["time_s"] for r in rs], "o-", label=f"{name} total")
        a1.plot(sizes, [r["knn_s"] for r in rs], "s--", label=f"{name} k-NN")
        a2.plot(sizes, [r["peak_mem_mb"] for r in rs], "o-", label=name)
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (px)")
        ax.legend(fontsize=8)
    a1.set_ylabel("forward time (s)")
    a2.set_ylabel("extra peak memory (MiB)")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
