"""The ``pyg-vig`` command line: train/eval/predict/graph and one-line errors on bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from pyg_vig.cli import main
from pyg_vig.datasets import embedded_path, write_idx

REPO = Path(__file__).resolve().parents[1]
TINY_VIG = '{"embed_dim": 16, "depth": 2, "head_hidden": 32}'


def _tiny_idx(root):
    root.mkdir(parents=True)
    with np.load(embedded_path()) as d:
        for split, prefix, n in (("train", "train", 256), ("test", "t10k", 128)):
            step = len(d[f"{split}_labels"]) // n
            write_idx(root / f"{prefix}-images-idx3-ubyte.gz", d[f"{split}_images"][::step][:n])
            write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", d[f"{split}_labels"][::step][:n])
        return root, d["test_images"][:3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real ViG training run shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    data, images = _tiny_idx(tmp / "data")
    run = tmp / "run"
    argv = ["train", "--data", str(data), "--model", "vig_mini", "--model-args", TINY_VIG,
            "--epochs", "1", "--batch-size", "32", "--no-progress", "--device", "cpu",
            "--output", str(run)]  # fmt: skip
    assert main(argv) == 0
    pngs = []
    for i, img in enumerate(images):
        pngs.append(tmp / f"img{i}.png")
        Image.fromarray(img).save(pngs[-1])
    return {"run": run, "data": data, "pngs": pngs, "tmp": tmp, "argv": argv}


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("pyg-vig: error: ") and match in err[-1], err[-1]
    return err[-1]


def test_train_writes_run_folder_and_prints_accuracy(trained, capsys):
    run = trained["run"]
    for name in ("model.safetensors", "train_state.pt", "config.json", "metrics.csv",
                 "metrics.json", "confusion_matrix.png", "training_curves.png"):  # fmt: skip
        assert (run / name).is_file(), name
    acc = json.loads((run / "metrics.json").read_text())["summary"]["test_accuracy"]
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"test_accuracy={acc:.4f}"


def test_predict_topk(trained, capsys):
    pngs = [str(p) for p in trained["pngs"]]
    assert main(["predict", str(trained["run"] / "model.safetensors"), *pngs, "--topk", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(pngs[0] + ": ")
    assert len(lines[0].split(": ", 1)[1].split(", ")) == 3
    assert main(["predict", str(trained["run"]), pngs[1], "--json", "--topk", "2"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["image"] == pngs[1] and len(rec["top"]) == 2
    assert rec["top"][0]["prob"] >= rec["top"][1]["prob"]


def test_graph_figure(trained, capsys):
    out = trained["tmp"] / "fig" / "graph.png"
    assert main(["graph", str(trained["run"]), "test:5", "-o", str(out)]) == 0
    assert out.stat().st_size > 1000 and Image.open(out).format == "PNG"
    out2 = trained["tmp"] / "graph2.png"
    argv = ["graph", str(trained["run"]), str(trained["pngs"][0]), "--centers", "0.5,0.5",
            "--blocks", "0,1", "-o", str(out2)]  # fmt: skip
    assert main(argv) == 0 and out2.is_file()
    _error(capsys, ["graph", str(trained["run"]), "test:0", "--blocks", "7"], "out of range")


def test_bad_input_gives_one_error_line(trained, capsys, tmp_path):
    run = trained["run"]
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # training into an existing run folder without --resume: refused, nothing touched
    _error(capsys, trained["argv"], "already exists and is not empty")
    # resuming with settings that differ from the saved run
    _error(capsys, ["train", "--resume", str(run), "--lr", "0.1"], "does not match")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # missing data path
    _error(capsys, ["train", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r")], "nope")
    assert not (tmp_path / "r").exists()
    # unreadable image and missing image
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    _error(capsys, ["predict", str(run), str(bad)], f"cannot read image {bad}")
    _error(capsys, ["predict", str(run), str(tmp_path / "x.png")], "image not found")
    # missing, corrupt, and foreign checkpoints
    _error(capsys, ["eval", str(tmp_path / "none.safetensors")], "checkpoint not found")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((run / "model.safetensors").read_bytes()[:200])
    _error(capsys, ["eval", str(cut)], "corrupt or unreadable")
    # weights of one architecture with the metadata of another
    other = tmp_path / "other.safetensors"
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["config"])
    cfg["model_args"]["embed_dim"] = 24
    meta["config"] = json.dumps(cfg)
    save_file(load_file(run / "model.safetensors"), other, metadata=meta)
    _error(capsys, ["eval", str(other)], "does not fit this model")
    # a dataset with another number of classes
    folder = tmp_path / "folder"
    for c in ("a", "b", "c"):
        (folder / c).mkdir(parents=True)
        shutil.copy(trained["pngs"][0], folder / c / "x.png")
    _error(capsys, ["eval", str(run), "--data", str(folder)], "has 3 classes")


def test_python_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "pyg_vig", "--help"], capture_output=True,
                         text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 0
    for cmd in ("train", "eval", "predict", "graph"):
        assert cmd in out.stdout
