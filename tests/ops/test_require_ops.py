import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_failed_build_fails_when_ops_are_required(tmp_path):
    # With the compiler unreachable (empty PATH, fresh build folder) the compiled-op tests skip,
    # unless PYG_VIG_REQUIRE_OPS=1 (make test), where they must fail.
    test = "tests/ops/test_knn_select.py"
    base = dict(os.environ, PATH="", PYG_VIG_EXTENSIONS_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test, "-k", "cpp"]
    skipped = subprocess.run(cmd, cwd=ROOT, env=dict(base, PYG_VIG_REQUIRE_OPS="0"),
                             capture_output=True, text=True, timeout=600)
    assert skipped.returncode == 0, skipped.stdout[-2000:]
    assert "skipped" in skipped.stdout
    required = subprocess.run(cmd, cwd=ROOT, env=dict(base, PYG_VIG_REQUIRE_OPS="1"),
                              capture_output=True, text=True, timeout=600)
    assert required.returncode == 1, required.stdout[-2000:]
    assert "PYG_VIG_REQUIRE_OPS=1" in required.stdout
