"""``pyg-vig predict``: classify image files (top-k classes)."""

from __future__ import annotations

import argparse
import json
import sys

from pyg_vig.cli._common import UserError, add_model_args, apply_threads, check_counts

NAME = "predict"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to the ``pyg-vig`` parser."""
    p = subparsers.add_parser(
        "predict",
        help="classify image files (top-k classes)",
        description="SOURCE is a run folder, a model.safetensors or an exported .onnx/.pt2 "
        "file; with --model NAME every positional argument is an image. Folders expand to "
        "their images; an unreadable file is reported (with --json: a line with an \"error\" "
        "field) and skipped, and the exit status is 2.",
    )
    p.add_argument("inputs", nargs="+", metavar="[SOURCE] IMAGE",
                   help="the model source (unless --model) then image files or folders")
    add_model_args(p)
    p.add_argument("--topk", type=int, default=3, help="classes shown per image")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image: {image, top} or {image, error}")
    return p


def _looks_like_image(item: str) -> bool:
    from pathlib import Path

    from pyg_vig.datasets import IMAGE_EXTENSIONS

    return Path(item).suffix.lower() in IMAGE_EXTENSIONS


def run(args: argparse.Namespace) -> int:
    """Run ``pyg-vig predict``; returns the exit status."""
    from pyg_vig.inference import expand_images, load_predictor, predict_files

    inputs = list(args.inputs)
    source = None if args.model else inputs.pop(0)
    if source is not None and _looks_like_image(source):
        raise UserError(f"{source} is an image, but the first argument is the model: "
                        f"pyg-vig predict RUN_DIR|model.safetensors|model.onnx {source} ..., "
                        f"or pyg-vig predict --model pvig_ti --pretrained {source} ...")
    if not inputs:
        raise UserError("no images given: pyg-vig predict [SOURCE] IMAGE [IMAGE ...]")
    check_counts(args, topk=1, batch_size=1)
    apply_threads(args)
    try:
        pred = load_predictor(source, model=args.model, pretrained=args.pretrained,
                              checkpoint=args.weights, runtime=args.runtime,
                              device=args.device, threads=args.threads)
    except ValueError as e:
        raise UserError(str(e)) from None
    paths, failed, empty = [], 0, 0
    for item in inputs:  # one at a time, so that a problem names its own input
        found, problems = expand_images([item])
        paths += found
        for msg in problems:
            failed, empty = failed + 1, empty + 1
            print(f"pyg-vig: error: {msg}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": item, "error": msg}), flush=True)
    for r in predict_files(pred, paths, topk=args.topk, batch_size=args.batch_size):
        if r.error is not None:
            failed += 1
            print(f"pyg-vig: error: {r.error} (skipped)", file=sys.stderr)
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)
        elif args.json:
            print(json.dumps(r.to_dict()), flush=True)
        else:
            print(f"{r.image}: " + ", ".join(f"{c} {p:.3f}" for c, _, p in r.top), flush=True)
    if failed:
        print(f"pyg-vig: error: {failed} of {len(paths) + empty} input(s) could not be "
              "read", file=sys.stderr)
        return 2
    return 0
