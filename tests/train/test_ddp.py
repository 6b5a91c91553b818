"""Data-parallel training: 2 CPU processes (gloo, launched by torchrun) vs 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyg_vig.utils.checkpoint import load_state_dict_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

RUNNER = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
from stand_in import stand_in_fn
from pyg_vig.train import TrainConfig, Trainer, cleanup_distributed


def main(cfg, run_dir):  # as `pyg-vig train`: the trainer is freed when this returns
    try:
        trainer = Trainer(cfg, run_dir, model_fn=stand_in_fn)
        trainer.fit()
        trainer.evaluate_dataset(cfg.data)  # sharded over the ranks like the per-epoch test
    finally:
        cleanup_distributed()  # a DDP reducer still alive here could deadlock on its release


main(TrainConfig(**json.loads(sys.argv[1])), sys.argv[2])
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *args,
    ]


def _run(cmd):
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_idx, tmp_path):
    # No BatchNorm (CPU BatchNorm cannot synchronise across processes) and no random
    # augmentation (each rank draws its own): then DDP must reproduce single-process SGD.
    cfg = dict(
        model="stand_in", model_args={"bn": False}, data=str(tiny_idx), epochs=2, batch_size=32,
        lr=5e-3, warmup_epochs=0.5, mixup=0.0, cutmix=0.0, reprob=0.0, hflip=0.0,
        crop_padding=0, ema=True, ema_decay=0.9, progress=False, device="cpu",
    )  # fmt: skip
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    _run([sys.executable, str(script), json.dumps(cfg), str(tmp_path / "one")])
    _run(_torchrun(str(script), json.dumps(cfg), str(tmp_path / "two")))
    a, _ = load_state_dict_file(tmp_path / "one" / "model.safetensors")
    b, _ = load_state_dict_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["summary"]["world_size"] == 2 and m1["summary"]["world_size"] == 1
    for m in (m1, m2):  # the extra evaluation of the test split gives the reported accuracy
        assert m["summary"]["extra_eval"][0]["images"] == 128
        assert m["summary"]["extra_eval"][0]["accuracy"] == pytest.approx(
            m["summary"]["test_accuracy"])
    for r1, r2 in zip(m1["epochs"], m2["epochs"], strict=True):
        assert r1["step"] == r2["step"]
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-4)
        assert r1["test_acc"] == pytest.approx(r2["test_acc"])


@pytest.mark.slow
def test_torchrun_cli_vig_with_batchnorm(tiny_idx, tmp_path):
    # ViG has BatchNorm: on CPU each process normalises its half-batch, so results differ from
    # one process by that noise only. Compare the training loss closely, not bit for bit.
    args = [
        "--data", str(tiny_idx), "--model", "vig_mini", "--model-args",
        '{"embed_dim": 16, "depth": 2, "head_hidden": 32}', "--epochs", "2", "--batch-size",
        "32", "--mixup", "0", "--cutmix", "0", "--reprob", "0", "--hflip", "0",
        "--crop-padding", "0", "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    one = _run([sys.executable, "-m", "pyg_vig", "train", *args, "-o", str(tmp_path / "one")])
    two = _run(_torchrun("-m", "pyg_vig", "train", *args, "-o", str(tmp_path / "two")))
    assert one.stdout.splitlines()[-1].startswith("test_accuracy=")
    assert two.stdout.splitlines()[-1].startswith("test_accuracy=")
    assert two.stdout.count("test_accuracy=") == 1  # only rank 0 reports
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["epochs"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["epochs"]
    for r1, r2 in zip(m1, m2, strict=True):
        assert r1["step"] == r2["step"]
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=0.05)
    # Each process keeps its own BatchNorm statistics; the reported test loss is that of the
    # saved weights (rank 0's statistics) on every shard, as `pyg-vig eval` computes it.
    from torch.utils.data import DataLoader

    from pyg_vig.datasets import build_transform, load_dataset
    from pyg_vig.train import evaluate, load_trained_model

    model, cfg = load_trained_model(tmp_path / "two")
    test = load_dataset(tiny_idx, "test", transform=build_transform(False, 28, cfg.mean, cfg.std))
    r = evaluate(model, DataLoader(test, batch_size=64), device="cpu")
    loss, acc = r.loss, r.top1
    summary = json.loads((tmp_path / "two" / "metrics.json").read_text())["summary"]
    assert summary["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert summary["test_accuracy"] == pytest.approx(acc)
