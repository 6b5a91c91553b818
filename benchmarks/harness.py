"""Process isolation, alternating rounds and busy-machine detection for the benchmarks.

Each engine is timed in a fresh subprocess (so that one engine's thread pools and allocator
cannot slow another), in rounds whose order rotates (round ``r`` starts with engine ``r mod n``),
so that a slow phase of the machine falls on every engine alike. While each run goes, the CPU
time used by *other* processes is read from ``/proc/stat``: a row measured while the machine was
busy is flagged ``busy=True``.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

__all__ = [
    "CpuSample",
    "RoundRow",
    "busy_fraction",
    "parse_proc_stat",
    "read_cpu",
    "read_rounds_csv",
    "rotated_order",
    "run_isolated",
    "run_rounds",
    "summarize",
    "write_rounds_csv",
]


def rotated_order(engines: Sequence[str], round_index: int) -> list[str]:
    """Engines in the order of round ``round_index``: rotated left by ``round_index``."""
    if not engines:
        raise ValueError("rotated_order needs at least one engine")
    s = round_index % len(engines)
    return list(engines[s:]) + list(engines[:s])


@dataclass(frozen=True)
class CpuSample:
    """Cumulative jiffies of all CPUs: ``busy`` (user+nice+system+irq+softirq+steal) and
    ``total``."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuSample:
    """Parse the aggregate ``cpu`` line of ``/proc/stat``."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            vals = [int(v) for v in parts[1:]]
            vals += [0] * (8 - len(vals))
            user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
            busy = user + nice + system + irq + softirq + steal
            return CpuSample(busy=busy, total=busy + idle + iowait)
    raise ValueError("no aggregate 'cpu' line in /proc/stat text; is this Linux?")


def read_cpu() -> CpuSample | None:
    """The current ``/proc/stat`` sample, or ``None`` where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            return parse_proc_stat(f.read())
    except OSError:
        return None


def busy_fraction(before: CpuSample, after: CpuSample, own_cpu_s: float = 0.0,
                  clk_tck: int | None = None, ncpu: int | None = None) -> float:
    """Fraction of the machine's CPU capacity used by *other* processes between two samples.

    ``own_cpu_s`` is the CPU time (seconds) the measured process itself used; it is subtracted.
    """
    dt = after.total - before.total
    if dt <= 0:
        return 0.0
    tck = clk_tck or os.sysconf("SC_CLK_TCK")
    own = own_cpu_s * tck
    other = max(0.0, (after.busy - before.busy) - own)
    return min(1.0, other / dt)


@dataclass
class RoundRow:
    """One engine's result in one round."""

    round: int
    position: int
    engine: str
    model: str
    img_s: float
    busy_other: float
    busy: bool
    error: str = ""


def run_isolated(cmd: Sequence[str], timeout: float, env: dict | None = None
                 ) -> tuple[dict | None, float, str]:
    """Run ``cmd`` in its own process; it prints one JSON object as its last stdout line.

    Returns ``(result or None, busy fraction of other processes, error text)``.
    """
    before = read_cpu()
    t_child0 = os.times()
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired:
        return None, 0.0, f"timed out after {timeout:.0f}s"
    t_child1 = os.times()
    after = read_cpu()
    own = (t_child1.children_user - t_child0.children_user
           + t_child1.children_system - t_child0.children_system)
    busy = busy_fraction(before, after, own) if before and after else 0.0
    if p.returncode != 0:
        return None, busy, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1]), busy, ""
    except (IndexError, json.JSONDecodeError):
        return None, busy, "child printed no JSON result line"


def run_rounds(engines: Sequence[str], model: str, rounds: int, make_cmd, timeout: float = 900,
               busy_threshold: float = 0.10, log=print) -> list[RoundRow]:
    """Run every engine once per round in rotated order, each in its own process."""
    rows = []
    for r in range(rounds):
        for pos, eng in enumerate(rotated_order(engines, r)):
            res, busy, err = run_isolated(make_cmd(eng, model), timeout)
            img_s = float(res["img_s"]) if res else float("nan")
            check = (res or {}).get("graph_err64", "")
            if (res or {}).get("status") == "MISMATCH":
                # a wrong exported graph gets no speed: left out of the medians
                err, img_s = f"MISMATCH: float64 check of the exported graph {check}", float("nan")
            row = RoundRow(r, pos, eng, model, img_s, round(busy, 4), busy > busy_threshold, err)
            if row.busy:
                log(f"WARNING: machine busy ({busy:.0%} CPU used by other processes) "
                    f"while timing {eng} {model} round {r}")
            checked = f"(float64 check {check:.1e})" if isinstance(check, float) and not err \
                else ""
            log(f"round {r} {model:10s} {eng:14s} {row.img_s:8.2f} img/s {err}{checked}")
            rows.append(row)
    return rows


def write_rounds_csv(path: str, rows: Sequence[RoundRow]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    names = [f.name for f in fields(RoundRow)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for row in rows:
            w.writerow(asdict(row))


def read_rounds_csv(path: str) -> list[RoundRow]:
    out = []
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            out.append(RoundRow(int(d["round"]), int(d["position"]), d["engine"], d["model"],
                                float(d["img_s"]), float(d["busy_other"]),
                                d["busy"] in ("True", "true", "1"), d.get("error", "") or ""))
    return out


def summarize(rows: Sequence[RoundRow], include_busy: bool = False) -> dict:
    """Per (model, engine): median img/s, min, max, n, n_busy (busy rows left out unless asked)."""
    groups: dict = {}
    for row in rows:
        g = groups.setdefault((row.model, row.engine), {"vals": [], "n_busy": 0})
        if row.busy:
            g["n_busy"] += 1
            if not include_busy:
                continue
        if row.img_s == row.img_s:  # not NaN
            g["vals"].append(row.img_s)
    out = {}
    for key, g in groups.items():
        v = g["vals"]
        out[key] = {
            "median": statistics.median(v) if v else float("nan"),
            "min": min(v) if v else float("nan"),
            "max": max(v) if v else float("nan"),
            "n": len(v),
            "n_busy": g["n_busy"],
        }
    return out


def ratio(summary: dict, model: str, num: str, den: str) -> float:
    a, b = summary.get((model, num)), summary.get((model, den))
    if not a or not b or not b["median"] or b["median"] != b["median"]:
        return float("nan")
    return a["median"] / b["median"]


if __name__ == "__main__":  # pragma: no cover
    print(read_cpu(), file=sys.stderr)
    t0 = time.time()
