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
    # numbers out of range: one line naming each setting and its range, no run folder
    _error(capsys, ["train", "--demo", "--epochs", "0", "--eval-every", "0", "-o",
                    str(tmp_path / "r0")], "epochs=0 (must be at least 1); eval_every=0")
    assert not (tmp_path / "r0").exists()
    # unreadable image and missing image: reported, then the summary line
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    _error(capsys, ["predict", str(run), str(bad)], "1 of 1 input(s) could not be read")
    _error(capsys, ["predict", str(run), str(tmp_path / "x.png")], "could not be read")
    _error(capsys, ["predict", str(run)], "no images given")
    _error(capsys, ["predict", str(run), str(bad), "--pretrained"], "go with --model NAME")
    _error(capsys, ["predict", str(run), str(bad), "--runtime", "onnxruntime"],
           "runs an exported .onnx file")  # fmt: skip
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
    for cmd in ("train", "eval", "predict", "export", "graph"):
        assert cmd in out.stdout
    # no third-party import noise (PyG's torch.jit.script FutureWarning) on every command
    assert "torch.jit.script" not in out.stderr, out.stderr


def test_import_hides_only_pygs_jit_notice_and_changes_no_filter():
    code = ("import warnings; before = list(warnings.filters); import pyg_vig; "
            "assert warnings.filters == before, 'a global warning filter changed'")
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True,
                         text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "torch.jit.script" not in out.stderr, out.stderr


def test_predict_reports_bad_files_and_goes_on(trained, capsys, tmp_path):
    """A batch job: the unreadable file is named, the others are still predicted, the exit
    status says something failed; a folder expands to its images."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, png in enumerate(trained["pngs"]):
        shutil.copy(png, folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    wide = tmp_path / "wide.png"  # 300 x 200: cropped, not stretched
    Image.new("L", (300, 200), 128).save(wide)
    argv = ["predict", str(trained["run"]), str(folder), str(wide), str(tmp_path / "gone.png"),
            "--json", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    recs = [json.loads(line) for line in out.splitlines()]
    failed = {Path(r["image"]).name: r["error"] for r in recs if "error" in r}
    assert "cannot read image" in failed.pop("broken.png") and set(failed) == {"gone.png"}
    recs = [r for r in recs if "error" not in r]  # failed images are listed with their error
    assert [Path(r["image"]).name for r in recs] == ["0.png", "1.png", "2.png", "wide.png"]
    assert all(len(r["top"]) == 3 and r["top"][0]["class"] in [str(c) for c in range(10)]
               for r in recs)  # fmt: skip
    err = err.strip().splitlines()
    assert any("cannot read image" in ln and "broken.png" in ln and "(skipped)" in ln
               for ln in err)  # fmt: skip
    assert any("image not found" in ln and "gone.png" in ln for ln in err)
    assert err[-1] == "pyg-vig: error: 2 of 6 input(s) could not be read"
    # the same images one by one give the same probabilities
    assert main(["predict", str(trained["run"]), str(folder / "1.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == recs[1]


def test_resume_with_more_epochs_extends(trained, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "extending the run from 1 to 2 epochs" in out
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    _error(capsys, ["train", "--resume", str(run), "--epochs", "1"], "fewer epochs")


def test_warmup_clamp_is_reported(trained, capsys, tmp_path):
    argv = ["train", "--data", str(trained["data"]), "--model", "vig_mini", "--model-args",
            TINY_VIG, "--epochs", "1", "--warmup-epochs", "20", "--batch-size", "64",
            "--no-progress", "--device", "cpu", "--output", str(tmp_path / "r")]  # fmt: skip
    with pytest.warns(UserWarning, match="whole run a warm-up"):
        assert main(argv) == 0
    assert "warning: --warmup-epochs 20 >= --epochs 1" in capsys.readouterr().out


def test_demo_also_scores_the_full_test_set(trained, capsys, tmp_path, monkeypatch):
    """`train --demo` uses DEMO_CONFIG and, when Debian's dataset-fashion-mnist is installed,
    prints the full test set's accuracy before the subset's (here both are small stand-ins)."""
    import pyg_vig.datasets as datasets
    from pyg_vig.train import DEMO_CONFIG

    with np.load(embedded_path()) as d:  # the "embedded subset": 256 train / 64 test images
        subset = {f"{s}_{k}": d[f"{s}_{k}"][:: len(d[f"{s}_labels"]) // n][:n]
                  for s, n in (("train", 256), ("test", 64)) for k in ("images", "labels")}
    np.savez(tmp_path / "subset.npz", **subset)
    monkeypatch.setattr(datasets, "embedded_path", lambda: tmp_path / "subset.npz")
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_PATH", str(trained["data"]))
    tiny = '{"embed_dims": [8, 16, 32], "depths": [1, 1, 1], "head_hidden": 32}'  # pvig_mini
    flags = ["--epochs", "1", "--warmup-epochs", "0.5", "--model-args", tiny, "--batch-size",
             "32", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(["train", "--demo", *flags, "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == f"full_test_images=128 (test split of {trained['data']})"
    full = float(out[-2].removeprefix("full_test_accuracy="))
    assert out[-1].startswith("test_accuracy=")
    cfg = json.loads((tmp_path / "demo" / "config.json").read_text())
    given = {"epochs": 1, "warmup_epochs": 0.5, "model_args": json.loads(tiny), "batch_size": 32}
    assert {k: cfg[k] for k in DEMO_CONFIG} == {**DEMO_CONFIG, **given}
    summary = json.loads((tmp_path / "demo" / "metrics.json").read_text())["summary"]
    assert summary["extra_eval"][0]["images"] == 128
    assert summary["extra_eval"][0]["accuracy"] == pytest.approx(full, abs=1e-4)
    # the number `pyg-vig eval RUN --data <IDX folder>` gives for the same weights
    assert main(["eval", str(tmp_path / "demo"), "--data", str(trained["data"])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"test_accuracy={full:.4f}"
    # without the full set: a hint instead, and the subset's accuracy still ends the output
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_PATH", str(tmp_path / "absent"))
    assert main(["train", "--demo", *flags, "-o", str(tmp_path / "demo2")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "dataset-fashion-mnist" in out[-2] and out[-1].startswith("test_accuracy=")
    assert not any(line.startswith("full_test") for line in out)
    # --full-test names the folder (what `make demo` passes after fetching Debian's package)
    argv = ["train", "--demo", *flags, "-o", str(tmp_path / "demo3"), "--full-test",
            str(trained["data"])]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == f"full_test_images=128 (test split of {trained['data']})"
    # a --full-test that is not there fails before training, with the path named
    argv = ["train", "--demo", *flags, "-o", str(tmp_path / "demo4"), "--full-test",
            str(tmp_path / "nowhere")]  # fmt: skip
    assert main(argv) == 2
    assert "--full-test" in (err := capsys.readouterr().err) and "nowhere" in err
    assert not (tmp_path / "demo4").exists()


def _class_folder(tmp_path, trained):
    """An image folder whose class folders are the run's class names ('0'..'9')."""
    from pyg_vig.datasets import load_dataset

    ds = load_dataset(trained["data"], "test")
    root = tmp_path / "folder"
    for i in range(12):
        img, label = ds[i]
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0] * 255).round().byte().numpy()).save(root / str(label) / f"{i}.png")
    return root


def test_export_static_batch_onnx_runs_in_predict_and_eval(trained, capsys, tmp_path):
    run, out = trained["run"], tmp_path / "m.onnx"
    assert main(["export", str(run), "-o", str(out), "--static-batch", "--batch-size", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (onnx, batch 2, input (1, 28, 28))")
    pngs = [str(p) for p in trained["pngs"]]  # 3 images: fed as 2 + (1 padded)
    assert main(["predict", str(run), *pngs, "--json"]) == 0
    ref = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert main(["predict", str(out), *pngs, "--json", "--runtime", "onnxruntime"]) == 0
    got = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    for a, b in zip(ref, got, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        for ta, tb in zip(a["top"], b["top"], strict=True):
            assert abs(ta["prob"] - tb["prob"]) <= 2e-3
    folder = _class_folder(tmp_path, trained)
    assert main(["eval", str(run), "--data", str(folder)]) == 0
    ref = capsys.readouterr().out.splitlines()
    assert main(["eval", str(out), "--data", str(folder)]) == 0
    got = capsys.readouterr().out.splitlines()
    assert ref[0] == got[0] == "test_images=12" and ref[-1] == got[-1]
    assert ref[-2] == got[-2] and got[-2].startswith("test_top5_accuracy=")


def test_export_pt2_dynamic_batch(trained, capsys, tmp_path):
    """Needs dynamic-batch torch.export of the model (the graph layer's export work)."""
    out = tmp_path / "m.pt2"
    assert main(["export", str(trained["run"]), "--format", "pt2", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (pt2, dynamic batch")
    pngs = [str(p) for p in trained["pngs"]]
    assert main(["predict", str(trained["run"]), *pngs, "--json"]) == 0
    ref = capsys.readouterr().out
    assert main(["predict", str(out), *pngs, "--json"]) == 0
    got = capsys.readouterr().out
    for a, b in zip(ref.splitlines(), got.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]


def test_export_onnx_dynamic_batch(trained, capsys, tmp_path):
    """Needs dynamic-batch torch.export of the model (the graph layer's export work)."""
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained["run"]), "-o", str(out)]) == 0
    assert "dynamic batch" in capsys.readouterr().out
    from pyg_vig.export import load_exported

    runner = load_exported(out)
    assert runner.static_batch is None and runner.metadata["model"] == "vig_mini"


def test_pretrained_without_registered_weights(trained, capsys, tmp_path):
    argv = ["train", "--data", str(trained["data"]), "--model", "vig_mini", "--pretrained",
            "--epochs", "1", "--no-progress", "--device", "cpu", "-o", str(tmp_path / "r")]
    _error(capsys, argv, "no pretrained weights are registered for vig_mini")
    assert not (tmp_path / "r").exists()
    _error(capsys, ["predict", "--model", "vig_mini", "--pretrained", str(trained["pngs"][0])],
           "no pretrained weights are registered")  # fmt: skip


def test_export_errors(trained, capsys, tmp_path):
    _error(capsys, ["export", "no_such_model"], "neither a run folder")
    _error(capsys, ["export", str(trained["run"]), "--pretrained"], "registered model name")
    _error(capsys, ["predict", str(tmp_path / "none.onnx"), str(trained["pngs"][0])],
           "exported model not found")  # fmt: skip
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not onnx")
    _error(capsys, ["predict", str(fake), str(trained["pngs"][0])], "cannot load ONNX model")
