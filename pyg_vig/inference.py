"""Inference on trained, pretrained and exported models: what ``pyg-vig predict`` and
``pyg-vig eval`` run, as functions.

:func:`load_predictor` turns a run folder, a ``model.safetensors``, an exported ``.onnx`` /
``.pt2`` file or a registered model name into a :class:`Predictor` (a forward function with
the class names and the preprocessing); :func:`predict_files` classifies image files;
:func:`eval_loader` scores a data loader.

Problems with the caller's input raise :class:`ValueError` or :class:`FileNotFoundError`
with a message that says what to do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Predictor",
    "Prediction",
    "EvalScores",
    "resolve_device",
    "load_predictor",
    "expand_images",
    "predict_files",
    "eval_loader",
]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as :class:`torch.device`.

    Raises :class:`ValueError` (one line, before any work) for a name torch does not know and
    for a CUDA device this machine does not have.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or another "
                         "torch device type (mps, xpu, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use "
                             "--device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


@dataclass
class Predictor:
    """A model ready for inference.

    Attributes:
        forward: float ``(B, C, H, W)`` tensor → logits on the CPU (no autograd).
        classes: class names in output order.
        class_keys: names class folders may carry (ImageNet: the WordNet ids).
        data_config: the evaluation preprocessing (``create_transform(**data_config)``).
        name: the model's name.
        train_cfg: the run's ``TrainConfig`` for run folders / weights files, else None.
        reference_top1: the published ImageNet top-1 of pretrained weights, else None.
    """

    forward: Callable[[Tensor], Tensor]
    classes: list[str]
    class_keys: list[str]
    data_config: dict
    name: str
    train_cfg: Any = None
    reference_top1: float | None = None
    model: torch.nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


def _torch_forward(model: torch.nn.Module, device: torch.device) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x.to(device)).float().cpu()

    return forward


def load_predictor(source: str | Path | None = None, *, model: str | None = None,
                   pretrained: bool = False, checkpoint: str | Path | None = None,
                   runtime: str = "auto", device: str | torch.device = "auto",
                   threads: int | None = None) -> Predictor:
    """Load a model for inference.

    Args:
        source: a run folder, a ``model.safetensors``, or an exported ``.onnx`` / ``.pt2``
            file (not with ``model``).
        model: a registered model name instead of ``source``.
        pretrained: with ``model``: its pretrained weights.
        checkpoint: with ``model``: a weights file.
        runtime: ``"auto"`` (onnxruntime for ``.onnx``, torch otherwise), ``"torch"`` or
            ``"onnxruntime"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (torch models).
        threads: onnxruntime intra-op threads (torch: use ``torch.set_num_threads``).

    Raises:
        ValueError: the arguments do not fit together, or the file is not a pyg_vig export.
        FileNotFoundError: ``source`` does not exist.
    """
    from pyg_vig.datasets import class_names, imagenet_class_names, imagenet_synsets
    from pyg_vig.datasets.preprocess import resolve_data_config

    dev = resolve_device(device)
    if model:
        import pyg_vig

        if source is not None:
            raise ValueError(f"give either a model source ({source}) or a model name "
                             f"({model}), not both")
        if runtime == "onnxruntime":
            raise ValueError("--runtime onnxruntime runs an exported .onnx file; export one "
                             f"first: pyg-vig export {model} --pretrained")
        net = pyg_vig.create_model(model, pretrained=pretrained,
                                   checkpoint=checkpoint).to(dev).eval()
        if not pretrained and not checkpoint:
            warnings.warn(f"{model} has random weights (pass --pretrained or --checkpoint FILE)",
                          stacklevel=2)
        classes = class_names(net)
        keys = imagenet_synsets() if classes == imagenet_class_names() else classes
        cfg = net.pretrained_cfg
        return Predictor(_torch_forward(net, dev), list(classes), list(keys),
                         resolve_data_config(net), cfg.get("name", model),
                         reference_top1=cfg.get("top1") if pretrained else None,
                         model=net, device=dev)
    if pretrained or checkpoint:
        raise ValueError("--pretrained and --checkpoint go with --model NAME")
    if source is None:
        raise ValueError("give a model: a run folder, model.safetensors, an exported "
                         ".onnx/.pt2 file, or --model NAME")
    path = Path(source).expanduser()
    if path.suffix in (".onnx", ".pt2"):
        from pyg_vig.export import ExportedModel

        runner = ExportedModel(path, runtime, threads=threads)
        meta = runner.metadata
        if meta.get("format") != "pyg_vig-export":
            raise ValueError(f"{path} was not written by `pyg-vig export` (no class names and "
                             "preprocessing inside)")
        classes = list(runner.classes)
        return Predictor(runner, classes, list(meta.get("class_keys") or classes),
                         runner.data_config, meta.get("model", path.name))
    if runtime == "onnxruntime":
        raise ValueError(f"--runtime onnxruntime runs an exported .onnx file, not {path}; "
                         f"export it first: pyg-vig export {source}")
    from pyg_vig.train import load_trained_model

    net, cfg = load_trained_model(path, dev)
    return Predictor(_torch_forward(net, dev), list(cfg.classes), list(cfg.classes),
                     resolve_data_config(cfg), cfg.model, train_cfg=cfg, model=net, device=dev)


def expand_images(inputs: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """Files and folders → (image paths, problems). Folders give their images, recursively,
    sorted; an empty folder is a problem.
    """
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
            paths.append(str(item))
    return paths, problems


@dataclass
class Prediction:
    """One image's result: ``top`` holds (class, index, probability), best first; ``error``
    says why the image could not be classified (then ``top`` is empty).
    """

    image: str
    top: list[tuple[str, int, float]]
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image,
                "top": [{"class": c, "index": i, "prob": round(p, 4)} for c, i, p in self.top]}


def predict_files(predictor: Predictor, images: Sequence[str | Path], *, topk: int = 3,
                  batch_size: int = 16) -> Iterator[Prediction]:
    """Classify image files in batches; an unreadable file yields a :class:`Prediction` with
    ``error`` set, in input order.
    """
    from pyg_vig.datasets import create_transform

    transform = create_transform(**predictor.data_config)
    k = max(1, min(topk, len(predictor.classes)))
    step = max(1, batch_size)
    for start in range(0, len(images), step):
        results: list[Prediction] = []
        ok, xs = [], []
        for path in images[start:start + step]:
            try:
                xs.append(transform(str(path)))
                ok.append(len(results))
            except (ValueError, OSError) as e:  # reported, the others go on
                results.append(Prediction(str(path), [], _reason(e, path)))
                continue
            results.append(Prediction(str(path), []))
        if xs:
            prob = predictor.forward(torch.stack(xs)).float().softmax(-1)
            top_p, top_i = prob.topk(k, dim=-1)
            for j, ps, idx in zip(ok, top_p.tolist(), top_i.tolist(), strict=True):
                results[j].top = [(predictor.classes[i], i, p)
                                  for i, p in zip(idx, ps, strict=True)]
        yield from results


def _reason(error: BaseException, path: str | Path) -> str:
    """The error's message, without repeating "cannot read image <path>" twice."""
    msg = " ".join(str(error).split())
    return msg if str(path) in msg else f"cannot read image {path}: {msg}"


@dataclass
class EvalScores:
    """What :func:`eval_loader` measured."""

    loss: float
    top1: float
    top5: float
    n: int
    preds: Tensor
    targets: Tensor
    unreadable: list[str]


def eval_loader(forward: Callable[[Tensor], Tensor], loader: Iterable, num_classes: int,
                *, on_unreadable: Callable[[str], None] | None = None) -> EvalScores:
    """Mean cross-entropy, top-1 and top-5 accuracy over ``loader``'s ``(x, y)`` batches
    (a third item lists unreadable files, skipped).

    Raises:
        ValueError: no image could be evaluated.
    """
    from pyg_vig.train.loop import evaluate

    bad: list[str] = []

    def batches():
        for batch in loader:
            if len(batch) == 3:
                for msg in batch[2]:
                    bad.append(msg)
                    if on_unreadable is not None:
                        on_unreadable(msg)
            yield batch[0], batch[1]

    # The trainer's own scoring (pyg_vig.train.loop.evaluate), so `pyg-vig eval` and the
    # in-training evaluation count loss, top-1 and top-5 alike.
    result = evaluate(_Forward(forward), batches(), device="cpu")
    if result.n == 0:
        raise ValueError("no image could be evaluated")
    return EvalScores(result.loss, result.top1, result.top5, result.n, result.pred,
                      result.target, bad)


class _Forward(torch.nn.Module):
    """A forward callable (eager model, ONNX Runtime session, ...) as a module."""

    def __init__(self, forward: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = forward

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)
