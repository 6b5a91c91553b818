import pytest
import torch

from pyg_vig.data import batch_to_images, images_to_batch
from pyg_vig.data.image_graph import layout_of


def test_round_trip_tensor():
    imgs = torch.randn(2, 3, 4, 5)
    batch = images_to_batch(imgs)
    assert batch.num_graphs == 2
    assert batch.x.shape == (40, 3) and batch.pos.shape == (40, 2)
    assert batch.pos.dtype == batch.x.dtype  # float, as in forward_graph
    assert torch.equal(batch.batch, torch.arange(2).repeat_interleave(20))
    assert batch.grid_size.tolist() == [[4, 5], [4, 5]]
    assert batch.ptr.tolist() == [0, 20, 40]
    back = batch_to_images(batch)
    assert isinstance(back, torch.Tensor) and torch.equal(back, imgs)
    assert back.is_contiguous()


def test_round_trip_list_of_sizes():
    imgs = [torch.randn(3, 4, 5), torch.randn(3, 2, 2), torch.randn(3, 3, 1)]
    batch = images_to_batch(imgs)
    assert batch.x.shape == (20 + 4 + 3, 3)
    assert batch.grid_size.tolist() == [[4, 5], [2, 2], [3, 1]]
    assert torch.equal(batch.batch, torch.tensor([0] * 20 + [1] * 4 + [2] * 3))
    back = batch_to_images(batch)
    assert isinstance(back, list) and len(back) == 3
    assert all(torch.equal(a, b) for a, b in zip(back, imgs, strict=True))
    assert layout_of(batch).sizes == [(4, 5), (2, 2), (3, 1)]


def test_row_major_order_and_pos():
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    batch = images_to_batch([img, img[:, :2, :2]])
    for n in range(12):
        h, w = divmod(n, 4)  # node n = h * W + w
        assert torch.equal(batch.x[n], img[:, h, w])
        assert batch.pos[n].tolist() == [h, w]
    assert batch.pos[12:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert torch.equal(batch.x[12 + 3], img[:, 1, 1])


def test_batch_to_images_other_features():
    batch = images_to_batch(torch.randn(2, 3, 4, 4))
    feats = torch.randn(32, 7)
    out = batch_to_images(batch, feats)
    assert out.shape == (2, 7, 4, 4)
    assert torch.equal(out[1, :, 2, 3], feats[16 + 2 * 4 + 3])


@pytest.mark.parametrize("bad", [torch.randn(3, 4, 4), torch.randn(1, 2, 3, 4, 4)])
def test_wrong_tensor_dims(bad):
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) image tensor.*unsqueeze"):
        images_to_batch(bad)


def test_wrong_list_entries():
    with pytest.raises(ValueError, match=r"image 1 must be a \(C, H, W\) tensor, got \(4, 4\)"):
        images_to_batch([torch.randn(3, 4, 4), torch.randn(4, 4)])
    with pytest.raises(ValueError, match="non-empty list"):
        images_to_batch([])
    with pytest.raises(ValueError, match="image 0 has 3, image 1 has 1"):
        images_to_batch([torch.randn(3, 4, 4), torch.randn(1, 4, 4)])


def test_layout_of_errors():
    batch = images_to_batch(torch.randn(1, 3, 2, 2))
    del batch.grid_size
    with pytest.raises(ValueError, match="no 'grid_size' attribute.*images_to_batch"):
        layout_of(batch)
