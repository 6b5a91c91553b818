"""Feature-pyramid wrapper: pyramid ViG as a detection / segmentation backbone."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["FeatureExtractor", "FeatureInfo", "feature_take_indices"]


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None
                         ) -> tuple[list[int], int]:
    """Absolute indices to take and the largest one, by timm's ``feature_take_indices`` rule.

    ``None`` = all ``num_features``; an int n = the last n; a sequence = those indices, a
    negative one counting from the end.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range for {num_features} "
                                 f"features (valid: {-num_features} to {num_features - 1})")
            take.append(idx)
        if not take:
            raise ValueError("indices must name at least one feature")
    return take, max(take)


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
        out_indices (int or sequence of int, optional): stages to return, by timm's
            ``feature_take_indices`` rule (an int n = the last n). (default: all)
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None):
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "stages"):
            raise RuntimeError(
                f"features_only is not supported for {type(model).__name__}: its single-"
                "resolution blocks have no feature pyramid; use a pvig_* model"
            )
        if out_indices is None:
            out_indices = len(model.stages)
        self.out_indices = tuple(model.prune_intermediate_layers(out_indices, prune_head=True))
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)

    def forward(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)
