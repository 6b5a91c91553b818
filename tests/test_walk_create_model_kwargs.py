"""``pyg_vig.create_model`` takes the keywords a timm user passes to ``timm.create_model``."""

import pytest
import torch

import pyg_vig

TINY = dict(embed_dim=16, depth=1, head_hidden=16, num_classes=3)


def test_checkpoint_path_is_timms_name_for_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = pyg_vig.create_model("vig_mini", **TINY).eval()
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)  # a different random init: only loading can make the outputs agree
    model = pyg_vig.create_model("vig_mini", checkpoint_path=path, **TINY).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="checkpoint= or timm's checkpoint_path="):
        pyg_vig.create_model("vig_mini", checkpoint=path, checkpoint_path=path, **TINY)
