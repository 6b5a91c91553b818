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
from pyg_vig.train.loop import EvalResult, TrainStats, evaluate, train_one_epoch
from pyg_vig.train.model import build_model, load_trained_model, model_metadata
from pyg_vig.train.optim import resolve_amp
from pyg_vig.train.trainer import Trainer

__all__ = [
    "DEMO_CONFIG",
    "RUNTIME_FIELDS",
    "ConfigError",
    "DistInfo",
    "EvalResult",
    "ResumableSampler",
    "TrainConfig",
    "TrainStats",
    "Trainer",
    "build_model",
    "cleanup_distributed",
    "evaluate",
    "init_distributed",
    "load_trained_model",
    "model_metadata",
    "resolve_amp",
    "train_one_epoch",
]
