"""pyg_vig: Vision GNN built from PyTorch Geometric parts."""

# With timm installed, every model and weight tag is also in timm's registry (timm.create_model).
from pyg_vig import timm_registry as _timm_registry  # noqa: E402
from pyg_vig.hub import get_pretrained_cfg, list_pretrained
from pyg_vig.models import (
    PyramidViG,
    ViG,
    create_model,
    from_official,
    list_models,
    load_checkpoint,
)
from pyg_vig.version import __version__

_timm_registry._register_quietly()

__all__ = [
    "__version__",
    "ViG",
    "PyramidViG",
    "create_model",
    "list_models",
    "from_official",
    "load_checkpoint",
    "list_pretrained",
    "get_pretrained_cfg",
]
