"""``pyg-vig export``: a model to ONNX or a torch.export program (.pt2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyg_vig.cli._common import UserError, apply_threads, check_counts

NAME = "export"
FORMATS = ("onnx", "pt2")


def _output_format(fmt: str | None, output: str | None) -> str:
    """The format to write: ``--format``, else the ``--output`` suffix, else ONNX.

    A file whose suffix names the other format would be unreadable later (``predict`` and
    ``eval`` pick the loader by suffix), so that combination is refused before any work.
    """
    if output is None:
        return fmt or "onnx"
    suffix = Path(output).suffix.lower().lstrip(".")
    if fmt is None and suffix in FORMATS:
        return suffix
    if suffix != fmt:
        writes = (f"--format {fmt} writes a .{fmt} file" if fmt
                  else "an export is a .onnx or .pt2 file")
        ends = f"ends in .{suffix}" if suffix else "has no suffix"
        raise UserError(f"--output {output} {ends} but {writes} "
                        "(predict/eval pick the reader by suffix); name it "
                        f"{Path(output).with_suffix('.' + (fmt or 'onnx'))}")
    return fmt


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to the ``pyg-vig`` parser."""
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX or a torch.export program (.pt2)",
        description="SOURCE is a run folder or model.safetensors, or a registered model name "
        "(with --pretrained or --checkpoint FILE). The file keeps the class names and the "
        "preprocessing; run it with `pyg-vig predict FILE ...` (onnxruntime for .onnx). "
        "ONNX files are checked against the eager model with onnxruntime; --no-verify skips it.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="run folder, model.safetensors, or a registered model name")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="onnx or pt2 (default: the suffix of --output, else onnx)")
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
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``pyg-vig export``; returns the exit status."""
    import pyg_vig
    from pyg_vig.datasets import class_names
    from pyg_vig.datasets.preprocess import resolve_data_config
    from pyg_vig.export import example_input, save_program, to_onnx

    check_counts(args, batch_size=1)
    apply_threads(args)
    args.format = _output_format(args.format, args.output)
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
        try:
            to_onnx(model, out, x, dynamic_batch=dynamic, verify=args.verify, classes=classes,
                    data_config=data_config)
        except RuntimeError as e:
            if "not saved" not in str(e) and "fixed batch" not in str(e):
                raise  # an export failure keeps its traceback
            raise UserError(str(e)) from None
    else:
        save_program(model, out, x, dynamic_batch=dynamic, classes=classes,
                     data_config=data_config)
    batch = "dynamic batch" if dynamic else f"batch {args.batch_size}"
    print(f"wrote {out} ({args.format}, {batch}, input {tuple(x.shape[1:])})")
    return 0


