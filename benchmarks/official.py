"""Build the official ViG models (huawei-noah/Efficient-AI-Backbones) for side-by-side benchmarks.

The official code is never part of this repository. Fetch it once:

.. code-block:: bash

    git clone --depth 1 https://github.com/huawei-noah/Efficient-AI-Backbones /tmp/eab
    mkdir -p ~/.cache/official-vig && cp -r /tmp/eab/vig_pytorch ~/.cache/official-vig/

and, if you put it elsewhere, point ``OFFICIAL_SRC`` at its ``vig_pytorch`` folder.

The official code imports a handful of symbols from timm 0.3.2 (a registry, ``DropPath``,
``to_2tuple``, ``trunc_normal_``, the ImageNet mean/std). Current timm versions moved or changed
some of them, and timm itself needs torchvision, so instead of installing it we register small
in-memory stand-ins under the ``timm`` names only while the official modules are imported, and
restore ``sys.modules`` afterwards. The official ``gcn_lib/pos_embed.py`` also uses ``np.float``,
which NumPy 1.24 removed; we put the alias back.

Usage::

    from official import build_official
    model = build_official("pvig_ti_224_gelu")
"""

from __future__ import annotations

import collections.abc
import contextlib
import io
import itertools
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["official_source", "build_official", "list_official_models"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_LOADED = False


def official_source() -> str:
    """The folder holding the official ``vig.py`` / ``pyramid_vig.py`` / ``gcn_lib``."""
    src = os.environ.get("OFFICIAL_SRC")
    if not src:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        src = os.path.join(cache, "official-vig", "vig_pytorch")
    return src


# --------------------------------------------------------------------------- timm 0.3.2 stand-ins
def _register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def _to_2tuple(x: Any) -> Any:
    if isinstance(x, collections.abc.Iterable):
        return x
    return tuple(itertools.repeat(x, 2))


def _drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    # Per-sample stochastic depth with timm 0.3's semantics: scale survivors by 1 / keep.
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))
    return x / keep * mask


class _DropPath(nn.Module):
    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_path(x, self.drop_prob or 0.0, self.training)


def _trunc_normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, mean, std, a, b)


def _load_pretrained(*args: Any, **kwargs: Any) -> None:
    raise NotImplementedError(
        "benchmarks/official.py builds randomly initialised official models only"
    )


def _timm_standins() -> dict[str, types.ModuleType]:
    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    layers = module(
        "timm.models.layers",
        DropPath=_DropPath,
        drop_path=_drop_path,
        to_2tuple=_to_2tuple,
        trunc_normal_=_trunc_normal_,
    )
    registry = module("timm.models.registry", register_model=_register_model)
    helpers = module("timm.models.helpers", load_pretrained=_load_pretrained)
    models = module(
        "timm.models",
        layers=layers,
        registry=registry,
        helpers=helpers,
        register_model=_register_model,
    )
    models.__path__ = []  # mark as a package so that submodule imports resolve via sys.modules
    data = module(
        "timm.data",
        IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406),
        IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225),
    )
    timm = module("timm", models=models, data=data, __version__="0.3.2-standin")
    timm.__path__ = []
    return {
        "timm": timm,
        "timm.models": models,
        "timm.models.layers": layers,
        "timm.models.registry": registry,
        "timm.models.helpers": helpers,
        "timm.data": data,
    }


@contextlib.contextmanager
def _temporary_modules(mods: dict[str, types.ModuleType], path: str) -> Any:
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    sys.path.insert(0, path)
    try:
        yield
    finally:
        sys.path.remove(path)
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    src = official_source()
    if not os.path.isfile(os.path.join(src, "pyramid_vig.py")):
        raise FileNotFoundError(
            f"official ViG source not found at {src!r}. Fetch "
            "https://github.com/huawei-noah/Efficient-AI-Backbones and copy its 'vig_pytorch' "
            "folder to ~/.cache/official-vig/vig_pytorch, or set OFFICIAL_SRC to that folder "
            "(see the docstring of benchmarks/official.py)."
        )
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]  # alias removed in NumPy 1.24
    # The official modules print their configuration on import and construction: silence it.
    with _temporary_modules(_timm_standins(), src), contextlib.redirect_stdout(io.StringIO()):
        import pyramid_vig  # noqa: F401
        import vig  # noqa: F401
    _LOADED = True


def list_official_models() -> list[str]:
    """Names registered by the official code (e.g. ``vig_ti_224_gelu``, ``pvig_s_224_gelu``)."""
    _load()
    return sorted(_REGISTRY)


def build_official(name: str, **kwargs: Any) -> nn.Module:
    """A randomly initialised official model, e.g. ``build_official("pvig_ti_224_gelu")``."""
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown official model {name!r}; available: {list_official_models()}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with contextlib.redirect_stdout(io.StringIO()):
        return _REGISTRY[name](pretrained=False, **kwargs)


if __name__ == "__main__":
    for model_name in list_official_models():
        m = build_official(model_name)
        params = sum(p.numel() for p in m.parameters())
        print(f"{model_name:22s} {params / 1e6:6.2f} M params")
