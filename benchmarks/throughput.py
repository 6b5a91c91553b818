"""Model throughput (img/s) and peak memory, eval and train, for pyg_vig and the official code.

Paths compared for each model (rows of the table):

* ``default``  - pyg_vig as shipped: node-major GEMMs, k-regular reshape aggregation, the
                 max-relative identity, BatchNorm folded on the fly in eval.
* ``scatter``  - the same model through PyG's generic scatter aggregation (``propagate``).
* ``dense_ref``- ``official_numerics()``: the official compute order (channel-first 1x1 convs on
                 ``(B, C, N, k)`` tensors), i.e. a dense reference inside our code.
* ``compile``  - ``torch.compile(model)`` (inductor), default path.
* ``bf16``     - default path under ``torch.autocast(dtype=torch.bfloat16)``.
* ``official`` - the original code (huawei-noah/Efficient-AI-Backbones), when its source is found
                 (``$OFFICIAL_SRC`` or ``~/.cache/official-vig/vig_pytorch``; see official.py).

    python benchmarks/throughput.py                       # vig_ti + pvig_ti, all paths
    python benchmarks/throughput.py --models vig_ti --paths default official --batch 16
    python benchmarks/throughput.py --all-models --paths default --steps 3   # every model

Writes ``results/throughput.csv`` and ``results/throughput.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import pyg_vig  # noqa: E402
from pyg_vig.nn import official_numerics  # noqa: E402
from pyg_vig.nn.conv._utils import set_fast_path  # noqa: E402

PATHS = ["official", "default", "scatter", "dense_ref", "compile", "bf16"]
OFFICIAL_NAMES = {
    n: f"{n}_224_gelu"
    for n in ["vig_ti", "vig_s", "vig_b", "pvig_ti", "pvig_s", "pvig_m", "pvig_b"]
}


class _Wrapped(torch.nn.Module):
    """Runs ``model`` inside a context (numerics mode, autocast, scatter-only path)."""

    def __init__(self, model, ctx_factory):
        super().__init__()
        self.model, self.ctx_factory = model, ctx_factory
        self.num_classes = getattr(model, "num_classes", 1000)

    def forward(self, x):
        with self.ctx_factory():
            return self.model(x)


@contextlib.contextmanager
def _scatter_only():
    prev = set_fast_path(False)
    try:
        yield
    finally:
        set_fast_path(prev)


def build(name: str, path: str, device: torch.device):
    if path == "official":
        import official

        return official.build_official(OFFICIAL_NAMES[name]).to(device)
    model = pyg_vig.create_model(name).to(device)
    if path == "default":
        return model
    if path == "scatter":
        return _Wrapped(model, _scatter_only)
    if path == "dense_ref":
        return _Wrapped(model, official_numerics)
    if path == "bf16":
        return _Wrapped(model, lambda: torch.autocast(device.type, dtype=torch.bfloat16))
    if path == "compile":
        return torch.compile(model)
    raise ValueError(f"unknown path {path!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["vig_ti", "pvig_ti"])
    ap.add_argument("--all-models", action="store_true")
    ap.add_argument("--paths", nargs="*", default=PATHS, choices=PATHS)
    ap.add_argument("--modes", nargs="*", default=["eval", "train"], choices=["eval", "train"])
    ap.add_argument(
        "--batch",
        type=int,
        nargs="*",
        default=None,
        help="batch sizes (default: 16 for eval, 8 for train)",
    )
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile-train", action="store_true", help="also time compiled training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "throughput"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = list(OFFICIAL_NAMES) if args.all_models else args.models
    paths = list(args.paths)
    if "official" in paths:
        try:
            import official

            official.official_source()
        except Exception as e:  # the official source is optional
            print(f"[official path skipped: {e}]")
            paths.remove("official")
    print(f"# {common.machine_description(device)}, {args.threads} threads, {args.size}px")
    rows = []
    for name in models:
        for mode in args.modes:
            batches = args.batch or ([16] if mode == "eval" else [8])
            for B in batches:
                chans = pyg_vig.models.default_cfgs[name]["input_size"][0]
                x = torch.randn(B, chans, args.size, args.size, device=device)
                for path in paths:
                    if path == "dense_ref" and mode == "train":
                        continue  # official numerics is an inference aid
                    if path == "compile" and mode == "train" and not args.compile_train:
                        continue  # inductor's backward compile takes minutes on 2 cores
                    model = build(name, path, device)
                    try:
                        r = common.time_model(
                            model,
                            x,
                            mode,
                            steps=args.steps,
                            warmup=args.warmup + (2 if path == "compile" else 0),
                        )
                    except Exception as e:  # keep the sweep going; report the failure
                        r = dict(
                            img_s=float("nan"),
                            step_ms=float("nan"),
                            peak_mem_mb=float("nan"),
                            mem_method=f"error: {e}"[:60],
                        )
                    row = dict(model=name, mode=mode, batch=B, path=path, **r)
                    rows.append(row)
                    print(
                        common.print_table([row])
                        if len(rows) == 1
                        else "  ".join(common._fmt(row[c]) for c in row),
                        flush=True,
                    )
                    del model
                    gc.collect()
    # speed-up against the official code, same model / mode / batch
    base = {
        (r["model"], r["mode"], r["batch"]): r["img_s"] for r in rows if r["path"] == "official"
    }
    for r in rows:
        b = base.get((r["model"], r["mode"], r["batch"]))
        r["vs_official"] = r["img_s"] / b if b else float("nan")
    print()
    common.print_table(
        rows,
        [
            "model",
            "mode",
            "batch",
            "path",
            "img_s",
            "vs_official",
            "step_ms",
            "peak_mem_mb",
            "mem_method",
        ],
    )
    common.write_csv(args.out + ".csv", rows)
    _plot(rows, args.out + ".png", common.machine_description(device))


def _plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["mode"], r["batch"]) for r in rows})
    paths = [p for p in PATHS if any(r["path"] == p for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.8 / max(1, len(paths))
    for i, p in enumerate(paths):
        vals = [
            next(
                (
                    r["img_s"]
                    for r in rows
                    if (r["model"], r["mode"], r["batch"]) == g and r["path"] == p
                ),
                0,
            )
            for g in groups
        ]
        ax.bar([j + i * width for j in range(len(groups))], vals, width, label=p)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{mo} b{b}" for m, mo, b in groups])
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
