"""``pyg-vig detect train | eval | predict`` on tiny Fashion-MNIST canvases (in-process, CPU).

One small demo run (8 training canvases of 96 px, 2 epochs, a reduced ViG) is shared by the
tests: resuming it, scoring it, predicting with it, and feeding the commands bad input.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from pyg_vig.cli import main  # noqa: E402
from pyg_vig.detection.engine import (  # noqa: E402
    BEST_FILE,
    DEMO_CONFIGS,
    LAST_FILE,
    DetectConfig,
    DetectTrainer,
    lr_factor,
)


def _run(capsys, *argv):
    rc = main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A finished ``detect train --demo --demo-size small`` run: (run folder, cache, stdout)."""
    tmp = tmp_path_factory.mktemp("detect")
    run_dir, cache = tmp / "run", tmp / "cache"
    rc = main(["detect", "train", "--demo", "--demo-size", "small", "--cache-dir", str(cache),
               "--output", str(run_dir), "--device", "cpu"])
    assert rc == 0
    return run_dir, cache


def test_demo_train_writes_checkpoints_and_metrics(demo):
    run_dir, cache = demo
    for name in ("config.json", LAST_FILE, BEST_FILE, "metrics.json", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    cfg = DetectConfig.load(run_dir / "config.json")
    assert cfg.num_classes == 11 and cfg.categories["10"] == "Ankle boot"
    assert Path(cfg.train_ann).is_relative_to(cache)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = metrics["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["loss"] > 0 for r in rows)
    # 8 canvases in batches of 4: 2 iterations per epoch; the lr dropped after epoch 1 of 2
    assert rows[-1]["iteration"] == 4
    assert rows[-1]["lr"] == pytest.approx(1e-3 * 0.1 ** 2)
    box = metrics["summary"]["final"]["bbox"]
    assert 0.0 <= box["mAP"] <= box["mAP50"] <= 1.0
    state = torch.load(run_dir / LAST_FILE, weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 4


def test_resume_continues_exactly(demo, tmp_path, capsys):
    run_dir, _ = demo
    cfg = DetectConfig.load(run_dir / "config.json")

    def stop_after_first_epoch(msg):
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt  # a crash right after the epoch-1 checkpoint

    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        DetectTrainer(cfg, crashed, log=stop_after_first_epoch).fit()
    assert torch.load(crashed / LAST_FILE, weights_only=True)["epoch"] == 1
    assert not (crashed / BEST_FILE).exists()  # no evaluation yet (eval_every=0)

    rc, out, err = _run(capsys, "train", "--resume", crashed)
    assert rc == 0, err
    assert f"resuming {crashed} after epoch 1" in out
    rows = json.loads((crashed / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    # optimizer, schedule, data order and random streams restored: the same weights as the
    # uninterrupted run
    a = torch.load(run_dir / LAST_FILE, weights_only=True)["model"]
    b = torch.load(crashed / LAST_FILE, weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(demo, capsys):
    run_dir, _ = demo
    before = (run_dir / LAST_FILE).stat().st_mtime_ns
    rc, _, err = _run(capsys, "train", "--resume", run_dir, "--lr", "0.5")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyg-vig: error: resume folder")
    assert "lr: saved 0.001 vs given 0.5" in lines[0]
    assert (run_dir / LAST_FILE).stat().st_mtime_ns == before


def test_eval_prints_the_metrics_of_the_run(demo, tmp_path, capsys):
    run_dir, _ = demo
    rc, out, err = _run(capsys, "eval", run_dir, "--output", tmp_path / "m.json", "--device",
                        "cpu")
    assert rc == 0, err
    printed = json.loads(out)
    assert printed == json.loads((tmp_path / "m.json").read_text())
    assert printed["images"] == 4 and printed["checkpoint"].endswith(BEST_FILE)
    # the same weights on the same split: the number the training run reported
    final = json.loads((run_dir / "metrics.json").read_text())["summary"]["final"]
    assert printed["bbox"]["mAP"] == pytest.approx(final["bbox"]["mAP"], abs=1e-6)


def test_predict_writes_json_and_pngs_and_reports_a_corrupt_image(demo, tmp_path, capsys):
    from PIL import Image

    run_dir, _ = demo
    cfg = DetectConfig.load(run_dir / "config.json")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000.png", "000001.png"):
        shutil.copy(Path(cfg.val_dir) / name, images / name)
    Image.open(images / "000001.png").resize((160, 120)).save(images / "wide.png")
    (images / "broken.png").write_bytes(b"not a png at all")
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, "predict", run_dir, images, "--output", out_dir,
                        "--score-thresh", "0", "--device", "cpu")
    assert rc == 2
    assert "broken.png" in err and "(skipped)" in err and "1 of 4 input(s)" in err
    results = {Path(r["image"]).name: r for r in
               json.loads((out_dir / "detections.json").read_text())}
    assert set(results) == {"000000.png", "000001.png", "broken.png", "wide.png"}
    assert "error" in results["broken.png"]
    names = set(cfg.categories.values())
    for name in ("000000.png", "000001.png", "wide.png"):
        r = results[name]
        W, H = (160, 120) if name == "wide.png" else (96, 96)
        assert (r["width"], r["height"]) == (W, H)
        assert r["detections"], "the score threshold 0 keeps every detection"
        for d in r["detections"]:  # boxes in the original image's coordinates
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H
            assert d["category"] in names and 0 <= d["score"] <= 1
        drawn = Image.open(r["drawn"])
        assert drawn.size == (W, H)
        assert drawn.convert("RGB").tobytes() != Image.open(images / name).convert("RGB").tobytes()
    # a box reaching past 96 px exists only if predictions were scaled back to 160x120
    assert max(d["box"][2] for d in results["wide.png"]["detections"]) > 96
    assert f"{images / '000000.png'}: " in out


@pytest.mark.parametrize("argv, expected", [
    (["train", "--data-dir", "{tmp}/nowhere", "--train-ann", "{tmp}/missing.json"],
     "--train-ann {tmp}/missing.json: no such annotation file"),
    (["train", "--model", "yolo", "--data-dir", "{tmp}", "--train-ann", "{tmp}/a.json"],
     "--model must be one of retinanet, maskrcnn"),
    (["train", "--output", "{tmp}/run"], "--data-dir is required"),
    (["eval", "{tmp}/no_run"], "checkpoint {tmp}/no_run does not exist"),
    (["eval", "{tmp}", "--ann", "{tmp}/a.json"], "--ann and --data-dir go together"),
    (["predict", "{tmp}/x.png", "{tmp}/y.png"], "is an image, but the first argument"),
])
def test_bad_input_gives_one_error_line(tmp_path, capsys, argv, expected):
    argv = [a.format(tmp=tmp_path) for a in argv]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyg-vig: error: ")
    assert expected.format(tmp=tmp_path) in lines[0]


def test_lr_schedule_is_the_1x_recipe():
    cfg = DetectConfig()
    assert cfg.steps() == [8, 11] and (cfg.lr, cfg.weight_decay, cfg.epochs) == (1e-4, 0.05, 12)
    f = [lr_factor(i, warmup_iters=10, warmup_ratio=0.001, step_iters=[80, 110], gamma=0.1)
         for i in (0, 5, 10, 79, 80, 109, 110, 119)]
    assert f == pytest.approx([0.001, 0.5005, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_maskrcnn_run_scores_masks_and_draws_them(demo, tmp_path, capsys):
    _, cache = demo
    run_dir = tmp_path / "mrcnn"
    small = {**DEMO_CONFIGS["small"]["config"]["model_args"],  # fewer proposals: a faster test
             "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
             "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
             "box_batch_size_per_image": 32, "box_detections_per_img": 10}
    rc, out, err = _run(capsys, "train", "--demo", "--demo-size", "small", "--model", "maskrcnn",
                        "--epochs", "1", "--model-args", json.dumps(small), "--cache-dir", cache,
                        "--output", run_dir, "--device", "cpu")
    assert rc == 0, err
    assert "bbox: mAP=" in out and "segm: mAP=" in out
    final = json.loads((run_dir / "metrics.json").read_text())["summary"]["final"]
    assert set(final) == {"bbox", "segm"}
    assert 0.0 <= final["segm"]["mAP"] <= 1.0
    cfg = DetectConfig.load(run_dir / "config.json")
    image = Path(cfg.val_dir) / "000000.png"
    rc, _, err = _run(capsys, "predict", run_dir, image, "--output", tmp_path / "out",
                      "--score-thresh", "0", "--device", "cpu")
    assert rc == 0, err
    (result,) = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert 0 < len(result["detections"]) <= 10
    assert Path(result["drawn"]).is_file()


def test_torchrun_trains_data_parallel(demo, tmp_path):
    import os
    import subprocess
    import sys

    _, cache = demo
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "pyg_vig", "detect", "train", "--demo", "--demo-size", "small", "--epochs", "1",
         "--cache-dir", str(cache), "--output", str(run_dir), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run folder: ") == 1  # rank 0 reports
    summary = json.loads((run_dir / "metrics.json").read_text())["summary"]
    # 8 canvases, a global batch of 4 split over 2 processes: 2 iterations per epoch
    assert summary["world_size"] == 2 and summary["iterations"] == 2
    assert (run_dir / BEST_FILE).is_file()


def test_a_subcommand_whose_extra_is_missing_reports_it(monkeypatch, capsys):
    import pyg_vig.cli as cli

    # what `detect` does without torchvision: the other subcommands keep working
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("graph", "pyg_vig.not_installed.cli"))
    assert cli.main(["not_installed", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("pyg-vig: error: pyg-vig not_installed is unavailable: No module")
