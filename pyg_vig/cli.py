"""The ``pyg-vig`` command: ``train``, ``eval``, ``predict`` and ``graph``.

Problems with the user's input (missing data, unreadable image, a checkpoint that does not fit,
a resume folder that does not match) end the command with one ``pyg-vig: error: ...`` line on
stderr and exit status 2; set ``PYG_VIG_DEBUG=1`` to see the traceback instead.
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
    "image_size": "image side in pixels; other sizes are resized (image folders: 32 if unset)",
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
    "amp": "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), none, bf16, fp16",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "workers": "data loader worker processes",
    "checkpoint_every": "write train_state.pt every N optimisation steps (and each epoch end)",
}


class UserError(Exception):
    """Reported as one line, without a traceback."""


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from pyg_vig.train import TrainConfig

    p.add_argument(
        "--demo",
        action="store_true",
        help="the `make demo` recipe: small ViG on the "
        "embedded Fashion-MNIST subset, ~10 min on 2 CPU cores; its settings replace the "
        "defaults below, explicit flags still win",
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

    p = sub.add_parser("eval", help="evaluate a trained model on a dataset split")
    p.add_argument("checkpoint", help="run folder or model.safetensors")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--confusion-matrix", metavar="PNG", help="also save the confusion matrix")

    p = sub.add_parser("predict", help="classify image files (top-k classes)")
    p.add_argument("checkpoint", help="run folder or model.safetensors")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")

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
    try:
        trainer = Trainer(cfg, run_dir, resume=bool(args.resume))
        summary = trainer.fit()
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"run folder: {run_dir}")
        print(f"weights: {run_dir / 'model.safetensors'} ({summary['weights']})")
        print(f"wall_time_s={summary['wall_time_s']}")
        print(f"test_accuracy={summary['test_accuracy']:.4f}")
    return 0


# ---------------------------------------------------------------------------------- eval
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _cmd_eval(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from pyg_vig.datasets import build_transform, load_dataset
    from pyg_vig.train import evaluate, load_trained_model
    from pyg_vig.train.plots import confusion_matrix, plot_confusion_matrix

    device = _device(args.device)
    model, cfg = load_trained_model(args.checkpoint, device)
    data = args.data or cfg.data
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
    loader = DataLoader(ds, batch_size=args.batch_size)
    loss, acc, pred, target = evaluate(model, loader, device)
    if args.confusion_matrix:
        cm = confusion_matrix(pred, target, cfg.num_classes)
        plot_confusion_matrix(
            cm,
            cfg.classes,
            args.confusion_matrix,
            title=f"{cfg.model} on {data} ({args.split}): accuracy {acc:.4f}",
        )
    print(f"{args.split}_loss={loss:.4f}")
    print(f"{args.split}_accuracy={acc:.4f}")
    return 0


# ---------------------------------------------------------------------------------- predict
def _load_images(paths: list[str], cfg) -> Any:
    import torch

    from pyg_vig.datasets import Normalize, load_image

    norm = Normalize(cfg.mean, cfg.std)
    return torch.stack([norm(load_image(p, cfg.in_chans, cfg.image_size)) for p in paths])


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from pyg_vig.train import load_trained_model

    device = _device(args.device)
    model, cfg = load_trained_model(args.checkpoint, device)
    x = _load_images(args.images, cfg).to(device)
    with torch.no_grad():
        prob = model(x).float().softmax(-1).cpu()
    k = max(1, min(args.topk, cfg.num_classes))
    top_p, top_i = prob.topk(k, dim=-1)
    for path, ps, idx in zip(args.images, top_p.tolist(), top_i.tolist(), strict=True):
        ranked = [(cfg.classes[i], p) for i, p in zip(idx, ps, strict=True)]
        if args.json:
            print(
                json.dumps(
                    {"image": path, "top": [{"class": c, "prob": round(p, 4)} for c, p in ranked]}
                )
            )
        else:
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranked))
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
    from pyg_vig.datasets import Normalize, load_dataset
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
        "graph": _cmd_graph,
    }
    from pyg_vig.train import ConfigError

    try:
        return commands[args.command](args)
    except (UserError, ConfigError, OSError, ValueError) as e:
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
