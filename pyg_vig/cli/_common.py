"""Shared parts of the ``pyg-vig`` subcommands: :class:`UserError` and common options."""

from __future__ import annotations

import argparse
from typing import Any  # noqa: F401

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



def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a registered model name (pyg_vig.list_models()) instead of "
                   "SOURCE, e.g. pvig_s or pvig_s_224_gelu.in1k")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model: its pretrained weights (downloaded once, then cached)")
    p.add_argument("--checkpoint", metavar="FILE", dest="weights",
                   help="with --model: a weights file (official or ours)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="auto: onnxruntime for .onnx files, torch otherwise")


    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch / onnxruntime (default: the libraries' own)")


def check_counts(args: argparse.Namespace, **minimum: int) -> None:
    """Refuse counts below their minimum, e.g. ``check_counts(args, topk=1, workers=0)``.

    The libraries below would otherwise clamp them silently (``--topk 0`` showing one class)
    or fail deep inside (``DataLoader(batch_size=0)``).
    """
    bad = [f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}"
           for name, low in minimum.items()
           if getattr(args, name, None) is not None and getattr(args, name) < low]
    if bad:
        raise UserError("; ".join(bad))


def check_saved_data(data: str, what_to_do: str) -> None:
    """A run remembers ``--data`` as typed: a relative path is missing when the command runs in
    another folder. Say that (and ``what_to_do``) instead of "dataset path not found: data".
    """
    from pathlib import Path

    from pyg_vig.datasets import _SYSTEM_NAMES, EMBEDDED

    path = Path(data).expanduser()
    if data == EMBEDDED or data in _SYSTEM_NAMES or path.is_absolute() or path.exists():
        return
    raise UserError(f"this run was trained with --data {data}, a path relative to the folder "
                    f"training was started in, and it is not found from {Path.cwd()}; "
                    f"{what_to_do}")


def apply_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to torch (onnxruntime gets it through :func:`load_predictor`)."""
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 1:
        raise UserError(f"--threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)
