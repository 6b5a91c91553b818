"""``pyg_vig.nn.DropPath`` means what timm's ``DropPath`` means on timm's inputs."""

import pytest
import torch

from pyg_vig.nn import DropPath

timm_layers = pytest.importorskip("timm.layers")


@pytest.mark.parametrize("shape", [(64, 3, 4, 4), (64, 10, 8)])
def test_dense_batch_drops_per_sample_as_timm(shape):
    x = torch.randn(*shape)
    ours, theirs = DropPath(drop_prob=0.5).train(), timm_layers.DropPath(drop_prob=0.5).train()
    torch.manual_seed(0)
    got = ours(x)
    torch.manual_seed(0)
    torch.testing.assert_close(got, theirs(x), rtol=0, atol=0)
    kept = (got.flatten(1) != 0).any(1)
    assert 0 < int(kept.sum()) < shape[0]  # some samples dropped, not the whole batch


def test_node_features_of_one_graph_drop_together():
    torch.manual_seed(0)
    out = torch.stack([DropPath(0.5).train()(torch.ones(20, 4)) for _ in range(32)])
    per_call = out.flatten(1)
    assert ((per_call == 0).all(1) | (per_call == 2).all(1)).all()  # all nodes or none
    with pytest.raises(ValueError, match="give one"):
        DropPath(0.1, drop_prob=0.2)
    assert DropPath(drop_prob=0.3).p == 0.3
