"""Real ``pyg-vig`` journeys in subprocesses on real files: train a tiny run, export it, run
the exported file on a named dataset, predict with broken images, evaluate a class folder
whose names are not the model's class names."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyg_vig.datasets import embedded_path, write_idx

REPO = Path(__file__).resolve().parents[1]
TINY_VIG = '{"embed_dim": 16, "depth": 2, "head_hidden": 32}'


def _cli(*argv, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYG_VIG_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pyg_vig", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workflows")
    data = tmp / "idx"
    data.mkdir()
    with np.load(embedded_path()) as d:
        for split, prefix, n in (("train", "train", 128), ("test", "t10k", 64)):
            write_idx(data / f"{prefix}-images-idx3-ubyte.gz", d[f"{split}_images"][:n])
            write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", d[f"{split}_labels"][:n])
        images, labels = d["test_images"][:20], d["test_labels"][:20]
    out = _cli("train", "--data", data, "--model", "vig_mini", "--model-args", TINY_VIG,
               "--epochs", "1", "--batch-size", "32", "--no-progress", "--device", "cpu",
               "--output", tmp / "run")
    assert out.returncode == 0, out.stderr
    return {"tmp": tmp, "run": tmp / "run", "data": data, "images": images, "labels": labels}


def test_predict_reports_broken_images_once_and_in_json(run):
    tmp = run["tmp"]
    good = tmp / "good.png"
    Image.fromarray(run["images"][0]).save(good)
    broken = tmp / "broken.png"
    broken.write_bytes(b"not a png")
    out = _cli("predict", run["run"], good, broken, "--json", "--topk", "2")
    assert out.returncode == 2
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in lines] == [str(good), str(broken)]
    assert len(lines[0]["top"]) == 2 and "error" not in lines[0]
    assert "cannot read image" in lines[1]["error"] and "top" not in lines[1]
    assert lines[1]["error"].count("cannot read image") == 1
    assert out.stderr.count("cannot read image") == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_predict_image_without_model_says_how(run):
    photo = run["tmp"] / "photo.jpg"
    Image.fromarray(run["images"][1]).convert("RGB").save(photo)
    out = _cli("predict", photo)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("pyg-vig: error:") and "--model" in last, out.stderr


def test_export_mode_and_eval_of_exported_file_on_a_named_dataset(run):
    onnx = run["run"] / "model.onnx"
    out = _cli("export", run["run"], "--no-verify", "--threads", "1")
    assert out.returncode == 0, out.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(onnx.stat().st_mode) == 0o666 & ~umask
    torch_eval = _cli("eval", run["run"], "--data", run["data"])
    onnx_eval = _cli("eval", onnx, "--data", run["data"], "--threads", "1")
    assert torch_eval.returncode == 0 and onnx_eval.returncode == 0, onnx_eval.stderr
    acc = [float(o.stdout.split("test_accuracy=")[1].split()[0]) for o in (torch_eval, onnx_eval)]
    assert "test_images=64" in onnx_eval.stdout
    assert abs(acc[0] - acc[1]) <= 2 / 64  # a k-NN tie may flip a prediction or two


def test_eval_folder_with_other_names_needs_a_class_map(run):
    root = run["tmp"] / "folder"
    names = [f"c{i:02d}" for i in range(10)]  # same count as the model's classes '0'..'9'
    for i, (img, y) in enumerate(zip(run["images"], run["labels"], strict=True)):
        (root / names[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / names[y] / f"{i}.png")
    for name in names:
        (root / name).mkdir(exist_ok=True)
    out = _cli("eval", run["run"], "--data", root)
    assert out.returncode == 2 and "--class-map" in out.stderr, out.stderr
    cmap = run["tmp"] / "map.json"
    cmap.write_text(json.dumps({n: i for i, n in enumerate(names)}))
    mapped = _cli("eval", run["run"], "--data", root, "--class-map", cmap)
    assert mapped.returncode == 0, mapped.stderr
    assert "test_images=20" in mapped.stdout
    # same images with the true class names as folders score the same
    named = run["tmp"] / "named"
    for i, (img, y) in enumerate(zip(run["images"], run["labels"], strict=True)):
        (named / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(named / str(y) / f"{i}.png")
    same = _cli("eval", run["run"], "--data", named)
    assert same.returncode == 0, same.stderr
    get = lambda o: o.stdout.split("test_accuracy=")[1].split()[0]  # noqa: E731
    assert get(same) == get(mapped)
