"""Model throughput (img/s) and peak memory, eval and train, for pyg_vig and the official code.

Paths compared for each model (rows of the table):

* ``official``      - the original code (huawei-noah/Efficient-AI-Backbones), eager, when its
                      source is found (``$OFFICIAL_SRC`` or ``~/.cache/official-vig/vig_pytorch``;
                      see official.py).
* ``official_ort``  - the official model as a CPU user deploys it: ``torch.onnx.export(model,
                      (x,), path, dynamo=True)`` (default opset) run by onnxruntime's CPU provider
                      with ``intra_op_num_threads`` = ``--threads``, ``ORT_ENABLE_ALL``. Eval only.
* ``official_bf16`` - the official model under ``torch.autocast(dtype=torch.bfloat16)``.
* ``default``       - pyg_vig as shipped (``create_model(name)``, fused message passing).
* ``ort``           - our model exported the same way (``pyg_vig.export.to_onnx`` once the
                      package has it) and run by onnxruntime like ``official_ort``. Eval only.
* ``scatter``       - ``create_model(name, fused=False)``: every conv through PyG's generic
                      ``propagate`` (message + scatter aggregation).
* ``dense_ref``     - ``pyg_vig.nn.to_official_numerics(model)``: the official float32 op order.
                      Eval only.
* ``compile``       - ``torch.compile(model)`` (inductor), default path. Training only with
                      ``--compile-train`` (inductor's backward compile takes minutes on 2 cores).
* ``bf16``          - default path under ``torch.autocast(dtype=torch.bfloat16)``.

All paths of one model share its weights (copies of one randomly initialised model; the
official paths copies of one official model). They are measured side by side in one process:
for each (model, mode, batch) every path is built, warmed up and its peak memory measured, then
the paths are timed in interleaved rounds (official, official_ort, default, ..., official, ...),
so that a slow phase of a shared machine slows them alike. ``--sequential`` times them one after
the other instead.

Every exported model is checked against the eager model (``graph_err64``: the exported graph and
the eager model evaluated in float64, see ``benchmarks/ort.py`` for why float32 cannot tell; a
row whose check fails is marked ``MISMATCH`` and gets no speed-up). ``ort_err32`` is the float32
onnxruntime vs eager difference, for information only: the random-weight models are chaotic
(near-tied k-NN neighbours flip), so 5-30% there is expected.

Peak memory is the extra memory of one step (``benchmarks/common.py``). For the onnxruntime rows
it is measured on a second session with the CPU memory arena off (``mem_method`` says
``rss_hwm, ort arena off``), so that the process high-water mark sees onnxruntime's working set.

    python benchmarks/throughput.py                       # the issue's four models, all paths
    python benchmarks/throughput.py --models vig_ti --paths official official_ort default ort
    python benchmarks/throughput.py --device cuda --paths official official_bf16 default bf16

Writes ``results/throughput.csv`` / ``.png`` and ``results/throughput_targets.csv`` (the
issue's targets, met or not); with ``--device cuda`` the files end in ``_cuda``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import pyg_vig  # noqa: E402

PATHS = [
    "official",
    "official_ort",
    "official_bf16",
    "default",
    "ort",
    "scatter",
    "dense_ref",
    "compile",
    "bf16",
]
OFFICIAL_PATHS = {"official", "official_ort", "official_bf16"}
ORT_PATHS = {"official_ort", "ort"}
EVAL_ONLY = {"official_ort", "ort", "dense_ref"}
OFFICIAL_NAMES = {
    n: f"{n}_224_gelu"
    for n in ["vig_ti", "vig_s", "vig_b", "pvig_ti", "pvig_s", "pvig_m", "pvig_b"]
}
TARGET_MODELS = ["vig_ti", "pvig_ti", "vig_s", "pvig_s"]
CHECK_TOL = 1e-3  # graph_err64 above this marks an export as wrong (measured: 1e-7 .. 3e-6)


class _Autocast(torch.nn.Module):
    """Runs ``model`` under ``torch.autocast(device_type, dtype)``."""

    def __init__(self, model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype
        self.num_classes = getattr(model, "num_classes", 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x)


@dataclass
class Candidate:
    """One path ready to run: its step function and what is known about it so far."""

    path: str
    step: Callable[[], object]
    warmup: int
    info: dict = field(default_factory=dict)
    memory: Callable[[], tuple[float, str]] | None = None  # overrides common.peak_memory_mb


class Skip(Exception):
    """A path that cannot run here (missing API or package); the message says why."""


# --------------------------------------------------------------------------- building paths
class Group:
    """The models of one (model, mode, batch) point, built lazily and shared by its paths."""

    def __init__(self, name: str, mode: str, x: torch.Tensor, args: argparse.Namespace) -> None:
        self.name, self.mode, self.x, self.args = name, mode, x, args
        self.device = x.device
        self.tmp = tempfile.TemporaryDirectory(prefix="pyg_vig_onnx_")
        self._ours: torch.nn.Module | None = None
        self._official: torch.nn.Module | None = None
        self._logits: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self.tmp.cleanup()

    def ours(self) -> torch.nn.Module:
        if self._ours is None:
            torch.manual_seed(0)
            self._ours = pyg_vig.create_model(self.name).to(self.device)
        return self._ours

    def official(self) -> torch.nn.Module:
        if self._official is None:
            import official

            torch.manual_seed(0)
            self._official = official.build_official(OFFICIAL_NAMES[self.name]).to(self.device)
        return self._official

    def eager_logits(self, which: str) -> np.ndarray:
        """float32 eval logits of the shared ``"ours"`` / ``"official"`` model."""
        if which not in self._logits:
            model = self.ours() if which == "ours" else self.official()
            model.eval()
            with torch.inference_mode():
                self._logits[which] = model(self.x).float().cpu().numpy()
        return self._logits[which]

    def build(self, path: str) -> Candidate:
        warmup = self.args.warmup
        if path in ORT_PATHS:
            return self._build_ort(path)
        if path == "official":
            model = self.official()
        elif path == "official_bf16":
            model = _Autocast(copy.deepcopy(self.official()), self.device.type, torch.bfloat16)
        elif path == "default":
            model = self.ours()
        elif path == "scatter":
            try:
                model = pyg_vig.create_model(self.name, fused=False).to(self.device)
            except (TypeError, ValueError) as e:
                raise Skip(f"create_model(..., fused=False) not supported here ({e})"[:160]) from e
            model.load_state_dict(self.ours().state_dict())
        elif path == "dense_ref":
            convert = getattr(pyg_vig.nn, "to_official_numerics", None)
            if convert is None:
                raise Skip("pyg_vig.nn.to_official_numerics is not available in this pyg_vig")
            model = convert(copy.deepcopy(self.ours()))
        elif path == "compile":
            model = torch.compile(copy.deepcopy(self.ours()))
            warmup += 2  # the first calls compile
        elif path == "bf16":
            model = _Autocast(copy.deepcopy(self.ours()), self.device.type, torch.bfloat16)
        else:
            raise ValueError(f"unknown path {path!r}")
        info = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}
        step = common.model_step(model, self.x, self.mode)
        return Candidate(path, step, warmup, info)

    def _build_ort(self, path: str) -> Candidate:
        import ort

        if self.device.type != "cpu":
            raise Skip("onnxruntime rows run on CPU only (use --device cpu)")
        why = ort.available()
        if why:
            raise Skip(why)
        theirs = path == "official_ort"
        model = self.official() if theirs else self.ours()
        model.eval()
        file = os.path.join(self.tmp.name, f"{self.name}_{path}.onnx")
        if theirs:
            check_graph, how = ort.export_onnx(model, self.x, file), "torch.onnx.export"
        else:
            check_graph, how = ort.export_ours(model, self.x, file)
        x_np = self.x.cpu().numpy()
        sess = ort.session(file, self.args.threads)
        info: dict = {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "export": how,
            "onnx_mb": ort.file_mb(file),
        }
        out = ort.run(sess, x_np)
        eager = self.eager_logits("official" if theirs else "ours")
        info["ort_err32"] = ort.max_rel_error(out, eager)
        if self.args.no_check:
            info["graph_err64"] = float("nan")
            info["status"] = "unchecked"
        else:
            info["graph_err64"] = ort.graph_error(check_graph, model, self.x)
            info["status"] = "ok" if info["graph_err64"] <= CHECK_TOL else "MISMATCH"

        def memory() -> tuple[float, str]:
            # A second session without the memory arena: its tensors go back to malloc, so the
            # resident high-water mark sees the peak working set of one run.
            mem_sess = ort.session(file, self.args.threads, arena=False)

            def one_run() -> None:
                ort.run(mem_sess, x_np)

            one_run()  # the first run plans the memory pattern
            mb, method = common.peak_memory_mb(one_run)
            return mb, f"{method}, ort arena off"

        return Candidate(path, lambda: ort.run(sess, x_np), self.args.warmup, info, memory)


# --------------------------------------------------------------------------- measuring
def measure_group(group: Group, paths: list[str], args: argparse.Namespace) -> list[dict]:
    """Build, warm up and measure memory of every path, then time them (interleaved)."""
    rows: dict[str, dict] = {}
    ready: dict[str, Candidate] = {}
    for path in paths:
        row = dict(model=group.name, mode=group.mode, batch=group.x.size(0), path=path,
                   img_s=float("nan"), step_ms=float("nan"), min_ms=float("nan"), runs=0,
                   peak_mem_mb=float("nan"), mem_method="", status="ok")
        rows[path] = row
        try:
            cand = group.build(path)
            row.update(cand.info)
            for _ in range(cand.warmup):
                cand.step()
            common.sync(group.device)
            mem = cand.memory() if cand.memory else common.peak_memory_mb(cand.step, group.device)
            row["peak_mem_mb"], row["mem_method"] = mem
        except Skip as e:
            row["status"] = f"skipped: {e}"
            print(f"  [{group.name} {group.mode} {path}: skipped: {e}]", flush=True)
            continue
        except Exception as e:  # keep the sweep going; report the failure in the row
            row["status"] = f"error: {type(e).__name__}: {e}"[:160]
            print(f"  [{group.name} {group.mode} {path}: {row['status']}]", flush=True)
            continue
        ready[path] = cand
    if args.sequential:
        timings = {
            p: common.time_fn(c.step, warmup=0, repeat=args.steps, device=group.device)
            for p, c in ready.items()
        }
    elif ready:
        timings = common.time_interleaved(
            {p: c.step for p, c in ready.items()}, warmup=0, repeat=args.steps,
            device=group.device,
        )
    else:
        timings = {}
    B = group.x.size(0)
    load = round(os.getloadavg()[0], 2)
    for p, t in timings.items():
        rows[p].update(img_s=B / (t["median_ms"] / 1e3), step_ms=t["median_ms"],
                       min_ms=t["min_ms"], runs=int(t["runs"]))
    for row in rows.values():
        row["load_avg_1m"] = load
    return list(rows.values())


def add_ratios(rows: list[dict]) -> None:
    """Speed-ups and memory ratios against the official eager / ONNX Runtime rows."""
    def key(r: dict) -> tuple:
        return r["model"], r["mode"], r["batch"]

    def usable(r: dict) -> bool:
        return r["status"] in ("ok", "unchecked") and r["img_s"] == r["img_s"]

    official = {key(r): r for r in rows if r["path"] == "official" and usable(r)}
    official_ort = {key(r): r for r in rows if r["path"] == "official_ort" and usable(r)}
    nan = float("nan")
    for r in rows:
        ok = usable(r)
        o, oo = official.get(key(r)), official_ort.get(key(r))
        r["vs_official"] = r["img_s"] / o["img_s"] if ok and o else nan
        r["vs_official_ort"] = r["img_s"] / oo["img_s"] if ok and oo else nan
        # memory against the same kind of runtime: ORT rows vs official_ort, the rest vs eager
        ref = oo if r["path"] in ORT_PATHS else o
        r["mem_vs_official"] = (
            r["peak_mem_mb"] / ref["peak_mem_mb"]
            if ref and ref["peak_mem_mb"] > 0 and r["peak_mem_mb"] == r["peak_mem_mb"]
            else nan
        )


def targets(rows: list[dict]) -> list[dict]:
    """The issue's performance targets, one line each, with the measured value."""
    by = {(r["model"], r["mode"], r["batch"], r["path"]): r for r in rows}
    out = []

    def add(goal: str, model: str, mode: str, batch: int, value: float, limit: float,
            higher_is_better: bool = True) -> None:
        met = None if value != value else (value >= limit if higher_is_better else value <= limit)
        out.append(dict(target=goal, model=model, mode=mode, batch=batch, value=value,
                        goal=(">= " if higher_is_better else "<= ") + f"{limit:g}", met=met))

    groups = dict.fromkeys((r["model"], r["mode"], r["batch"]) for r in rows)  # run order
    for model, mode, batch in groups:
        d = by.get((model, mode, batch, "default"))
        o = by.get((model, mode, batch, "ort"))
        if mode == "eval" and d:
            add("eager default vs official ORT", model, mode, batch, d["vs_official_ort"], 1.0)
            if model == "pvig_ti":
                add("eager default vs official eager", model, mode, batch, d["vs_official"], 3.0)
        if mode == "eval" and o:
            add("our ORT vs official ORT", model, mode, batch, o["vs_official_ort"], 1.3)
        if mode == "train" and d and model in ("vig_ti", "pvig_ti"):
            add("train step vs official", model, mode, batch, d["vs_official"], 2.0)
        if d:
            add("peak memory default / official", model, mode, batch, d["mem_vs_official"],
                1.0, higher_is_better=False)
        if o:
            add("peak memory ORT / official ORT", model, mode, batch, o["mem_vs_official"],
                1.0, higher_is_better=False)
    return out


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=TARGET_MODELS)
    ap.add_argument("--all-models", action="store_true")
    ap.add_argument("--paths", nargs="*", default=PATHS, choices=PATHS)
    ap.add_argument("--modes", nargs="*", default=["eval", "train"], choices=["eval", "train"])
    ap.add_argument("--batch", type=int, nargs="*", default=None,
                    help="batch sizes (default: 16 for eval, 8 for train)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (rounds) per path")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile-train", action="store_true", help="also time compiled training")
    ap.add_argument("--sequential", action="store_true",
                    help="time the paths one after the other instead of in interleaved rounds")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the float64 check of exported graphs (rows say 'unchecked')")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None,
                    help="output prefix (default: results/throughput, _cuda on a GPU)")
    ap.add_argument("--isolated", action="store_true",
                    help="fair mode: each engine (path) in a process of its own, in --rounds "
                         "rotated rounds (eval, fp32); writes <out>_rounds.csv and "
                         "<out>_isolated.csv/.png")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of --isolated")
    ap.add_argument("--busy-threshold", type=float, default=0.10,
                    help="flag a row busy when other processes used more than this CPU fraction")
    ap.add_argument("--from-rounds", default=None,
                    help="re-render table/CSV/PNG from a saved <out>_rounds.csv, timing nothing")
    ap.add_argument("--child-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.isolated or args.from_rounds:
        return isolated_main(args)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device: torch {torch.__version__} reports "
                 f"torch.cuda.is_available() = False (CUDA build: {torch.version.cuda})")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    out = args.out or os.path.join(common.RESULTS_DIR, "throughput" + suffix)
    models = list(OFFICIAL_NAMES) if args.all_models else args.models
    paths = list(args.paths)
    if OFFICIAL_PATHS & set(paths):
        try:
            import official

            official.list_official_models()  # imports the official source
        except Exception as e:  # the official source is optional
            print(f"[official paths skipped: {e}]")
            paths = [p for p in paths if p not in OFFICIAL_PATHS]
    machine = common.machine_description(device)
    print(f"# {machine}, {args.threads} threads, {args.size}px, paths: {' '.join(paths)}")
    columns = ["model", "mode", "batch", "path", "img_s", "step_ms", "peak_mem_mb",
               "graph_err64", "ort_err32", "status"]
    rows: list[dict] = []
    for name in models:
        chans = pyg_vig.models.default_cfgs[name]["input_size"][0]
        for mode in args.modes:
            for B in args.batch or ([16] if mode == "eval" else [8]):
                gen = torch.Generator().manual_seed(B)
                x = torch.randn(B, chans, args.size, args.size, generator=gen).to(device)
                run = [p for p in paths
                       if not (mode == "train" and p in EVAL_ONLY)
                       and not (mode == "train" and p == "compile" and not args.compile_train)]
                group = Group(name, mode, x, args)
                try:
                    new = measure_group(group, run, args)
                finally:
                    group.close()
                    del group
                    gc.collect()
                rows += new
                common.print_table(new, columns)
    for r in rows:
        r.update(device=device.type, size=args.size, threads=args.threads, machine=machine)
    add_ratios(rows)
    print()
    common.print_table(rows, ["model", "mode", "batch", "path", "img_s", "vs_official",
                              "vs_official_ort", "step_ms", "peak_mem_mb", "mem_vs_official",
                              "mem_method", "graph_err64", "ort_err32", "status"])
    tg = targets(rows)
    if tg:
        print("\nIssue targets (value: speed-up or memory ratio, measured above):")
        common.print_table(tg)
        common.write_csv(out + "_targets.csv", tg)
    print(f"wrote {common.write_csv(out + '.csv', rows)}")
    if args.child_json:
        import json

        ok = [r for r in rows if r.get("img_s")]
        print(json.dumps({"img_s": ok[0]["img_s"] if ok else float("nan"),
                          "status": ok[0].get("status", "") if ok else "no row",
                          "graph_err64": ok[0].get("graph_err64", "") if ok else ""}))
        return
    _plot(rows, out + ".png", machine)


ISOLATED_DEFAULT = ["default", "ort", "official", "official_ort"]
# (name, numerator, denominator, target): the two ratios
ISOLATED_RATIOS = [("eager_vs_official_ort", "default", "official_ort", 1.0),
                   ("ort_vs_official_ort", "ort", "official_ort", 1.3)]


def isolated_main(args: argparse.Namespace) -> None:
    """Each engine in its own process, alternating rounds; or re-render from a rounds CSV."""
    import tempfile

    import harness

    out = args.out or os.path.join(common.RESULTS_DIR, "throughput")
    if args.from_rounds:
        rows = harness.read_rounds_csv(args.from_rounds)
    else:
        paths = [p for p in args.paths if p not in ("compile", "scatter", "dense_ref")] \
            if args.paths != PATHS else list(ISOLATED_DEFAULT)
        batch = (args.batch or [16])[0]
        tmp = tempfile.mkdtemp(prefix="pyg_vig_bench_")
        here = os.path.abspath(__file__)

        def make_cmd(engine: str, model: str) -> list[str]:
            cmd = [sys.executable, here, "--models", model, "--paths", engine,
                   "--modes", "eval", "--batch", str(batch), "--threads", str(args.threads),
                   "--size", str(args.size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device,
                   "--out", os.path.join(tmp, f"{model}_{engine}"), "--child-json"]
            return cmd + (["--no-check"] if args.no_check else [])

        rows = []
        for model in args.models:
            rows += harness.run_rounds(paths, model, args.rounds, make_cmd,
                                       busy_threshold=args.busy_threshold)
        harness.write_rounds_csv(out + "_rounds.csv", rows)
        print(f"wrote {out}_rounds.csv")
    render_isolated(rows, out)


def render_isolated(rows: list, out: str) -> list[dict]:
    import harness

    summ = harness.summarize(rows)
    table = []
    for (model, engine), s in sorted(summ.items()):
        ok = s["median"] == s["median"] and s["median"]  # not NaN, not zero
        spread = (s["max"] - s["min"]) / s["median"] if ok else float("nan")
        table.append({"model": model, "engine": engine, "median_img_s": s["median"],
                      "min": s["min"], "max": s["max"], "spread": spread, "n": s["n"],
                      "n_busy_dropped": s["n_busy"]})
    for model in sorted({m for m, _ in summ}):
        for name, num, den, goal in ISOLATED_RATIOS:
            v = harness.ratio(summ, model, num, den)
            table.append({"model": model, "engine": name, "median_img_s": v,
                          "min": goal, "max": "", "spread": "",
                          "n": "met" if v == v and v >= goal else "NOT met", "n_busy_dropped": ""})
    common.print_table(table)
    n_busy = sum(r.busy for r in rows)
    if n_busy:
        print(f"\n!!! WARNING: {n_busy} of {len(rows)} runs were measured while other processes "
              f"used the CPU; they are left out of the medians. Rerun on a quiet machine. !!!")
    print(f"wrote {common.write_csv(out + '_isolated.csv', table)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        models = sorted({m for m, _ in summ})
        engines = sorted({e for _, e in summ})
        fig, ax = plt.subplots(figsize=(1.5 + 1.8 * len(models), 4))
        w = 0.8 / max(1, len(engines))
        for i, e in enumerate(engines):
            med = [summ.get((m, e), {}).get("median", float("nan")) for m in models]
            nan = float("nan")
            lo = [med[j] - summ.get((m, e), {}).get("min", nan) for j, m in enumerate(models)]
            hi = [summ.get((m, e), {}).get("max", nan) - med[j] for j, m in enumerate(models)]
            ax.bar([j + i * w for j in range(len(models))], med, w, yerr=[lo, hi], label=e)
        ax.set_xticks([j + w * (len(engines) - 1) / 2 for j in range(len(models))], models)
        ax.set_ylabel("img/s (median, min-max)")
        ax.set_title("each engine in its own process, rotated rounds")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out + "_isolated.png", dpi=100)
        print(f"wrote {out}_isolated.png")
    except ImportError:
        print("[matplotlib missing: no PNG]")
    return table


def _plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["model"], r["mode"], r["batch"]) for r in rows))
    paths = [p for p in PATHS if any(r["path"] == p for r in rows)]
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.9 * len(groups)), 7.5), sharex=True)
    width = 0.8 / max(1, len(paths))
    for ax, metric, label in ((axes[0], "img_s", "images / s"),
                              (axes[1], "peak_mem_mb", "extra peak memory (MiB)")):
        for i, p in enumerate(paths):
            vals = []
            for g in groups:
                r = next((r for r in rows
                          if (r["model"], r["mode"], r["batch"]) == g and r["path"] == p), None)
                v = r[metric] if r and r["status"] in ("ok", "unchecked") else 0
                vals.append(v if v == v else 0)
            hatch = "//" if p in ORT_PATHS else None
            ax.bar([j + i * width for j in range(len(groups))], vals, width, label=p, hatch=hatch)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[1].set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    axes[1].set_xticklabels([f"{m}\n{mo} b{b}" for m, mo, b in groups])
    axes[0].set_title(title, fontsize=8)
    axes[0].legend(fontsize=7, ncol=min(len(paths), 5))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
