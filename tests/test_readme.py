"""Every ```python block of the README runs on its own, as pasted into a fresh interpreter.

Blocks are found generically (whatever the sections hold). Files a block needs are made in the
set-up, in a temporary working folder: an official-layout checkpoint for every
``checkpoint="<release file>"``, the ``torch.hub`` cache entry for every
``create_model("<name>", pretrained=True)``, and a photo for every ``Image.open("<file>")``.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyg_vig.hub import get_pretrained_cfg, list_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weights_helpers import save_official  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _release_files():
    """Release file name -> model name, from the registered pretrained configurations."""
    out = {}
    for name in list_pretrained():
        cfg = get_pretrained_cfg(name)
        out[cfg["url"].rsplit("/", 1)[1]] = cfg["architecture"]
    return out


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in README.read_text().splitlines() if ln.strip()]
    assert lines[1] == "```bash"
    assert lines[2].startswith("make demo") and lines[3].startswith("make test")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working folder and TORCH_HOME holding every file the blocks mention."""
    root = tmp_path_factory.mktemp("readme")
    text = "\n".join(_blocks())
    files = _release_files()
    for name in sorted(set(re.findall(r'checkpoint="([^"]+)"', text))):
        assert name in files, f"README loads {name}, which is not a registered release file"
        save_official(root / name, files[name])
    for model in sorted(set(re.findall(r'create_model\("([\w.]+)"[^)]*pretrained=True', text))):
        url = get_pretrained_cfg(model)["url"]
        save_official(root / "torch_home" / "hub" / "checkpoints" / url.rsplit("/", 1)[1],
                      get_pretrained_cfg(model)["architecture"])  # fmt: skip
    rng = np.random.default_rng(0)
    for name in sorted(set(re.findall(r'Image\.open\("([^"]+)"\)', text))):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(root / name)
    return root


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_python_block_runs_as_pasted(index, workdir):
    """Each block in a fresh interpreter (no imports added), from the temporary folder, with
    no network: a download attempt would fail, so cached files must be found."""
    code = _blocks()[index]
    env = dict(os.environ, TORCH_HOME=str(workdir / "torch_home"), PYTHONPATH=str(REPO),
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, f"README block {index} failed:\n{code}\n{out.stderr[-3000:]}"
    assert "Downloading" not in out.stderr


def test_blocks_cover_the_tour_and_the_weights():
    text = "\n".join(_blocks())
    assert len(_blocks()) >= 5
    assert 'checkpoint="vig_s_80.6.pth"' in text  # the official-file block
    assert "pretrained=True" in text and "create_transform" in text
