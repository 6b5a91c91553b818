"""The ``pyg-vig`` command: ``train``, ``eval``, ``predict``, ``export``, ``graph`` and ``detect``.

Each subcommand is a module of this package (or any importable module named in
:data:`SUBCOMMANDS`) with ``add_parser(subparsers)`` and ``run(args) -> int``.

Problems with the user's input (missing data, a checkpoint that does not fit, a resume folder
that does not match, no network for a download) end the command with one
``pyg-vig: error: ...`` line on stderr and exit status 2; set ``PYG_VIG_DEBUG=1`` to see the
traceback instead. Anything else (an internal error, out of memory) keeps its traceback. Batch
commands (``predict`` over many files, ``eval`` over a folder) report an unreadable image on
stderr, go on with the others and exit with status 2 at the end.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from pyg_vig.cli._common import UserError

__all__ = ["main", "SUBCOMMANDS", "UserError", "build_parser"]

#: Subcommand modules, in help order: a bare name is ``pyg_vig.cli.<name>``, a dotted name is
#: imported as it is (e.g. ``"pyg_vig.detection.cli"``).
SUBCOMMANDS: tuple[str, ...] = (
    "train", "eval", "predict", "export", "graph", "pyg_vig.detection.cli",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(name if "." in name else f"{__name__}.{name}")


class _Unavailable:
    """A subcommand whose module needs a missing optional dependency (e.g. ``detect`` without
    torchvision): listed in the help, and running it reports the import error in one line.
    """

    def __init__(self, name: str, error: ImportError):
        self.command = name.rsplit(".", 2)[-2] if name.endswith(".cli") else name.rsplit(".")[-1]
        self.error = error

    def add_parser(self, subparsers) -> argparse.ArgumentParser:
        p = subparsers.add_parser(self.command, help=f"(unavailable: {self.error})")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        return p

    def run(self, args: argparse.Namespace) -> int:
        raise UserError(f"pyg-vig {self.command} is unavailable: {self.error}")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The ``pyg-vig`` parser and {subcommand: module}."""
    from pyg_vig.version import __version__

    parser = argparse.ArgumentParser(
        prog="pyg-vig",
        description="Vision GNN (ViG) on PyTorch Geometric: train, evaluate, "
        "predict, export, draw the patch graph, and detect objects.",
    )
    parser.add_argument("--version", action="version", version=f"pyg_vig {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in SUBCOMMANDS:
        try:
            mod = _module(name)
        except ImportError as e:  # an optional extra is missing: the rest of pyg-vig works
            if "." not in name:
                raise
            mod = _Unavailable(name, e)
        p = mod.add_parser(sub)
        modules[p.prog.split()[-1]] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyg-vig`` and ``python -m pyg_vig``; returns the exit status."""
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    from pyg_vig.train import ConfigError

    try:
        return modules[args.command].run(args)
    except (UserError, ConfigError, OSError, ValueError, ImportError) as e:
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
