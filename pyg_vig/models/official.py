"""Loading checkpoints of the official ViG code (huawei-noah/Efficient-AI-Backbones).

The official models keep feature maps as ``(B, C, H, W)`` and use 1x1 ``Conv2d`` layers where we
use ``nn.Linear`` on node features, so weights map one to one after dropping the two trailing unit
dimensions. Keys are renamed as follows (``<i>`` a block, ``<ds>`` a downsample slot):

===================================  ============================================
official                             pyg_vig
===================================  ============================================
``backbone.<i>.0.*`` (Grapher)       ``blocks.<i>.grapher.*`` (isotropic),
                                     ``stages.<s>.blocks.<j>.grapher.*`` (pyramid)
``backbone.<i>.1.*`` (FFN)           ``....ffn.*``
``...graph_conv.gconv.*``            ``...graph_conv.*``
``backbone.<ds>.conv.*`` (pyramid)   ``stages.<s>.downsample.conv.*``
``prediction.0`` / ``.1`` / ``.4``   ``head.fc`` / ``head.norm`` / ``head.out``
``backbone.<i>.0.relative_pos``      dropped: recomputed from the grid (frozen table)
===================================  ============================================

A position embedding of another grid size (a 224 checkpoint loaded into a model built with
``img_size=384``) is resampled bicubically, as the models do for other input sizes at run time.
:func:`official_state_dict` is the inverse mapping (our weights in the official layout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["from_official", "checkpoint_filter_fn", "check_state_dict_keys", "convert_state_dict",
           "is_official_state_dict", "official_kwargs", "official_state_dict",
           "resample_pos_embed"]

_OPT_FIELDS = {
    "vig": {"k", "conv", "act", "norm", "bias", "n_blocks", "n_filters", "n_classes", "dropout",
            "use_dilation", "epsilon", "use_stochastic", "drop_path"},
    "pvig": {"k", "conv", "act", "norm", "bias", "n_classes", "dropout", "use_dilation",
             "epsilon", "use_stochastic", "drop_path", "blocks", "channels", "emb_dims"},
}


def is_official_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether keys follow the official layout (``backbone.*``, ``prediction.*``)."""
    return any(k.startswith(("backbone.", "prediction.")) for k in state_dict)


def _official_block_map(model: nn.Module) -> dict[int, str]:
    """Official ``backbone.<i>`` index → our module prefix, for either model family."""
    from pyg_vig.models.pyramid_vig import PyramidViG

    out: dict[int, str] = {}
    if isinstance(model, PyramidViG):
        i = 0
        for s, stage in enumerate(model.stages):
            if stage.downsample is not None:
                out[i] = f"stages.{s}.downsample"
                i += 1
            for j in range(len(stage.blocks)):
                out[i] = f"stages.{s}.blocks.{j}"
                i += 1
    else:
        for i in range(len(model.blocks)):
            out[i] = f"blocks.{i}"
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Convert an official (or wrapped) state dict to this model's keys and shapes.

    Our own state dicts pass through unchanged (bar a position-embedding resize). Raises
    :class:`ValueError` naming the keys when the result does not match ``model`` (missing,
    unexpected, or of the wrong shape).
    """
    out = convert_state_dict(state_dict, model)
    check_state_dict_keys(out, model.state_dict())
    return out


def convert_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """:func:`checkpoint_filter_fn` without the final key check (callers that drop keys)."""
    for wrapper in ("model", "state_dict", "state_dict_ema"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]  # type: ignore[assignment]
            break
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    target = model.state_dict()
    if not is_official_state_dict(state_dict):
        out = dict(state_dict)
    else:
        blocks = _official_block_map(model)
        out = {}
        for key, value in state_dict.items():
            if key.endswith(".relative_pos"):
                continue  # frozen table; recomputed exactly for whatever grid the input has
            new = key
            m = re.match(r"backbone\.(\d+)\.(.*)$", key)
            if m:
                idx, rest = int(m.group(1)), m.group(2)
                if idx not in blocks:
                    raise ValueError(f"official key {key!r} has no counterpart in this model "
                                     f"(it has {len(blocks)} backbone slots)")
                prefix = blocks[idx]
                if prefix.endswith("downsample"):
                    new = f"{prefix}.{rest}"
                else:
                    rest = re.sub(r"^0\.", "grapher.", rest)
                    rest = re.sub(r"^1\.", "ffn.", rest)
                    rest = rest.replace("graph_conv.gconv.", "graph_conv.")
                    new = f"{prefix}.{rest}"
            else:
                new = re.sub(r"^prediction\.0\.", "head.fc.", new)
                new = re.sub(r"^prediction\.1\.", "head.norm.", new)
                new = re.sub(r"^prediction\.4\.", "head.out.", new)
            if new in target and value.dim() == 4 and target[new].dim() == 2:
                value = value.flatten(1)  # 1x1 conv (O, I, 1, 1) -> linear (O, I)
            out[new] = value
    pe, want = out.get("pos_embed"), target.get("pos_embed")
    if (pe is not None and want is not None and pe.shape != want.shape and pe.dim() == 4
            and pe.shape[:2] == want.shape[:2]):
        out["pos_embed"] = resample_pos_embed(pe, tuple(want.shape[-2:]))
    return out


def resample_pos_embed(pos_embed: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a ``(1, C, H, W)`` position embedding to ``size`` (bicubic, no corner alignment).

    The same interpolation the models apply at run time to inputs of another resolution, so a
    224 checkpoint loaded into a model built for 320 gives the logits that the 224 model gives on
    320 inputs.
    """
    if pos_embed.dim() != 4:
        raise ValueError(f"pos_embed must be (1, C, H, W), got {tuple(pos_embed.shape)}")
    if tuple(pos_embed.shape[-2:]) == tuple(size):
        return pos_embed
    dtype = pos_embed.dtype
    out = F.interpolate(pos_embed.float(), size=size, mode="bicubic", align_corners=False)
    return out.to(dtype)


def official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our model's weights in the layout of the official code (the inverse of
    :func:`checkpoint_filter_fn`).

    Linear weights become ``(O, I, 1, 1)`` convolutions again. The frozen ``relative_pos`` tables
    of the pyramid models are left out: the official ``train.py`` loads with ``strict=False``
    and builds them itself.
    """
    blocks = {prefix: i for i, prefix in _official_block_map(model).items()}
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        new = key
        m = re.match(r"((?:stages\.\d+\.)?(?:blocks\.\d+|downsample))\.(.*)$", key)
        if m and m.group(1) in blocks:
            idx, rest = blocks[m.group(1)], m.group(2)
            if not m.group(1).endswith("downsample"):
                rest = re.sub(r"^grapher\.graph_conv\.", "grapher.graph_conv.gconv.", rest)
                rest = re.sub(r"^grapher\.", "0.", rest)
                rest = re.sub(r"^ffn\.", "1.", rest)
            new = f"backbone.{idx}.{rest}"
        else:
            new = re.sub(r"^head\.fc\.", "prediction.0.", new)
            new = re.sub(r"^head\.norm\.", "prediction.1.", new)
            new = re.sub(r"^head\.out\.", "prediction.4.", new)
        if value.dim() == 2:
            value = value[:, :, None, None]  # linear (O, I) -> 1x1 conv (O, I, 1, 1)
        out[new] = value.detach().clone()
    return out


def check_state_dict_keys(out: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> None:
    """Raise a :class:`ValueError` naming missing, unexpected and wrongly shaped keys."""
    missing = [k for k in target if k not in out]
    unexpected = [k for k in out if k not in target]
    wrong = [f"{k}: checkpoint {tuple(out[k].shape)} vs model {tuple(target[k].shape)}"
             for k in target if k in out and out[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        def show(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f" ... ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {show(wrong)}")
        raise ValueError("checkpoint does not fit the model; " + "; ".join(parts) +
                         ". Check the model name, num_classes and overrides")


def official_kwargs(arch: str, opt: Mapping) -> dict:
    """Our constructor arguments for an official option object (``OptInit`` fields)."""
    if arch not in _OPT_FIELDS:
        raise ValueError(f"arch must be 'vig' or 'pvig', got {arch!r}")
    unknown = set(opt) - _OPT_FIELDS[arch]
    if unknown:
        raise ValueError(f"unknown official option fields for {arch}: {sorted(unknown)}")
    norm = opt.get("norm", "batch")
    if norm != "batch":
        raise ValueError(f"only norm='batch' is supported (got {norm!r})")
    kw = dict(k=int(opt.get("k", 9)), conv=opt.get("conv", "mr"), act=opt.get("act", "gelu"),
              bias=bool(opt.get("bias", True)), num_classes=int(opt.get("n_classes", 1000)),
              epsilon=float(opt.get("epsilon", 0.2)),
              stochastic=bool(opt.get("use_stochastic", False)),
              drop_path_rate=float(opt.get("drop_path", 0.0)))
    if arch == "vig":
        kw.update(embed_dim=int(opt.get("n_filters", 192)), depth=int(opt.get("n_blocks", 12)),
                  use_dilation=bool(opt.get("use_dilation", True)),
                  drop_rate=float(opt.get("dropout", 0.0)))
    else:
        # The official pyramid model ignores use_dilation and dropout (always dilates, no dropout).
        kw.update(embed_dims=tuple(int(c) for c in opt.get("channels", (48, 96, 240, 384))),
                  depths=tuple(int(b) for b in opt.get("blocks", (2, 2, 6, 2))),
                  use_dilation=True, drop_rate=0.0, relative_pos="official")
    return kw


def from_official(arch: str, opt: Mapping, state_dict: Mapping[str, Tensor] | None = None,
                  **overrides) -> nn.Module:
    """Build our model from an official option dict and load an official state dict.

    .. code-block:: python

        opt = dict(k=9, conv="mr", act="gelu", norm="batch", bias=True, n_blocks=12,
                   n_filters=192, n_classes=1000, dropout=0.0, use_dilation=True,
                   epsilon=0.2, use_stochastic=False, drop_path=0.0)
        model = from_official("vig", opt, torch.load("vig_ti.pth", weights_only=True))

    Args:
        arch (str): ``"vig"`` (isotropic) or ``"pvig"`` (pyramid).
        opt (dict): the official option fields.
        state_dict (dict, optional): official-layout weights (wrapped under ``model`` or
            ``state_dict`` is fine); :obj:`None` leaves the fresh initialisation.
        **overrides: further constructor arguments (e.g. ``backend``).
    """
    from pyg_vig.models.pyramid_vig import PyramidViG
    from pyg_vig.models.vig import ViG

    kw = official_kwargs(arch, opt)
    kw.update(overrides)
    model = (ViG if arch == "vig" else PyramidViG)(**kw)
    if state_dict is not None:
        model.load_state_dict(checkpoint_filter_fn(state_dict, model))
    return model
