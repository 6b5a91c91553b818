"""One training epoch and one evaluation pass as free functions.

The :class:`~pyg_vig.train.Trainer` and ``pyg-vig eval`` both score a model with :func:`evaluate`,
so a run's reported accuracy and a later evaluation of its weights are computed the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EvalResult", "TrainStats", "evaluate", "train_one_epoch"]


class EvalResult(NamedTuple):
    """What :func:`evaluate` measured: mean loss, top-1 and top-5 accuracy over ``n`` images,
    and the top-1 predictions and targets (on the CPU) for a confusion matrix.
    """

    loss: float
    top1: float
    top5: float
    n: int
    pred: Tensor
    target: Tensor


class TrainStats(NamedTuple):
    """Sums over the steps :func:`train_one_epoch` ran: loss times images, correct top-1
    predictions (against the unmixed labels), images, and the global step reached.
    """

    loss_sum: float
    correct: int
    seen: int
    global_step: int


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Score ``model`` (put in eval mode, restored afterwards) over ``loader``'s ``(x, y)``
    batches: mean cross-entropy, top-1 and top-5 accuracy (top-5 equals 1 with 5 or fewer
    classes). An empty loader gives ``n == 0`` and zeros.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum, top5_sum, preds, targets = 0.0, 0, [], []
    try:
        for batch in loader:
            x, y = batch[0], batch[1]
            if len(y) == 0:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, amp_dtype):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, logits.shape[-1])
            top5_sum += int((logits.topk(k, dim=-1).indices == y[:, None]).any(-1).sum())
            preds.append(logits.argmax(-1).cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not targets:
        empty = torch.zeros(0, dtype=torch.long)
        return EvalResult(0.0, 0.0, 0.0, 0, empty, empty)
    pred, target = torch.cat(preds), torch.cat(targets)
    n = len(target)
    return EvalResult(loss_sum / n, (pred == target).float().mean().item(), top5_sum / n, n,
                      pred, target)


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str,
    criterion: Callable[[Tensor, Tensor], Tensor],
    global_step: int = 0,
    start_step: int = 0,
    mixup: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    mixup_criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float | None = None,
    clip_params: Any = None,
    scheduler: Any = None,
    ema: Any = None,
    ema_model: nn.Module | None = None,
    on_step: Callable[[int, float, int], None] | None = None,
) -> TrainStats:
    """Run ``model`` over ``loader`` once, one optimiser step per batch.

    Per step: ``mixup`` (e.g. :class:`timm.data.Mixup`) turns labels into soft targets scored
    by ``mixup_criterion`` (e.g. :class:`timm.loss.SoftTargetCrossEntropy`); otherwise
    ``criterion`` scores the hard labels. Then backward (through ``scaler`` for fp16), gradient
    clipping of ``clip_params`` (default: ``model``'s parameters), the optimiser step,
    ``scheduler.step_update(global_step)`` (timm's per-update schedulers) and
    ``ema.update(ema_model or model, step=global_step)`` (:class:`timm.utils.ModelEmaV3`; pass
    the unwrapped model as ``ema_model`` when ``model`` is a DDP wrapper).
    ``on_step(batch_index, loss, global_step)`` is called after each step, with batch indices
    counted from ``start_step`` (an epoch resumed mid-way).

    Raises:
        RuntimeError: when the loss stops being finite.
    """
    device = torch.device(device)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    params = list(clip_params) if clip_params is not None else list(model.parameters())
    for i, (x, y) in enumerate(loader, start=start_step):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, target = mixup(x, y)
            loss_fn = mixup_criterion
        else:
            target, loss_fn = y, criterion
        with _autocast(device, amp_dtype):
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(params, clip_grad)
            optimizer.step()
        global_step += 1
        if scheduler is not None:
            scheduler.step_update(global_step)
        if ema is not None:
            ema.update(ema_model if ema_model is not None else model, step=global_step)
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"loss is {value} at step {global_step}; stopping")
        loss_sum += value * len(y)
        correct += int((logits.argmax(-1) == y).sum())
        seen += len(y)
        if on_step is not None:
            on_step(i, value, global_step)
    return TrainStats(loss_sum, correct, seen, global_step)
