"""``pyg-vig graph``: draw the k-NN neighbours of centre nodes (paper Fig. 4)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyg_vig.cli._common import UserError, check_saved_data

NAME = "graph"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``graph`` subcommand to the ``pyg-vig`` parser."""
    p = subparsers.add_parser(
        "graph", help="draw the k-NN neighbours of centre nodes (paper Fig. 4)"
    )
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
    return p
    return p


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


def run(args: argparse.Namespace) -> int:
    """Run ``pyg-vig graph``; returns the exit status."""
    from torchvision.transforms import Normalize

    from pyg_vig.datasets import load_dataset
    from pyg_vig.inference import resolve_device
    from pyg_vig.train import load_trained_model
    from pyg_vig.train.plots import draw_knn_graph

    device = resolve_device(args.device)
    model, cfg = load_trained_model(args.checkpoint, device)
    if not hasattr(model, "forward_graph"):
        raise UserError(f"model {cfg.model} has no forward_graph(); cannot draw its graph")
    if args.image.startswith("test:"):
        check_saved_data(cfg.data, "run from that folder, or give an image file instead of "
                         f"{args.image}")
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


