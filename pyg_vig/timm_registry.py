"""Register every pyg_vig model and weight tag in timm's registry (when timm is installed).

``import pyg_vig`` calls :func:`register` if timm can be imported; then timm's own functions
work on our models:

.. code-block:: python

    import pyg_vig, timm

    timm.list_models("*vig*", pretrained=True)        # ['pvig_b', 'pvig_b_224_gelu', ...]
    model = timm.create_model("pvig_s_224_gelu", pretrained=True)
    cfg = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**cfg)
    backbone = timm.create_model("pvig_s", features_only=True, out_indices=(-2, -1))

Each timm entry point (named like ours: ``pvig_s`` and the official ``pvig_s_224_gelu``) calls
:func:`pyg_vig.create_model`, so weights and logits are the same as there; ``features_only``
wraps the model in timm's own ``FeatureGetterNet``. The core (``pyg_vig.nn``, ``.models``,
``.data``) never imports timm: only this module does, and only inside :func:`register`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from typing import Any

from torch import nn

__all__ = ["register", "is_registered"]

# timm's register_model reads the tags of an entry point from its module's `default_cfgs`
default_cfgs: dict = {}
_registered = False


def is_registered() -> bool:
    """Whether :func:`register` has put the models into timm's registry."""
    return _registered


def _timm_cfg(cfg: dict, fields: set[str]) -> dict:
    out = {k: v for k, v in cfg.items() if k in fields and k not in ("architecture", "tag")}
    for key in ("input_size", "mean", "std"):
        if key in out and out[key] is not None:
            out[key] = tuple(out[key])
    return out


def _make_entrypoint(name: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _build(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"``{name}`` from pyg_vig (see ``pyg_vig.create_model``)."
    return entrypoint


def _build(name: str, pretrained: bool, *, pretrained_cfg: Any = None,
           pretrained_cfg_overlay: dict | None = None, cache_dir: Any = None,
           features_only: bool = False, out_indices: Any = None,
           feature_cfg: dict | None = None, **kwargs: Any) -> nn.Module:
    from pyg_vig.models import create_model

    if cache_dir is not None:
        raise ValueError("cache_dir is not supported for pyg_vig models: weights are cached "
                         "by torch.hub under $TORCH_HOME/hub/checkpoints")
    cfg_arg = None
    if isinstance(pretrained_cfg, str):  # timm passes the tag of 'pvig_s.in1k' this way
        name = f"{name}.{pretrained_cfg}"
    elif pretrained_cfg is not None:
        cfg_arg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") \
            else dict(pretrained_cfg)
    model = create_model(name, pretrained, pretrained_cfg=cfg_arg,
                         pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)
    if features_only:
        from timm.models._features import FeatureGetterNet

        if not hasattr(model, "forward_intermediates"):
            raise RuntimeError(f"features_only is not supported for {name}: an isotropic ViG "
                               "has a single resolution; use a pvig_* model")
        fcfg = dict(feature_cfg or {})
        fcfg.pop("feature_cls", None)
        fcfg.pop("flatten_sequential", None)
        indices = out_indices if out_indices is not None else len(model.stages)
        pretrained_cfg_dict = model.pretrained_cfg
        model = FeatureGetterNet(model, out_indices=indices, **fcfg)
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_dict
    return model


def register() -> bool:
    """Register all models and weight tags in timm (idempotent) → whether timm is there."""
    global _registered
    if _registered:
        return True
    if importlib.util.find_spec("timm") is None:
        return False
    from timm.models import PretrainedCfg, generate_default_cfgs, register_model

    from pyg_vig.models import _registry as ours

    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    cfgs: dict[str, dict] = {}
    names: list[str] = []
    for canonical in ours.list_models():
        aliases = [a for a, c in ours._ALIASES.items() if c == canonical]
        arch, tags = ours._MODEL_TAGS[canonical]
        for name in [canonical, *aliases]:
            names.append(name)
            if tags:
                for tag in tags:
                    cfgs[f"{name}.{tag}"] = _timm_cfg(ours._TAGGED_CFGS[f"{arch}.{tag}"], fields)
            else:
                cfgs[name] = _timm_cfg(ours.default_cfgs[canonical], fields)
    default_cfgs.update(generate_default_cfgs(cfgs))
    for name in names:
        register_model(_make_entrypoint(name))
    _registered = True
    return True


def _register_quietly() -> None:
    """Called by ``import pyg_vig``: a broken timm install warns instead of breaking us."""
    try:
        register()
    except Exception as e:  # noqa: BLE001 (timm is optional; say why it is not used)
        warnings.warn(f"pyg_vig models were not registered in timm ({type(e).__name__}: {e})",
                      stacklevel=3)
