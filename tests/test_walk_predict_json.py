"""``pyg-vig predict --json`` names the failed input exactly and goes on with the others."""

import json

import numpy as np
from PIL import Image

from pyg_vig.cli import main


def test_json_error_names_a_folder_with_spaces_and_goes_on(tmp_path, capsys):
    empty = tmp_path / "my photos" / "empty dir"
    empty.mkdir(parents=True)
    good = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(good)
    assert main(["predict", "--model", "vig_mini", str(empty), str(good), "--json"]) == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0] == {"image": str(empty), "error": f"no image files in folder {empty}"}
    assert records[1]["image"] == str(good) and len(records[1]["top"]) == 3
    last = captured.err.strip().splitlines()[-1]
    assert last == "pyg-vig: error: 1 of 2 input(s) could not be read"
