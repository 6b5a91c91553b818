"""Throughput, peak memory and an operator profile of the official ViG code (the baseline).

Needs the official source (see ``benchmarks/official.py``); nothing of it is committed here.

    python benchmarks/official_baseline.py            # vig_ti + pvig_ti, eval b16 / train b8
    python benchmarks/official_baseline.py --quick    # fewer steps, smaller batches
    python benchmarks/official_baseline.py --models pvig_s_224_gelu --no-profile

Writes ``results/official_baseline.csv`` and ``results/official_profile.txt`` (top operators of
the pvig_ti eval forward by self CPU time, which says where the official code spends its time).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    RESULTS_DIR,
    machine_description,
    print_table,
    time_model,
    write_csv,
)
from official import build_official  # noqa: E402


def profile_eval(model: torch.nn.Module, batch: torch.Tensor, steps: int, top: int) -> str:
    model.eval()
    with torch.inference_mode():
        for _ in range(2):
            model(batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                model(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["vig_ti_224_gelu", "pvig_ti_224_gelu"])
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-model", default="pvig_ti_224_gelu")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 warm-up, batches 4/2")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "official_baseline.csv"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.eval_batch, args.train_batch = 3, 1, 4, 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = machine_description()
    print(f"machine: {machine}")
    rows = []
    for name in args.models:
        for mode, bs in (("eval", args.eval_batch), ("train", args.train_batch)):
            model = build_official(name)
            batch = torch.randn(bs, 3, args.img_size, args.img_size)
            res = time_model(model, batch, mode=mode, steps=args.steps, warmup=args.warmup)
            rows.append(
                dict(
                    model=name,
                    impl="official",
                    mode=mode,
                    batch=bs,
                    img_size=args.img_size,
                    threads=args.threads,
                    **res,
                    load_avg_1m=os.getloadavg()[0],
                    machine=machine,
                )
            )
            del model
    print_table(
        rows,
        ["model", "mode", "batch", "img_s", "step_ms", "peak_mem_mb", "params_m", "load_avg_1m"],
    )
    print(f"wrote {write_csv(args.out, rows)}")

    if args.no_profile:
        return
    model = build_official(args.profile_model)
    batch = torch.randn(args.eval_batch, 3, args.img_size, args.img_size)
    table = profile_eval(model, batch, steps=2 if args.quick else 3, top=15)
    header = (
        f"torch.profiler, official {args.profile_model} eval forward, batch {args.eval_batch}, "
        f"{args.img_size}x{args.img_size}, {args.threads} threads, inference_mode, sorted by "
        f"self CPU time (top 15)\nmachine: {machine}\n\n"
    )
    path = os.path.join(os.path.dirname(args.out), "official_profile.txt")
    with open(path, "w") as f:
        f.write(header + table + "\n")
    print(header + table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
