"""``pyg_vig.datasets.create_transform`` / ``resolve_data_config`` take timm's calls."""

import numpy as np
import pytest
import torch
from PIL import Image

import pyg_vig
from pyg_vig.datasets import create_transform
from pyg_vig.datasets.preprocess import resolve_data_config

timm_data = pytest.importorskip("timm.data")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (70, 54, 3), dtype=np.uint8))


def test_timm_model_data_config_as_keywords(image):
    model = pyg_vig.create_model("pvig_mini", in_chans=3)
    cfg = timm_data.resolve_model_data_config(model)  # has crop_mode, which timm passes on
    ours = create_transform(**cfg)(image)
    torch.testing.assert_close(ours, timm_data.create_transform(**cfg)(image))
    assert resolve_data_config({}, model=model) == resolve_data_config(model)
    args = {"crop_pct": 1.0, "mean": None}  # timm's args: set entries win, None ones do not
    assert resolve_data_config(args, model=model) == {**resolve_data_config(model),
                                                      "crop_pct": 1.0}


@pytest.mark.parametrize("call", [lambda f: f(32), lambda f: f(input_size=(3, 32, 32))])
def test_input_size_alone_means_timms_defaults(call, image):
    ours, theirs = call(create_transform)(image), call(timm_data.create_transform)(image)
    torch.testing.assert_close(ours, theirs)


def test_training_and_other_crops_are_refused_by_name():
    with pytest.raises(ValueError, match="is_training=True"):
        create_transform(32, is_training=True)
    with pytest.raises(ValueError, match="crop_mode='squash' is not supported"):
        create_transform(32, crop_mode="squash")
