"""A run saved before training moved to timm's ModelEmaV3 still resumes (and extends)."""

import shutil
from pathlib import Path

import numpy as np
import torch

from pyg_vig.cli import main
from pyg_vig.datasets import embedded_path, write_idx

OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_before_timm_ema"


def _data(root: Path) -> None:
    """The IDX folder the fixture run was trained on (its config says ``"data": "data"``)."""
    root.mkdir()
    with np.load(embedded_path()) as d:
        for split, prefix, n in (("train", "train", 256), ("test", "t10k", 128)):
            step = len(d[f"{split}_labels"]) // n
            write_idx(root / f"{prefix}-images-idx3-ubyte.gz", d[f"{split}_images"][::step][:n])
            write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", d[f"{split}_labels"][::step][:n])


def test_old_averaged_model_ema_state_resumes(tmp_path, monkeypatch, capsys):
    saved = torch.load(OLD_RUN / "train_state.pt", weights_only=True)
    assert "n_averaged" in saved["ema"]  # the old format this test is about
    monkeypatch.chdir(tmp_path)
    _data(tmp_path / "data")
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)

    from pyg_vig.train import TrainConfig, Trainer

    cfg = TrainConfig.load(run / "config.json")
    trainer = Trainer(cfg, run, resume=True, log=lambda msg: None)
    trainer._build_data()
    trainer._build_model()
    epoch, _ = trainer._load_state()
    assert epoch == saved["epoch"]
    ema = trainer.ema.state_dict()
    for k, v in saved["ema"].items():
        if k != "n_averaged":
            assert torch.equal(ema[k], v), k  # the old averages, not a fresh copy of the model
    # and through the command line: one more epoch on top of the saved one
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "extending the run from 1 to 2 epochs" in out
    assert out.strip().splitlines()[-1].startswith("test_accuracy=")
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
