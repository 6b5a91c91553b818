"""The official mode at grids other than the one a pyramid model was built for: the official
Grapher's own resize path (bicubic resampling of its table), cheap at detection sizes."""

from pathlib import Path

import pytest
import torch

import pyg_vig
from pyg_vig.nn import pos_embed

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official"
FIXTURE = FIXTURE / "e_relative_pos_resampled.pt"


@pytest.mark.parametrize("i", range(5))
def test_resampled_table_equals_the_official_resize_path(i):
    case = torch.load(FIXTURE, weights_only=True)[i]
    ours = pos_embed.cached_resampled_official_bias(
        *case["native"], *case["grid"], case["channels"], case["r"])
    assert ours.shape == case["table"].shape
    assert torch.equal(ours, case["table"]), (ours - case["table"]).abs().max()


def test_native_grid_is_the_native_table():
    native = pos_embed.cached_relative_position_bias(14, 14, 16, 2)
    assert pos_embed.cached_resampled_official_bias(14, 14, 14, 14, 16, 2) is native


def test_pyramid_model_uses_its_training_grid_table_at_other_sizes():
    model = pyg_vig.create_model("pvig_ti", num_classes=10).eval()
    grapher = model.stages[0].blocks[0].grapher
    assert grapher.relative_pos_grid == (56, 56)
    assert model.stages[3].blocks[0].grapher.relative_pos_grid == (7, 7)
    bias = grapher.relative_bias((60, 72), torch.device("cpu"), torch.float32)
    expected = torch.nn.functional.interpolate(
        pos_embed.relative_position_bias(56, 56, 48, 4)[None, None],
        size=(60 * 72, 15 * 18), mode="bicubic", align_corners=False)[0, 0]
    assert torch.equal(bias, expected)
    # at the training grid: the table built for it, bit for bit (official checkpoints)
    assert torch.equal(grapher.relative_bias((56, 56), torch.device("cpu"), torch.float32),
                       pos_embed.relative_position_bias(56, 56, 48, 4))


def test_detection_size_table_builds_no_gram_matrix_of_its_own(monkeypatch):
    """Stage 0 of a pyramid model at 800x1344 (torchvision's padded 800x1333): a 67,200 x 4,200
    table resampled from the 3,136 x 196 one; the N x N float64 Gram matrix (minutes on 2 cores)
    is only ever built for the 56 x 56 training grid."""
    built = []
    real = pos_embed._bias_cpu
    monkeypatch.setattr(pos_embed, "_bias_cpu", lambda h, w, *a: built.append((h, w)) or
                        real(h, w, *a))
    pos_embed.relative_position_cache.cache_clear()
    table = pos_embed.cached_resampled_official_bias(56, 56, 200, 336, 48, 4)
    assert table.shape == (67200, 4200)
    assert built == [(56, 56)]
    pos_embed.relative_position_cache.cache_clear()
