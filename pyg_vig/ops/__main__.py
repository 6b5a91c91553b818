"""``python -m pyg_vig.ops --build``: compile the CPU operators now (e.g. before the tests)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 when the build failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m pyg_vig.ops", description="Build or inspect pyg_vig's compiled operators."
    )
    parser.add_argument(
        "--build", action="store_true", help="build (or find in the cache) and load them"
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 0

    import warnings

    from pyg_vig.ops import _build

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reason is printed below instead
        ok = _build.load(verbose=args.verbose)
    if not ok:
        print(f"pyg_vig.ops: build failed in {_build.build_directory()}", file=sys.stderr)
        print(_build.build_error(), file=sys.stderr)
        return 1
    print(f"pyg_vig.ops: compiled operators ready in {_build.library_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
