"""Optimiser, learning-rate schedule and weight EMA of a run, from timm's parts.

timm's :class:`~timm.scheduler.CosineLRScheduler` (per-update, warm-up prefix) and
:class:`~timm.utils.ModelEmaV3` (EMA of parameters and buffers with a decay warm-up) are what
the official ViG training used through timm's ``train.py``; only the parameter grouping and the
AMP choice are ours.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pyg_vig.train.config import ConfigError, TrainConfig

__all__ = ["build_ema", "build_optimizer", "build_scheduler", "param_groups", "resolve_amp"]

# the first learning rate of the warm-up, as a fraction of the peak
WARMUP_START = 1e-3
# ModelEmaV3's warm-up: decay = 1 - (1 + step / 10) ** -1, i.e. step / (10 + step), capped at
# ema_decay (TensorFlow's ExponentialMovingAverage(num_updates=...) ramp): a short run's average
# is then not dominated by the random initial weights
EMA_WARMUP_GAMMA, EMA_WARMUP_POWER = 10.0, 1.0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norm weights, and whatever ``no_weight_decay()`` names."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW over :func:`param_groups` (the paper's optimiser)."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=device.type == "cuda"
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                    warmup_steps: int):
    """The per-update cosine schedule (timm's): a linear warm-up from ``lr * 1e-3`` over
    ``warmup_steps``, then a cosine from ``lr`` down to ``min_lr`` at ``total_steps``.

    It is a closed form of the update count, so a resumed run (whose length may have grown)
    continues on the new curve after ``step_update(global_step)``.
    """
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps - warmup_steps, 1),
        lr_min=cfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=cfg.lr * WARMUP_START,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=False,
    )


def build_ema(model: nn.Module, cfg: TrainConfig):
    """The EMA of ``model``'s weights and buffers, timm's :class:`~timm.utils.ModelEmaV3`
    (``None`` when ``cfg.ema`` is off).
    """
    if not cfg.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True,
                      warmup_gamma=EMA_WARMUP_GAMMA, warmup_power=EMA_WARMUP_POWER)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device`` (``None``: full fp32).

    ``'auto'`` is bf16 on CUDA GPUs that support it (else fp16 with a gradient scaler) and fp32
    on CPU, where bf16 autocast is available with ``'bf16'`` but only pays off on CPUs with
    native bf16 units.
    """
    if amp not in ("auto", "none", "bf16", "fp16"):
        raise ConfigError(f"amp must be one of auto/none/bf16/fp16, got {amp!r}")
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp 'fp16' needs a CUDA device; use 'bf16' on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16
