"""The logic of benchmarks/graph_construction.py, without timing anything: the stopping rule of
the repeated timings, the busy-machine columns, and that the competitors a PyG user compares
against build the same graph as ours.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402
import graph_construction as gc  # noqa: E402
import harness  # noqa: E402


class ScriptedClock:
    """A clock that each timed function advances by its next scripted duration."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.calls = 0.0, durations, {k: 0 for k in durations}

    def __call__(self) -> float:
        return self.now

    def fn(self, name):
        def run():
            self.now += self.durations[name][self.calls[name]]
            self.calls[name] += 1

        return run


def test_relative_spread():
    assert common.relative_spread([1.0, 1.1, 0.9]) == pytest.approx(0.2)
    assert common.relative_spread([2.0]) == 0.0
    assert common.relative_spread([0.0, 0.0]) == float("inf")


def test_time_until_stable_stops_when_the_last_window_settles():
    # a: noisy for 4 rounds, then steady; b: steady from the start. Window 3, 5% spread:
    # the first window of steady a is rounds 5-7.
    clock = ScriptedClock({"a": [1, 3, 1, 3, 1.0, 1.01, 1.02, 9, 9, 9], "b": [2.0] * 10})
    out = common.time_until_stable({n: clock.fn(n) for n in "ab"}, window=3, max_spread=0.05,
                                   max_rounds=10, clock=clock)
    assert clock.calls == {"a": 7, "b": 7}
    assert out["a"]["runs"] == 7 and out["a"]["stable"] == 1.0
    assert out["a"]["median_ms"] == pytest.approx(1010.0)  # median of the last window only
    assert out["a"]["min_ms"] == pytest.approx(1000.0)
    assert out["a"]["spread"] == pytest.approx(0.02 / 1.01)
    assert out["b"]["spread"] == 0.0


def test_time_until_stable_caps_rounds_and_time():
    noisy = [1, 2] * 20
    clock = ScriptedClock({"a": noisy})
    out = common.time_until_stable({"a": clock.fn("a")}, window=4, max_spread=0.1,
                                   max_rounds=6, clock=clock)
    assert clock.calls["a"] == 6 and out["a"]["stable"] == 0.0
    assert out["a"]["spread"] == pytest.approx(1 / 1.5)
    clock = ScriptedClock({"a": noisy})
    common.time_until_stable({"a": clock.fn("a")}, window=4, max_spread=0.1, max_rounds=50,
                             max_time=7.5, clock=clock)
    assert clock.calls["a"] == 6  # after 5 rounds 7 s < 7.5 s, after 6 rounds 9 s: stop
    with pytest.raises(ValueError, match="window"):
        common.time_until_stable({"a": clock.fn("a")}, window=1)


def test_time_until_stable_rotates_the_order_every_round():
    # A function timed right after a cache-trashing one must not pay for it every round.
    order = []
    fns = {n: (lambda n=n: order.append(n)) for n in "abc"}
    common.time_until_stable(fns, window=2, max_spread=-1.0, max_rounds=3)
    assert "".join(order) == "abc" + "bca" + "cab"


def test_machine_load_subtracts_our_own_cpu_time():
    tck = 100  # jiffies per second on Linux
    before = gc.LoadSample(1.0, harness.CpuSample(busy=0, total=0), own_cpu_s=10.0)
    # 400 jiffies of capacity went by (2 CPUs, 2 s), 300 of them busy, 2 s of it ours
    after = gc.LoadSample(1.5, harness.CpuSample(busy=300, total=400), own_cpu_s=12.0)
    if harness.os.sysconf("SC_CLK_TCK") != tck:
        pytest.skip("clock ticks differ from 100 per second")
    load = gc.machine_load(before, after, threshold=0.1)
    assert load == dict(load_before=1.0, load_after=1.5, busy_other=0.25, busy=True)
    idle = gc.LoadSample(1.5, harness.CpuSample(busy=210, total=400), own_cpu_s=12.0)
    assert gc.machine_load(before, idle, threshold=0.1)["busy"] is False  # others: 2.5%
    unknown = gc.machine_load(gc.LoadSample(1.0, None, 0.0), after, threshold=0.1)
    assert unknown["busy"] is False and unknown["busy_other"] != unknown["busy_other"]  # NaN


def test_edge_set_agreement_ignores_order():
    ref = torch.tensor([[0, 1, 2, 3], [1, 1, 0, 0]])
    assert gc.edge_set_agreement(ref[:, [2, 0, 3, 1]], ref) == 1.0
    assert gc.edge_set_agreement(ref[:, :3], ref) == 0.75
    assert gc.agreement(ref[:, [2, 0, 3, 1]], ref) == 0.0  # ours must match in order


@pytest.mark.parametrize("point", [gc.Point("N", 2, 49, 16, 4),
                                   gc.Point("pvig", 2, 64, 16, 4, r=2),
                                   gc.Point("dilation", 2, 49, 16, 4, d=2)],
                         ids=["self", "pooled-keys", "dilation"])
def test_competitors_build_our_graph(point):
    inputs = gc.make_inputs(point, torch.Generator().manual_seed(0), torch.device("cpu"))
    ours = gc._knn("torch", inputs)
    ran = 0
    for name in gc.COMPETITORS:
        if gc.competitor_supports(name, point) is not None:
            continue
        theirs = gc._competitor_caller(name, point, inputs)()
        assert theirs.shape == ours.shape, name
        assert gc.edge_set_agreement(theirs, ours) == 1.0, name
        ran += 1
    assert ran >= 1  # cdist+topk runs everywhere


def test_competitors_skip_what_they_cannot_do():
    assert gc.competitor_supports("cdist+topk", gc.Point("pvig", 2, 64, 16, 4, r=2,
                                                         bias="table")).startswith("unsupported")
    assert gc.competitor_supports("torch_cluster.knn_graph",
                                  gc.Point("d", 2, 49, 16, 4, d=2)) == "unsupported (dilation)"
    assert [p.n for p in gc.sweep(quick=False, tiny=True)] == [49, 49, 64, 49]
