"""pyg_vig models inside timm's registry, checked with timm's own functions."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pyg_vig

timm = pytest.importorskip("timm")
from timm.models._features import feature_take_indices as timm_take  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weights_helpers import WeightsServer, save_official  # noqa: E402

X28 = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def test_every_model_alias_and_tag_is_in_timm():
    names = set(timm.list_models("*vig*"))
    ours = set(pyg_vig.list_models(include_aliases=True))
    assert ours <= names and {"pvig_s_224_gelu", "vig_ti_224_gelu", "pvig_mini"} <= names
    with_weights = timm.list_models("*vig*", pretrained=True)
    assert "pvig_s_224_gelu.in1k" in with_weights and "pvig_m.in21k" in with_weights
    assert not any(n.startswith(("pvig_mini", "vig_mini")) for n in with_weights)
    for full in pyg_vig.list_pretrained():
        assert timm.models.get_pretrained_cfg(full).url == pyg_vig.get_pretrained_cfg(full)["url"]
    cfg = timm.models.get_pretrained_cfg("pvig_m.in21k")
    assert cfg.num_classes == 21841 and cfg.crop_pct == 0.9 and cfg.mean == (0.5, 0.5, 0.5)
    assert timm.models.get_pretrained_cfg("pvig_b").crop_pct == 0.95  # default tag


def test_same_weights_and_logits_as_create_model(torch_home, tmp_path):
    server = WeightsServer()
    try:
        src = save_official(tmp_path / "src.pth", "vig_mini")
        server.files["/w/vig_mini.pth"] = (tmp_path / "src.pth").read_bytes()
        overlay = dict(url=server.url("/w/vig_mini.pth"))
        via_timm = timm.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=overlay)
        ours = pyg_vig.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=overlay)
    finally:
        server.stop()
    assert server.requests == ["/w/vig_mini.pth"]  # the second one came from the cache
    assert type(via_timm) is type(ours)
    for (k1, v1), (k2, v2) in zip(
        via_timm.state_dict().items(), ours.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2), k1
    with torch.no_grad():
        expected = src.eval()(X28)
        torch.testing.assert_close(via_timm.eval()(X28), expected, rtol=0, atol=0)
        torch.testing.assert_close(ours.eval()(X28), expected, rtol=0, atol=0)


def test_official_name_with_tag_and_file_overlay(tmp_path):
    src = save_official(tmp_path / "w.pth", "pvig_ti", seed=1)
    overlay = dict(file=str(tmp_path / "w.pth"))
    model = timm.create_model("pvig_ti_224_gelu.in1k", pretrained=True,
                              pretrained_cfg_overlay=overlay)
    assert model.pretrained_cfg["tag"] == "in1k" and model.pretrained_cfg["file"] == overlay["file"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_data_config_and_transform_follow_in_chans_and_img_size():
    from PIL import Image

    model = timm.create_model("pvig_ti_224_gelu.in1k")
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg == dict(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                       std=(0.5, 0.5, 0.5), crop_pct=0.9, crop_mode="center")
    # a grey 56 px model: the documented preprocessing must build (1, 56, 56) inputs
    model = timm.create_model("vig_mini", img_size=56).eval()
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (1, 56, 56) and cfg["mean"] == (0.5,)
    x = timm.data.create_transform(**cfg)(Image.new("L", (80, 70), color=200))
    assert x.shape == (1, 56, 56)
    with torch.no_grad():
        assert model(x[None]).shape == (1, 10)
    # RGB weights into a one-channel pyramid model at 384 px
    model = timm.create_model("pvig_ti", in_chans=1, img_size=384)
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (1, 384, 384) and cfg["mean"] == (0.5,) and cfg["std"] == (0.5,)


@pytest.mark.parametrize("indices", [None, 1, 2, 3, (-1,), (0, -1), [1, 2], (-3,)])
def test_take_indices_rules_are_timms(indices):
    n = 3  # pvig_mini has three stages
    expected, last = timm_take(n, indices)
    model = timm.create_model("pvig_mini").eval()
    with torch.no_grad():
        final, maps = model.forward_intermediates(X28, indices)
    assert [m.shape[1] for m in maps] == [model.feature_info[i]["num_chs"] for i in expected]
    kept = model.prune_intermediate_layers(indices)
    assert kept == expected and len(model.stages) == last + 1
    with torch.no_grad():
        pruned = model.forward_intermediates(X28, kept, intermediates_only=True)
    for a, b in zip(pruned, maps, strict=True):
        torch.testing.assert_close(a, b)


def test_out_of_range_indices_are_refused():
    model = timm.create_model("pvig_mini")
    for bad in (0, 4, (3,), (-4,)):
        with pytest.raises(ValueError, match="out of range"):
            model.prune_intermediate_layers(bad)


def test_features_only_is_timms_wrapper():
    from timm.models._features import FeatureGetterNet

    model = timm.create_model("pvig_mini", features_only=True, out_indices=(-2, -1))
    assert isinstance(model, FeatureGetterNet)
    assert model.feature_info.channels() == [64, 128]
    assert model.feature_info.reduction() == [4, 8]
    with torch.no_grad():
        maps = model(X28)
    assert [tuple(m.shape) for m in maps] == [(2, 64, 7, 7), (2, 128, 4, 4)]
    whole = timm.create_model("pvig_mini", features_only=True)
    assert whole.feature_info.channels() == [32, 64, 128]
    assert timm.data.resolve_model_data_config(whole)["input_size"] == (1, 28, 28)
    with pytest.raises(RuntimeError, match="features_only is not supported"):
        timm.create_model("vig_mini", features_only=True)


def test_bad_argument_through_timm_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown argument.*'depthz'.*valid arguments"):
        timm.create_model("pvig_mini", depthz=3)


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('timm', 'torchvision'):
            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')
        return None
sys.meta_path.insert(0, Block())
"""


def test_core_imports_and_builds_without_timm_or_torchvision():
    code = BLOCKER + textwrap.dedent("""
        import pyg_vig.nn, pyg_vig.models, pyg_vig.data
        import pyg_vig, torch
        assert not pyg_vig.timm_registry.is_registered()
        m = pyg_vig.create_model('pvig_mini').eval()
        assert m(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
        assert [k for k in sys.modules if k.split('.')[0] in ('timm', 'torchvision')] == []
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_core_modules_do_not_import_timm_themselves():
    # with timm installed, only pyg_vig/timm_registry.py may import it
    root = Path(pyg_vig.__file__).parent
    offenders = [str(p.relative_to(root)) for sub in ("nn", "models", "data")
                 for p in (root / sub).rglob("*.py")
                 if "import timm" in p.read_text() or "from timm" in p.read_text()]
    assert offenders == []
