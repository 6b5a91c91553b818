import torch

from pyg_vig.nn.drop import DropPath


def test_drop_path_runs_on_meta_without_num_graphs():
    # meta tensors have no values: any .item()/int() host read would raise.
    m = DropPath(0.5).train()
    x = torch.empty(6, 4, device="meta")
    batch = torch.empty(6, dtype=torch.long, device="meta")
    assert m(x, batch).shape == (6, 4)


def test_drop_path_scale_by_keep():
    torch.manual_seed(0)
    x = torch.ones(40, 3)
    batch = torch.arange(4).repeat_interleave(10)
    out = DropPath(0.5).train()(x, batch)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    out = DropPath(0.5, scale_by_keep=False).train()(x, batch)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    # one draw per graph: every node of a graph is kept or dropped together
    assert all(out[batch == g].unique().numel() == 1 for g in range(4))
    assert torch.equal(DropPath(1.0).train()(x, batch), torch.zeros_like(x))
