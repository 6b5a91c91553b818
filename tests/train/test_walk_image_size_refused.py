"""``pyg-vig train`` with an image size the model cannot take leaves no run folder behind."""

import numpy as np

from pyg_vig.cli import main
from pyg_vig.datasets import write_idx


def test_too_small_image_size_is_refused_before_the_run_folder(tmp_path, capsys):
    data = tmp_path / "idx"
    data.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", np.zeros((8, 28, 28), np.uint8))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", np.arange(8, dtype=np.uint8) % 2)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "vig_mini", "--image-size", "7",
            "--epochs", "1", "--batch-size", "4", "--no-progress", "--device", "cpu",
            "-o", str(run)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pyg-vig: error: a 7x7 image") and "minimum input size" in err[-1]
    assert not run.exists()  # the same command with a good size can use the folder
