import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness  # noqa: E402

STAT = """cpu  100 5 50 1000 20 3 2 0 0 0
cpu0 50 2 25 500 10 1 1 0 0 0
intr 1
"""


def test_rotated_order_each_engine_leads_once():
    engines = ["a", "b", "c"]
    orders = [harness.rotated_order(engines, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert harness.rotated_order(engines, 4) == ["b", "c", "a"]
    with pytest.raises(ValueError):
        harness.rotated_order([], 0)


def test_parse_proc_stat():
    s = harness.parse_proc_stat(STAT)
    assert s.busy == 100 + 5 + 50 + 3 + 2
    assert s.total == s.busy + 1000 + 20
    with pytest.raises(ValueError, match="cpu"):
        harness.parse_proc_stat("intr 1\n")


def test_busy_fraction_subtracts_own_time():
    a = harness.CpuSample(busy=0, total=0)
    b = harness.CpuSample(busy=150, total=200)
    assert harness.busy_fraction(a, b, own_cpu_s=0.0, clk_tck=100) == pytest.approx(0.75)
    # the measured child used 1 s = 100 jiffies of the 150 busy ones
    assert harness.busy_fraction(a, b, own_cpu_s=1.0, clk_tck=100) == pytest.approx(0.25)
    assert harness.busy_fraction(a, b, own_cpu_s=5.0, clk_tck=100) == 0.0
    assert harness.busy_fraction(b, b) == 0.0


def test_rounds_csv_round_trip_and_summary(tmp_path):
    rows = [
        harness.RoundRow(0, 0, "ours", "vig_ti", 50.0, 0.01, False),
        harness.RoundRow(0, 1, "off_ort", "vig_ti", 40.0, 0.02, False),
        harness.RoundRow(1, 0, "off_ort", "vig_ti", 44.0, 0.5, True),
        harness.RoundRow(1, 1, "ours", "vig_ti", 54.0, 0.0, False),
        harness.RoundRow(2, 0, "ours", "vig_ti", float("nan"), 0.0, False, "boom"),
    ]
    p = tmp_path / "r.csv"
    harness.write_rounds_csv(str(p), rows)
    back = harness.read_rounds_csv(str(p))
    assert len(back) == 5
    assert back[2].busy is True and back[1].busy is False
    assert back[4].error == "boom" and math.isnan(back[4].img_s)
    s = harness.summarize(back)
    assert s[("vig_ti", "ours")]["median"] == 52.0
    assert s[("vig_ti", "ours")]["n"] == 2
    assert s[("vig_ti", "off_ort")]["n"] == 1 and s[("vig_ti", "off_ort")]["n_busy"] == 1
    assert harness.ratio(s, "vig_ti", "ours", "off_ort") == pytest.approx(52.0 / 40.0)
    s2 = harness.summarize(back, include_busy=True)
    assert s2[("vig_ti", "off_ort")]["median"] == 42.0


def test_run_isolated_reads_last_json_line():
    res, busy, err = harness.run_isolated(
        [sys.executable, "-c", "print('noise'); print('{\"img_s\": 3.5}')"], timeout=60)
    assert err == "" and res == {"img_s": 3.5}
    assert 0.0 <= busy <= 1.0
    res, _, err = harness.run_isolated([sys.executable, "-c", "import sys; sys.exit('bad')"], 60)
    assert res is None and "bad" in err


def test_run_rounds_rotates_and_flags(monkeypatch):
    calls = []

    def fake(cmd, timeout, env=None):
        calls.append(cmd[0])
        return {"img_s": 10.0}, (0.9 if cmd[0] == "b" else 0.0), ""

    monkeypatch.setattr(harness, "run_isolated", fake)
    logs = []
    rows = harness.run_rounds(["a", "b"], "m", 2, lambda e, m: [e], log=logs.append)
    assert calls == ["a", "b", "b", "a"]
    assert [r.busy for r in rows] == [False, True, True, False]
    assert any("WARNING" in line for line in logs)


def test_from_rounds_renders_ratios(tmp_path):
    pytest.importorskip("onnxruntime")
    import subprocess

    rows = []
    for r in range(3):
        rows += [harness.RoundRow(r, 0, "default", "vig_ti", 50.0 + r, 0.0, False),
                 harness.RoundRow(r, 1, "ort", "vig_ti", 70.0, 0.0, False),
                 harness.RoundRow(r, 2, "official_ort", "vig_ti", 50.0, 0.0, r == 2)]
    rc = tmp_path / "x_rounds.csv"
    harness.write_rounds_csv(str(rc), rows)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    p = subprocess.run([sys.executable, str(script), "--from-rounds", str(rc),
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "WARNING: 1 of 9 runs" in p.stdout
    table = (tmp_path / "x_isolated.csv").read_text().splitlines()
    by = {ln.split(",")[1]: ln.split(",") for ln in table[1:]}
    assert float(by["default"][2]) == 51.0
    assert float(by["eager_vs_official_ort"][2]) == pytest.approx(51.0 / 50.0)
    assert by["eager_vs_official_ort"][6] == "met"
    assert float(by["ort_vs_official_ort"][2]) == pytest.approx(1.4)


def test_run_rounds_drops_a_failed_export_check(monkeypatch):
    # A child whose exported graph failed the float64 check: its speed is not counted, the row
    # says why, and a passed check is logged with its value.
    def fake(cmd, timeout, env=None):
        if cmd[0] == "bad":
            return {"img_s": 99.0, "status": "MISMATCH", "graph_err64": 0.078}, 0.0, ""
        return {"img_s": 10.0, "status": "ok", "graph_err64": 6e-12}, 0.0, ""

    monkeypatch.setattr(harness, "run_isolated", fake)
    logs = []
    rows = harness.run_rounds(["good", "bad"], "m", 1, lambda e, m: [e], log=logs.append)
    bad = next(r for r in rows if r.engine == "bad")
    assert bad.img_s != bad.img_s and "MISMATCH" in bad.error and "0.078" in bad.error
    assert harness.summarize(rows)[("m", "bad")]["n"] == 0
    assert any("float64 check 6.0e-12" in line for line in logs)
