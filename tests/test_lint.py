"""`make lint` as a test: ruff's findings (pyproject's [tool.ruff] rules) fail the suite."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff is in the test extra (make test installs it)")
    cmd = [sys.executable, "-m", "ruff", "check", "--output-format", "concise",
           "pyg_vig", "tests", "benchmarks", "examples"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
