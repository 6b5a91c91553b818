"""pyg_vig: Vision GNN built from PyTorch Geometric parts."""

import warnings as _warnings

with _warnings.catch_warnings():
    # PyG scripts a helper with torch.jit.script when it is imported, which torch >= 2.10
    # answers with a FutureWarning about PyG's internals on every `import pyg_vig` and every
    # CLI command. Only that warning, only during that import (no global filter is changed).
    _warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                             category=FutureWarning)
    import torch_geometric  # noqa: F401

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
