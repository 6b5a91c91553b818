import time

import pytest
import torch

import pyg_vig


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_export_with_dynamic_height_width_fails_fast(name):
    # torch.export with symbolic H/W used to run for more than 25 minutes in sympy; it must
    # refuse at once and say what is supported.
    model = pyg_vig.create_model(name, num_classes=3).eval()
    x = torch.randn(2, model.in_chans, 32, 32)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=16, max=64),
            3: torch.export.Dim("w", min=16, max=64)}
    start = time.monotonic()
    with pytest.raises(Exception, match="dynamic height/width is not supported") as e:
        torch.export.export(model, (x,), dynamic_shapes=(dims,), strict=False)
    assert "Dim('batch')" in str(e.value)
    assert time.monotonic() - start < 120
