"""Model registry: ``create_model`` / ``list_models`` in the style of timm."""

from __future__ import annotations

import fnmatch
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "default_cfgs", "resolve_name"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}
default_cfgs: dict[str, dict] = {}

# Friendly override names → constructor argument names (both spellings are accepted).
_OVERRIDE_ALIASES = {
    "drop_path": "drop_path_rate",
    "use_stochastic": "stochastic",
    "dilation": "use_dilation",
    "num_knn": "k",
    "relative_bias": "relative_pos",
    "graph_backend": "backend",
    "knn_backend": "backend",
}


def _cfg(**kwargs) -> dict:
    cfg = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.9,
               interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               first_conv="stem.convs.0", classifier="head.out", license="mit")
    cfg.update(kwargs)
    return cfg


def register_model(name: str, cfg: dict | None = None, aliases: Sequence[str] = ()):
    """Register a builder ``fn(**kwargs) -> nn.Module`` under ``name`` (and ``aliases``)."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = fn
        default_cfgs[name] = _cfg(**(cfg or {}))
        for alias in aliases:
            _ALIASES[alias] = name
        return fn
    return deco


def list_models(filter: str = "", include_aliases: bool = False) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``"pvig*"``)."""
    names = list(_MODELS) + (list(_ALIASES) if include_aliases else [])
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return sorted(names)


def resolve_name(name: str) -> str:
    """Canonical name for ``name`` or an alias (``vig_ti_224_gelu`` → ``vig_ti``)."""
    base = name.split(".")[0]  # tolerate timm-style weight tags: 'pvig_s.in1k'
    base = _ALIASES.get(base, base)
    if base not in _MODELS:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return base


def _normalise_overrides(builder: Callable, overrides: dict) -> dict:
    out = {}
    for key, value in overrides.items():
        key = _OVERRIDE_ALIASES.get(key, key)
        if key == "use_dilation" and not isinstance(value, bool):
            raise ValueError(f"dilation override must be True/False, got {value!r}")
        out[key] = value
    return out


def create_model(name: str, *, pretrained: bool = False, num_classes: int = 1000,
                 checkpoint: str | Path | None = None, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, **overrides) -> nn.Module:
    """Build a registered ViG model, optionally loading weights.

    .. code-block:: python

        model = pyg_vig.create_model("pvig_s", num_classes=10, drop_path_rate=0.1, conv="edge")
        backbone = pyg_vig.create_model("pvig_s", features_only=True, out_indices=(0, 1, 2, 3))

    Args:
        name (str): a name from :func:`list_models` or an official alias (``vig_ti_224_gelu``).
        pretrained (bool): unsupported (no weights are downloaded); pass ``checkpoint=``.
        num_classes (int): classifier size. (default: :obj:`1000`)
        checkpoint (str or Path, optional): an official checkpoint (plain or wrapped under
            ``model``/``state_dict``) or one of ours (``.safetensors`` or torch file).
        features_only (bool): return a feature-pyramid backbone (pyramid models).
        out_indices (sequence of int, optional): stages returned with ``features_only``.
        **overrides: constructor arguments such as ``conv`` (``"mr"``, ``"edge"``, ``"gin"``,
            ``"sage"`` or a PyG conv factory), ``k``, ``heads``, ``use_dilation``,
            ``stochastic``, ``epsilon``, ``drop_path_rate``, ``relative_pos``, ``backend``,
            ``in_chans``, ``img_size``.
    """
    canonical = resolve_name(name)
    if pretrained:
        raise ValueError("pyg_vig downloads nothing: pass checkpoint=<path to the weights file>")
    builder = _MODELS[canonical]
    kwargs = _normalise_overrides(builder, overrides)
    try:
        model = builder(num_classes=num_classes, **kwargs)
    except TypeError as e:
        from pyg_vig.models.pyramid_vig import PyramidViG
        from pyg_vig.models.vig import ViG

        cls = PyramidViG if canonical.startswith("pvig") else ViG
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(f"bad override for {canonical!r} ({e}); valid arguments: "
                         f"{', '.join(valid)}") from None
    model.pretrained_cfg = dict(default_cfgs[canonical], architecture=canonical)
    model.model_name = canonical
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    if features_only:
        from pyg_vig.models.features import FeatureExtractor

        model = FeatureExtractor(model, out_indices)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official or pyg_vig checkpoint file into ``model`` (never unpickles objects)."""
    from pyg_vig.models.official import checkpoint_filter_fn
    from pyg_vig.utils.checkpoint import load_state_dict_file

    state_dict, meta = load_state_dict_file(path)
    arch = meta.get("model_name") or meta.get("arch") or meta.get("model")
    ours = getattr(model, "model_name", None)
    if arch and ours and resolve_name(str(arch)) != ours:
        raise ValueError(f"checkpoint {path} holds a {arch!r} model, not {ours!r}")
    if "config" in meta and isinstance(meta["config"], str):
        try:
            meta["config"] = json.loads(meta["config"])
        except json.JSONDecodeError:
            pass
    try:
        model.load_state_dict(checkpoint_filter_fn(state_dict, model))
    except ValueError as e:
        raise ValueError(f"cannot load {path}: {e}") from None
    return model
