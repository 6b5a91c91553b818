"""``pyg-vig train``: train a model into a run folder."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from pyg_vig.cli._common import _DATA_DERIVED, _HELP, UserError

NAME = "train"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to the ``pyg-vig`` parser."""
    p = subparsers.add_parser("train", help="train a model into a run folder")
    _add_train_args(p)
    return p


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from pyg_vig.datasets import FASHION_MNIST_SYSTEM_PATH
    from pyg_vig.train import TrainConfig

    p.add_argument(
        "--demo",
        action="store_true",
        help="the `make demo` recipe: small pyramid ViG on the embedded Fashion-MNIST subset, "
        "~7 min of training on 2 CPU cores, also scored on the full test set when "
        "dataset-fashion-mnist is "
        "installed (or --full-test names it); its settings replace the defaults below, explicit "
        "flags still win",
    )
    p.add_argument(
        "--full-test",
        metavar="DATA",
        help="after training, also score the final weights on DATA's test split (a dataset name "
        "or path as --data takes, e.g. an IDX folder of the full Fashion-MNIST); default for "
        f"--demo: {FASHION_MNIST_SYSTEM_PATH} when installed",
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



def _new_run_dir(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path



def run(args: argparse.Namespace) -> int:
    """Run ``pyg-vig train``; returns the exit status."""
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
    if args.full_test and not _dataset_exists(args.full_test):
        raise UserError(
            f"--full-test {args.full_test}: no such dataset (give a folder of IDX files, a .npz, "
            "an image folder, or a dataset name such as fashion_mnist_subset)"
        )
    try:
        info = init_distributed(cfg.device)
    except RuntimeError as e:  # e.g. --device cuda without CUDA
        raise UserError(str(e)) from None
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
        if args.full_test:
            full = trainer.evaluate_dataset(args.full_test, "test")
        elif args.demo and _full_fashion_mnist_installed(trainer.cfg):
            full = trainer.evaluate_dataset(_fashion_mnist_path(), "test")
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"run folder: {run_dir}")
        print(f"weights: {run_dir / 'model.safetensors'} ({summary['weights']})")
        print(f"wall_time_s={summary['wall_time_s']}")
        if full is not None:
            print(f"full_test_images={full['images']} (test split of {full['data']})")
            print(f"full_test_accuracy={full['accuracy']:.4f}")
        elif args.demo and cfg.data == "fashion_mnist_subset":
            print("(apt-get install dataset-fashion-mnist, or --full-test <IDX folder>, to also "
                  "score the full 10,000-image test set)")
        print(f"test_accuracy={summary['test_accuracy']:.4f}")
    return 0


def _dataset_exists(data: str) -> bool:
    from pyg_vig.datasets import EMBEDDED, FASHION_MNIST_SYSTEM_PATH

    if data == EMBEDDED:
        return True
    if data in ("fashion_mnist", "fashion-mnist"):
        return Path(FASHION_MNIST_SYSTEM_PATH).is_dir()
    return Path(data).expanduser().exists()


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


