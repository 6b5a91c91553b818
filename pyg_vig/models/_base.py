"""Parts shared by the isotropic and pyramid ViG models: stems, input checks, head, pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from pyg_vig.data.grid import GridLayout
from pyg_vig.models._layers import ClassifierHead, ConvStem  # noqa: F401 (re-exported)
from pyg_vig.models.fuse import fuse_batchnorm

__all__ = ["ConvStem", "ClassifierHead", "ViGBase"]  # the first two live in _layers


class ViGBase(nn.Module):
    """timm-style plumbing shared by :class:`ViG` and :class:`PyramidViG`."""

    num_classes: int
    in_chans: int
    grad_checkpointing: bool = False
    pos_embed: nn.Parameter

    # ------------------------------------------------------------------ inputs
    def _check_input(self, x: Tensor | Sequence[Tensor]) -> list[Tensor] | Tensor:
        if isinstance(x, Tensor):
            if x.dim() == 3:
                x = x.unsqueeze(0)
            if x.dim() != 4:
                raise ValueError(
                    f"expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
                )
            self._check_dtype(x)
            if torch.compiler.is_exporting() and not all(
                    isinstance(d, int) for d in x.shape[1:]):
                # Symbolic H/W would make every k-NN size, pooled grid and bias table symbolic:
                # torch.export then spends half an hour in sympy before failing.
                raise ValueError(
                    "torch.export with a dynamic height/width is not supported by pyg_vig "
                    "models: only the batch dimension may be dynamic, e.g. dynamic_shapes="
                    "({0: torch.export.Dim('batch')},). Export one program per input size "
                    "(pyg_vig.export.export_program / to_onnx do this)."
                )
            if x.shape[1] != self.in_chans and x.shape[-1] == self.in_chans:
                raise ValueError(
                    f"got images of shape {tuple(x.shape)}, which looks like channels-last "
                    f"(B, H, W, C) data; this model takes (B, C, H, W) = (B, {self.in_chans}, H, "
                    "W): pass x.permute(0, 3, 1, 2)"
                )
            images: list[Tensor] | Tensor = x
            shapes = [tuple(x.shape[1:])]
        elif isinstance(x, (list, tuple)) and len(x) > 0:
            images = list(x)
            shapes = []
            for i, img in enumerate(images):
                if not isinstance(img, Tensor) or img.dim() != 3:
                    raise ValueError(f"image {i} of the list must be a (C, H, W) tensor")
                self._check_dtype(img)
                if img.shape[0] != self.in_chans and img.shape[-1] == self.in_chans:
                    raise ValueError(
                        f"image {i} has shape {tuple(img.shape)}, which looks like channels-last "
                        f"(H, W, C); this model takes (C, H, W): pass img.permute(2, 0, 1)"
                    )
                shapes.append(tuple(img.shape))
            if all(s == shapes[0] for s in shapes):
                images = torch.stack(images, 0)  # one batched pass when sizes agree
        else:
            raise ValueError(
                "expected a (B, C, H, W) tensor or a non-empty list of (C, H, W) tensors"
            )
        for c, h, w in shapes:
            if c != self.in_chans:
                raise ValueError(
                    f"this model expects {self.in_chans}-channel images but got {c} channels; "
                    f"convert the images or build the model with in_chans={c}"
                )
            self._check_size(h, w)
        return images

    def _check_dtype(self, x: Tensor) -> None:
        """Floating images of the parameters' dtype (or any float under autocast)."""
        want = self.pos_embed.dtype
        if x.dtype == want:
            return
        cfg = getattr(self, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", (0.5,) * self.in_chans), cfg.get("std", (0.5,) * self.in_chans)
        how = (f"normalised {want} images: x = (pixels / 255 - mean) / std with "
               f"mean={tuple(mean)}, std={tuple(std)} "
               "(pyg_vig.datasets.create_transform(model.pretrained_cfg) does this for files)")
        if not x.is_floating_point():
            raise TypeError(
                f"got {x.dtype} images (values {int(x.min()) if x.numel() else 0}.."
                f"{int(x.max()) if x.numel() else 0}); this model takes {how}"
            )
        if not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"got {x.dtype} images but the model's weights are {want}: pass "
                f"x.to({want}), convert the model (model.to({x.dtype})), or run under "
                f"torch.autocast('{x.device.type}'). The model takes {how}"
            )

    def _check_size(self, h: int, w: int) -> None:
        raise NotImplementedError

    def _stem_nodes(self, images: Tensor | list[Tensor]) -> tuple[Tensor, GridLayout]:
        """Stem on images (grouped by size) → node features + grid layout, plus pos embed."""
        if isinstance(images, Tensor):
            x, layout = GridLayout.from_images(self.stem(images))
        else:
            px, px_layout = GridLayout.from_images(images)
            x, layout = px_layout.apply_grid_op(px, self.stem)
        return self._add_pos_embed(x, layout), layout

    def _pos_embed_nodes(self, size: tuple[int, int]) -> Tensor:
        pe = self.pos_embed
        if tuple(pe.shape[-2:]) != tuple(size):
            # Any resolution: resample the learned grid (as timm does for ViT position embeddings).
            pe = F.interpolate(pe, size=size, mode="bicubic", align_corners=False)
        return rearrange(pe[0], "c h w -> (h w) c")

    def _add_pos_embed(self, x: Tensor, layout: GridLayout) -> Tensor:
        if layout.uniform:
            # (B*n, C) + (n, C), broadcast over the B graphs
            pe = self._pos_embed_nodes(layout.grid)
            return rearrange(rearrange(x, "(b n) c -> b n c", n=pe.size(0)) + pe,
                             "b n c -> (b n) c")
        table = {s: self._pos_embed_nodes(s) for s, _ in layout.groups()}
        return x + torch.cat([table[s] for s in layout.sizes], dim=0)

    def _run_block(self, block: nn.Module, x: Tensor, layout: GridLayout, want_edges: bool):
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint(block, x, None, layout, want_edges, use_reentrant=False)
        return block(x, None, layout, return_edge_index=want_edges)

    # ------------------------------------------------------------------ pooling / outputs
    @staticmethod
    def _to_maps(x: Tensor, layout: GridLayout) -> Tensor | list[Tensor]:
        return layout.to_images(x)

    def forward_head(self, x: Tensor | list[Tensor], pre_logits: bool = False) -> Tensor:
        """Pool ``forward_features`` output (a ``(B, C, H, W)`` map or a list of maps) → logits."""
        if isinstance(x, Tensor):
            pooled = x.mean(dim=(2, 3))
        else:
            pooled = torch.stack([m.mean(dim=(1, 2)) for m in x], dim=0)
        return self.head(pooled, pre_logits=pre_logits)

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """Images ``(B, C, H, W)`` or a list of ``(C, H_i, W_i)`` → logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ timm helpers
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters excluded from weight decay (timm convention)."""
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter-name patterns of the stem and of each block (timm's layer-decay helper)."""
        if hasattr(self, "stages"):
            blocks = r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)]
        else:
            blocks = r"^blocks\.(\d+)"
        return dict(stem=r"^stem|^pos_embed", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass to save activation memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final classification layer."""
        return self.head.out

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final layer with a fresh one for ``num_classes`` (0 removes it)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global_pool='avg' is supported, got {global_pool!r}")
        self.num_classes = num_classes
        fc = self.head.fc
        self.head.out = (nn.Linear(self.head.hidden, num_classes, device=fc.weight.device,
                                   dtype=fc.weight.dtype) if num_classes > 0 else nn.Identity())

    def _init_weights(self, m: nn.Module) -> None:
        # Official initialisation: kaiming-normal (fan_in) convolutions, zero biases.
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def fuse(self) -> ViGBase:
        """Fold every eval-mode BatchNorm into the linear layer before it (in place).

        Outputs are unchanged up to float rounding; the model must stay in eval mode.
        """
        return fuse_batchnorm(self)
