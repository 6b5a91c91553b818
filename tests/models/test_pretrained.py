"""Pretrained weights: tagged configurations, download through torch.hub from a local HTTP
server (127.0.0.1), the cache, broken downloads, ``pretrained_cfg_overlay``, head reset and
position-embedding resampling. The weight files are official-layout files the tests build."""

import logging
import sys
from pathlib import Path

import pytest
import torch

import pyg_vig
from pyg_vig.hub import WeightsDownloadError, cache_dir, get_pretrained_cfg, list_pretrained
from pyg_vig.models.official import checkpoint_filter_fn, official_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from weights_helpers import FIXTURES, WeightsServer, official_weights, save_official  # noqa: E402

RELEASE = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/"
X28 = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def server():
    s = WeightsServer()
    yield s
    s.stop()


def _serve_official(server, tmp_path, path="/w/vig_mini_official.pth", **kwargs):
    src = save_official(tmp_path / "src.pth", "vig_mini", **kwargs)
    server.files[path] = (tmp_path / "src.pth").read_bytes()
    return src, server.url(path)


def _logits(model, x=X28):
    with torch.no_grad():
        return model.eval()(x)


# --------------------------------------------------------------------------- configurations
def test_registered_release_files():
    expected = {
        "vig_ti_224_gelu.in1k": "vig/vig_ti_74.5.pth",
        "vig_s_224_gelu.in1k": "vig/vig_s_80.6.pth",
        "vig_b_224_gelu.in1k": "vig/vig_b_82.6.pth",
        "pvig_ti_224_gelu.in1k": "pyramid-vig/pvig_ti_78.5.pth.tar",
        "pvig_s_224_gelu.in1k": "pyramid-vig/pvig_s_82.1.pth.tar",
        "pvig_m_224_gelu.in1k": "pyramid-vig/pvig_m_83.1.pth.tar",
        "pvig_m_224_gelu.in21k": "pyramid-vig/pvig_m_im21k_90e.pth",
        "pvig_b_224_gelu.in1k": "pyramid-vig/pvig_b_83.66.pth.tar",
    }
    assert list_pretrained() == sorted(expected)
    for name, file in expected.items():
        cfg = get_pretrained_cfg(name)
        assert cfg["url"] == RELEASE + file
        assert cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)
        assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)  # official default_cfg
        assert cfg["crop_pct"] == (0.95 if name.startswith("pvig_b") else 0.9)
        assert cfg["license"] == "apache-2.0" and cfg["name"] == name
    assert get_pretrained_cfg("pvig_m_224_gelu.in21k")["num_classes"] == 21841
    # the default tag, by our name or the official alias
    assert get_pretrained_cfg("pvig_m")["tag"] == "in1k"
    assert get_pretrained_cfg("pvig_s.in1k") == get_pretrained_cfg("pvig_s_224_gelu")
    assert pyg_vig.list_models(pretrained=True) == [
        "pvig_b", "pvig_m", "pvig_s", "pvig_ti", "vig_b", "vig_s", "vig_ti"]  # fmt: skip
    with pytest.raises(ValueError, match="unknown weight tag 'in22k'.*pvig_s_224_gelu.in1k"):
        get_pretrained_cfg("pvig_s.in22k")


def test_num_classes_from_the_registered_cfg():
    assert pyg_vig.create_model("vig_mini").num_classes == 10
    assert pyg_vig.create_model("vig_mini")(X28).shape == (2, 10)
    assert pyg_vig.create_model("pvig_mini").num_classes == 10
    assert pyg_vig.create_model("vig_mini", num_classes=3).num_classes == 3
    model = pyg_vig.create_model("vig_ti")
    assert model.num_classes == 1000 and model.pretrained_cfg["tag"] == "in1k"


def test_no_weights_registered():
    with pytest.raises(ValueError, match="no pretrained weights are registered for vig_mini"):
        pyg_vig.create_model("vig_mini", pretrained=True)


# --------------------------------------------------------------------------- downloads
def test_download_convert_load_then_cache(torch_home, server, tmp_path):
    src, url = _serve_official(server, tmp_path)
    model = pyg_vig.create_model("vig_mini", pretrained=True,
                                 pretrained_cfg_overlay=dict(url=url))  # fmt: skip
    torch.testing.assert_close(_logits(model), _logits(src), rtol=0, atol=0)
    cached = torch_home / "hub" / "checkpoints" / "vig_mini_official.pth"
    assert cached.is_file() and cache_dir() == cached.parent
    assert list(cached.parent.iterdir()) == [cached]  # no .partial left behind
    assert server.requests == ["/w/vig_mini_official.pth"]
    # second call: from the cache, with the server gone
    server.stop()
    again = pyg_vig.create_model("vig_mini", pretrained=True,
                                 pretrained_cfg_overlay=dict(url=url))  # fmt: skip
    torch.testing.assert_close(_logits(again), _logits(src), rtol=0, atol=0)
    server.__init__()  # the fixture stops it again


def test_http_404(torch_home, server):
    url = server.url("/missing/pvig_s_82.1.pth.tar")
    with pytest.raises(WeightsDownloadError) as e:
        pyg_vig.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    msg = str(e.value)
    assert "HTTP 404" in msg and url in msg and "checkpoint='pvig_s_82.1.pth.tar'" in msg
    assert not (torch_home / "hub" / "checkpoints" / "pvig_s_82.1.pth.tar").exists()


def test_no_network_names_url_and_manual_route(torch_home, server):
    url = server.url("/w/vig_ti_74.5.pth")
    server.stop()  # nothing listens on that port any more
    with pytest.raises(WeightsDownloadError) as e:
        pyg_vig.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    msg = str(e.value)
    assert f"cannot download {url}" in msg and "by hand" in msg and "checkpoint=" in msg
    assert str(torch_home / "hub" / "checkpoints" / "vig_ti_74.5.pth") in msg
    server.__init__()


def test_truncated_download_is_not_cached(torch_home, server, tmp_path):
    src, url = _serve_official(server, tmp_path)
    server.truncate.add("/w/vig_mini_official.pth")
    with pytest.raises(WeightsDownloadError, match="was cut short.*nothing was cached"):
        pyg_vig.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    folder = torch_home / "hub" / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []
    # the next try downloads again and works
    server.truncate.clear()
    model = pyg_vig.create_model("vig_mini", pretrained=True,
                                 pretrained_cfg_overlay=dict(url=url))  # fmt: skip
    torch.testing.assert_close(_logits(model), _logits(src), rtol=0, atol=0)
    assert len(server.requests) == 2


def test_corrupt_file_in_cache_is_kept_and_named(torch_home, server):
    url = server.url("/w/w.pth")
    path = torch_home / "hub" / "checkpoints" / "w.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsDownloadError, match="delete the file to download it again"):
        pyg_vig.create_model("vig_mini", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    assert path.read_bytes().startswith(b"PK")  # the user's file is not deleted
    assert server.requests == []


def test_file_overlay_needs_no_network(torch_home, tmp_path):
    src = save_official(tmp_path / "w.pth", "vig_mini", wrap="state_dict_ema")
    model = pyg_vig.create_model("vig_mini", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "w.pth")))
    torch.testing.assert_close(_logits(model), _logits(src), rtol=0, atol=0)
    assert model.pretrained_cfg["file"] == str(tmp_path / "w.pth")
    assert "url" not in model.pretrained_cfg
    assert not (torch_home / "hub").exists()


# --------------------------------------------------------------------------- head, size, chans
def test_other_num_classes_resets_the_head(torch_home, tmp_path, caplog):
    src = save_official(tmp_path / "w.pth", "vig_mini")  # 10 classes
    overlay = dict(file=str(tmp_path / "w.pth"))
    with caplog.at_level(logging.INFO, logger="pyg_vig"):
        model = pyg_vig.create_model("vig_mini", pretrained=True, num_classes=4,
                                     pretrained_cfg_overlay=overlay)  # fmt: skip
    assert "10-class classifier; keeping a new 4-class one" in caplog.text
    assert model.head.out.weight.shape == (4, 256)
    ours, theirs = model.state_dict(), src.state_dict()
    for k in ours:
        if not k.startswith("head.out."):
            torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)
    model.eval()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(X28), pre_logits=True)
        ref = src.forward_head(src.forward_features(X28), pre_logits=True)
    torch.testing.assert_close(pre, ref, rtol=0, atol=0)
    # num_classes=0: a feature extractor
    feats = pyg_vig.create_model("vig_mini", pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=overlay).eval()  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(feats(X28), ref, rtol=0, atol=0)


def test_weights_with_another_class_count_rebuild_the_head(tmp_path, caplog):
    src = save_official(tmp_path / "w.pth", "vig_mini", num_classes=7)
    with caplog.at_level(logging.INFO, logger="pyg_vig"):
        model = pyg_vig.create_model("vig_mini", pretrained=True,
                                     pretrained_cfg_overlay=dict(file=str(tmp_path / "w.pth")))
    assert model.num_classes == 7 and "model rebuilt for 7 classes" in caplog.text
    torch.testing.assert_close(_logits(model), _logits(src), rtol=0, atol=0)


def test_checkpoint_into_another_img_size(tmp_path):
    """A 28-px checkpoint in a model built for 56 px: pos_embed resampled at load time gives
    what the 28-px model computes on 56-px inputs (it resamples at run time)."""
    src = save_official(tmp_path / "w.pth", "vig_mini")
    big = pyg_vig.create_model("vig_mini", img_size=56, checkpoint=tmp_path / "w.pth").eval()
    assert big.pos_embed.shape == (1, 96, 14, 14) and src.pos_embed.shape == (1, 96, 7, 7)
    x = torch.randn(2, 1, 56, 56)
    torch.testing.assert_close(_logits(big, x), _logits(src, x), rtol=1e-5, atol=1e-5)
    # our own format too
    own = tmp_path / "own.pt"
    torch.save(src.state_dict(), own)
    big2 = pyg_vig.create_model("vig_mini", img_size=56, checkpoint=own).eval()
    torch.testing.assert_close(_logits(big2, x), _logits(src, x), rtol=1e-5, atol=1e-5)
    # a pyramid model too (its dilation cap follows img_size, so only the weights are compared)
    psrc = save_official(tmp_path / "p.pth", "pvig_mini")
    pbig = pyg_vig.create_model("pvig_mini", img_size=56, checkpoint=tmp_path / "p.pth")
    assert pbig.pos_embed.shape == (1, 32, 28, 28)
    from pyg_vig.models.official import resample_pos_embed

    torch.testing.assert_close(pbig.pos_embed, resample_pos_embed(psrc.pos_embed, (28, 28)))


def test_rgb_weights_into_a_grayscale_model(tmp_path):
    src = save_official(tmp_path / "w.pth", "vig_mini", in_chans=3)
    model = pyg_vig.create_model("vig_mini", in_chans=1, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "w.pth")))
    w = src.stem.convs[0].weight
    torch.testing.assert_close(model.stem.convs[0].weight, w.sum(1, keepdim=True))
    # a gray image seen as RGB gives the same stem features (the rest is loaded unchanged;
    # logits are not compared: random weights make near-tied neighbours flip on round-off)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().stem(X28), src.stem(X28.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-4)
    for k, v in src.state_dict().items():
        if k != "stem.convs.0.weight":
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


# --------------------------------------------------------------------------- real entries
@pytest.mark.parametrize("fixture, name", [("a_vig_ti_224_gelu_keys.pt", "vig_ti"),
                                           ("b_pvig_ti_224_gelu_keys.pt", "pvig_ti")])
def test_official_layout_matches_the_fixture_key_lists(fixture, name):
    keys = {k: tuple(s) for k, s, *_ in torch.load(FIXTURES / fixture, weights_only=True)["keys"]}
    model, sd = official_weights(name)
    assert {k: tuple(v.shape) for k, v in sd.items()} == keys
    # and back: the inverse of checkpoint_filter_fn
    for k, v in checkpoint_filter_fn(official_state_dict(model), model).items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0)


@pytest.mark.parametrize("name, file", [("vig_ti", "vig_ti_74.5.pth"),
                                        ("pvig_ti", "pvig_ti_78.5.pth.tar")])
def test_registered_entry_loads_from_the_hub_cache(torch_home, name, file):
    """``create_model(name, pretrained=True)`` reads the release file name from the cache
    (where a manual download goes); no network is touched."""
    src = save_official(torch_home / "hub" / "checkpoints" / file, name)
    model = pyg_vig.create_model(name, pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _logits(src, x), rtol=0, atol=0)
    assert model.pretrained_cfg["url"].endswith("/" + file)
