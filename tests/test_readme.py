"""The README's quick-tour code runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    text = README.read_text()
    tour = text.split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", tour, flags=re.S)


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in README.read_text().splitlines() if ln.strip()]
    assert lines[1] == "```bash"
    assert lines[2].startswith("make demo") and lines[3].startswith("make test")


def test_quick_tour_blocks_run():
    blocks = _blocks()
    assert len(blocks) >= 4
    env: dict = {}
    ran = 0
    for code in blocks:
        if ".pth" in code:  # needs a downloaded official checkpoint file
            continue
        exec(compile("import torch\nimport pyg_vig\n" + code, str(README), "exec"), env)
        ran += 1
    assert ran >= 4
    # spot-check results the blocks leave behind
    assert env["edge_index"].shape == (2, 392 * 9)
    assert env["logits"].shape == (2, 10)
    assert [m.shape[1] for m in env["maps"]] == [80, 160, 400, 640]
    assert isinstance(env["graph"].edge_index, torch.Tensor)
