"""Training configuration: one flat dataclass, saved as ``config.json`` in every run folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEMO_CONFIG", "RUNTIME_FIELDS", "ConfigError", "RunSettings", "TrainConfig"]


class ConfigError(ValueError):
    """A user-facing problem with the configuration, data or run folder (one clear line)."""


# settings that may change when a run is resumed: they do not change what is computed
RUNTIME_FIELDS = frozenset(
    {"device", "workers", "checkpoint_every", "progress", "amp", "eval_every"}
)


class RunSettings:
    """JSON round trip of a run's dataclass of settings (a run folder's ``config.json``), shared
    by :class:`TrainConfig` and :class:`pyg_vig.detection.DetectConfig`. Subclasses name their
    settings in messages (``_KIND``) and say what a folder without ``config.json`` is not.
    """

    _KIND = "setting"
    _NO_CONFIG = "no config.json in run folder {folder}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config"):
        """Build from a dict, rejecting unknown keys with a :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown {cls._KIND}(s) {unknown}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path):
        """Read a run folder's ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(cls._NO_CONFIG.format(folder=path.parent))
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"unreadable run config {path}: {e}") from None
        return cls.from_dict(d, str(path))


@dataclass
class TrainConfig(RunSettings):
    """Hyper-parameters of a training run (the paper's Table 3 recipe, scaled to small data).

    ``None`` fields are filled from the data when the run starts (``num_classes``, ``in_chans``,
    ``image_size``, ``mean``, ``std``, ``classes``), so the saved ``config.json`` is complete.
    """

    # model
    model: str = "vig_mini"
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # start from the model's registered (ImageNet) weights
    drop_path: float = 0.1  # stochastic depth (Table 3: 0.1 for Ti/S/M)
    drop: float = 0.0
    # data
    data: str = "fashion_mnist_subset"
    image_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    classes: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # optimisation (Table 3: AdamW, lr 2e-3 at batch 1024, cosine, 20/300 warm-up epochs, wd 0.05)
    epochs: int = 10
    batch_size: int = 128  # global batch, split evenly across processes
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    clip_grad: float | None = 5.0
    # regularisation (Table 3: label smoothing 0.1, mixup 0.8, cutmix 1.0, random erasing 0.25)
    label_smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    reprob: float = 0.25
    crop_padding: int = 2
    hflip: float = 0.5
    auto_augment: str | None = None  # timm policy, e.g. 'rand-m9-mstd0.5-inc1' (RandAugment)
    ema: bool = True
    ema_decay: float = 0.9998
    # runtime
    seed: int = 0
    amp: str = "auto"  # 'auto', 'none', 'bf16', 'fp16'
    device: str = "auto"
    workers: int = 0
    checkpoint_every: int = 100  # steps between train_state.pt writes (also at every epoch end)
    eval_every: int = 1  # epochs between test-split evaluations (always after the last epoch)
    progress: bool = True

    def __post_init__(self) -> None:
        # every out-of-range number at once, each with the range it must be in
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("min_lr", self.min_lr >= 0, "0 or more"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("warmup_epochs", self.warmup_epochs >= 0, "0 or more"),
            ("clip_grad", self.clip_grad is None or self.clip_grad > 0, "positive (or None)"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("mixup", self.mixup >= 0, "0 or more"),
            ("cutmix", self.cutmix >= 0, "0 or more"),
            ("mixup_prob", 0 <= self.mixup_prob <= 1, "in [0, 1]"),
            ("reprob", 0 <= self.reprob <= 1, "in [0, 1]"),
            ("hflip", 0 <= self.hflip <= 1, "in [0, 1]"),
            ("crop_padding", self.crop_padding >= 0, "0 or more"),
            ("drop_path", 0 <= self.drop_path < 1, "in [0, 1)"),
            ("drop", 0 <= self.drop < 1, "in [0, 1)"),
            ("ema_decay", 0 < self.ema_decay < 1, "in (0, 1)"),
            ("workers", self.workers >= 0, "0 or more"),
            ("checkpoint_every", self.checkpoint_every >= 0, "0 (epoch ends only) or more"),
            ("eval_every", self.eval_every >= 1, "at least 1 (the last epoch is always scored)"),
        ]
        bad = [f"{name}={getattr(self, name)!r} (must be {rule})"
               for name, ok, rule in checks if not ok]
        if bad:
            raise ConfigError("invalid setting(s): " + "; ".join(bad))

    def to_json(self) -> str:
        """JSON text, keys in declaration order."""
        return json.dumps(self.to_dict(), indent=2)

    def differences(self, other: TrainConfig, ignore: frozenset[str] = RUNTIME_FIELDS) -> dict:
        """``{name: (self_value, other_value)}`` for the settings that differ."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


# What `pyg-vig train --demo` (and `make demo`) runs: the 3-stage pyramid pvig_mini as registered,
# 8 epochs at batch 96 with a high learning rate and light regularisation, the test split scored
# every 2 epochs (trial runs in docs/training.md: about 7 min on 2 CPU cores, 0.90+ on the full
# Fashion-MNIST test set; heavier augmentation underfits in so few epochs).
DEMO_CONFIG: dict[str, Any] = dict(
    model="pvig_mini",
    model_args={},
    data="fashion_mnist_subset",
    epochs=8,
    batch_size=96,
    lr=4e-3,
    warmup_epochs=0.5,
    label_smoothing=0.1,
    mixup=0.0,
    cutmix=0.0,
    reprob=0.0,
    hflip=0.5,
    crop_padding=0,
    drop_path=0.0,
    ema=True,
    ema_decay=0.998,
    eval_every=2,
)
