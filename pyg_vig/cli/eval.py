"""``pyg-vig eval``: top-1/top-5 accuracy of a trained, pretrained or exported model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyg_vig.cli._common import (
    UserError,
    add_model_args,
    apply_threads,
    check_counts,
    check_saved_data,
)

NAME = "eval"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to the ``pyg-vig`` parser."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained, pretrained or exported model on a dataset split",
        description="Top-1/top-5 accuracy. SOURCE is a run folder, a model.safetensors, or an "
        "exported .onnx/.pt2 file; or give --model NAME [--pretrained | --checkpoint FILE] "
        "and --data (an ImageFolder, e.g. the ImageNet validation set as val/<wnid>/*.JPEG). "
        "Class folders must carry the model's class names, or --class-map says which folder "
        "is which class.",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="run folder, model.safetensors, or an exported .onnx/.pt2 file")
    add_model_args(p)
    p.add_argument("--data", help="dataset (default: the one it was trained on): "
                   "'fashion_mnist_subset' (embedded), 'fashion_mnist', an IDX folder, a .npz, "
                   "or an image folder")
    p.add_argument("--split", default="test", help="split of --data (image folders: a "
                   "train/test/val sub-folder when present, else the folder itself)")
    p.add_argument("--class-map", metavar="FILE",
                   help="image folders whose folder names are not the model's class names: a "
                   "JSON object {folder: class name or index}, or a text file of lines "
                   "'folder class' (or one folder per line, in the model's class order)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--confusion-matrix", metavar="PNG", help="also save the confusion matrix")
    return p


def _image_folder_root(data: str, split: str) -> Path | None:
    """The class-folder root of an image-folder dataset, or None for other datasets."""
    from pyg_vig.datasets import find_idx_files

    path = Path(data).expanduser()
    if not path.is_dir():
        return None
    try:
        find_idx_files(path, split)
        return None  # an IDX folder
    except (FileNotFoundError, ValueError) as e:  # no IDX files, or a split IDX data lack
        if not any((path / name).is_dir() for name in (split, "val", "test")):
            for other in ("test", "train"):  # an IDX folder asked for a split it lacks
                try:
                    find_idx_files(path, other)
                except (FileNotFoundError, ValueError):
                    continue
                raise UserError(f"--split {split}: {data} is an IDX dataset ({e})") from None
    for name in (split, "val" if split == "test" else None, "test" if split == "val" else None):
        if name and (path / name).is_dir():
            return path / name
    return path


def read_class_map(path: str | Path, classes: list[str], keys: list[str]) -> dict[str, int]:
    """``--class-map FILE`` → {folder name: class index}.

    JSON: an object mapping folder names to class names, class keys or indices. Text: lines
    ``folder class`` (class name/key/index), or one folder name per line in class order.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--class-map {path}: cannot read it ({e.strerror or e})") from None

    def index(value, folder) -> int:
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()
                                      and value not in classes and value not in keys):
            i = int(value)
            if not 0 <= i < len(classes):
                raise UserError(f"--class-map {path}: {folder!r} → {i}, but the model has "
                                f"classes 0..{len(classes) - 1}")
            return i
        for names in (classes, keys):
            if value in names:
                return names.index(value)
        raise UserError(f"--class-map {path}: {folder!r} → {value!r} is not one of the model's "
                        f"classes (e.g. {classes[:3]})")

    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--class-map {path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f"--class-map {path}: expected a JSON object {{folder: class}}")
        return {str(k): index(v, k) for k, v in raw.items()}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if all(len(ln.split(None, 1)) == 1 for ln in lines):
        if len(lines) != len(classes):
            raise UserError(f"--class-map {path}: {len(lines)} folder names, one per line, but "
                            f"the model has {len(classes)} classes")
        return {name: i for i, name in enumerate(lines)}
    out = {}
    for ln in lines:
        parts = ln.split(None, 1)
        if len(parts) != 2:
            raise UserError(f"--class-map {path}: line {ln!r} is not 'folder class'")
        out[parts[0]] = index(parts[1].strip(), parts[0])
    return out


def _folder_files(root: Path, pred, class_map: str | None):
    from pyg_vig.datasets import scan_image_folder

    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UserError(f"no class sub-folders in image folder {root} (expected "
                        "<folder>/<class>/<image files>, or --split naming a sub-folder that "
                        "holds them)")
    if class_map:
        mapping = read_class_map(class_map, pred.classes, pred.class_keys)
        missing = [f for f in found if f not in mapping]
        if missing:
            raise UserError(f"--class-map {class_map} does not name the folder(s) "
                            f"{missing[:5]} of {root}")
        files, _ = scan_image_folder(root, classes=found)
        return [(f, mapping[found[y]]) for f, y in files]
    if found and all(name in pred.class_keys for name in found):
        files, _ = scan_image_folder(root, classes=pred.class_keys)
        return files
    if found and all(name in pred.classes for name in found):
        files, _ = scan_image_folder(root, classes=pred.classes)
        return files
    count = ("" if len(found) == len(pred.classes) else
             f" (dataset {root} has {len(found)} classes but the model has {len(pred.classes)})")
    raise UserError(
        f"the class folders of {root} ({found[:3]}...) are not the model's class names "
        f"(e.g. {pred.class_keys[:3]}){count}; a label for each folder would be a guess. "
        "Pass --class-map FILE (JSON {folder: class}) to say which folder is which class"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pyg-vig eval``; returns the exit status."""
    from torch.utils.data import DataLoader

    from pyg_vig.datasets import (
        ImageFileDataset,
        build_transform,
        collate_skip_unreadable,
        create_transform,
        load_dataset,
    )
    from pyg_vig.inference import eval_loader, load_predictor

    check_counts(args, batch_size=1, workers=0)
    apply_threads(args)
    try:
        pred = load_predictor(args.source, model=args.model, pretrained=args.pretrained,
                              checkpoint=args.weights, runtime=args.runtime,
                              device=args.device, threads=args.threads)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = pred.train_cfg
    data = args.data or (cfg.data if cfg is not None else None)
    if not args.data and cfg is not None:
        check_saved_data(data, "pass --data PATH (or run from that folder)")
    if data is None:
        raise UserError("--data is needed: an image folder such as the ImageNet validation "
                        "set (val/<wnid>/*.JPEG), or a dataset name such as "
                        "fashion_mnist_subset")
    root = _image_folder_root(data, args.split)
    if root is not None:
        # decoded on access with the model's evaluation transform (any folder size)
        files = _folder_files(root, pred, args.class_map)
        ds = ImageFileDataset(files, create_transform(**pred.data_config))
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                            collate_fn=collate_skip_unreadable)
    else:
        if args.class_map:
            raise UserError("--class-map goes with image folders, not with --data " + data)
        if cfg is not None:
            image_size, in_chans, mean, std = cfg.image_size, cfg.in_chans, cfg.mean, cfg.std
        else:  # pretrained / exported: the preprocessing the model carries
            dc = pred.data_config
            in_chans, image_size = int(dc["input_size"][0]), int(dc["input_size"][-1])
            mean, std = tuple(dc["mean"]), tuple(dc["std"])
        ds = load_dataset(
            data,
            args.split,
            transform=build_transform(False, image_size, mean, std, resize=True),
            image_size=image_size,
            in_chans=in_chans,
            classes=cfg.classes if cfg is not None and data == cfg.data else None,
        )
        if list(ds.classes) != list(pred.classes):
            if len(ds.classes) != len(pred.classes) or cfg is None:
                raise UserError(
                    f"dataset {data} has the classes {list(ds.classes)[:3]}... "
                    f"({len(ds.classes)}) but the model {pred.name} has "
                    f"{list(pred.classes)[:3]}... ({len(pred.classes)})"
                )
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)

    def unreadable(msg: str) -> None:
        print(f"pyg-vig: error: {msg} (skipped)", file=sys.stderr)

    try:
        s = eval_loader(pred.forward, loader, len(pred.classes), on_unreadable=unreadable)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.confusion_matrix:
        from pyg_vig.train.plots import confusion_matrix, plot_confusion_matrix

        cm = confusion_matrix(s.preds, s.targets, len(pred.classes))
        plot_confusion_matrix(
            cm,
            pred.classes,
            args.confusion_matrix,
            title=f"{pred.name} on {data} ({args.split}): accuracy {s.top1:.4f}",
        )
    print(f"{args.split}_images={s.n}")
    print(f"{args.split}_loss={s.loss:.4f}")
    if pred.reference_top1 is not None:
        print(f"# official top-1 of these weights on the ImageNet-1k validation set: "
              f"{pred.reference_top1}%")
    print(f"{args.split}_top5_accuracy={s.top5:.4f}")
    print(f"{args.split}_accuracy={s.top1:.4f}")
    if s.unreadable:
        print(f"pyg-vig: error: {len(s.unreadable)} image(s) could not be read and were skipped",
              file=sys.stderr)
        return 2
    return 0
