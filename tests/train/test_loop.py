import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyg_vig.train import EvalResult, evaluate, train_one_epoch


class Fixed(torch.nn.Module):
    """Returns stored logits for image index x[:, 0]."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def test_evaluate_top1_top5_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 7, generator=g)
    y = torch.randint(0, 7, (20,), generator=g)
    loader = DataLoader(TensorDataset(torch.arange(20.0)[:, None], y), batch_size=6)
    model = Fixed(logits).train()
    r = evaluate(model, loader, device="cpu")
    assert isinstance(r, EvalResult) and r.n == 20 and model.training  # mode restored
    assert r.top1 == pytest.approx((logits.argmax(1) == y).float().mean().item())
    top5 = (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    assert r.top5 == pytest.approx(top5) and r.top5 >= r.top1
    assert r.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert torch.equal(r.pred, logits.argmax(1)) and torch.equal(r.target, y)
    empty = evaluate(model, [], device="cpu")
    assert empty.n == 0 and empty.top1 == 0.0


def test_train_one_epoch_steps_schedule_and_ema():
    from pyg_vig.train import TrainConfig
    from pyg_vig.train.optim import build_ema, build_optimizer, build_scheduler

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = torch.nn.Linear(4, 2)
    cfg = TrainConfig(lr=0.1, min_lr=0.0, ema=True, ema_decay=0.5)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    sched = build_scheduler(opt, cfg, total_steps=8, warmup_steps=0)
    ema = build_ema(model, cfg)
    calls = []
    stats = train_one_epoch(model, loader, opt, device="cpu",
                            criterion=torch.nn.CrossEntropyLoss(), global_step=4, start_step=0,
                            scheduler=sched, ema=ema, on_step=lambda *a: calls.append(a))
    assert stats.global_step == 8 and stats.seen == 64 and len(calls) == 4
    assert [c[2] for c in calls] == [5, 6, 7, 8]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # end of the cosine
    assert not torch.equal(ema.module.weight, model.weight)  # an average, not a copy
    with pytest.raises(RuntimeError, match="loss is nan"):
        train_one_epoch(model, loader, opt, device="cpu",
                        criterion=lambda out, t: out.sum() * float("nan"))
