"""Shared helpers for the scripts in ``benchmarks/``: timing, peak memory, tables, CSV and plots.

Timing follows nanoGPT's ``bench.py`` and PyG's ``profile/benchmark.py``: run a few warm-up calls,
then time each call separately (synchronising CUDA around it) and report the median, which is far
less sensitive than the mean to the odd slow call on a shared 2-core machine.

Peak memory is measured the same way for every workload and reported as *extra* memory: the peak
while the workload runs minus what was already resident just before it (model weights, inputs and
optimizer state therefore do not count; activations, gradients, temporaries and allocator slack do).

* CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around the call,
  i.e. bytes handed out by PyTorch's caching allocator.
* CPU: PyTorch's CPU allocator is glibc ``malloc``, which neither ``tracemalloc`` nor any torch API
  sees. We ask glibc to give freed heap pages back (``malloc_trim(0)``), read the resident set size
  ``VmRSS``, reset the kernel's high-water mark (writing ``5`` to ``/proc/self/clear_refs``), run
  the workload once and read the high-water mark ``VmHWM`` from ``/proc/self/status``. The
  difference is the largest amount of physical memory the process touched beyond its starting
  point, exact to the page and without sampling, but process-wide: it includes allocator
  fragmentation and anything other threads allocate meanwhile. Where ``clear_refs`` cannot be
  written (old kernels, some sandboxes), a thread samples ``VmRSS`` every 0.2 ms instead, which
  may miss very short peaks; the ``mem_method`` field says which was used.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import gc
import math
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "RESULTS_DIR",
    "machine_description",
    "sync",
    "time_fn",
    "time_interleaved",
    "relative_spread",
    "time_until_stable",
    "peak_memory_mb",
    "model_step",
    "time_model",
    "print_table",
    "write_csv",
    "loglog_plot",
]

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# --------------------------------------------------------------------------- machine
def machine_description(device: torch.device | str = "cpu") -> str:
    """One line naming the hardware and software a result was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                hw = m.group(1).strip()
        except OSError:
            pass
        hw = f"{hw}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"{hw}; torch {torch.__version__}; python {platform.python_version()}"


def sync(device: torch.device | str = "cpu") -> None:
    """Wait for queued kernels so that wall-clock time covers them (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- timing
def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeat: int = 10,
    min_time: float = 0.0,
    max_time: float = float("inf"),
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median wall-clock time of ``fn()`` in milliseconds, after ``warmup`` untimed calls.

    At least ``repeat`` calls are timed, more while their total is below ``min_time`` seconds,
    and fewer when the total exceeds ``max_time`` seconds (never fewer than one), so that large
    cases do not dominate a sweep's running time.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    total = 0.0
    while True:
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if len(times) >= repeat and total >= min_time:
            break
        if total >= max_time:
            break
    return {
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "runs": float(len(times)),
    }


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeat: int = 10,
    min_time: float = 0.0,
    max_time: float = float("inf"),
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Like :func:`time_fn` for several functions, called in round-robin order.

    Each round calls every function once, so slow phases of a shared machine (other processes,
    frequency changes) hit all candidates alike and the comparison between them stays fair.
    Rounds continue until ``repeat`` rounds and ``min_time`` seconds have passed, or until
    ``max_time`` seconds (at least one round).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    total = 0.0
    while True:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            dt = time.perf_counter() - t0
            times[name].append(dt)
            total += dt
        rounds = len(next(iter(times.values()))) if times else 0
        if (rounds >= repeat and total >= min_time) or total >= max_time or not times:
            break
    return {
        name: {
            "median_ms": 1e3 * statistics.median(ts),
            "min_ms": 1e3 * min(ts),
            "runs": float(len(ts)),
        }
        for name, ts in times.items()
    }


def relative_spread(times: Sequence[float]) -> float:
    """``(max - min) / median`` of ``times`` (0 for fewer than two, inf for a zero median)."""
    if len(times) < 2:
        return 0.0
    med = statistics.median(times)
    return (max(times) - min(times)) / med if med > 0 else float("inf")


def time_until_stable(
    fns: Mapping[str, Callable[[], Any]],
    *,
    window: int = 5,
    max_spread: float = 0.10,
    max_rounds: int = 30,
    max_time: float = float("inf"),
    warmup: int = 0,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Interleaved rounds (as :func:`time_interleaved`, the order rotated by one every round)
    until the timings settle.

    After at least ``window`` rounds, stop as soon as, for every function, the
    :func:`relative_spread` of its last ``window`` times is at most ``max_spread``; otherwise
    stop after ``max_rounds`` rounds or ``max_time`` seconds of timed calls (at least one
    round). The median and minimum are taken over that last window, so that a slow start
    (caches, frequency) does not count. Each result also holds ``spread`` (of the window),
    ``stable`` (1.0 when the spread criterion stopped the loop, else 0.0) and ``runs``.
    ``clock`` is injectable so that the stopping rule can be tested without timing anything.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 timings to have a spread, got {window}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    total, stable = 0.0, False
    names = list(fns)
    while times:
        # Rotate the order every round: a function timed right after a cache-trashing one
        # (e.g. a KD-tree backend) would otherwise pay for it in every round.
        shift = len(times[names[0]]) % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            t0 = clock()
            fn()
            sync(device)
            dt = clock() - t0
            times[name].append(dt)
            total += dt
        rounds = len(next(iter(times.values())))
        if rounds >= window and all(
            relative_spread(ts[-window:]) <= max_spread for ts in times.values()
        ):
            stable = True
            break
        if rounds >= max_rounds or total >= max_time:
            break
    out = {}
    for name, ts in times.items():
        last = ts[-window:]
        out[name] = {
            "median_ms": 1e3 * statistics.median(last),
            "min_ms": 1e3 * min(last),
            "runs": float(len(ts)),
            "spread": relative_spread(last),
            "stable": float(stable),
        }
    return out


# --------------------------------------------------------------------------- memory
_KIB = 1024


def _read_status(*keys: str) -> dict[str, int]:
    with open("/proc/self/status") as f:
        text = f.read()
    out = {}
    for key in keys:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, flags=re.M)
        out[key] = int(m.group(1)) * _KIB if m else -1
    return out


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover - non-glibc platforms
        return None


_LIBC = _libc()


def _release_free_heap() -> None:
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _read_status("VmHWM")["VmHWM"] > 0
    except OSError:
        return False


_HWM_OK: bool | None = None


class _RssSampler(threading.Thread):
    def __init__(self, interval: float = 2e-4) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _read_status("VmRSS")["VmRSS"])
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _read_status("VmRSS")["VmRSS"])


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[float, str]:
    """Extra memory (MiB) that one call of ``fn()`` needs at its peak, and the method used.

    See the module docstring for exactly what is measured on CPU and on CUDA.
    """
    global _HWM_OK
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_allocated"

    if not os.path.exists("/proc/self/status"):
        return float("nan"), "unavailable"
    if _HWM_OK is None:
        _HWM_OK = _can_reset_hwm()
    _release_free_heap()
    base = _read_status("VmRSS")["VmRSS"]
    if _HWM_OK:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        peak = _read_status("VmHWM")["VmHWM"]
        method = "rss_hwm"
    else:
        sampler = _RssSampler()
        sampler.start()
        fn()
        peak = sampler.stop()
        method = "rss_sampled"
    return max(0, peak - base) / 2**20, method


# --------------------------------------------------------------------------- models
def model_step(
    model: torch.nn.Module,
    batch: torch.Tensor,
    mode: str = "eval",
    *,
    lr: float = 1e-4,
    num_classes: int | None = None,
) -> Callable[[], None]:
    """One benchmark step of a classifier as a function without arguments.

    ``mode="eval"``: ``model.eval()`` and a forward pass under :func:`torch.inference_mode`.
    ``mode="train"``: ``model.train()`` and one full step, forward, cross-entropy on random labels,
    backward and :class:`torch.optim.AdamW` (the official ViG recipe's optimizer; its state is
    created by the first call).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if mode == "eval":
        model.eval()

        def eval_step() -> None:
            with torch.inference_mode():
                model(batch)

        return eval_step

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    num_classes = num_classes or getattr(model, "num_classes", None) or 1000
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, int(num_classes), (batch.size(0),), generator=gen).to(batch.device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(batch), target)
        loss.backward()
        optimizer.step()

    return train_step


def time_model(
    model: torch.nn.Module,
    batch: torch.Tensor,
    mode: str = "eval",
    steps: int = 10,
    warmup: int = 3,
    *,
    lr: float = 1e-4,
    num_classes: int | None = None,
) -> dict[str, float | str]:
    """Throughput and peak memory of a classifier, in evaluation or in training.

    The step is :func:`model_step`; the same function times our models and the official ones,
    so the numbers compare directly.

    Args:
        model (torch.nn.Module): maps ``batch`` to ``(B, num_classes)`` logits.
        batch (Tensor): ``(B, 3, H, W)`` images, already on the model's device.
        mode (str): ``"eval"`` or ``"train"``.
        steps (int): timed steps (the median step time is used).
        warmup (int): untimed steps first (the optimizer state is created here).
        lr (float): AdamW learning rate (any value works; it only keeps weights finite).
        num_classes (int, optional): label range for training (default: ``model.num_classes``
            when the model has it, else 1000).

    Returns:
        ``img_s`` (images per second from the median step), ``step_ms`` (median step time),
        ``peak_mem_mb`` (extra memory of one step beyond the resident model, inputs and optimizer
        state, see :func:`peak_memory_mb`), ``mem_method`` and ``params_m`` (parameters, millions).
    """
    device = batch.device
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    step = model_step(model, batch, mode, lr=lr, num_classes=num_classes)
    timing = time_fn(step, warmup=warmup, repeat=steps, device=device)
    mem, method = peak_memory_mb(step, device)
    step_ms = timing["median_ms"]
    return {
        "img_s": batch.size(0) / (step_ms / 1e3),
        "step_ms": step_ms,
        "peak_mem_mb": mem,
        "mem_method": method,
        "params_m": params_m,
    }


# --------------------------------------------------------------------------- output
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if value is None:
        return "-"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Print ``rows`` as an aligned plain-text table (and return the text)."""
    if not rows:
        print("(no rows)")
        return ""
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_csv(path: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """Write dict rows to ``path`` (columns in first-seen order), creating the folder."""
    rows = list(rows)
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r.get(c, "") for c in columns})
    os.replace(tmp, path)  # never leave a half-written CSV behind
    return path


def loglog_plot(
    path: str,
    panels: Sequence[tuple[str, str, Mapping[str, tuple[Any, ...]]]],
    *,
    xlabel: str,
    title: str,
    note: str | None = None,
) -> str:
    """Save a PNG with one log-log panel per ``(panel_title, ylabel, {label: (xs, ys[, fmt])})``.

    ``fmt`` is a matplotlib format string (default ``"o-"``). Points whose y is missing, NaN or
    not positive are left out (e.g. skipped backends).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), dpi=110)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (panel_title, ylabel, series) in zip(axes, panels, strict=True):
        for label, (xs, ys, *fmt) in series.items():
            pts = [
                (x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y == y and y > 0
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), *(fmt or ["o-"]), label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
