"""Detection-size cost: backbone + FPN forward and a RetinaNet train step at 800x1333.

    python benchmarks/detection.py                          # CPU, 2 threads, 2 rounds
    python benchmarks/detection.py --device cuda --batch 2 --rounds 3
    python benchmarks/detection.py --size 320 480 --rounds 1 --steps 1    # a quick check

Engines, each timed in a process of its own, in rounds whose order rotates (benchmarks/harness.py):

* ``pvig_s``: ``pyg_vig.detection.vig_fpn_backbone("pvig_s")`` / ``retinanet_pvig_fpn("pvig_s")``;
* ``resnet50_fpn``: torchvision's ``resnet_fpn_backbone("resnet50")`` / ``retinanet_resnet50_fpn``
  (the paper's baseline row of Table 10);
* ``official_pvig_s``: the official ``pvig_s_224_gelu`` (benchmarks/official.py fetches nothing: see
  its docstring for where the code must be) with its stage outputs fed to the same torchvision FPN
  and RetinaNet head as ours. Its absolute position embedding is resized bicubically to the grid
  (the official code adds a fixed 56x56 one); its Graphers resample ``relative_pos`` to any size
  themselves, which needs every stage's grid divisible by its reduction ratio, so backbone-only
  inputs are padded to a multiple of 32, as torchvision's detectors pad their batches.

Modes: ``forward`` (backbone + FPN, eval, no grad, on ``(B, 3, H, W)`` padded to a multiple of 32)
and ``train`` (the whole detector in train mode: transform, backbone, FPN, heads, losses, backward
and an AdamW step, on ``B`` images of ``H x W`` with three random boxes each). Every row reports
img/s, the extra peak memory of one call (RSS high-water mark on CPU, ``max_memory_allocated`` on
CUDA) and the share of the time spent in k-NN graph construction (``pyg_vig.nn.knn.knn_index``
for ours, the official ``DenseDilatedKnnGraph`` modules for the official code). Writes
``results/detection[_cuda].csv`` (medians over the rounds), ``..._rounds.csv`` and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402

ENGINES = ("pvig_s", "resnet50_fpn", "official_pvig_s")
MODES = ("forward", "train")


# ------------------------------------------------------------------------------ the official body
class OfficialBody(nn.Module):
    """The official pyramid ViG up to its last stage, returning the maps of stages 1-3."""

    def __init__(self, model: nn.Module, returned_stages=(1, 2, 3)):
        super().__init__()
        self.stem, self.pos_embed, self.blocks = model.stem, model.pos_embed, model.backbone
        self.returned_stages = tuple(returned_stages)
        # a stage ends where the next Downsample begins (and at the last block)
        kinds = [type(b).__name__ for b in self.blocks]
        starts = [i for i, k in enumerate(kinds) if k == "Downsample"]
        self.stage_ends = [s - 1 for s in starts] + [len(kinds) - 1]

    def forward(self, x):
        x = self.stem(x)
        pos = self.pos_embed
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = x + pos
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends and self.stage_ends.index(i) in self.returned_stages:
                out.append(x)
        return out


class OfficialWithFPN(nn.Module):
    """torchvision's ``BackboneWithFPN`` contract over :class:`OfficialBody`."""

    def __init__(self, body: OfficialBody, in_channels, out_channels=256):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelP6P7,
        )

        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=LastLevelP6P7(in_channels[-1],
                                                                        out_channels))
        self.out_channels = out_channels

    def forward(self, x):
        from collections import OrderedDict

        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def _official_backbone():
    import official

    model = official.build_official("pvig_s_224_gelu")
    body = OfficialBody(model)
    with torch.no_grad():
        channels = [m.shape[1] for m in body(torch.zeros(1, 3, 224, 224))]
    return OfficialWithFPN(body, channels)


def _same_head_as_ours(backbone):
    """RetinaNet over ``backbone``, anchors and normalisation as ``retinanet_pvig_fpn``."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    strides = (8, 16, 32, 64, 128)
    sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, 91, anchor_generator=anchors,
                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def build(engine: str, mode: str, min_size: int, max_size: int) -> nn.Module:
    """The module an engine runs in ``mode``: a backbone + FPN, or a whole RetinaNet."""
    torch.manual_seed(0)
    if engine == "pvig_s":
        from pyg_vig.detection import retinanet_pvig_fpn, vig_fpn_backbone

        if mode == "forward":
            return vig_fpn_backbone("pvig_s", extra_blocks="p6p7")
        return retinanet_pvig_fpn("pvig_s", num_classes=91, min_size=min_size, max_size=max_size)
    if engine == "resnet50_fpn":
        from torchvision.models.detection import retinanet_resnet50_fpn
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        if mode == "forward":
            return resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                       returned_layers=[2, 3, 4], trainable_layers=5,
                                       extra_blocks=LastLevelP6P7(2048, 256))
        return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                      trainable_backbone_layers=5, min_size=min_size,
                                      max_size=max_size)
    if engine == "official_pvig_s":
        backbone = _official_backbone()
        if mode == "forward":
            return backbone
        det = _same_head_as_ours(backbone)
        det.transform.min_size, det.transform.max_size = (min_size,), max_size
        return det
    raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")


# ------------------------------------------------------------------------------ k-NN timing
class KnnClock:
    """Wall time inside graph construction: ``pyg_vig.nn.knn.knn_index`` and the official
    ``DenseDilatedKnnGraph`` modules of ``model``."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.seconds, self.device = 0.0, device
        import pyg_vig.nn.knn as knn

        self._knn, self._orig = knn, knn.knn_index
        knn.knn_index = self._timed(knn.knn_index)
        for m in model.modules():
            if type(m).__name__ == "DenseDilatedKnnGraph":
                m.forward = self._timed(m.forward)

    def _timed(self, fn):
        def run(*args, **kwargs):
            common.sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            common.sync(self.device)
            self.seconds += time.perf_counter() - t0
            return out

        return run


# ------------------------------------------------------------------------ one engine, one mode
def child(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    h, w = args.size
    model = build(args.engine, args.mode, min(h, w), max(h, w)).to(device)
    clock = KnnClock(model, device)
    g = torch.Generator().manual_seed(0)
    if args.mode == "forward":
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # as the detectors pad their batches
        x = torch.rand(args.batch, 3, ph, pw, generator=g).to(device)
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        images = [torch.rand(3, h, w, generator=g).to(device) for _ in range(args.batch)]
        targets = []
        for _ in range(args.batch):
            xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 32 + torch.rand(3, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
            targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                            "labels": torch.randint(1, 91, (3,), generator=g).to(device)})
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                weight_decay=0.05)

        def step():
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for _ in range(args.warmup):
        step()
    common.sync(device)
    peak_mb, method = common.peak_memory_mb(step, device)
    clock.seconds = 0.0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        common.sync(device)
        times.append(time.perf_counter() - t0)
    total = sum(times)
    med = statistics.median(times)
    return {"img_s": args.batch / med, "step_s": med, "peak_mb": peak_mb, "mem_method": method,
            "knn_share": clock.seconds / total if total else float("nan"),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "machine": common.machine_description(device)}


# ------------------------------------------------------------------------------ rounds
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed calls per process")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="output prefix (default: results/detection)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.engine:  # a child process: one engine, one mode, one JSON line
        print(json.dumps(child(args)))
        return 0
    suffix = "_cuda" if args.device.startswith("cuda") else ""
    out = args.out or os.path.join(HERE, "results", f"detection{suffix}")
    rows = []
    for mode in args.modes:
        for r in range(args.rounds):
            for pos, engine in enumerate(harness.rotated_order(args.engines, r)):
                cmd = [sys.executable, os.path.abspath(__file__), "--engine", engine, "--mode",
                       mode, "--size", *map(str, args.size), "--batch", str(args.batch),
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads), "--device", args.device]
                res, busy, err = harness.run_isolated(cmd, args.timeout)
                row = {"mode": mode, "round": r, "position": pos, "engine": engine,
                       "busy_other": round(busy, 3), "busy": busy > 0.10, "error": err,
                       **(res or {})}
                print(f"{mode:7s} round {r} {engine:16s} "
                      + (f"{res['img_s']:7.3f} img/s  peak {res['peak_mb']:8.0f} MiB  "
                         f"k-NN {res['knn_share']:.0%}" if res else f"FAILED: {err}")
                      + ("  (machine busy)" if row["busy"] else ""), flush=True)
                rows.append(row)
    common.write_csv(out + "_rounds.csv", rows)
    table = []
    for mode in args.modes:
        for engine in args.engines:
            ok = [r for r in rows if r["mode"] == mode and r["engine"] == engine and "img_s" in r]
            if not ok:
                table.append({"mode": mode, "engine": engine, "img_s": float("nan")})
                continue
            img_s = statistics.median(r["img_s"] for r in ok)
            row = {"mode": mode, "engine": engine, "img_s": img_s,
                   "min_img_s": min(r["img_s"] for r in ok),
                   "max_img_s": max(r["img_s"] for r in ok),
                   "peak_mb": statistics.median(r["peak_mb"] for r in ok),
                   "knn_share": statistics.median(r["knn_share"] for r in ok),
                   "params_m": ok[0]["params_m"], "n": len(ok),
                   "busy_rounds": sum(r["busy"] for r in ok),
                   "size": f"{args.size[0]}x{args.size[1]}", "batch": args.batch,
                   "machine": ok[0]["machine"]}
            table.append(row)
        ours = next((t for t in table if t["mode"] == mode and t["engine"] == "pvig_s"), None)
        for t in table:
            if t["mode"] == mode and ours and t["img_s"] == t["img_s"]:
                t["pvig_s_speedup"] = ours["img_s"] / t["img_s"]
    print(common.print_table(table, ["mode", "engine", "img_s", "min_img_s", "max_img_s",
                                     "peak_mb", "knn_share", "pvig_s_speedup", "busy_rounds"]))
    print(f"machine: {table[0].get('machine', '?')}")
    common.write_csv(out + ".csv", table)
    _plot(out + ".png", table, args)
    print(f"wrote {out}.csv, {out}_rounds.csv, {out}.png")
    return 0


def _plot(path, table, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    modes = list(dict.fromkeys(t["mode"] for t in table))
    engines = list(dict.fromkeys(t["engine"] for t in table))
    width = 0.8 / max(len(engines), 1)
    for ax, key, label in ((axes[0], "img_s", "images / s (higher is better)"),
                           (axes[1], "peak_mb", "extra peak memory, MiB (lower is better)")):
        for i, engine in enumerate(engines):
            vals = [next((t.get(key, float("nan")) for t in table
                          if t["mode"] == m and t["engine"] == engine), float("nan"))
                    for m in modes]
            ax.bar([j + i * width for j in range(len(modes))], vals, width, label=engine)
        ax.set_xticks([j + width * (len(engines) - 1) / 2 for j in range(len(modes))])
        ax.set_xticklabels([f"{m} (batch {args.batch})" for m in modes])
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    machine = next((t["machine"] for t in table if "machine" in t), "?")
    fig.suptitle(f"RetinaNet backbones at {args.size[0]}x{args.size[1]}: {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
