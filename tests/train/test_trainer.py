import json

import pytest
import torch
from safetensors import safe_open
from stand_in import StandInMLP, stand_in_fn

from pyg_vig.train import (
    ConfigError,
    ResumableSampler,
    TrainConfig,
    Trainer,
    load_trained_model,
    resolve_amp,
)
from pyg_vig.train.trainer import _param_groups


def _cfg(data, **kw):
    base = dict(
        model="stand_in",
        data=str(data),
        epochs=2,
        batch_size=32,
        checkpoint_every=3,
        progress=False,
        ema=True,
        ema_decay=0.9,
        warmup_epochs=0.5,
        lr=5e-3,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def _fit(cfg, run_dir, **kw):
    return Trainer(cfg, run_dir, model_fn=stand_in_fn, log=lambda m: None, **kw).fit()


def test_fit_writes_complete_run_folder(tiny_idx, tmp_path):
    run = tmp_path / "run"
    summary = _fit(_cfg(tiny_idx, mixup=0.8, cutmix=1.0), run)
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "train_state.pt",
        "model.safetensors",
        "metrics.csv",
        "metrics.json",
        "confusion_matrix.png",
        "training_curves.png",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["global_step"] == 16
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        len(metrics["epochs"]) == 2
        and metrics["summary"]["test_accuracy"] == summary["test_accuracy"]
    )
    csv = (run / "metrics.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,step,lr,train_loss") and len(csv) == 3
    assert metrics["epochs"][-1]["lr"] == pytest.approx(1e-5)  # cosine ends at min_lr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["num_classes"] == 10 and cfg["in_chans"] == 1 and cfg["image_size"] == 28
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "stand_in" and meta["num_classes"] == "10" and meta["ema"] == "True"
    assert json.loads(meta["config"])["classes"][:2] == ["0", "1"]  # IDX folders have no names
    # the saved weights reproduce the reported accuracy
    model, saved_cfg = load_trained_model(run, model_fn=stand_in_fn)
    from pyg_vig.datasets import build_transform, load_dataset

    test = load_dataset(
        tiny_idx, "test", transform=build_transform(False, 28, saved_cfg.mean, saved_cfg.std)
    )
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(summary["test_accuracy"])


def test_refuses_to_overwrite_a_run_folder(tiny_idx, tmp_path):
    run = tmp_path / "run"
    _fit(_cfg(tiny_idx, epochs=1), run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        _fit(_cfg(tiny_idx, epochs=1), run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_checks(tiny_idx, tmp_path):
    run = tmp_path / "run"
    _fit(_cfg(tiny_idx, epochs=1), run)
    with pytest.raises(ConfigError, match=r"does not match the configuration \(lr: saved 0.005"):
        _fit(_cfg(tiny_idx, epochs=1, lr=1e-3), run, resume=True)
    with pytest.raises(ConfigError, match="no train_state.pt"):
        _fit(_cfg(tiny_idx), tmp_path / "elsewhere", resume=True)
    # more epochs on a finished run is a different schedule: refused too
    with pytest.raises(ConfigError, match="epochs: saved 1 vs given 3"):
        _fit(_cfg(tiny_idx, epochs=3), run, resume=True)
    # same config: resuming a finished run just re-reports it
    summary = _fit(_cfg(tiny_idx, epochs=1, workers=0), run, resume=True)
    assert summary["global_step"] == 8


def test_checkpoint_of_another_architecture(tiny_idx, tmp_path):
    run = tmp_path / "run"
    _fit(_cfg(tiny_idx, epochs=1), run)

    def wider(cfg):
        return StandInMLP(cfg.in_chans, cfg.num_classes, cfg.image_size, width=48)

    with pytest.raises(ConfigError, match="does not fit this model .*wrong shapes"):
        load_trained_model(run, model_fn=wider)

    def other_classes(cfg):
        return StandInMLP(cfg.in_chans, 5, cfg.image_size)

    with pytest.raises(ConfigError, match=r"head.weight: checkpoint \(10, 32\) vs model \(5, 32\)"):
        load_trained_model(run / "model.safetensors", model_fn=other_classes)


def test_missing_data_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset path not found: .*nowhere"):
        _fit(_cfg(tmp_path / "nowhere"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_on_cpu(tiny_idx, tmp_path):
    summary = _fit(_cfg(tiny_idx, epochs=1, amp="bf16"), tmp_path / "run")
    assert summary["global_step"] == 8
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))


def test_resumable_sampler_partitions_global_batches():
    single = ResumableSampler(100, 8, seed=3)
    ranks = [ResumableSampler(100, 8, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in [single, *ranks]:
        s.set_epoch(1)
    a, b0, b1 = list(single), list(ranks[0]), list(ranks[1])
    assert len(a) == 96 and len(b0) == len(b1) == 48
    for i in range(12):  # global batch i is the union of the ranks' batch i
        assert sorted(a[8 * i : 8 * i + 8]) == sorted(b0[4 * i : 4 * i + 4] + b1[4 * i : 4 * i + 4])
    single.set_epoch(1, start_step=5)
    assert list(single) == a[40:] and len(single) == 56
    single.set_epoch(2)
    assert list(single) != a


def test_param_groups_skip_bias_norm_and_no_weight_decay():
    m = StandInMLP()
    decay, no_decay = _param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([32, 784])]
    assert any(p is m.head.weight for p in no_decay["params"])


def test_ema_warmup_avg_fn():
    from torch.optim.swa_utils import AveragedModel

    from pyg_vig.train.trainer import ema_warmup_avg_fn

    lin = torch.nn.Linear(1, 1, bias=False)
    ema = AveragedModel(lin, multi_avg_fn=ema_warmup_avg_fn(0.99), use_buffers=True)
    expected = None
    for n in range(30):
        with torch.no_grad():
            lin.weight.fill_(float(n))
        ema.update_parameters(lin)
        if expected is None:
            expected = 0.0  # the first update copies
        else:
            d = min(0.99, (1 + n) / (10 + n))  # n updates averaged so far
            expected = d * expected + (1 - d) * n
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5)
