"""Training: the paper's recipe with crash-safe checkpoints and data-parallel runs.

.. code-block:: python

    from pyg_vig.train import TrainConfig, Trainer

    summary = Trainer(TrainConfig(model="vig_mini", epochs=10), "runs/my_run").fit()
    print(summary["test_accuracy"])
"""

from pyg_vig.train.config import DEMO_CONFIG, RUNTIME_FIELDS, ConfigError, TrainConfig
from pyg_vig.train.distributed import (
    DistInfo,
    ResumableSampler,
    cleanup_distributed,
    init_distributed,
)
from pyg_vig.train.trainer import (
    Trainer,
    build_model,
    cosine_lr_factor,
    ema_warmup_avg_fn,
    evaluate,
    load_trained_model,
    model_metadata,
    resolve_amp,
    soft_target_cross_entropy,
)

__all__ = [
    "DEMO_CONFIG",
    "RUNTIME_FIELDS",
    "ConfigError",
    "DistInfo",
    "ResumableSampler",
    "TrainConfig",
    "Trainer",
    "build_model",
    "cleanup_distributed",
    "cosine_lr_factor",
    "ema_warmup_avg_fn",
    "evaluate",
    "init_distributed",
    "load_trained_model",
    "model_metadata",
    "resolve_amp",
    "soft_target_cross_entropy",
]
