"""Shared fixtures of the detection tests: a few embedded canvases, written once per session."""

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")


@pytest.fixture(scope="session")
def canvases(tmp_path_factory):
    """``{"train": (img_dir, json), "val": (img_dir, json)}``: 4 + 2 canvases of 96x96."""
    from pyg_vig.detection import make_canvases

    return make_canvases(tmp_path_factory.mktemp("canvases"), n_train=4, n_val=2,
                         canvas_size=96, item_size=(24, 40), seed=0)
