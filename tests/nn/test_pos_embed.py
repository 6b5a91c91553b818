import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from pyg_vig.nn.pos_embed import (
    relative_position_bias,
    relative_position_factors,
    sincos_2d,
)

# Summaries of the official relative_pos tables (copied from the shared official fixtures).
SUMMARY = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "relative_pos_summary.json").read_text()
)
STAGES = [
    pytest.param(stage, id=f"{model}-{stage['key']}")
    for model, stages in SUMMARY["models"].items()
    for stage in stages
]


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("stage", STAGES)
def test_official_matches_fixture(stage):
    bias = relative_position_bias(stage["grid"], stage["grid"], stage["dim"], stage["r"])
    assert bias.dtype == torch.float32
    assert list(bias.shape) == stage["shape"][1:]
    assert bias[0, :8].tolist() == stage["row0_head"]
    assert bias.double().sum().item() == pytest.approx(stage["sum"], rel=1e-12)
    assert bias.min().item() == stage["min"]
    assert bias.max().item() == stage["max"]
    assert sha256(bias) == stage["sha256"]


def test_sincos_2d_layout():
    pos = sincos_2d(3, 5, 8)
    assert pos.shape == (15, 8) and pos.dtype == torch.float64
    # Node (h, w) = (2, 3) sits at row 2 * 5 + 3; q = 2 frequencies 1 and 1e-2.
    omega = torch.tensor([1.0, 1e-2], dtype=torch.float64)
    h, w = 2.0, 3.0
    expected = torch.cat(
        [(w * omega).sin(), (w * omega).cos(), (h * omega).sin(), (h * omega).cos()]
    )
    torch.testing.assert_close(pos[13], expected)

    centres = torch.tensor([[2.0, 3.0], [0.5, 1.5]])
    given = sincos_2d(0, 0, 8, positions=centres, dtype=torch.float32)
    assert given.dtype == torch.float32
    torch.testing.assert_close(given[0], expected.float())


@pytest.mark.parametrize("dim", [0, 6, 10, 30])
def test_dim_must_be_multiple_of_four(dim):
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 4, dim)
    with pytest.raises(ValueError, match="divisible by 4"):
        relative_position_bias(4, 4, dim)
    with pytest.raises(ValueError, match="divisible by 4"):
        relative_position_bias(4, 4, dim, mode="geometric")


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        relative_position_bias(4, 4, 8, mode="bilinear")
    with pytest.raises(ValueError, match="no keys"):
        relative_position_bias(4, 4, 8, r=5)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        sincos_2d(0, 0, 8, positions=torch.zeros(3))


@pytest.mark.parametrize("h,w,dim", [(14, 14, 240), (7, 7, 384), (5, 9, 32), (8, 3, 16)])
def test_geometric_equals_official_at_r1(h, w, dim):
    official = relative_position_bias(h, w, dim)
    geometric = relative_position_bias(h, w, dim, mode="geometric")
    # two float32 sums of `dim` products in a different order: a few ulps of 1 apart (the torch
    # 2.14 build differs by up to 1.9e-6 at dim=384, about sqrt(dim) float32 roundings)
    torch.testing.assert_close(geometric, official, rtol=0, atol=1e-5)
    diag = official.diagonal()
    assert torch.equal(diag, torch.full_like(diag, -1.0))
    assert official.max() <= 1 and official.min() >= -1


@pytest.mark.parametrize("mode", ["official", "geometric"])
@pytest.mark.parametrize("h,w,r", [(6, 10, 1), (6, 10, 2), (7, 10, 3), (9, 4, 4), (5, 5, 5)])
def test_non_square_shapes(h, w, r, mode):
    bias = relative_position_bias(h, w, 8, r, mode)
    assert bias.shape == (h * w, (h // r) * (w // r))
    assert bias.dtype == torch.float32
    # Bicubic resampling (official, r > 1) may overshoot [-1, 1] slightly.
    tol = 0.1 if mode == "official" and r > 1 else 1e-6
    assert bias.min() >= -1 - tol and bias.max() <= 1 + tol


@pytest.mark.parametrize(
    "h,w,dim,r", [(56, 56, 48, 4), (28, 28, 96, 2), (12, 20, 32, 2), (13, 10, 64, 3)]
)
def test_geometric_favours_containing_cell(h, w, dim, r):
    bias = relative_position_bias(h, w, dim, r, mode="geometric")
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # Queries in a leftover strip that no window covers belong to the nearest border cell.
    cell_h = (hh // r).clamp(max=h // r - 1)
    cell_w = (ww // r).clamp(max=w // r - 1)
    expected = (cell_h * (w // r) + cell_w).reshape(-1)
    assert torch.equal(bias.argmin(dim=1), expected)


def test_official_flattened_resampling_quirk():
    # The official table resamples the flattened key index, so the favoured key is not the
    # pooled cell that contains the query (SPEC section 4.1).
    bias = relative_position_bias(28, 28, 96, r=2)
    assert divmod(bias[10 * 28 + 10].argmin().item(), 14) == (5, 2)
    bias = relative_position_bias(56, 56, 48, r=4)
    assert divmod(bias[0].argmin().item(), 14) == (0, 3)


@pytest.mark.parametrize("h,w,dim,r", [(14, 14, 24, 1), (28, 28, 16, 2), (10, 6, 8, 3)])
def test_factors(h, w, dim, r):
    pq, pk = relative_position_factors(h, w, dim, r)
    assert pq.dtype == pk.dtype == torch.float32
    assert pq.shape == (h * w, dim) and pk.shape == ((h // r) * (w // r), dim)
    bias = relative_position_bias(h, w, dim, r, mode="geometric")
    assert torch.equal(bias, -(pq @ pk.t()))
    # Each embedding row has squared norm dim / 2, so the scaled rows have unit norm.
    torch.testing.assert_close(pq.norm(dim=1), torch.ones(h * w))
    centres = torch.tensor(
        [[a * r + (r - 1) / 2, b * r + (r - 1) / 2] for a in range(h // r) for b in range(w // r)]
    )
    expected = sincos_2d(0, 0, dim, positions=centres) * math.sqrt(2 / dim)
    torch.testing.assert_close(pk, expected.float())


def test_cache_returns_fresh_copies():
    first = relative_position_bias(7, 7, 32)
    first.zero_()
    second = relative_position_bias(7, 7, 32)
    assert second.min() == -1
    assert second.data_ptr() != relative_position_bias(7, 7, 32).data_ptr()
    pq, pk = relative_position_factors(7, 7, 32)
    pq.zero_()
    assert relative_position_factors(7, 7, 32)[0].abs().sum() > 0


def test_device_argument():
    bias = relative_position_bias(7, 7, 32, device="cpu")
    assert bias.device == torch.device("cpu")
    bias = relative_position_bias(7, 7, 32, device="meta")
    assert bias.device == torch.device("meta") and bias.shape == (49, 49)
    pq, pk = relative_position_factors(7, 7, 32, device="meta")
    assert pq.device == pk.device == torch.device("meta")


def test_official_table_row_chunks_are_bit_identical(monkeypatch):
    import pyg_vig.nn.pos_embed as pe

    pe.relative_position_cache.cache_clear()
    whole = pe.relative_position_bias(28, 28, 16, r=2, mode="official")
    pe.relative_position_cache.cache_clear()
    monkeypatch.setattr(pe, "_CHUNK_ELEMENTS", 784 * 37)  # 37-row chunks, last one partial
    chunked = pe.relative_position_bias(28, 28, 16, r=2, mode="official")
    pe.relative_position_cache.cache_clear()
    assert torch.equal(whole, chunked)


def test_table_cache_is_bounded_by_entries_and_bytes():
    from pyg_vig.nn.pos_embed import TableCache

    cache = TableCache(maxsize=3, max_bytes=10 * 4 * 100)  # ten 100-float tables
    built = []

    def table(i, n=100):
        return cache.get(i, lambda: built.append(i) or torch.full((n,), float(len(built))))

    for i in range(5):
        table(i)
    info = cache.cache_info()
    assert (info.currsize, info.misses, info.hits) == (3, 5, 0)  # the 3 most recent stay
    assert table(4)[0] == 5 and cache.cache_info().hits == 1
    table(0)  # evicted before: rebuilt
    assert built == [0, 1, 2, 3, 4, 0]
    big = table("big", n=2000)  # larger than max_bytes alone: kept (the newest), others go
    assert cache.cache_info().currsize == 1 and cache.peek("big") is big
    assert cache.nbytes() == 2000 * 4
    cache.cache_clear()
    assert cache.cache_info() == (0, 0, 0, 3, 0, 4000)


def test_pyramid_model_over_many_detection_sizes_keeps_memory_bounded():
    # A detector sees a new input size at nearly every step; the tables of all Graphers live in
    # one shared cache that stays under its bounds, and the outputs equal uncached ones.
    import pyg_vig
    from pyg_vig.nn import pos_embed

    cache = pos_embed.relative_position_cache
    old = cache.maxsize, cache.max_bytes
    cache.cache_clear()
    cache.maxsize, cache.max_bytes = 6, 2 << 20
    try:
        model = pyg_vig.create_model("pvig_mini", num_classes=3).eval()
        sizes = [(64, 96), (96, 64), (80, 80), (64, 64), (96, 96), (72, 88), (64, 96)]
        with torch.no_grad():
            outs = [model(torch.ones(1, 1, h, w)) for h, w in sizes]
            assert cache.cache_info().currsize <= 6 and cache.nbytes() <= 2 << 20
            assert cache.cache_info().misses > 6  # sizes were evicted and rebuilt on return
            cache.cache_clear()
            again = model(torch.ones(1, 1, 64, 96))  # built afresh
        torch.testing.assert_close(outs[0], again, rtol=0, atol=0)
        torch.testing.assert_close(outs[-1], again, rtol=0, atol=0)
    finally:
        cache.maxsize, cache.max_bytes = old
        cache.cache_clear()
