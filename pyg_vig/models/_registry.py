"""Model registry: ``create_model`` / ``list_models`` in the style of timm."""

from __future__ import annotations

import fnmatch
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "list_pretrained", "default_cfgs",
           "generate_default_cfgs", "get_pretrained_cfg", "resolve_name"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}
# canonical model name -> its default configuration (the first weight tag's, when it has weights)
default_cfgs: dict[str, dict] = {}
# 'arch.tag' (arch as written in generate_default_cfgs, e.g. 'pvig_s_224_gelu') -> configuration
_TAGGED_CFGS: dict[str, dict] = {}
# canonical model name -> (architecture name in the tagged configurations, its tags, default first)
_MODEL_TAGS: dict[str, tuple[str, list[str]]] = {}

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


def _cfg(url: str = "", **kwargs) -> dict:
    """A pretrained configuration with the ViG defaults (timm's ``_cfg``).

    The official code evaluates ImageNet at 224 px with crop fraction 0.9 (0.95 for pvig_b),
    bicubic resizing and mean = std = 0.5 (``default_cfgs`` of ``vig_pytorch/vig.py`` and
    ``pyramid_vig.py``, read by timm's ``resolve_data_config`` in its ``train.py``). The released
    weights come with the official code's Apache-2.0 licence.
    """
    cfg = dict(url=url, num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.9,
               interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               first_conv="stem.convs.0", classifier="head.out", license="apache-2.0")
    cfg.update(kwargs)
    return cfg


def generate_default_cfgs(cfgs: dict[str, dict]) -> dict[str, dict]:
    """Register tagged pretrained configurations (``{'pvig_s_224_gelu.in1k': _cfg(...)}``).

    The first tag given for an architecture is its default. Call it before the
    :func:`register_model` of those architectures (their name or one of their aliases).
    """
    for full, cfg in cfgs.items():
        arch, _, tag = full.partition(".")
        if not tag:
            raise ValueError(f"pretrained configuration {full!r} needs a tag: 'arch.tag'")
        _TAGGED_CFGS[full] = dict(cfg, tag=tag)
    return dict(cfgs)


def _tags_of(names: Sequence[str]) -> tuple[str | None, list[str]]:
    """The architecture name used in tagged configurations for ``names``, and its tags."""
    for arch in names:
        tags = [full.partition(".")[2] for full in _TAGGED_CFGS if full.partition(".")[0] == arch]
        if tags:
            return arch, tags
    return None, []


def register_model(name: str, cfg: dict | None = None, aliases: Sequence[str] = ()):
    """Register a builder ``fn(**kwargs) -> nn.Module`` under ``name`` (and ``aliases``).

    ``cfg`` overrides the defaults of :func:`_cfg` for a model without tagged weights; a model
    whose name or alias appears in :func:`generate_default_cfgs` gets those configurations.
    """
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = fn
        arch, tags = _tags_of([name, *aliases])
        _MODEL_TAGS[name] = (arch or name, tags)
        if tags:
            default_cfgs[name] = dict(_TAGGED_CFGS[f"{arch}.{tags[0]}"], **(cfg or {}))
        else:
            default_cfgs[name] = _cfg(**{"license": "mit", **(cfg or {})})  # no weights
        for alias in aliases:
            _ALIASES[alias] = name
        return fn
    return deco


def list_models(filter: str = "", include_aliases: bool = False,
                pretrained: bool = False) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (``"pvig*"``).

    ``pretrained=True`` keeps the models that have downloadable weights.
    """
    names = list(_MODELS) + (list(_ALIASES) if include_aliases else [])
    if pretrained:
        names = [n for n in names if any(
            _TAGGED_CFGS[f"{_MODEL_TAGS[resolve_name(n)][0]}.{t}"].get("url")
            for t in _MODEL_TAGS[resolve_name(n)][1])]
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return sorted(names)


def list_pretrained(filter: str = "") -> list[str]:
    """Every ``arch.tag`` with registered weights (``'pvig_s_224_gelu.in1k'``), optionally
    filtered by a shell-style pattern.
    """
    names = [n for n, cfg in _TAGGED_CFGS.items() if cfg.get("url") or cfg.get("file")]
    return sorted(n for n in names if not filter or fnmatch.fnmatch(n, filter))


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


def get_pretrained_cfg(name: str) -> dict:
    """The pretrained configuration of ``name``: ``'pvig_s'``, ``'pvig_s.in1k'``,
    ``'pvig_m_224_gelu.in21k'`` (a copy; the default tag when none is given).

    Keys follow timm: ``url``, ``num_classes``, ``input_size``, ``crop_pct``,
    ``interpolation``, ``mean``, ``std``, ``license``, plus ``architecture`` (our model name),
    ``tag`` and ``name`` (``arch.tag``).
    """
    canonical = resolve_name(name)
    tag = name.partition(".")[2] or None
    arch, tags = _MODEL_TAGS[canonical]
    if tag is None and tags:
        tag = tags[0]
    if tag is None:
        cfg = dict(default_cfgs[canonical], tag=None, name=canonical)
    elif tag in tags:
        cfg = dict(_TAGGED_CFGS[f"{arch}.{tag}"], name=f"{arch}.{tag}")
    else:
        have = ", ".join(f"{arch}.{t}" for t in tags) or "none"
        raise ValueError(f"unknown weight tag {tag!r} for {canonical}; registered: {have}")
    cfg["architecture"] = canonical
    return cfg


def _normalise_overrides(overrides: dict) -> dict:
    out = {}
    for key, value in overrides.items():
        key = _OVERRIDE_ALIASES.get(key, key)
        if key == "use_dilation" and not isinstance(value, bool):
            raise ValueError(f"dilation override must be True/False, got {value!r}")
        out[key] = value
    return out


def _model_class(canonical: str) -> type:
    from pyg_vig.models.pyramid_vig import PyramidViG
    from pyg_vig.models.vig import ViG

    return PyramidViG if canonical.startswith("pvig") else ViG


def _check_overrides(canonical: str, kwargs: dict) -> None:
    """Unknown constructor arguments → ``ValueError`` naming the valid ones (before building)."""
    params = inspect.signature(_model_class(canonical).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p != "self"]
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ValueError(f"bad override for {canonical!r}: unknown argument(s) "
                         f"{', '.join(map(repr, unknown))}; valid arguments: {', '.join(valid)}")


def _fit_cfg_to_model(cfg: dict, model: nn.Module) -> dict:
    """The configuration with ``input_size`` (and ``mean``/``std``) of the model as built.

    ``in_chans=1`` or ``img_size=384`` change what the model takes, so the preprocessing that
    timm's ``resolve_data_config`` builds from ``pretrained_cfg`` must follow.
    """
    cfg = dict(cfg)
    c = int(getattr(model, "in_chans", 0) or 0)
    size = getattr(model, "img_size", None)
    old = tuple(cfg.get("input_size") or (3, 224, 224))
    h, w = (int(size), int(size)) if isinstance(size, int) else old[1:]
    c = c or old[0]
    if (c, h, w) != old:
        cfg["input_size"] = (c, h, w)
        if "test_input_size" in cfg:
            cfg.pop("test_input_size")
    for key in ("mean", "std"):
        v = cfg.get(key)
        if v is not None and len(v) != c:
            v = tuple(float(x) for x in v)
            cfg[key] = ((sum(v) / len(v),) if c == 1 else tuple(v[i % len(v)] for i in range(c)))
    return cfg


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None,
                 pretrained_cfg: dict | None = None, pretrained_cfg_overlay: dict | None = None,
                 checkpoint: str | Path | None = None, features_only: bool = False,
                 out_indices: Sequence[int] | None = None,
                 checkpoint_path: str | Path | None = None, **overrides) -> nn.Module:
    """Build a registered ViG model, optionally loading weights (timm's ``create_model``).

    .. code-block:: python

        model = pyg_vig.create_model("pvig_s", pretrained=True)       # ImageNet-1k weights
        model = pyg_vig.create_model("pvig_s", num_classes=10, drop_path_rate=0.1, conv="edge")
        backbone = pyg_vig.create_model("pvig_s", features_only=True, out_indices=(0, 1, 2, 3))

    Args:
        name (str): a name from :func:`list_models` or an official alias (``vig_ti_224_gelu``),
            optionally with a weight tag (``pvig_m_224_gelu.in21k``, see :func:`list_pretrained`).
        pretrained (bool): download (once; then from the ``torch.hub`` cache) and load the
            weights of the tag. (default: :obj:`False`)
        num_classes (int, optional): classifier size; defaults to the configuration's
            (1000 for the ImageNet models). With ``pretrained=True`` a different value keeps a
            new, randomly initialised classifier (fine-tuning).
        pretrained_cfg (dict, optional): replaces the registered configuration.
        pretrained_cfg_overlay (dict, optional): updates it, e.g. ``dict(file="w.pth")`` (a
            local file instead of the download) or ``dict(url=...)`` (another address).
        checkpoint (str or Path, optional): a weights file loaded after construction: an
            official checkpoint (plain or wrapped under ``model``/``state_dict``) or one of
            ours (``.safetensors`` or torch file); it must fit exactly.
        features_only (bool): return a feature-pyramid backbone (pyramid models).
        out_indices (sequence of int, optional): stages returned with ``features_only``.
        checkpoint_path (str or Path, optional): timm's name for ``checkpoint``, so that the
            keywords of ``timm.create_model`` work here too; give one of the two.
        **overrides: constructor arguments such as ``conv`` (``"mr"``, ``"edge"``, ``"gin"``,
            ``"sage"`` or a PyG conv factory), ``k``, ``heads``, ``use_dilation``,
            ``stochastic``, ``epsilon``, ``drop_path_rate``, ``relative_pos``, ``backend``,
            ``in_chans``, ``img_size``.
    """
    if checkpoint_path is not None:
        if checkpoint is not None:
            raise ValueError("give the weights file once: checkpoint= or timm's checkpoint_path="
                             f", not both ({checkpoint!s} and {checkpoint_path!s})")
        checkpoint = checkpoint_path
    canonical = resolve_name(name)
    tag = name.partition(".")[2] or None
    kwargs = _normalise_overrides(overrides)
    _check_overrides(canonical, kwargs)
    # No try/except around the build: a TypeError or RuntimeError raised inside (a user's conv
    # factory, out of memory) keeps its own type and traceback.
    model = _MODELS[canonical](
        pretrained=pretrained,
        pretrained_cfg=dict(pretrained_cfg) if pretrained_cfg is not None else tag,
        pretrained_cfg_overlay=pretrained_cfg_overlay, num_classes=num_classes,
        features_only=features_only and checkpoint is None, out_indices=out_indices, **kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        if features_only:
            from pyg_vig.models.features import FeatureExtractor

            model = FeatureExtractor(model, out_indices)
    return model


def load_checkpoint(model: nn.Module, path: str | Path, use_ema: bool = True) -> nn.Module:
    """Load an official or pyg_vig checkpoint file into ``model`` (never unpickles objects).

    As timm's ``load_checkpoint``: with ``use_ema`` (default) the ``state_dict_ema`` /
    ``model_ema`` entry is loaded when the file has one, else ``state_dict`` / ``model``.
    """
    from pyg_vig.models.official import checkpoint_filter_fn
    from pyg_vig.utils.checkpoint import load_state_dict_file

    state_dict, meta = load_state_dict_file(path, use_ema=use_ema)
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
