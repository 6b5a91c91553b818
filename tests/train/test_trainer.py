import copy
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
from pyg_vig.train.optim import param_groups


def cosine_lr_factor(step, total, warmup, min_ratio, warmup_start=1e-3):
    """The recipe's schedule written out: linear warm-up, then cosine to ``min_ratio``."""
    import math

    if step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    t = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

TINY_VIG = {"embed_dim": 16, "depth": 2, "head_hidden": 32}


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


def test_evaluate_dataset_scores_the_final_weights_on_other_data(tiny_idx, tmp_path):
    import numpy as np

    from pyg_vig.datasets import read_idx, write_idx

    run = tmp_path / "run"
    trainer = Trainer(_cfg(tiny_idx, epochs=1), run, model_fn=stand_in_fn, log=lambda m: None)
    summary = trainer.fit()
    # the run's own test split: the accuracy fit() reported
    same = trainer.evaluate_dataset(str(tiny_idx))
    assert same["images"] == 128 and same["split"] == "test"
    assert same["accuracy"] == pytest.approx(summary["test_accuracy"])
    # another folder (the test images mirrored): the saved weights on those images
    other = tmp_path / "mirrored"
    other.mkdir()
    images = read_idx(tiny_idx / "t10k-images-idx3-ubyte.gz")[:, :, ::-1]
    write_idx(other / "t10k-images-idx3-ubyte.gz", np.ascontiguousarray(images))
    labels = read_idx(tiny_idx / "t10k-labels-idx1-ubyte.gz")
    write_idx(other / "t10k-labels-idx1-ubyte.gz", labels)
    result = trainer.evaluate_dataset(str(other))
    model, cfg = load_trained_model(run, model_fn=stand_in_fn)
    x = (torch.from_numpy(images.copy()).float().div(255).unsqueeze(1) - cfg.mean[0]) / cfg.std[0]
    with torch.no_grad():
        expected = model(x).argmax(1).numpy() == labels
    assert result["accuracy"] == pytest.approx(expected.mean())
    extra = json.loads((run / "metrics.json").read_text())["summary"]["extra_eval"]
    assert [e["data"] for e in extra] == [str(tiny_idx), str(other)]
    assert extra[1] == result


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
    # same config: resuming a finished run just re-reports it
    summary = _fit(_cfg(tiny_idx, epochs=1, workers=0), run, resume=True)
    assert summary["global_step"] == 8


def test_resume_with_more_epochs_extends_a_finished_run(tiny_idx, tmp_path):
    shorter = tmp_path / "shorter"
    _fit(_cfg(tiny_idx, epochs=2), shorter)
    with pytest.raises(ConfigError, match="epochs: saved 2 vs given 1.*fewer epochs"):
        _fit(_cfg(tiny_idx, epochs=1), shorter, resume=True)
    run = tmp_path / "run"
    _fit(_cfg(tiny_idx, epochs=1), run)
    lines = []
    summary = Trainer(_cfg(tiny_idx, epochs=3), run, resume=True, model_fn=stand_in_fn,
                      log=lines.append).fit()  # fmt: skip
    assert summary["global_step"] == 24 and summary["epochs"] == 3
    assert any("extending the run from 1 to 3 epochs" in ln for ln in lines)
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    rows = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # epochs 2-3 follow the cosine of the 3-epoch run (warm-up 0.5 epochs = 4 steps)
    for r in rows[1:]:
        want = 5e-3 * cosine_lr_factor(r["step"], 24, 4, 1e-5 / 5e-3)
        assert r["lr"] == pytest.approx(want, rel=1e-6)
    assert rows[-1]["lr"] == pytest.approx(1e-5)


def test_timm_mixup_targets_and_soft_target_loss_smooth_once():
    # the trainer's mixed-batch loss: timm's Mixup targets scored by SoftTargetCrossEntropy
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    y = torch.tensor([0, 1])
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, prob=0.0, label_smoothing=0.1, num_classes=3)
    x, soft = mix(torch.zeros(2, 1, 4, 4), y)  # prob 0: no mixing, smoothed one-hot targets
    assert soft[0].tolist() == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    by_hand = -(soft * log_p).sum(1).mean()
    assert SoftTargetCrossEntropy()(logits, soft).item() == pytest.approx(by_hand.item())
    # = the hard-label loss's own smoothing (smoothed once) ...
    hard = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y)
    assert hard.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # ... while smoothing the smoothed targets again (the old bug) is another number
    twice = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, soft)
    assert abs(twice.item() - by_hand.item()) > 1e-3


def test_mixup_with_an_odd_batch_per_process_is_refused(tiny_idx, tmp_path):
    with pytest.raises(ConfigError, match="even batch per process.*--batch-size"):
        _fit(_cfg(tiny_idx, batch_size=31, mixup=0.8), tmp_path / "run")


def test_paper_recipe_real_vig_loss_is_smoothed_once(tiny_idx, tmp_path):
    """The real Trainer and a real ViG, mixup + cutmix + label smoothing on: the step loss is
    the soft-target cross-entropy of Mixup's (already smoothed) targets."""
    cfg = _cfg(tiny_idx, model="vig_mini", model_args=TINY_VIG, epochs=1, mixup=0.8, cutmix=1.0,
               label_smoothing=0.1, reprob=0.25, drop_path=0.1, amp="none")  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", log=lambda m: None)
    trainer._build_data()
    trainer._build_model()
    trainer.global_step = 0
    x, y = next(iter(trainer.train_loader))
    ref = copy.deepcopy(trainer.model).train()
    import numpy as np

    from pyg_vig.train import train_one_epoch

    torch.manual_seed(7)
    np.random.seed(7)  # timm's Mixup draws from numpy
    losses, x0 = [], x.clone()  # timm's Mixup mixes the batch in place
    train_one_epoch(trainer.model, [(x, y)], trainer.optimizer, device="cpu",
                    criterion=trainer.criterion, mixup=trainer.mixup,
                    mixup_criterion=trainer.mixup_criterion,
                    on_step=lambda i, loss, step: losses.append(loss))  # fmt: skip
    loss = losses[0]
    torch.manual_seed(7)  # the same mixing and drop-path draws
    np.random.seed(7)
    xm, target = trainer.mixup(x0, y)
    with torch.no_grad():
        logits = ref(xm)
    assert target.shape == (32, 10) and torch.allclose(target.sum(1), torch.ones(32))
    assert target.min() >= 0.1 / 10 - 1e-6  # smoothed by Mixup
    by_hand = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert loss == pytest.approx(by_hand.item(), rel=1e-5)


def test_paper_recipe_real_vig_fits(tiny_idx, tmp_path):
    cfg = _cfg(tiny_idx, model="vig_mini", model_args=TINY_VIG, epochs=1, mixup=0.8, cutmix=1.0,
               label_smoothing=0.1, reprob=0.25, drop_path=0.1)  # fmt: skip
    summary = Trainer(cfg, tmp_path / "run", log=lambda m: None).fit()
    assert summary["global_step"] == 8 and 0.0 <= summary["test_accuracy"] <= 1.0
    model, _ = load_trained_model(tmp_path / "run")
    assert type(model).__name__ == "ViG" and model.num_classes == 10


def test_eval_every_scores_the_test_split_every_n_epochs_and_at_the_end(tiny_idx, tmp_path):
    lines = []
    every = Trainer(_cfg(tiny_idx, epochs=3, eval_every=2), tmp_path / "every",
                    model_fn=stand_in_fn, log=lines.append).fit()  # fmt: skip
    metrics = json.loads((tmp_path / "every" / "metrics.json").read_text())
    assert [r["test_acc"] is None for r in metrics["epochs"]] == [True, False, False]
    assert [ln.split(" | ")[2] for ln in lines if ln.startswith("epoch 1/3")] == ["test_acc -"]
    csv = (tmp_path / "every" / "metrics.csv").read_text().splitlines()
    assert csv[1].split(",")[5:7] == ["", ""]  # test_loss, test_acc of epoch 1
    assert (tmp_path / "every" / "training_curves.png").is_file()
    # evaluation changes nothing else: the same weights and final accuracy as every epoch
    each = _fit(_cfg(tiny_idx, epochs=3), tmp_path / "each")
    assert every["test_accuracy"] == each["test_accuracy"]
    assert metrics["epochs"][1]["test_acc"] == pytest.approx(
        json.loads((tmp_path / "each" / "metrics.json").read_text())["epochs"][1]["test_acc"])
    a, _ = load_trained_model(tmp_path / "every", model_fn=stand_in_fn)
    b, _ = load_trained_model(tmp_path / "each", model_fn=stand_in_fn)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    # a runtime setting: a resumed run may change it
    Trainer(_cfg(tiny_idx, epochs=4, eval_every=1), tmp_path / "every", resume=True,
            model_fn=stand_in_fn, log=lambda m: None).fit()  # fmt: skip
    rows = json.loads((tmp_path / "every" / "metrics.json").read_text())["epochs"]
    assert len(rows) == 4 and rows[3]["test_acc"] is not None


def test_warmup_longer_than_the_run_is_clamped(tiny_idx, tmp_path):
    lines = []
    with pytest.warns(UserWarning, match="whole run a warm-up; using 0.2 warm-up epochs"):
        Trainer(_cfg(tiny_idx, epochs=2, warmup_epochs=5), tmp_path / "run",
                model_fn=stand_in_fn, log=lines.append).fit()  # fmt: skip
    assert any(ln.startswith("warning: --warmup-epochs 5 >= --epochs 2") for ln in lines)
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    # 0.2 epochs = 2 warm-up steps of 16, then the cosine
    assert rows[0]["lr"] == pytest.approx(5e-3 * cosine_lr_factor(8, 16, 2, 1e-5 / 5e-3))
    assert rows[0]["lr"] > 2e-3 and rows[-1]["lr"] == pytest.approx(1e-5)
    # the saved configuration keeps what was asked, so --resume with the same flags matches
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_epochs"] == 5


def test_progress_without_a_terminal_prints_plain_lines(tiny_idx, tmp_path, capsys):
    lines = []
    Trainer(_cfg(tiny_idx, epochs=1, progress=True), tmp_path / "run", model_fn=stand_in_fn,
            log=lines.append).fit()  # fmt: skip
    out = capsys.readouterr()
    assert "\r" not in out.err and "\r" not in out.out  # no tqdm redraws in a log file
    steps = [ln for ln in lines if ln.startswith("epoch 1/1 step ")]
    assert steps[0].startswith("epoch 1/1 step 1/8 | loss ") and len(steps) == 7
    assert any(ln.startswith("epoch 1/1 | loss") for ln in lines)  # the epoch summary


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
    decay, no_decay = param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([32, 784])]
    assert any(p is m.head.weight for p in no_decay["params"])


def test_ema_is_timm_model_ema_v3_with_the_recipe_warmup():
    from timm.utils import ModelEmaV3

    from pyg_vig.train.optim import build_ema

    lin = torch.nn.Linear(1, 1, bias=False)
    ema = build_ema(lin, TrainConfig(ema=True, ema_decay=0.99))
    assert isinstance(ema, ModelEmaV3)
    assert build_ema(lin, TrainConfig(ema=False)) is None
    expected = None
    for step in range(1, 31):  # the global step after each optimiser step
        with torch.no_grad():
            lin.weight.fill_(float(step))
        ema.update(lin, step=step)
        if expected is None:
            expected = 1.0  # the first update copies
        else:
            d = min(0.99, (step - 1) / (10 + step - 1))  # warm-up: n / (10 + n)
            expected = d * expected + (1 - d) * step
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5)


def test_out_of_range_settings_are_refused_with_their_ranges(tiny_idx, tmp_path):
    with pytest.raises(ConfigError) as e:
        _cfg(tiny_idx, epochs=0, eval_every=0, ema_decay=1.0, label_smoothing=-0.1)
    msg = str(e.value)
    for part in ("epochs=0 (must be at least 1)", "eval_every=0",
                 "ema_decay=1.0 (must be in (0, 1))", "label_smoothing=-0.1 (must be in [0, 1))"):
        assert part in msg
    assert not (tmp_path / "run").exists()
