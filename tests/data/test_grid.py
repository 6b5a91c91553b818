import pytest
import torch
import torch.nn.functional as F

from pyg_vig.data import GridLayout


def test_layout_basics():
    layout = GridLayout([(2, 3), (4, 4), (2, 3)])
    assert layout.num_graphs == 3 and layout.num_nodes == 6 + 16 + 6
    assert layout.counts == [6, 16, 6] and layout.ptr == [0, 6, 22, 28]
    assert not layout.uniform
    assert layout.groups() == [((2, 3), [0, 2]), ((4, 4), [1])]
    assert torch.equal(layout.batch(), torch.tensor([0] * 6 + [1] * 16 + [2] * 6))
    assert repr(layout) == "GridLayout([(2, 3), (4, 4), (2, 3)])"
    uni = GridLayout.uniform_grid(2, 3, 5)
    assert uni.uniform and uni.sizes == [(3, 5), (3, 5)]
    assert repr(uni) == "GridLayout(2 x (3, 5))"
    assert torch.equal(uni.batch(), torch.arange(2).repeat_interleave(15))
    assert GridLayout([(3, 5), (3, 5)]) == uni and hash(GridLayout([(3, 5)] * 2)) == hash(uni)
    assert GridLayout([(5, 3)] * 2) != uni


def test_pos_row_major():
    pos = GridLayout([(2, 3), (1, 2)]).pos()
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [0, 0], [0, 1]]


@pytest.mark.parametrize("sizes", [[], [(0, 3)], [(2, -1)]])
def test_bad_sizes(sizes):
    with pytest.raises(ValueError, match="GridLayout needs at least one grid|must be positive"):
        GridLayout(sizes)


def test_images_round_trip_uniform():
    imgs = torch.randn(2, 3, 4, 5)
    x, layout = GridLayout.from_images(imgs)
    assert x.shape == (40, 3) and layout == GridLayout.uniform_grid(2, 4, 5)
    assert torch.equal(x[20 + 2 * 5 + 3], imgs[1, :, 2, 3])  # row-major: ptr + h * W + w
    assert torch.equal(layout.to_images(x), imgs)


def test_images_round_trip_mixed():
    imgs = [torch.randn(3, 4, 5), torch.randn(3, 2, 2), torch.randn(3, 4, 5)]
    x, layout = GridLayout.from_images(imgs)
    assert layout.sizes == [(4, 5), (2, 2), (4, 5)]
    assert torch.equal(x[20 + 1 * 2 + 0], imgs[1][:, 1, 0])
    back = layout.to_images(x)
    assert all(torch.equal(a, b) for a, b in zip(back, imgs, strict=True))


def test_to_images_wrong_nodes():
    layout = GridLayout([(2, 2)])
    with pytest.raises(ValueError, match=r"expected node features of shape \[4, C\]"):
        layout.to_images(torch.randn(5, 3))


def test_avg_pool_matches_pool2d_per_graph():
    imgs = [torch.randn(3, 4, 6), torch.randn(3, 5, 4), torch.randn(3, 4, 6)]
    x, layout = GridLayout.from_images(imgs)
    y, layout_y = layout.avg_pool(x, 2)
    assert layout_y.sizes == [(2, 3), (2, 2), (2, 3)]  # floor sizes, as avg_pool2d
    for img, pooled in zip(imgs, layout_y.to_images(y), strict=True):
        torch.testing.assert_close(pooled, F.avg_pool2d(img.unsqueeze(0), 2, 2)[0])
    assert layout.avg_pool(x, 1) == (x, layout)


def test_avg_pool_too_small():
    x, layout = GridLayout.from_images([torch.randn(3, 4, 4), torch.randn(3, 1, 4)])
    with pytest.raises(ValueError, match="cannot pool a 1x4 grid with reduction ratio 2"):
        layout.avg_pool(x, 2)


def test_apply_grid_op_keeps_order():
    imgs = [torch.randn(2, 4, 4), torch.randn(2, 6, 2), torch.randn(2, 4, 4)]
    x, layout = GridLayout.from_images(imgs)
    y, out_layout = layout.apply_grid_op(x, lambda t: t * 2)
    assert out_layout == layout
    torch.testing.assert_close(y, x * 2)
