"""A run trained on a relative ``--data`` path, used from another folder: one line saying so."""

import pytest

from pyg_vig.cli import main
from pyg_vig.train import TrainConfig
from pyg_vig.train.model import WEIGHTS_FILE, build_model, model_metadata
from pyg_vig.utils.checkpoint import save_safetensors


@pytest.fixture
def run_on_relative_data(tmp_path):
    cfg = TrainConfig.from_dict(dict(
        model="vig_mini", model_args={"embed_dim": 16, "depth": 1, "head_hidden": 16},
        data="my_idx", num_classes=2, classes=["a", "b"], in_chans=1, image_size=28,
        mean=[0.5], std=[0.5]))  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    save_safetensors(run / WEIGHTS_FILE, build_model(cfg).state_dict(), model_metadata(cfg))
    (run / "config.json").write_text(cfg.to_json())
    return run


@pytest.mark.parametrize("command", [["eval"], ["graph", "test:0"]])
def test_relative_data_of_a_run_is_named_with_what_to_do(command, run_on_relative_data, capsys,
                                                         tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = [command[0], str(run_on_relative_data), *command[1:], "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pyg-vig: error: this run was trained with --data my_idx, a path "
                          "relative to the folder training was started in")
    assert str(elsewhere) in err and ("--data PATH" in err or "image file" in err)
