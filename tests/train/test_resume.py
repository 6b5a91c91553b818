"""Crash safety: ``kill -9`` a real training process mid-epoch, then ``--resume`` it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyg_vig.utils.checkpoint import load_state_dict_file

REPO = Path(__file__).resolve().parents[2]
TINY_VIG = '{"embed_dim": 16, "depth": 2, "head_hidden": 32}'


def _train_cmd(data, out, *extra):
    return [
        sys.executable, "-m", "pyg_vig", "train", "--data", str(data), "--model", "vig_mini",
        "--model-args", TINY_VIG, "--epochs", "2", "--batch-size", "32", "--checkpoint-every", "2",
        "--lr", "3e-3", "--ema-decay", "0.9", "--no-progress", "--device", "cpu", "--amp", "none",
        "--output", str(out), *extra,
    ]  # fmt: skip


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYG_VIG_DEBUG", None)
    return env


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_uninterrupted_run(tiny_idx, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(_train_cmd(tiny_idx, ref), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(_train_cmd(tiny_idx, run), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    state = run / "train_state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    saved = torch.load(state, weights_only=True)  # whatever was on disk is complete
    total_steps = 2 * 256 // 32
    assert 0 < saved["global_step"] < total_steps, "killed too late to test a mid-run resume"
    assert not list(run.glob("*.tmp"))

    cmd = [sys.executable, "-m", "pyg_vig", "train", "--resume", str(run), "--no-progress"]
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {saved['global_step']}" in resumed.stdout
    assert resumed.stdout.strip().splitlines()[-1].startswith("test_accuracy=")
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs

    # model, optimizer, schedule, EMA, data order and RNG all continue where they stopped
    a, _ = load_state_dict_file(ref / "model.safetensors")
    b, _ = load_state_dict_file(run / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert done.stdout.splitlines()[-1] == resumed.stdout.splitlines()[-1]
