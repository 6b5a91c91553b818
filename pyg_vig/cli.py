"""The ``pyg-vig`` command: ``train``, ``eval``, ``predict``, ``export`` and ``graph``.

Problems with the user's input (missing data, a checkpoint that does not fit, a resume folder
that does not match, no network for a download) end the command with one
``pyg-vig: error: ...`` line on stderr and exit status 2; set ``PYG_VIG_DEBUG=1`` to see the
traceback instead. Batch commands (``predict`` over many files, ``eval`` over a folder) report
an unreadable image on stderr, go on with the others and exit with status 2 at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

# ``TrainConfig`` fields set from the data, never from the command line
_DATA_DERIVED = ("num_classes", "classes", "mean", "std")
_HELP = {
    "model": "registered model name (see `pyg_vig.list_models()`)",
    "model_args": "JSON dict of extra create_model overrides, e.g. '{\"embed_dim\": 64}'",
    "drop_path": "stochastic depth rate",
    "data": "'fashion_mnist_subset' (embedded), 'fashion_mnist', an IDX folder, a .npz, or an "
    "image folder (root/train/<class>/*.png)",
    "image_size": "image side in pixels; other sizes are resized (image folders: 32 if unset; "
    "224, the weights' size, with --pretrained)",
    "pretrained": "start from the model's ImageNet weights (fine-tuning: the classifier is "
    "rebuilt for the data's classes, images normalised as the weights expect)",
    "drop": "dropout before the classifier",
    "in_chans": "1 (grayscale) or 3 (RGB) for image folders",
    "batch_size": "global batch size, split over all processes",
    "warmup_epochs": "linear warm-up length (fraction of epochs allowed)",
    "clip_grad": "clip the gradient norm to this value (0: off)",
    "mixup": "mixup alpha (0: off)",
    "cutmix": "cutmix alpha (0: off)",
    "reprob": "random erasing probability",
    "crop_padding": "random crop with this much zero padding (0: off)",
    "hflip": "horizontal flip probability",
    "auto_augment": "timm augmentation policy, e.g. rand-m9-mstd0.5-inc1 (RandAugment)",
    "amp": "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), none, bf16, fp16",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "workers": "data loader worker processes",
    "checkpoint_every": "write train_state.pt every N optimisation steps (and each epoch end)",
    "eval_every": "score the test split every N epochs (and after the last one)",
}


class UserError(Exception):
    """Reported as one line, without a traceback."""


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from pyg_vig.train import TrainConfig

    p.add_argument(
        "--demo",
        action="store_true",
        help="the `make demo` recipe: small pyramid ViG on the embedded Fashion-MNIST subset, "
        "~6 min on 2 CPU cores, also scored on the full test set when dataset-fashion-mnist is "
        "installed; its settings replace the defaults below, explicit flags still win",
    )
    p.add_argument("--output", "-o", help="run folder (default: a new runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    for f in dataclasses.fields(TrainConfig):
        if f.name in _DATA_DERIVED:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (
            "from the data" if default is None and f.name in ("image_size", "in_chans") else default
        )
        text = f"{_HELP[f.name]} " if f.name in _HELP else ""
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=f"{text}(default: {shown})")
        if f.type in ("bool",):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif f.name == "model_args":
            p.add_argument(flag, type=json.loads, **kw)
        elif f.type in ("int", "int | None"):
            p.add_argument(flag, type=int, **kw)
        elif f.type in ("float", "float | None"):
            p.add_argument(flag, type=float, **kw)
        else:
            p.add_argument(flag, type=str, **kw)


def _build_parser() -> argparse.ArgumentParser:
    from pyg_vig.version import __version__

    parser = argparse.ArgumentParser(
        prog="pyg-vig",
        description="Vision GNN (ViG) on PyTorch Geometric: train, evaluate, "
        "predict, and draw the patch graph.",
    )
    parser.add_argument("--version", action="version", version=f"pyg_vig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a run folder")
    _add_train_args(p)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained, pretrained or exported model on a dataset split",
        description="Top-1/top-5 accuracy. SOURCE is a run folder, a model.safetensors, or an "
        "exported .onnx/.pt2 file; or give --model NAME [--pretrained | --checkpoint FILE] "
        "and --data (an ImageFolder, e.g. the ImageNet validation set as val/<wnid>/*.JPEG).",
    )
    p.add_argument("checkpoint", nargs="?", metavar="SOURCE",
                   help="run folder, model.safetensors, or an exported .onnx/.pt2 file")
    _add_model_args(p)
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--split", default="test", help="split of --data (image folders: a "
                   "train/test/val sub-folder when present, else the folder itself)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--confusion-matrix", metavar="PNG", help="also save the confusion matrix")

    p = sub.add_parser(
        "predict",
        help="classify image files (top-k classes)",
        description="SOURCE is a run folder, a model.safetensors or an exported .onnx/.pt2 "
        "file; with --model NAME every positional argument is an image. Folders expand to "
        "their images; an unreadable file is reported and skipped.",
    )
    p.add_argument("inputs", nargs="+", metavar="[SOURCE] IMAGE",
                   help="the model source (unless --model) then image files or folders")
    _add_model_args(p)
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")

    p = sub.add_parser(
        "export",
        help="export a model to ONNX or a torch.export program (.pt2)",
        description="SOURCE is a run folder or model.safetensors, or a registered model name "
        "(with --pretrained or --checkpoint FILE). The file keeps the class names and the "
        "preprocessing; run it with `pyg-vig predict FILE ...` (onnxruntime for .onnx).",
    )
    p.add_argument("source", metavar="RUN_OR_MODEL")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    p.add_argument("--output", "-o", help="output file (default: <run>/model.<format> or "
                   "./<model>.<format>)")
    p.add_argument("--pretrained", action="store_true", help="registered model: load its "
                   "pretrained weights")
    p.add_argument("--checkpoint", metavar="FILE", help="registered model: load this file")
    p.add_argument("--batch-size", type=int, default=2, help="batch of the example input")
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch size to --batch-size instead of a dynamic dimension")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="ONNX: skip the onnxruntime comparison with the eager model")

    p = sub.add_parser("graph", help="draw the k-NN neighbours of centre nodes (paper Fig. 4)")
    p.add_argument("checkpoint", help="run folder or model.safetensors")
    p.add_argument("image", help="an image file, or test:<index> for a test-split image")
    p.add_argument("--blocks", default="0,-1", help="Grapher blocks to draw (default: first, last)")
    p.add_argument(
        "--centers",
        nargs="*",
        default=None,
        metavar="Y,X",
        help="centre positions as fractions of the image height/width "
        "(default: 0.3,0.3 0.5,0.6 0.75,0.4)",
    )
    p.add_argument("--out", "-o", default="graph.png", help="output PNG")
    p.add_argument("--device", default="auto")
    return parser


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a registered model name (pyg_vig.list_models()) instead of "
                   "SOURCE, e.g. pvig_s or pvig_s_224_gelu.in1k")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model: its pretrained weights (downloaded once, then cached)")
    p.add_argument("--checkpoint", metavar="FILE", dest="weights",
                   help="with --model: a weights file (official or ours)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="auto: onnxruntime for .onnx files, torch otherwise")


# ---------------------------------------------------------------------------------- train
def _new_run_dir(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _cmd_train(args: argparse.Namespace) -> int:
    from pyg_vig.train import DEMO_CONFIG, TrainConfig, Trainer, cleanup_distributed
    from pyg_vig.train.distributed import init_distributed

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    if given.get("clip_grad") == 0:
        given["clip_grad"] = None
    if args.resume:
        if args.output and Path(args.output) != Path(args.resume):
            raise UserError(
                "--output and --resume name different folders; a resumed run stays in its folder"
            )
        run_dir = Path(args.resume)
        saved = TrainConfig.load(run_dir / "config.json")
        base = saved.to_dict()
        if args.demo:  # the demo recipe must match what was saved
            base.update({k: v for k, v in DEMO_CONFIG.items() if k not in given})
        cfg = TrainConfig.from_dict({**base, **given})
    else:
        base = dict(DEMO_CONFIG) if args.demo else {}
        cfg = TrainConfig.from_dict({**base, **given})
    info = init_distributed(cfg.device)
    if not args.resume:
        if args.output:
            run_dir = Path(args.output)
        else:
            name = _new_run_dir("demo" if args.demo else cfg.model)
            if info.distributed:  # every rank must write into the folder rank 0 picked
                import torch.distributed as dist

                box = [str(name)]
                dist.broadcast_object_list(box, src=0)
                name = Path(box[0])
            run_dir = name
    full = None
    try:
        trainer = Trainer(cfg, run_dir, resume=bool(args.resume))
        summary = trainer.fit()
        if args.demo and _full_fashion_mnist_installed(trainer.cfg):
            full = trainer.evaluate_dataset("fashion_mnist", "test")
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"run folder: {run_dir}")
        print(f"weights: {run_dir / 'model.safetensors'} ({summary['weights']})")
        print(f"wall_time_s={summary['wall_time_s']}")
        if full is not None:
            print(f"full_test_images={full['images']} (Fashion-MNIST test set, "
                  f"{_fashion_mnist_path()})")
            print(f"full_test_accuracy={full['accuracy']:.4f}")
        elif args.demo and cfg.data == "fashion_mnist_subset":
            print("(apt-get install dataset-fashion-mnist to also score the full 10,000-image "
                  "test set)")
        print(f"test_accuracy={summary['test_accuracy']:.4f}")
    return 0


def _fashion_mnist_path() -> str:
    from pyg_vig.datasets import FASHION_MNIST_SYSTEM_PATH

    return FASHION_MNIST_SYSTEM_PATH


def _full_fashion_mnist_installed(cfg) -> bool:
    """Whether the demo can also score the full Fashion-MNIST test set: a run on the embedded
    subset, with Debian's ``dataset-fashion-mnist`` test files in place.
    """
    from pyg_vig.datasets import find_idx_files

    if cfg.data != "fashion_mnist_subset":
        return False
    try:
        find_idx_files(Path(_fashion_mnist_path()), "test")
    except (FileNotFoundError, OSError):
        return False
    return True


# ---------------------------------------------------------------------------------- eval
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Inference:
    """A model ready for inference with its class names and preprocessing."""

    def __init__(self, forward, classes, class_keys, data_config, name, train_cfg=None,
                 reference_top1=None):
        self.forward, self.classes, self.class_keys = forward, classes, class_keys
        self.data_config, self.name, self.train_cfg = data_config, name, train_cfg
        self.reference_top1 = reference_top1


def _load_inference(source: str | None, args: argparse.Namespace) -> _Inference:

    from pyg_vig.datasets import class_names, imagenet_class_names, imagenet_synsets
    from pyg_vig.datasets.preprocess import resolve_data_config

    device = _device(args.device)
    if args.model:
        import pyg_vig

        if args.runtime == "onnxruntime":
            raise UserError("--runtime onnxruntime runs an exported .onnx file; export one "
                            f"first: pyg-vig export {args.model} --pretrained")
        model = pyg_vig.create_model(args.model, pretrained=args.pretrained,
                                     checkpoint=args.weights).to(device).eval()
        if not args.pretrained and not args.weights:
            print(f"pyg-vig: warning: {args.model} has random weights (pass --pretrained or "
                  "--checkpoint FILE)", file=sys.stderr)
        classes = class_names(model)
        keys = imagenet_synsets() if classes == imagenet_class_names() else classes
        cfg = model.pretrained_cfg
        top1 = cfg.get("top1") if args.pretrained else None
        return _Inference(_torch_forward(model, device), classes, keys,
                          resolve_data_config(model), cfg.get("name", args.model),
                          reference_top1=top1)
    if args.pretrained or args.weights:
        raise UserError("--pretrained and --checkpoint go with --model NAME")
    if source is None:
        raise UserError("give a model: a run folder, model.safetensors, an exported "
                        ".onnx/.pt2 file, or --model NAME")
    path = Path(source).expanduser()
    if path.suffix in (".onnx", ".pt2"):
        from pyg_vig.export import ExportedModel

        runner = ExportedModel(path, args.runtime)
        meta = runner.metadata
        if meta.get("format") != "pyg_vig-export":
            raise UserError(f"{path} was not written by `pyg-vig export` (no class names and "
                            "preprocessing inside)")
        classes = runner.classes
        return _Inference(runner, classes, meta.get("class_keys") or classes,
                          runner.data_config, meta.get("model", path.name))
    if args.runtime == "onnxruntime":
        raise UserError(f"--runtime onnxruntime runs an exported .onnx file, not {path}; "
                        f"export it first: pyg-vig export {source}")
    from pyg_vig.train import load_trained_model

    model, cfg = load_trained_model(path, device)
    return _Inference(_torch_forward(model, device), list(cfg.classes), list(cfg.classes),
                      resolve_data_config(cfg), cfg.model, train_cfg=cfg)


def _torch_forward(model, device):
    import torch

    def forward(x):
        with torch.no_grad():
            return model(x.to(device)).float().cpu()

    return forward


def _image_folder_root(data: str, split: str) -> Path | None:
    """The class-folder root of an image-folder dataset, or None for other datasets."""
    from pyg_vig.datasets import find_idx_files

    path = Path(data).expanduser()
    if not path.is_dir():
        return None
    try:
        find_idx_files(path, split)
        return None  # an IDX folder
    except (FileNotFoundError, ValueError):  # no IDX files, or a split IDX data lack
        pass
    for name in (split, "val" if split == "test" else None, "test" if split == "val" else None):
        if name and (path / name).is_dir():
            return path / name
    return path


def _eval_loop(forward, loader, num_classes: int):
    import torch
    import torch.nn.functional as F

    loss_sum, n, top1, top5, preds, targets, bad = 0.0, 0, 0, 0, [], [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        if len(batch) == 3:
            for msg in batch[2]:
                bad.append(msg)
                print(f"pyg-vig: error: cannot read image {msg} (skipped)", file=sys.stderr)
        if len(y) == 0:
            continue
        logits = forward(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, num_classes)
        top = logits.topk(k, dim=1).indices
        top1 += int((top[:, 0] == y).sum())
        top5 += int((top == y[:, None]).any(1).sum())
        n += len(y)
        preds.append(top[:, 0])
        targets.append(y)
    if n == 0:
        raise UserError("no image could be evaluated")
    return (loss_sum / n, top1 / n, top5 / n, torch.cat(preds), torch.cat(targets), n, bad)


def _cmd_eval(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from pyg_vig.datasets import (
        ImageFileDataset,
        build_transform,
        collate_skip_unreadable,
        create_transform,
        load_dataset,
        scan_image_folder,
    )
    from pyg_vig.train.plots import confusion_matrix, plot_confusion_matrix

    inf = _load_inference(args.checkpoint, args)
    cfg = inf.train_cfg
    data = args.data or (cfg.data if cfg is not None else None)
    if data is None:
        raise UserError("--data is needed: an image folder such as the ImageNet validation "
                        "set (val/<wnid>/*.JPEG)")
    root = _image_folder_root(data, args.split)
    if root is not None:
        # decoded on access with the model's evaluation transform (any folder size)
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if found and all(name in inf.class_keys for name in found):
            files, _ = scan_image_folder(root, classes=inf.class_keys)
        elif len(found) == len(inf.classes):
            files, _ = scan_image_folder(root)  # same count: sorted folder order = label order
        else:
            raise UserError(
                f"dataset {root} has {len(found)} classes but the model has {len(inf.classes)} "
                f"and the folder names {found[:3]} are not its class names "
                f"(e.g. {inf.class_keys[:3]})"
            )
        ds = ImageFileDataset(files, create_transform(**inf.data_config))
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                            collate_fn=collate_skip_unreadable)
    else:
        if cfg is None:
            raise UserError(f"--data {data}: pretrained and exported models evaluate on image "
                            "folders (root/<class>/<images>)")
        ds = load_dataset(
            data,
            args.split,
            transform=build_transform(False, cfg.image_size, cfg.mean, cfg.std, resize=True),
            image_size=cfg.image_size,
            in_chans=cfg.in_chans,
            classes=cfg.classes if data == cfg.data else None,
        )
        if len(ds.classes) != cfg.num_classes:
            raise UserError(
                f"dataset {data} has {len(ds.classes)} classes but the checkpoint "
                f"{args.checkpoint} was trained on {cfg.num_classes}"
            )
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    loss, acc, top5, pred, target, n, bad = _eval_loop(inf.forward, loader, len(inf.classes))
    if args.confusion_matrix:
        cm = confusion_matrix(pred, target, len(inf.classes))
        plot_confusion_matrix(
            cm,
            inf.classes,
            args.confusion_matrix,
            title=f"{inf.name} on {data} ({args.split}): accuracy {acc:.4f}",
        )
    print(f"{args.split}_images={n}")
    print(f"{args.split}_loss={loss:.4f}")
    if inf.reference_top1 is not None:
        print(f"# official top-1 of these weights on the ImageNet-1k validation set: "
              f"{inf.reference_top1}%")
    print(f"{args.split}_top5_accuracy={top5:.4f}")
    print(f"{args.split}_accuracy={acc:.4f}")
    if bad:
        print(f"pyg-vig: error: {len(bad)} image(s) could not be read and were skipped",
              file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------- predict
def _expand_images(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Files and folders → image paths (folders: their images, recursively, sorted)."""
    from pyg_vig.datasets import IMAGE_EXTENSIONS

    paths, problems = [], []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"no image files in folder {item}")
            paths.extend(found)
        else:
            paths.append(item)
    return paths, problems


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from pyg_vig.datasets import create_transform

    inputs = list(args.inputs)
    source = None if args.model else inputs.pop(0)
    if not inputs:
        raise UserError("no images given: pyg-vig predict [SOURCE] IMAGE [IMAGE ...]")
    inf = _load_inference(source, args)
    transform = create_transform(**inf.data_config)
    paths, problems = _expand_images(inputs)
    for msg in problems:
        print(f"pyg-vig: error: {msg}", file=sys.stderr)
    failed = len(problems)
    k = max(1, min(args.topk, len(inf.classes)))
    for start in range(0, len(paths), max(1, args.batch_size)):
        chunk, xs = [], []
        for path in paths[start : start + args.batch_size]:
            try:
                xs.append(transform(path))
                chunk.append(path)
            except (ValueError, OSError) as e:  # report, skip, go on with the others
                failed += 1
                print(f"pyg-vig: error: {e} (skipped)", file=sys.stderr)
        if not xs:
            continue
        prob = inf.forward(torch.stack(xs)).float().softmax(-1)
        top_p, top_i = prob.topk(k, dim=-1)
        for path, ps, idx in zip(chunk, top_p.tolist(), top_i.tolist(), strict=True):
            ranked = [(inf.classes[i], i, p) for i, p in zip(idx, ps, strict=True)]
            if args.json:
                top = [{"class": c, "index": i, "prob": round(p, 4)} for c, i, p in ranked]
                print(json.dumps({"image": path, "top": top}), flush=True)
            else:
                print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, _, p in ranked), flush=True)
    if failed:
        print(f"pyg-vig: error: {failed} of {len(paths) + len(problems)} input(s) could not be "
              "read", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    import pyg_vig
    from pyg_vig.datasets import class_names
    from pyg_vig.datasets.preprocess import resolve_data_config
    from pyg_vig.export import example_input, save_program, to_onnx

    source = args.source
    path = Path(source).expanduser()
    classes = data_config = None
    if path.exists():
        if args.pretrained or args.checkpoint:
            raise UserError("--pretrained / --checkpoint go with a registered model name, not "
                            f"with the run {source}")
        from pyg_vig.train import load_trained_model

        model, cfg = load_trained_model(path, "cpu")
        classes, data_config = list(cfg.classes), resolve_data_config(cfg)
        default_out = (path if path.is_dir() else path.parent) / f"model.{args.format}"
    else:
        if source.split(".")[0] not in pyg_vig.list_models(include_aliases=True):
            raise UserError(f"{source} is neither a run folder / weights file nor a registered "
                            f"model ({', '.join(pyg_vig.list_models())})")
        model = pyg_vig.create_model(source, pretrained=args.pretrained,
                                     checkpoint=args.checkpoint).eval()
        classes, data_config = class_names(model), resolve_data_config(model)
        default_out = Path(f"{source}.{args.format}")
    model.eval()
    out = Path(args.output) if args.output else default_out
    x = example_input(model, args.batch_size, data_config)
    dynamic = not args.static_batch
    if args.format == "onnx":
        to_onnx(model, out, x, dynamic_batch=dynamic, verify=args.verify, classes=classes,
                data_config=data_config)
    else:
        save_program(model, out, x, dynamic_batch=dynamic, classes=classes,
                     data_config=data_config)
    batch = "dynamic batch" if dynamic else f"batch {args.batch_size}"
    print(f"wrote {out} ({args.format}, {batch}, input {tuple(x.shape[1:])})")
    return 0


# ---------------------------------------------------------------------------------- graph
def _parse_centers(items: list[str] | None) -> list[tuple[float, float]]:
    if not items:
        return [(0.3, 0.3), (0.5, 0.6), (0.75, 0.4)]
    out = []
    for item in items:
        try:
            y, x = (float(v) for v in item.split(","))
        except ValueError:
            raise UserError(
                f"--centers expects Y,X fractions such as 0.5,0.5; got {item!r}"
            ) from None
        if not (0 <= y <= 1 and 0 <= x <= 1):
            raise UserError(f"--centers fractions must lie in [0, 1]; got {item!r}")
        out.append((y, x))
    return out


def _cmd_graph(args: argparse.Namespace) -> int:
    from torchvision.transforms import Normalize

    from pyg_vig.datasets import load_dataset
    from pyg_vig.train import load_trained_model
    from pyg_vig.train.plots import draw_knn_graph

    device = _device(args.device)
    model, cfg = load_trained_model(args.checkpoint, device)
    if not hasattr(model, "forward_graph"):
        raise UserError(f"model {cfg.model} has no forward_graph(); cannot draw its graph")
    if args.image.startswith("test:"):
        ds = load_dataset(
            cfg.data, "test", image_size=cfg.image_size, in_chans=cfg.in_chans, classes=cfg.classes
        )
        try:
            raw, label = ds[int(args.image[5:])]
        except (ValueError, IndexError):
            raise UserError(f"{args.image}: expected test:<index> below {len(ds)}") from None
        title = f"test image {args.image[5:]} ({cfg.classes[label]})"
    else:
        from pyg_vig.datasets import load_image

        raw = load_image(args.image, cfg.in_chans, cfg.image_size)
        title = Path(args.image).name
    try:
        blocks = [int(b) for b in args.blocks.split(",")]
    except ValueError:
        raise UserError(f"--blocks expects comma-separated integers, got {args.blocks!r}") from None
    x = Normalize(cfg.mean, cfg.std)(raw).unsqueeze(0).to(device)
    out = draw_knn_graph(
        model,
        x,
        raw,
        blocks,
        _parse_centers(args.centers),
        args.out,
        title=title,
        classes=cfg.classes,
    )
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyg-vig`` and ``python -m pyg_vig``; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    commands = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "predict": _cmd_predict,
        "export": _cmd_export,
        "graph": _cmd_graph,
    }
    from pyg_vig.train import ConfigError

    try:
        return commands[args.command](args)
    except (UserError, ConfigError, OSError, ValueError, ImportError, RuntimeError) as e:
        if os.environ.get("PYG_VIG_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"pyg-vig: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyg-vig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
