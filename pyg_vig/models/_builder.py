"""``build_model_with_cfg``: one place that builds a model from its configuration (timm's).

A registered builder is ``def pvig_s(pretrained=False, **kwargs)``; it calls
``build_model_with_cfg(PyramidViG, 'pvig_s', pretrained, pretrained_filter_fn=...,
feature_cfg=dict(out_indices=...), **dict(model_args, **kwargs))``, which

1. resolves the pretrained configuration (registered one, ``pretrained_cfg`` or
   ``pretrained_cfg_overlay``) and the class count,
2. builds the model and fits ``pretrained_cfg`` to it (``in_chans``, ``img_size``),
3. loads the pretrained weights through :func:`pyg_vig.hub.load_pretrained` with the filter fn,
4. wraps the model in :class:`~pyg_vig.models.features.FeatureExtractor` for ``features_only``.

Import order, with no cycle: ``_registry`` (names and configurations) <- ``hub`` (downloads)
<- ``_builder`` <- the model modules; ``_registry.create_model`` only calls the builders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from pyg_vig.models._registry import _fit_cfg_to_model, get_pretrained_cfg, resolve_name

__all__ = ["build_model_with_cfg", "resolve_pretrained_cfg"]


def resolve_pretrained_cfg(variant: str, pretrained_cfg: dict | str | None = None,
                           pretrained_cfg_overlay: dict | None = None) -> dict:
    """The configuration for ``variant``: registered (``pretrained_cfg`` may name a tag),
    replaced by a ``pretrained_cfg`` dict, then updated by the overlay.
    """
    if isinstance(pretrained_cfg, str):
        cfg = get_pretrained_cfg(f"{variant.split('.')[0]}.{pretrained_cfg}")
    elif pretrained_cfg is not None:
        cfg = dict(pretrained_cfg)
    else:
        cfg = get_pretrained_cfg(variant)
    cfg.setdefault("architecture", resolve_name(variant))
    if pretrained_cfg_overlay:
        cfg.update(pretrained_cfg_overlay)
        if "file" in pretrained_cfg_overlay or "url" in pretrained_cfg_overlay:
            # the overlay names the source: drop the other one
            cfg.pop("url" if "file" in pretrained_cfg_overlay else "file", None)
    return cfg


def build_model_with_cfg(model_cls: Callable[..., nn.Module], variant: str,
                         pretrained: bool = False, *, pretrained_cfg: dict | str | None = None,
                         pretrained_cfg_overlay: dict | None = None,
                         feature_cfg: dict | None = None,
                         pretrained_filter_fn: Callable | None = None,
                         features_only: bool = False,
                         out_indices: int | Sequence[int] | None = None,
                         num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``model_cls(**kwargs)`` for ``variant`` with its configuration (timm's helper).

    Args:
        model_cls: the model class (or any callable returning the model).
        variant (str): registered name, optionally with a weight tag (``'pvig_s.in1k'``).
        pretrained (bool): load the configuration's weights (``file`` or ``url``).
        pretrained_cfg (dict or str, optional): a configuration, or a weight tag.
        pretrained_cfg_overlay (dict, optional): updates the configuration.
        feature_cfg (dict, optional): ``out_indices`` default for ``features_only``.
        pretrained_filter_fn (callable, optional): ``fn(state_dict, model)`` converting the
            file's keys to the model's before loading.
        features_only (bool): return a :class:`FeatureExtractor` of the stages.
        out_indices (int or sequence of int, optional): stages for ``features_only``
            (timm's ``feature_take_indices`` rule).
        num_classes (int, optional): classifier size; default the configuration's.
        **kwargs: constructor arguments.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    n_classes = cfg.get("num_classes", 1000) if num_classes is None else num_classes
    model = model_cls(num_classes=n_classes, **kwargs)
    cfg = _fit_cfg_to_model(cfg, model)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg  # timm's older name
    model.model_name = cfg["architecture"]
    if pretrained:
        from pyg_vig.hub import load_pretrained

        load_pretrained(model, cfg, num_classes_given=num_classes is not None,
                        filter_fn=pretrained_filter_fn)
    if features_only:
        from pyg_vig.models.features import FeatureExtractor

        if out_indices is None:
            out_indices = (feature_cfg or {}).get("out_indices")
        model = FeatureExtractor(model, out_indices)
    return model
