"""Feature-pyramid wrapper: pyramid ViG as a detection / segmentation backbone."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["FeatureExtractor", "FeatureInfo"]


class FeatureInfo(list):
    """``feature_info`` list with timm's helper accessors."""

    def channels(self) -> list[int]:
        """Channels of every returned map."""
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        """Stride of every returned map relative to the input."""
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        """Module that produces every returned map."""
        return [f["module"] for f in self]


class FeatureExtractor(nn.Module):
    """Returns the feature maps of the chosen stages, ``[(B, C_s, H/stride_s, W/stride_s)]``.

    Built by ``create_model(name, features_only=True, out_indices=(0, 1, 2, 3))``. The
    classifier head is dropped and later stages are pruned, so no compute is wasted.

    Args:
        model (PyramidViG): the model to wrap.
        out_indices (sequence of int, optional): stages to return. (default: all)
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None):
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "stages"):
            raise RuntimeError(
                f"features_only is not supported for {type(model).__name__}: its single-"
                "resolution blocks have no feature pyramid; use a pvig_* model"
            )
        n = len(model.stages)
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        for i in out_indices:
            if not -n <= i < n:
                raise ValueError(f"out_indices {out_indices} out of range for {n} stages")
        self.out_indices = tuple(i % n for i in out_indices)
        model.prune_intermediate_layers(list(self.out_indices), prune_head=True)
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)

    def forward(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)
