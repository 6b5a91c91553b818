"""Model-level tests for every registered ViG (timm ``tests/test_models.py`` style).

The full-size models run at their minimum input size, not 224, to keep the suite fast; vig_ti
and pvig_ti also run once at 224. Tests that take long on 2 CPU cores carry the ``slow`` marker.
"""

import copy
import math

import pytest
import torch
import torch_geometric
from torch import nn

import pyg_vig
from pyg_vig import create_model, list_models
from pyg_vig.utils import count_macs, count_params

# Learnable parameters of the official models (SPEC.md §8, frozen relative_pos excluded).
PARAMS_M = {
    "vig_ti": 7.185,
    "vig_s": 22.748,
    "vig_b": 86.842,
    "pvig_ti": 10.714,
    "pvig_s": 27.252,
    "pvig_m": 49.526,
    "pvig_b": 92.980,
}
# GMACs at 224x224 (paper Tables 1-2, official code under FlopCounterMode).
GMACS = {
    "vig_ti": 1.30,
    "vig_s": 4.52,
    "vig_b": 17.64,
    "pvig_ti": 1.70,
    "pvig_s": 4.55,
    "pvig_m": 8.85,
    "pvig_b": 16.80,
}


def _clear_bias_caches():
    # The tables are cached per process; start from a fresh process's state.
    from pyg_vig.nn import pos_embed

    pos_embed.relative_position_cache.cache_clear()


def _slow_if(name, slow_names):
    return pytest.param(name, marks=pytest.mark.slow) if name in slow_names else name


def _images(model, size=None, batch=2):
    size = size or model.min_input_size()
    if isinstance(size, int):
        size = (size, size)
    return torch.randn(batch, model.in_chans, *size)


@torch.no_grad()
def _fanin_init(model):
    """The fixtures' "fanin" fill: well-conditioned weights and non-trivial BatchNorms.

    A freshly initialised model (kaiming weights, identity BatchNorms) has features that grow
    to 1e4-1e8 over the blocks, where float rounding flips near-tied k-NN neighbours; fresh
    BatchNorms would also hide folding and train/eval mistakes.
    """
    g = torch.Generator().manual_seed(0)
    bn_params = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            bn_params |= {id(m.weight), id(m.bias)}
    for name, p in model.named_parameters():
        if id(p) in bn_params:
            continue
        if p.dim() >= 2 and name.endswith("weight"):  # (out, in, ...) of a linear or conv
            p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
        else:  # biases, pos_embed, GIN eps
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# --------------------------------------------------------------------------- registry
def test_list_models():
    names = list_models()
    for name in [
        "vig_ti",
        "vig_s",
        "vig_b",
        "pvig_ti",
        "pvig_s",
        "pvig_m",
        "pvig_b",
        "vig_mini",
        "pvig_mini",
    ]:
        assert name in names
    assert list_models("pvig*") == [n for n in names if n.startswith("pvig")]
    assert "vig_ti_224_gelu" in list_models(include_aliases=True)


@pytest.mark.parametrize(
    "alias, name", [("vig_ti_224_gelu", "vig_ti"), ("pvig_s_224_gelu", "pvig_s")]
)
def test_official_alias(alias, name):
    model = create_model(alias)
    assert model.model_name == name
    assert count_params(model) == count_params(create_model(name))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'vig_huge'") as info:
        create_model("vig_huge")
    for name in list_models():
        assert name in str(info.value)


def test_bad_override():
    with pytest.raises(ValueError, match="valid arguments"):
        create_model("vig_mini", no_such_knob=1)


# --------------------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("name", list_models())
def test_forward(name):
    model = create_model(name).eval()
    x = _images(model)
    with torch.no_grad():
        out = model(x)
    # the registered configuration's class count (ImageNet's 1000; 10 for the *_mini models)
    expected = 10 if name.endswith("_mini") else 1000
    assert out.shape == (2, expected) and model.num_classes == expected
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("name", ["vig_ti", "pvig_ti"])
def test_forward_224(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    grid = 224 // model.feature_info[-1]["reduction"]
    assert feats.shape == (1, model.num_features, grid, grid)


# At their minimum input size the big models' backward takes 3-10 s on 2 cores; pvig_b's
# (196 px) takes over a minute.
@pytest.mark.parametrize("name", [_slow_if(n, ["pvig_b"]) for n in list_models()])
def test_backward(name):
    model = create_model(name, num_classes=42).train()
    x = _images(model)
    out = model(x)
    assert out.shape == (2, 42)
    nn.functional.cross_entropy(out, torch.tensor([0, 41])).backward()
    learnable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert learnable
    no_grad = [n for n, p in learnable if p.grad is None]
    assert no_grad == []
    bad = [n for n, p in learnable if not torch.isfinite(p.grad).all()]
    assert bad == []


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_param_count(name):
    model = create_model(name)
    assert round(count_params(model) / 1e6, 3) == PARAMS_M[name]


@pytest.mark.parametrize(
    "name",
    [
        "vig_ti",
        "pvig_ti",
        *[pytest.param(n, marks=pytest.mark.slow) for n in ["vig_s", "vig_b", "pvig_s"]],
        *[pytest.param(n, marks=pytest.mark.slow) for n in ["pvig_m", "pvig_b"]],
    ],
)
def test_macs(name):
    # A fresh process: the relative-bias tables are built (and must not be counted) here.
    _clear_bias_caches()
    model = create_model(name)
    gmacs = count_macs(model, (1, 3, 224, 224)) / 1e9
    assert math.isclose(gmacs, GMACS[name], rel_tol=0.01), gmacs


def test_macs_pvig_ti_after_warmup():
    # What count_macs should report: the steady-state forward (bias table already cached).
    model = create_model("pvig_ti").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    gmacs = count_macs(model, (1, 3, 224, 224)) / 1e9
    assert math.isclose(gmacs, GMACS["pvig_ti"], rel_tol=0.01), gmacs


# --------------------------------------------------------------------------- timm helpers
@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_grad_checkpointing(name):
    model = create_model(name, num_classes=5)
    _fanin_init(model).train()
    x = _images(model, 32)

    def run():
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    ref_out, ref_grads = run()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    out, grads = run()
    torch.testing.assert_close(out, ref_out)
    for g, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5)
    # Eval mode ignores the flag.
    model.eval()
    with torch.no_grad():
        a = model(x)
        model.set_grad_checkpointing(False)
        torch.testing.assert_close(model(x), a)


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_reset_classifier(name):
    model = create_model(name, num_classes=10).eval()
    x = _images(model, 28)
    model.reset_classifier(5)
    assert model.num_classes == 5
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.get_classifier().out_features == 5
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pre)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_no_weight_decay(name):
    model = create_model(name)
    names = dict(model.named_parameters())
    assert model.no_weight_decay()
    assert all(n in names for n in model.no_weight_decay())


# --------------------------------------------------------------------------- any input
@pytest.mark.parametrize(
    "name, sizes",
    [
        ("vig_mini", [(28, 28), (40, 40), (64, 64), (32, 48)]),
        ("pvig_mini", [(28, 28), (40, 40), (64, 64), (32, 48)]),
        ("vig_ti", [(160, 160), (256, 256)]),
        ("pvig_ti", [(176, 176), (256, 256), (192, 256)]),
    ],
)
def test_any_resolution(name, sizes):
    model = create_model(name, num_classes=3).eval()
    stride = model.feature_info[-1]["reduction"]
    for h, w in sizes:
        with torch.no_grad():
            feats = model.forward_features(_images(model, (h, w), batch=1))
            out = model.forward_head(feats)
        assert out.shape == (1, 3)
        assert torch.isfinite(out).all()
        assert feats.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini", "vig_ti", "pvig_ti"])
def test_too_small(name):
    model = create_model(name).eval()
    m = model.min_input_size()
    with torch.no_grad():
        model(_images(model, m, batch=1))  # the minimum itself is accepted
    small = m - model.stem_stride
    with pytest.raises(ValueError, match=f"minimum input size is {m}x{m}"):
        model(_images(model, small, batch=1))
    # Also inside a mixed batch.
    with pytest.raises(ValueError, match=f"minimum input size is {m}x{m}"):
        model([_images(model, m, batch=1)[0], _images(model, small, batch=1)[0]])


def test_pvig_ti_160_too_small():
    # 160 px leaves a 5x5 last stage, fewer than k * dilation = 27 keys for its blocks.
    model = create_model("pvig_ti")
    assert model.min_input_size() > 160
    with pytest.raises(ValueError, match=r"160x160 image is too small.*minimum input size"):
        model(torch.randn(1, 3, 160, 160))


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_wrong_channels(name):
    model = create_model(name)  # 1-channel models
    with pytest.raises(ValueError, match="expects 1-channel images but got 3 channels"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="expects 1-channel images but got 3 channels"):
        model([torch.randn(1, 28, 28), torch.randn(3, 32, 32)])
    rgb = create_model(name, in_chans=3)
    with pytest.raises(ValueError, match="expects 3-channel images but got 1 channels"):
        rgb(torch.randn(2, 1, 28, 28))


def test_bad_input_type():
    model = create_model("vig_mini")
    with pytest.raises(ValueError, match="expected"):
        model([])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 2, 1, 28, 28))


# --------------------------------------------------------------------------- mixed batches
MIXED = [
    ("vig_mini", [(28, 28), (40, 36), (32, 32), (28, 28)]),
    ("pvig_mini", [(28, 28), (44, 40), (36, 36), (44, 40)]),
    ("pvig_ti", [(176, 176), (224, 192)]),
]


@pytest.mark.parametrize("name, sizes", MIXED)
def test_mixed_resolution_batch(name, sizes):
    # In float64 the batched pass and the single-image passes pick the same neighbours, so the
    # logits agree to round-off.
    model = _fanin_init(create_model(name, num_classes=10)).eval().double()
    images = [torch.randn(model.in_chans, h, w, dtype=torch.float64) for h, w in sizes]
    with torch.no_grad():
        out = model(images)
        alone = torch.cat([model(img.unsqueeze(0)) for img in images])
        feats = model.forward_features(images)
    assert out.shape == (len(images), 10)
    torch.testing.assert_close(out, alone, rtol=0, atol=1e-5)
    assert isinstance(feats, list)
    stride = model.feature_info[-1]["reduction"]
    for f, (h, w) in zip(feats, sizes, strict=True):
        assert f.shape == (model.num_features, math.ceil(h / stride), math.ceil(w / stride))


def _graphs_alone(model, images, counts=None):
    """Per image, whether every block's edges of the batched pass, shifted to the image's own
    ids, equal its single-image pass; ``counts`` (a list) receives (differing, total) edges."""
    with torch.no_grad():
        batched = model.forward_graph(images)
        alone = [model.forward_graph(img.unsqueeze(0)) for img in images]
    same = []
    for i, g in enumerate(alone):
        ok = True
        for b, (eb, ea) in enumerate(zip(batched.edge_indices, g.edge_indices, strict=True)):
            n_dst = sum(h * w for h, w in batched.edge_grids[b][:i])
            rows = (eb[1] >= n_dst) & (eb[1] < n_dst + (ea[1].max() + 1))
            src0 = int(eb[0, rows].min()) - int(ea[0].min()) if rows.any() else 0
            equal = (torch.equal(eb[1, rows] - n_dst, ea[1])
                     and (eb[0, rows] - src0).shape == ea[0].shape)
            ok &= equal and torch.equal(eb[0, rows] - src0, ea[0])
            if counts is not None:
                differ = int((eb[0, rows] - src0 != ea[0]).sum()) if equal else ea.size(1)
                counts.append((differ, ea.size(1)))
        same.append(ok)
    return same


@pytest.mark.parametrize("name, sizes", MIXED)
def test_mixed_resolution_batch_float32(name, sizes):
    # float32 GEMMs of another shape round differently; a k-NN candidate within an ulp or two
    # of the k-th neighbour may then flip, and in a deep block one flip changes later graphs
    # too (for pvig_ti about half the random images have at least one flipped edge). Images
    # whose graphs agree in every block must agree to round-off, and flipped edges stay rare.
    torch.manual_seed(0)
    model = _fanin_init(create_model(name, num_classes=10)).eval()
    images = [torch.randn(model.in_chans, h, w) for h, w in sizes]
    with torch.no_grad():
        out = model(images)
        alone = torch.cat([model(img.unsqueeze(0)) for img in images])
    counts: list[tuple[int, int]] = []
    same = _graphs_alone(model, images, counts)
    differ, total = map(sum, zip(*counts, strict=True))
    assert differ <= 0.05 * total, f"{differ} of {total} edges differ"  # 0-2.2% over seeds 0-5
    scale = max(1.0, alone.abs().max().item())  # round-off grows with the largest logit
    for i, ok in enumerate(same):
        if ok:
            assert (out[i] - alone[i]).abs().max().item() <= 1e-5 * scale


def test_list_of_equal_images_is_batched():
    model = create_model("vig_mini").eval()
    x = _images(model, 28, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(model(list(x)), model(x))


# --------------------------------------------------------------------------- PyG interop
@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_forward_graph(name):
    model = create_model(name).eval()
    sizes = [(28, 28), (36, 32)]
    images = [torch.randn(1, h, w) for h, w in sizes]
    with torch.no_grad():
        g = model.forward_graph(images)
        nodes, layout, *_ = model.forward_nodes(images)
    assert isinstance(g, torch_geometric.data.Batch)
    assert g.num_graphs == 2
    torch.testing.assert_close(g.x, nodes)
    assert g.pos.shape == (g.num_nodes, 2)
    assert g.batch.shape == (g.num_nodes,)
    assert g.grid_size.tolist() == [list(s) for s in layout.sizes]
    assert g.num_nodes == sum(h * w for h, w in layout.sizes)
    assert len(g.edge_indices) == len(g.edge_grids)
    assert torch.equal(g.edge_index, g.edge_indices[-1])
    # The last block is not reduced: its edges connect nodes of the same image.
    src, dst = g.edge_index
    assert torch.equal(g.batch[src], g.batch[dst])
    # Any PyG layer can continue from here.
    conv = torch_geometric.nn.GCNConv(g.num_node_features, 16)
    h = conv(g.x, g.edge_index)
    pooled = torch_geometric.nn.global_mean_pool(h, g.batch)
    assert h.shape == (g.num_nodes, 16)
    assert pooled.shape == (2, 16)
    assert [len(s) for s in g.edge_grids] == [2] * len(g.edge_grids)


def test_forward_graph_to_data_list():
    model = create_model("vig_mini").eval()
    with torch.no_grad():
        g = model.forward_graph([torch.randn(1, 28, 28), torch.randn(1, 36, 32)])
    graphs = g.to_data_list()
    assert [d.num_nodes for d in graphs] == [49, 72]
    assert graphs[1].edge_index.max() < 72


# --------------------------------------------------------------------------- compile / fuse
@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        # inductor needs ~60 s to compile on 2 CPU cores.
        pytest.param("inductor", marks=pytest.mark.slow),
    ],
)
def test_compile(backend):
    torch._dynamo.reset()
    model = create_model("vig_mini", num_classes=10)
    _fanin_init(model).eval()
    x = _images(model, 28)
    with torch.no_grad():
        ref = model(x)
        compiled = torch.compile(model, backend=backend)
        out = compiled(x)
        out2 = compiled(x + 0.1)
        ref2 = model(x + 0.1)
    assert _rel_err(out, ref) <= 1e-5
    assert _rel_err(out2, ref2) <= 1e-5


# With random inputs, edge and gin convs meet near-tied k-NN candidates in the deep blocks,
# where any float rounding change (folding included) flips a neighbour; all four convs are
# checked on the well-separated official fixtures in test_official.py::test_fuse_official.
@pytest.mark.parametrize(
    "name, conv",
    [("vig_mini", "mr"), ("vig_mini", "sage"), ("pvig_mini", "mr"), ("pvig_mini", "sage")],
)
def test_fuse(name, conv):
    # In float64 folding moves the features by ~1e-16, far below any k-NN gap of random data,
    # so the graphs are the same and the logits must agree to round-off (in float32 a gap of a
    # few ulps between candidates, which random inputs meet now and then, flips a neighbour).
    model = create_model(name, num_classes=10, conv=conv)
    _fanin_init(model).eval().double()
    torch.manual_seed(0)
    x = _images(model, 32, batch=3).double()
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()
        out = fused(x)
    assert fused is model
    assert not fused.training
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert left == []  # every BatchNorm, the head's included, is folded
    assert _rel_err(out, ref) <= 1e-10


def test_fuse_pvig_ti():
    # float64, as test_fuse: in float32 a near-tied k-NN candidate flips now and then
    torch.manual_seed(0)
    model = create_model("pvig_ti")
    _fanin_init(model).eval().double()
    x = _images(model, 176, batch=1).double()
    with torch.no_grad():
        ref = model(x)
        out = model.fuse()(x)
    assert _rel_err(out, ref) <= 1e-10


# --------------------------------------------------------------------------- training-time
def _pair(name, **kwargs):
    # pvig_mini's last grid is too small to dilate with k=9; k=4 gives dilations up to 2.
    common = dict(num_classes=10, k=4) if name.startswith("pvig") else dict(num_classes=10)
    base = create_model(name, **common)
    _fanin_init(base)
    other = create_model(name, **common, **kwargs)
    other.load_state_dict(base.state_dict())
    return base, other


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_drop_path(name):
    base, model = _pair(name, drop_path_rate=0.5)
    x = _images(base, 28, batch=4)
    with torch.no_grad():
        base.eval(), model.eval()
        torch.testing.assert_close(model(x), base(x))
        base.train(), model.train()
        ref = base(x)
        outs = [model(x) for _ in range(3)]
    assert all(not torch.allclose(o, ref) for o in outs)
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_stochastic_dilation(name):
    base, model = _pair(name, stochastic=True, epsilon=1.0)
    assert max(base.dilations) > 1  # otherwise there is nothing to randomise
    x = _images(base, 28, batch=4)
    with torch.no_grad():
        base.eval(), model.eval()
        torch.testing.assert_close(model(x), base(x))
        base.train(), model.train()
        ref = base(x)
        out = model(x)
    assert not torch.allclose(out, ref)


def test_overrides():
    # The paper's knobs pass through create_model.
    model = create_model(
        "pvig_mini", conv="sage", k=4, heads=2, use_dilation=False, relative_pos=None, num_classes=3
    )
    assert all(d == 1 for d in model.dilations)
    grapher = model.stages[0].blocks[0].grapher
    assert grapher.k == 4 and grapher.relative_pos is None
    assert type(grapher.graph_conv).__name__ == "SAGEConv"
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_package_exports():
    assert pyg_vig.create_model is create_model
    assert issubclass(pyg_vig.ViG, nn.Module) and issubclass(pyg_vig.PyramidViG, nn.Module)


@pytest.mark.parametrize("name", ["vig_mini", "pvig_mini"])
def test_dtype_argument(name):
    model = create_model(name, dtype=torch.float64).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("stride", [4, 16])
def test_conv_stem_channels_last_feeds_nodes_without_a_copy(stride):
    from pyg_vig.data.grid import GridLayout
    from pyg_vig.models._layers import ConvStem, OfficialConvStem

    torch.manual_seed(0)
    stem = ConvStem(3, 32, stride).eval()
    x = torch.randn(2, 3, 64, 64)  # channel-first input, as users pass it
    with torch.no_grad():
        y = stem(x)
        ref = stem.convs(x)  # the channel-first convolutions
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    nodes, layout = GridLayout.from_images(y)
    assert nodes.data_ptr() == y.data_ptr()  # [B*H*W, C] is a view of the NHWC output
    assert torch.equal(nodes, y.permute(0, 2, 3, 1).reshape(-1, 32))
    assert layout.grid == tuple(y.shape[-2:])
    # gradients flow through the channels-last path like through the channel-first one
    trained = copy.deepcopy(stem).train()
    xg = x.clone().requires_grad_()
    trained(xg).square().sum().backward()
    g_cl = xg.grad.clone()
    xg.grad = None
    trained.convs(xg).square().sum().backward()
    torch.testing.assert_close(g_cl, xg.grad, rtol=1e-4, atol=1e-4)
    # the official-numerics twin runs the convolutions channel-first: bit-identical to them
    model = torch.nn.Sequential(stem)
    pyg_vig.nn.to_official_numerics(model)
    assert type(model[0]) is OfficialConvStem
    with torch.no_grad():
        assert torch.equal(model[0](x), ref)
        assert model[0](x).is_contiguous()
