import re

import torch

import pyg_vig


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


def test_generic_message_passing_gives_the_same_model_output():
    # fused=False: every conv runs PyG's generic message -> aggregate path (public argument).
    for name in ("vig_mini", "pvig_mini"):
        fused = pyg_vig.create_model(name).eval()
        generic = pyg_vig.create_model(name, fused=False).eval()
        generic.load_state_dict(fused.state_dict())
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(generic(x), fused(x), rtol=1e-4, atol=1e-4)
        assert all(not b.grapher.fused for b in _blocks(generic))


def _blocks(model):
    return [m for m in model.modules() if hasattr(m, "grapher")]
