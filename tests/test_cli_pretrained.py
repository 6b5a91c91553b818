"""The pretrained ImageNet flow on the command line, as a new user runs it: predict, evaluate
on an ImageFolder of WordNet-id folders, fine-tune on their own folder, export.

The release file is replaced by official-layout pvig_ti weights the test writes into the
``torch.hub`` cache (where a manual download goes), so nothing touches the network.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pyg_vig
from pyg_vig.cli import main
from pyg_vig.datasets import create_transform, imagenet_class_names, imagenet_synsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weights_helpers import save_official  # noqa: E402

MODEL = "pvig_ti"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """TORCH_HOME with pvig_ti_78.5.pth.tar in its cache; photos of several sizes."""
    tmp = tmp_path_factory.mktemp("pretrained")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp / "torch_home")
    save_official(tmp / "torch_home" / "hub" / "checkpoints" / "pvig_ti_78.5.pth.tar", MODEL)
    rng = np.random.default_rng(0)
    photos = []
    for i, (w, h) in enumerate([(300, 200), (200, 260), (224, 224), (400, 300), (180, 240)]):
        photos.append(tmp / f"photo{i}.{'jpg' if i % 2 else 'png'}")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos[-1])
    model = pyg_vig.create_model(MODEL, pretrained=True).eval()
    transform = create_transform(model.pretrained_cfg)
    with torch.no_grad():
        logits = model(torch.stack([transform(p) for p in photos]))
    yield {"tmp": tmp, "photos": photos, "logits": logits, "model": model}
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


def test_predict_pretrained_prints_imagenet_labels(hub, capsys):
    photos = [str(p) for p in hub["photos"][:2]]
    assert main(["predict", "--model", MODEL, "--pretrained", *photos, "--topk", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = imagenet_class_names()
    assert len(lines) == 2
    for line, path, logits in zip(lines, photos, hub["logits"], strict=False):
        assert line.startswith(f"{path}: ")
        want = logits.softmax(-1).topk(5)
        shown = line.split(": ", 1)[1].split(", ")
        assert [s.rsplit(" ", 1)[0] for s in shown] == [names[i] for i in want.indices]
        assert [float(s.rsplit(" ", 1)[1]) for s in shown] == pytest.approx(
            want.values.tolist(), abs=6e-4)
    assert main(["predict", "--model", MODEL, "--pretrained", photos[0], "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    top = hub["logits"][0].softmax(-1).topk(3)
    assert [t["index"] for t in rec["top"]] == top.indices.tolist()
    assert [t["class"] for t in rec["top"]] == [names[i] for i in top.indices]


def test_eval_pretrained_on_an_imagenet_style_folder(hub, capsys, tmp_path):
    """Folders named by WordNet id; two photos filed under the model's top-1 class, one under
    its 3rd class (a top-5 hit only), two elsewhere: top-1 2/5, top-5 3/5."""
    wnids, logits = imagenet_synsets(), hub["logits"]
    ranks = logits.argsort(dim=1, descending=True)
    labels = [ranks[0, 0], ranks[1, 0], ranks[2, 2], ranks[3, 500], ranks[4, 999]]
    root = tmp_path / "imagenet" / "val"
    for photo, label in zip(hub["photos"], labels, strict=True):
        (root / wnids[int(label)]).mkdir(parents=True, exist_ok=True)
        Image.open(photo).save(root / wnids[int(label)] / (photo.stem + ".JPEG"), "JPEG",
                               quality=100)  # fmt: skip
    # JPEG re-encoding changes pixels: the expectation comes from the files as saved
    files = sorted(root.rglob("*.JPEG"))
    transform = create_transform(hub["model"].pretrained_cfg)
    with torch.no_grad():
        out = hub["model"](torch.stack([transform(f) for f in files]))
    y = torch.tensor([wnids.index(f.parent.name) for f in files])
    top1 = (out.argmax(1) == y).float().mean().item()
    top5 = (out.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    argv = ["eval", "--model", MODEL, "--pretrained", "--data", str(tmp_path / "imagenet"),
            "--split", "val", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "val_images=5"
    assert out[-1] == f"val_accuracy={top1:.4f}" and out[-2] == f"val_top5_accuracy={top5:.4f}"
    assert "official top-1 of these weights on the ImageNet-1k validation set: 78.5%" in out[-3]
    # a broken file is reported, the others still count, and the exit status says so
    (root / wnids[0]).mkdir(exist_ok=True)
    (root / wnids[0] / "broken.JPEG").write_bytes(b"\xff\xd8 nope")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "val_images=5"
    assert "broken.JPEG" in captured.err and "1 image(s) could not be read" in captured.err


def _pets(root, rng, n=4):
    for split in ("train", "val"):
        for c, (cls, tint) in enumerate((("cat", 60), ("dog", 190))):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n if split == "train" else 2):
                arr = np.clip(rng.normal(tint, 30, (120 + 20 * i, 160, 3)), 0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(root / split / cls / f"{c}{i}.png")
    return root


def test_fine_tune_pretrained_on_own_folder(hub, capsys, tmp_path):
    data = _pets(tmp_path / "pets", np.random.default_rng(1))
    run = tmp_path / "run"
    argv = ["train", "--model", MODEL, "--pretrained", "--data", str(data), "--epochs", "1",
            "--batch-size", "4", "--lr", "1e-4", "--warmup-epochs", "0", "--mixup", "0",
            "--cutmix", "0", "--no-ema", "--drop-path", "0.05", "--no-progress",
            "--device", "cpu", "--amp", "none", "--output", str(run)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 classes" in out and out.strip().splitlines()[-1].startswith("test_accuracy=")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["pretrained"] is True and cfg["num_classes"] == 2
    assert cfg["classes"] == ["cat", "dog"] and cfg["image_size"] == 224
    assert cfg["mean"] == cfg["std"] == [0.5, 0.5, 0.5]  # the weights' normalisation
    # the backbone started from the pretrained weights (2 small steps moved it little)
    from pyg_vig.utils.checkpoint import load_state_dict_file

    tuned, _ = load_state_dict_file(run / "model.safetensors")
    ref = hub["model"].state_dict()
    for key in ("stem.convs.0.weight", "stages.2.blocks.3.ffn.fc1.0.weight"):
        rel = (tuned[key] - ref[key]).norm() / ref[key].norm()
        assert rel < 0.05, (key, rel)
    assert tuned["head.out.weight"].shape == (2, 1024)
    # the fine-tuned run predicts the user's classes
    assert main(["predict", str(run), str(hub["photos"][0]), "--topk", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert {c.rsplit(" ", 1)[0] for c in line.split(": ", 1)[1].split(", ")} == {"cat", "dog"}
    assert main(["eval", str(run), "--data", str(data), "--split", "val"]) == 0
    out = capsys.readouterr().out.splitlines()
    # the same preprocessing as the trainer's test split: the same accuracy
    acc = json.loads((run / "metrics.json").read_text())["summary"]["test_accuracy"]
    assert out[0] == "val_images=4" and out[-1] == f"val_accuracy={acc:.4f}"


def test_export_pretrained_pyramid_to_onnx(hub, capsys, tmp_path):
    """Needs the graph layer's export work (dynamic batch, fresh pyramid models)."""
    out = tmp_path / "pvig_ti.onnx"
    assert main(["export", MODEL, "--pretrained", "-o", str(out)]) == 0
    assert f"wrote {out} (onnx, dynamic batch" in capsys.readouterr().out
    photos = [str(p) for p in hub["photos"][:3]]
    assert main(["predict", str(out), *photos, "--json", "--topk", "5"]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(recs) == 3
    for rec, logits in zip(recs, hub["logits"], strict=False):
        # the eager probabilities of the classes the ONNX file ranks first (ONNX Runtime sums
        # in another order: a near-tied neighbour may flip, so no exact equality)
        prob = logits.softmax(-1)
        assert rec["top"][0]["index"] == int(prob.argmax())
        for t in rec["top"]:
            assert abs(t["prob"] - prob[t["index"]].item()) <= 1e-2


def test_no_network_error_names_the_manual_route(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    # the release address is replaced by a closed local port: no outside address is used
    from pyg_vig.models import _registry

    cfg = _registry._TAGGED_CFGS["vig_ti_224_gelu.in1k"]
    monkeypatch.setitem(cfg, "url", "http://127.0.0.1:9/vig/vig_ti_74.5.pth")
    monkeypatch.setitem(_registry.default_cfgs["vig_ti"], "url", cfg["url"])
    assert main(["predict", "--model", "vig_ti", "--pretrained", "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pyg-vig: error: cannot download http://127.0.0.1:9/vig/vig_ti_74.5.pth")
    assert "by hand" in err and "checkpoint='vig_ti_74.5.pth'" in err
