"""ViG models: isotropic :class:`ViG` and :class:`PyramidViG`, registry and official loading."""

from pyg_vig.models._registry import create_model, default_cfgs, list_models, load_checkpoint
from pyg_vig.models.features import FeatureExtractor
from pyg_vig.models.official import checkpoint_filter_fn, from_official
from pyg_vig.models.pyramid_vig import PyramidViG
from pyg_vig.models.vig import ViG

__all__ = [
    "ViG",
    "PyramidViG",
    "FeatureExtractor",
    "create_model",
    "list_models",
    "default_cfgs",
    "load_checkpoint",
    "from_official",
    "checkpoint_filter_fn",
]
