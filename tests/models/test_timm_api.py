import re

import torch

import pyg_vig
from pyg_vig.nn.conv._utils import set_fast_path


def test_group_matcher_covers_every_parameter():
    for name in ("vig_mini", "pvig_mini"):
        model = pyg_vig.create_model(name)
        groups = model.group_matcher()
        patterns = [groups["stem"]]
        blocks = groups["blocks"]
        patterns += [blocks] if isinstance(blocks, str) else [p for p, _ in blocks]
        unmatched = [n for n, _ in model.named_parameters()
                     if not any(re.match(p, n) for p in patterns) and not n.startswith("head.")]
        assert unmatched == [], name
        coarse = model.group_matcher(coarse=True)["blocks"]
        assert isinstance(coarse, str)


def test_scatter_only_switch_gives_the_same_model_output():
    model = pyg_vig.create_model("vig_mini").eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        fast = model(x)
        prev = set_fast_path(False)
        try:
            generic = model(x)
        finally:
            set_fast_path(prev)
    assert prev is True
    torch.testing.assert_close(generic, fast, rtol=1e-4, atol=1e-5)
