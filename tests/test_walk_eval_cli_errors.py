"""``pyg-vig eval`` on data that is not what it expects: one line saying what is wrong."""

import numpy as np
import pytest

from pyg_vig.cli import main
from pyg_vig.datasets import write_idx


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("pyg-vig: error: ") and match in err[-1], err[-1]
    return err[-1]


@pytest.fixture
def idx_folder(tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def test_unknown_split_of_an_idx_folder_names_the_split(idx_folder, capsys):
    line = _error(capsys, ["eval", "--model", "vig_mini", "--data", str(idx_folder),
                           "--split", "nope"], "--split nope")  # fmt: skip
    assert "IDX" in line and "'train' or 'test'" in line and "class folders" not in line


def test_empty_folder_says_it_has_no_class_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error(capsys, ["eval", "--model", "vig_mini", "--data", str(empty)],
                  "no class sub-folders in image folder")  # fmt: skip
    assert "--class-map" not in line  # no mapping could help an empty folder


@pytest.mark.parametrize("argv, match", [
    (["predict", "--model", "vig_mini", "x.png", "--topk", "0"], "--topk must be at least 1, got"),
    (["predict", "--model", "vig_mini", "x.png", "--batch-size", "0"], "--batch-size must be at"),
    (["eval", "--model", "vig_mini", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["eval", "--model", "vig_mini", "--workers", "-1"], "--workers must be at least 0, got -1"),
    (["export", "vig_mini", "--batch-size", "-2"], "--batch-size must be at least 1, got -2"),
])  # fmt: skip
def test_counts_below_their_minimum_are_refused_not_clamped(argv, match, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(capsys, argv, match)
    assert list(tmp_path.iterdir()) == []
