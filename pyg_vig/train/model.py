"""Build a run's model from its configuration, and rebuild a trained one from its weights file.

``model.safetensors`` carries the configuration as metadata, so a run folder is usable without
its ``config.json``; timm checkpoints carry no such record, hence this module.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from pyg_vig.models.official import check_state_dict_keys
from pyg_vig.train.config import ConfigError, TrainConfig
from pyg_vig.utils.checkpoint import load_state_dict_file

__all__ = ["WEIGHTS_FILE", "build_model", "load_trained_model", "load_weights", "model_metadata"]

WEIGHTS_FILE = "model.safetensors"


def build_model(cfg: TrainConfig) -> nn.Module:
    """Create ``cfg.model`` from the registry with the data-derived sizes and regularisation."""
    import pyg_vig

    names = pyg_vig.list_models()
    if cfg.model not in names:
        raise ConfigError(f"unknown model '{cfg.model}' (available: {', '.join(names)})")
    return pyg_vig.create_model(
        cfg.model,
        pretrained=cfg.pretrained,  # the head is new when the data have other classes
        num_classes=cfg.num_classes,
        in_chans=cfg.in_chans,
        drop_path_rate=cfg.drop_path,
        drop_rate=cfg.drop,
        **cfg.model_args,
    )


def model_metadata(cfg: TrainConfig, **extra: Any) -> dict[str, str]:
    """The string metadata stored in ``model.safetensors``: enough to rebuild and use the model."""
    meta = {
        "format": "pyg_vig",
        "model": cfg.model,
        "num_classes": str(cfg.num_classes),
        "in_chans": str(cfg.in_chans),
        "image_size": str(cfg.image_size),
        "model_args": json.dumps(cfg.model_args),
        "classes": json.dumps(cfg.classes),
        "mean": json.dumps(cfg.mean),
        "std": json.dumps(cfg.std),
        "config": cfg.to_json(),
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def load_weights(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """``load_state_dict`` with one clear error line when architectures differ."""
    try:
        check_state_dict_keys(state_dict, model.state_dict())
    except ValueError as e:
        raise ConfigError(
            f"checkpoint {source} does not fit this model (another architecture or class "
            f"count?): {str(e).split('; ', 1)[-1]}"
        ) from None
    model.load_state_dict(state_dict)


def load_trained_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    model_fn: Callable[[TrainConfig], nn.Module] | None = None,
) -> tuple[nn.Module, TrainConfig]:
    """Rebuild a trained model from a run folder or its ``model.safetensors``, in eval mode.

    Returns:
        (nn.Module, TrainConfig): the model and the configuration it was trained with.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    state_dict, meta = load_state_dict_file(path)
    if meta.get("format") != "pyg_vig" or "config" not in meta:
        raise ConfigError(
            f"{path} has no pyg_vig training metadata; load it with "
            "pyg_vig.create_model(name, checkpoint=...) instead"
        )
    cfg = TrainConfig.from_dict(json.loads(meta["config"]), str(path))
    # the file holds every weight: no need to fetch the pretrained ones again
    model = (model_fn or build_model)(dataclasses.replace(cfg, pretrained=False))
    load_weights(model, state_dict, str(path))
    return model.to(device).eval(), cfg
