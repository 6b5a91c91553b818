"""Lazy build, caching, failure fallback and process safety of the compiled operators."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyg_vig import ops
from pyg_vig.ops import _build

ROOT = Path(__file__).resolve().parents[2]


def _python(code, *, env=None, timeout=300):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_build_directory_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("PYG_VIG_EXTENSIONS_DIR", str(tmp_path))
    directory = _build.build_directory()
    assert directory.parent == tmp_path / torch.__version__
    assert directory.name.startswith("pyg_vig_ops-py")
    monkeypatch.delenv("PYG_VIG_EXTENSIONS_DIR")
    default = Path.home() / ".cache" / "pyg_vig" / "extensions" / torch.__version__
    assert _build.build_directory().parent == default


def test_import_does_not_build(tmp_path):
    result = _python(
        "import pyg_vig, pyg_vig.nn, pyg_vig.ops\n"
        "from pyg_vig.ops import _build\n"
        "assert not _build._state['tried'], 'importing pyg_vig built the operators'\n",
        env={"PYG_VIG_EXTENSIONS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_failed_build_warns_once_and_falls_back(tmp_path):
    # No ninja and no compiler on PATH: the build fails, one warning, the torch path answers.
    code = """
import warnings
import torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from pyg_vig import ops
    assert not ops.available() and not ops.available()
    dot, q_sq, k_sq = torch.randn(2, 5, 30), torch.rand(2, 5, 1), torch.rand(2, 1, 30)
    ref = torch.topk(dot.mul(-2).add_(q_sq).add_(k_sq).neg_(), 4, dim=-1).indices
    assert torch.equal(ops.knn_select(dot, q_sq, k_sq, None, 4), ref)
    x, src, ptr = torch.randn(6, 3), torch.tensor([0, 5, 2]), torch.tensor([0, 2, 3])
    out = ops.gather_segment_reduce(x, src, ptr, "max")
    assert torch.equal(out, torch.stack([x[[0, 5]].amax(0), x[2]]))
    try:
        ops.knn_select(dot, q_sq, k_sq, None, 4, impl="cpp")
        raise AssertionError("impl='cpp' did not raise")
    except RuntimeError as error:
        assert "could not be built" in str(error), error
messages = [str(w.message) for w in caught if "could not build" in str(w.message)]
assert len(messages) == 1, messages
assert "Ninja" in ops.build_error(), ops.build_error()
print("ok")
"""
    result = _python(code, env={"PATH": "", "PYG_VIG_EXTENSIONS_DIR": str(tmp_path)})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_cli_build(compiled, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "pyg_vig.ops", "--build"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ops.library_path() in ok.stdout  # the same cached library as this process

    env = dict(os.environ, PATH="", PYG_VIG_EXTENSIONS_DIR=str(tmp_path))
    failed = subprocess.run([sys.executable, "-m", "pyg_vig.ops", "--build"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert "build failed" in failed.stderr and "Ninja" in failed.stderr


def test_processes_share_the_build_and_survive_a_stale_lock(compiled):
    # A build killed half-way leaves cpp_extension's lock file behind, which would make every
    # later process wait forever; the flock-guarded loader removes it. Two processes load at once.
    directory = Path(ops.library_path()).parent
    with open(directory / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a builder would: nobody else is in there now
        (directory / "lock").touch()
        fcntl.flock(handle, fcntl.LOCK_UN)
    code = "from pyg_vig import ops\nassert ops.available(), ops.build_error()\n" \
           "print(ops.library_path())\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == ops.library_path()
    # Both loaded instead of waiting on the stale file (communicate's timeout would raise).
    # torch < 2.14's FileBaton deletes its lock file after a load; torch 2.14's lock keeps the
    # file (the lock is the flock on it, not the file's existence), so it may be there again.


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FULL_TEST") != "1", reason="compiles from scratch (~1 min)")
def test_cold_build_by_two_processes_at_once(tmp_path):
    # Two DDP ranks starting together: one compiles, the other waits; both load the same file.
    code = "from pyg_vig import ops\nassert ops.available(), ops.build_error()\n" \
           "print(ops.library_path())\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYG_VIG_EXTENSIONS_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    paths = set()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        paths.add(out.strip())
    assert len(paths) == 1 and paths.pop().startswith(str(tmp_path))
    log = next(tmp_path.rglob(".ninja_log")).read_text().splitlines()[1:]
    assert sorted(line.split("\t")[3] for line in log) == [
        "knn_select.o", "pyg_vig_ops.so", "segment_reduce.o"]  # compiled once
