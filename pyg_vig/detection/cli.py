"""``pyg-vig detect train | eval | predict``: pyramid ViG detectors on COCO-format data.

``train`` runs the paper's 1x recipe (:mod:`pyg_vig.detection.engine`) into a run folder,
``eval`` scores a checkpoint with COCO box (and mask) mAP, ``predict`` writes detections as
JSON and draws them on the images. ``train --demo`` generates Fashion-MNIST canvases and trains
a small randomly initialised ViG RetinaNet on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pyg_vig.cli._common import UserError, apply_threads

NAME = "detect"

# (flag, DetectConfig field, type, help); every default is None: unset flags take the recipe's
# (or the demo's) value, and on --resume the saved one
_TRAIN_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--data-dir", "data_dir", str, "folder the training images' file_name entries are "
                                    "relative to"),
    ("--train-ann", "train_ann", str, "COCO-format JSON of the training images"),
    ("--val-dir", "val_dir", str, "image folder of the validation split (default: --data-dir)"),
    ("--val-ann", "val_ann", str, "COCO-format JSON of the validation images (scored with "
                                  "COCO mAP after the last epoch)"),
    ("--model", "model", str, "retinanet or maskrcnn (default: retinanet)"),
    ("--backbone", "backbone", str, "pyramid ViG: pvig_ti, pvig_s, pvig_m, pvig_b "
                                    "(default: pvig_s)"),
    ("--model-args", "model_args", json.loads,
     "JSON dict of extra retinanet_pvig_fpn / maskrcnn_pvig_fpn arguments: torchvision "
     "detector settings go to the detector, the rest to vig_fpn_backbone / create_model, e.g. "
     "'{\"out_channels\": 128, \"drop_path_rate\": 0.1, \"detections_per_img\": 50}'"),
    ("--checkpoint", "checkpoint", str, "ImageNet weights file for the backbone (official "
                                        "or ours)"),
    ("--trainable-stages", "trainable_stages", int, "train the last N of stem, stages 0-3 "
                                                    "(default: 4 with weights, 5 without)"),
    ("--batch-norm", "batch_norm", str, "frozen, train or sync (default: frozen with "
                                        "weights, train without)"),
    ("--epochs", "epochs", int, "epochs (default: 12, the 1x schedule)"),
    ("--lr", "lr", float, "AdamW learning rate (default: 1e-4)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay (default: 0.05)"),
    ("--lr-gamma", "lr_gamma", float, "learning-rate factor at each step (default: 0.1)"),
    ("--warmup-iters", "warmup_iters", int, "linear warm-up iterations (default: 500)"),
    ("--warmup-ratio", "warmup_ratio", float, "warm-up starts at lr times this "
                                              "(default: 0.001)"),
    ("--clip-grad", "clip_grad", float, "clip the gradient norm to this value, 0: off "
                                        "(default: 35, mmdetection's RetinaNet)"),
    ("--batch-size", "batch_size", int, "images per iteration over all processes (default: 2)"),
    ("--min-size", "min_size", int, "shorter image side the detector resizes to "
                                    "(default: 800)"),
    ("--max-size", "max_size", int, "longest image side after resizing (default: 1333)"),
    ("--seed", "seed", int, "random seed (default: 0)"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:1, ... (default: auto)"),
    ("--workers", "workers", int, "data loader worker processes (default: 0)"),
    ("--eval-every", "eval_every", int, "also score the validation split every N epochs "
                                        "(default: 0, only after the last epoch)"),
    ("--log-every", "log_every", int, "print the loss every N iterations, 0: off "
                                      "(default: 50)"),
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``detect`` with its ``train``, ``eval`` and ``predict`` subcommands."""
    p = subparsers.add_parser(
        "detect",
        help="object detection: train, evaluate and run pyramid ViG RetinaNet / Mask R-CNN",
        description="Pyramid ViG backbones in torchvision's RetinaNet and Mask R-CNN on "
        "COCO-format data (the paper's detection setup).",
    )
    sub = p.add_subparsers(dest="detect_command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
    return p


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector into a run folder",
        description="The paper's recipe by default: AdamW (lr 1e-4, weight decay 0.05), 12 "
        "epochs with the learning rate x0.1 after epochs 8 and 11, a linear warm-up. Writes "
        "config.json, last.pt (for --resume), best.pt and metrics.json/.csv into the run "
        "folder. Data-parallel: torchrun --nproc_per_node=N -m pyg_vig detect train ...",
    )
    p.add_argument("--demo", action="store_true",
                   help="generate Fashion-MNIST canvases and train a RetinaNet with a "
                   "randomly initialised, reduced pvig_ti on them (CPU, about 15 minutes on 2 "
                   "cores under torchrun); explicit flags still win")
    p.add_argument("--demo-size", choices=("full", "small"), default="full",
                   help="full: the README demo; small: a seconds-long run (tests)")
    p.add_argument("--cache-dir", help="where --demo keeps its canvases (default: "
                   "~/.cache/pyg_vig/detect_canvases)")
    p.add_argument("--output", "-o", help="run folder (default: a new runs/detect-<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start the backbone from its ImageNet weights (downloaded once)")
    p.add_argument("--lr-steps", type=int, nargs="+", default=None, metavar="EPOCH",
                   help="epochs after which the lr drops (default: 2/3 and 11/12 of --epochs: "
                   "8 11 for 12 epochs)")
    p.add_argument("--anchor-sizes", type=int, nargs="+", default=None, metavar="PX",
                   help="base anchor size per pyramid level, for small objects "
                   "(default: the builders', 4x or 8x the stride)")
    for flag, dest, typ, text in _TRAIN_FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    _add_threads(p)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: torch's own; torchrun sets 1). On a "
                   "busy machine 1 thread per process is often much faster")


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="COCO box (and mask) mAP of a trained detector",
        description="SOURCE is a run folder (its best.pt) or a .pt checkpoint of `detect "
        "train`. Without --ann, the run's own validation split is scored.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--data-dir", help="folder the images' file_name entries are relative to")
    p.add_argument("--ann", help="COCO-format JSON with the ground truth")
    p.add_argument("--output", "-o", help="also write the metrics to this JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    _add_threads(p)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="detect objects in image files: JSON + images with boxes drawn",
        description="SOURCE is a run folder (its best.pt) or a .pt checkpoint of `detect "
        "train`; folders expand to their images. Boxes are in the original image "
        "coordinates. An unreadable image is reported on stderr and skipped; the others are "
        "processed and the exit status is 2.",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--output", "-o", default="detections",
                   help="folder for detections.json and the drawn PNGs (default: detections)")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="keep detections scoring at least this (default: 0.5)")
    p.add_argument("--no-draw", action="store_true", help="write the JSON only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    _add_threads(p)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``detect`` subcommand; returns the exit status."""
    apply_threads(args)
    return {"train": _train, "eval": _eval, "predict": _predict}[args.detect_command](args)


# ---------------------------------------------------------------------- train
def _given(args: argparse.Namespace) -> dict[str, Any]:
    given = {dest: getattr(args, dest) for _, dest, _, _ in _TRAIN_FLAGS
             if getattr(args, dest) is not None}
    for dest in ("pretrained", "lr_steps", "anchor_sizes"):
        if getattr(args, dest) is not None:
            given[dest] = getattr(args, dest)
    if given.get("clip_grad") == 0:
        given["clip_grad"] = None
    if "model_args" in given and not isinstance(given["model_args"], dict):
        raise UserError("--model-args must be a JSON object, e.g. '{\"out_channels\": 128}'")
    return given


def _demo_data(cache_dir: str | None, size: str, info) -> dict[str, str]:
    """Generate (once) the demo canvases; rank 0 writes, the other ranks wait."""
    from pyg_vig.detection import make_canvases
    from pyg_vig.detection.engine import DEMO_CONFIGS

    canvas = DEMO_CONFIGS[size]["canvas"]
    root = Path(cache_dir or Path.home() / ".cache" / "pyg_vig" / "detect_canvases")
    lo, hi = canvas["objects_per_image"]
    root = root / (f"{canvas['n_train']}-{canvas['n_val']}-{canvas['canvas_size']}px-"
                   f"{lo}to{hi}objects-seed0")
    # make_canvases' layout; its json files are written last, so their presence means done
    paths = {s: (root / s, root / f"instances_{s}.json") for s in ("train", "val")}
    if info.is_main and not all(ann.is_file() for _, ann in paths.values()):
        print(f"writing {canvas['n_train']} + {canvas['n_val']} demo canvases to {root}",
              flush=True)
        paths = make_canvases(root, seed=0, **canvas)
    if info.distributed:  # the other ranks wait for rank 0's files
        import torch.distributed as dist

        dist.barrier()
    (train_dir, train_ann), (val_dir, val_ann) = paths["train"], paths["val"]
    return dict(data_dir=str(train_dir), train_ann=str(train_ann), val_dir=str(val_dir),
                val_ann=str(val_ann))


def _train(args: argparse.Namespace) -> int:
    from pyg_vig.cli.train import _new_run_dir
    from pyg_vig.detection.engine import DEMO_CONFIGS, DetectConfig, DetectTrainer
    from pyg_vig.train.distributed import cleanup_distributed, init_distributed

    given = _given(args)
    if args.resume:
        if args.output and Path(args.output) != Path(args.resume):
            raise UserError("--output and --resume name different folders; a resumed run stays "
                            "in its folder")
        saved = DetectConfig.load(Path(args.resume) / "config.json").to_dict()
        cfg = DetectConfig.from_dict({**saved, **given})
    else:
        base = dict(DEMO_CONFIGS[args.demo_size]["config"]) if args.demo else {}
        cfg = DetectConfig.from_dict({**base, **given})
    try:
        info = init_distributed(cfg.device)
    except RuntimeError as e:  # e.g. --device cuda without CUDA
        raise UserError(str(e)) from None
    try:
        if args.demo and not args.resume:
            for key, value in _demo_data(args.cache_dir, args.demo_size, info).items():
                if key not in given:
                    setattr(cfg, key, value)
        if args.resume:
            run_dir = Path(args.resume)
        elif args.output:
            run_dir = Path(args.output)
        else:
            run_dir = _new_run_dir("detect-demo" if args.demo else f"detect-{cfg.model}")
            if info.distributed:  # every rank writes into the folder rank 0 picked
                import torch.distributed as dist

                box = [str(run_dir)]
                dist.broadcast_object_list(box, src=0)
                run_dir = Path(box[0])
        trainer = DetectTrainer(cfg, run_dir, resume=bool(args.resume))
        summary = trainer.fit()
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"run folder: {run_dir}")
        final = summary.get("final") or {}
        for iou_type, m in final.items():
            print(f"{iou_type}: " + " ".join(f"{k}={v:.4f}" for k, v in m.items()))
        print(f"wall_time_s={summary['wall_time_s']}")
    return 0


# ---------------------------------------------------------------------- eval
def _pick_device(name: str):
    from pyg_vig.train.distributed import _pick_device as pick

    try:
        return pick(name, 0)
    except RuntimeError as e:
        raise UserError(str(e)) from None


def _eval(args: argparse.Namespace) -> int:
    from pyg_vig import detection
    from pyg_vig.detection.engine import load_detector

    if (args.ann is None) != (args.data_dir is None):
        raise UserError("--ann and --data-dir go together: the COCO-format JSON and the folder "
                        "its file_name entries are relative to")
    device = _pick_device(args.device)
    model, cfg, info = load_detector(args.source, device)
    if args.ann is not None:
        ann, img_dir = args.ann, args.data_dir
    elif cfg.val_ann:
        ann, img_dir = cfg.val_ann, cfg.val_dir or cfg.data_dir
    else:
        raise UserError(f"{args.source} has no validation split: pass --ann FILE --data-dir DIR")
    if not Path(ann).is_file():
        raise UserError(f"annotation file {ann} does not exist")
    if not Path(img_dir).is_dir():
        raise UserError(f"image folder {img_dir} does not exist (--data-dir)")
    masks = cfg.model == "maskrcnn"
    data = detection.CocoDetection(img_dir, ann, transforms=detection.detection_transforms(False),
                                   with_masks=masks)
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    metrics = detection.evaluate_coco(model, data, iou_types=iou_types, device=device)
    result = {"checkpoint": info["file"], "annotations": str(ann), "images": len(data),
              **metrics}
    print(json.dumps(result, indent=2))
    if args.output:
        from pyg_vig.utils.checkpoint import atomic_save

        atomic_save(json.dumps(result, indent=2).encode(), args.output)
    if data.skipped:
        for name, why in data.skipped:
            print(f"pyg-vig: error: skipped {name}: {why}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------- predict
def _read_image(path: str):
    """``(uint8 (3, H, W) tensor, None)`` or ``(None, reason)``."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB")), None
    except Exception as e:  # corrupt file, not an image, unreadable: reported, not raised
        reason = " ".join(str(e).split()) or type(e).__name__
        return None, f"cannot read image {path}: {reason}"


def _set_score_thresh(model, thresh: float) -> None:
    """Let the detector keep candidates down to ``thresh`` (RetinaNet drops scores below 0.05
    and Mask R-CNN below 0.05 before their per-image limit unless told otherwise).
    """
    if hasattr(model, "score_thresh"):  # RetinaNet
        model.score_thresh = min(model.score_thresh, thresh)
    roi = getattr(model, "roi_heads", None)
    if roi is not None and hasattr(roi, "score_thresh"):  # Mask R-CNN
        roi.score_thresh = min(roi.score_thresh, thresh)


def _predict(args: argparse.Namespace) -> int:
    import torch

    from pyg_vig.detection.engine import load_detector
    from pyg_vig.inference import expand_images
    from pyg_vig.utils.checkpoint import atomic_save

    if not 0 <= args.score_thresh <= 1:
        raise UserError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if Path(args.source).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        raise UserError(f"{args.source} is an image, but the first argument is the model: "
                        f"pyg-vig detect predict RUN_DIR|best.pt IMAGE ...")
    device = _pick_device(args.device)
    model, cfg, _ = load_detector(args.source, device)
    _set_score_thresh(model, args.score_thresh)
    names = {int(k): v for k, v in (cfg.categories or {}).items()}
    paths, problems = expand_images(args.images)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    failed = 0
    for msg in problems:
        failed += 1
        print(f"pyg-vig: error: {msg}", file=sys.stderr)
    used: set[str] = set()
    for path in paths:
        img, err = _read_image(path)
        if img is None:
            failed += 1
            print(f"pyg-vig: error: {err} (skipped)", file=sys.stderr)
            results.append({"image": path, "error": err})
            continue
        with torch.no_grad():
            det = model([img.to(device).float().div(255)])[0]
        keep = det["scores"] >= args.score_thresh
        det = {k: v[keep].cpu() for k, v in det.items()}
        H, W = img.shape[-2:]
        entry: dict[str, Any] = {"image": path, "width": int(W), "height": int(H),
                                 "detections": []}
        for j in range(len(det["scores"])):
            label = int(det["labels"][j])
            entry["detections"].append({
                "box": [round(float(v), 2) for v in det["boxes"][j]],
                "label": label,
                "category": names.get(label, str(label)),
                "score": round(float(det["scores"][j]), 4),
            })
        if not args.no_draw:
            entry["drawn"] = str(_draw(img, det, names, out, path, used))
        results.append(entry)
        found = ", ".join(f"{d['category']} {d['score']:.2f}" for d in entry["detections"])
        print(f"{path}: {len(entry['detections'])} object(s){': ' + found if found else ''}",
              flush=True)
    atomic_save(json.dumps(results, indent=2).encode(), out / "detections.json")
    print(f"detections: {out / 'detections.json'}")
    if failed:
        print(f"pyg-vig: error: {failed} of {len(paths) + len(problems)} input(s) could not be "
              "read", file=sys.stderr)
        return 2
    return 0


def _draw(img, det: dict, names: dict[int, str], out: Path, path: str, used: set[str]) -> Path:
    """Boxes (and masks) on the image, written as ``out/<stem>.png`` (a name used twice gets
    a suffix).
    """
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    canvas = img
    if "masks" in det and len(det["masks"]):
        canvas = draw_segmentation_masks(canvas, det["masks"][:, 0] > 0.5, alpha=0.5)
    if len(det["boxes"]):
        labels = [f"{names.get(int(la), str(int(la)))} {s:.2f}"
                  for la, s in zip(det["labels"], det["scores"].tolist(), strict=True)]
        canvas = draw_bounding_boxes(canvas, det["boxes"], labels=labels, colors="red", width=2)
    stem = Path(path).stem
    name, i = stem, 1
    while name in used:
        name, i = f"{stem}-{i}", i + 1
    used.add(name)
    target = out / f"{name}.png"
    Image.fromarray(canvas.permute(1, 2, 0).contiguous().numpy()).save(target)
    return target
