"""Lazy just-in-time build of the compiled CPU operators (``csrc/*.cpp``).

The operators are compiled with :func:`torch.utils.cpp_extension.load` against the torch that is
running, on first use (never on ``import pyg_vig``), at most once per process, and cached in

* ``$PYG_VIG_EXTENSIONS_DIR/<torch version>/<build id>/`` when that variable is set,
* ``~/.cache/pyg_vig/extensions/<torch version>/<build id>/`` otherwise,

where ``<build id>`` hashes the sources, the compiler flags and the Python and torch
installations, so that different environments never overwrite each other's library, while
checkouts with the same sources share one build (the sources are compiled from copies staged in
the build folder). Nothing is installed with pip, so a build can never pull in a second torch.
Builds of older sources stay in the cache until it is deleted.

Concurrency: a lock serialises threads; an exclusive ``flock`` on ``<build dir>/build.lock``
serialises processes (e.g. two DDP ranks starting at once: one compiles, the other waits, then
both load the same library). The kernel drops a ``flock`` when its holder dies, unlike the lock
file of ``cpp_extension``, so a build killed half-way cannot leave the next one waiting forever.

If the build fails (no compiler, no ninja, an unwritable cache), one warning gives the reason,
:func:`available` returns :obj:`False` and the public operators use their pure-torch path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import threading
import warnings
from pathlib import Path

import torch

__all__ = [
    "IMPLS", "available", "build_error", "build_directory", "library_path", "load", "use_compiled"
]

_NAME = "pyg_vig_ops"
_CSRC = Path(__file__).parent / "csrc"
_SOURCES = ("knn_select.cpp", "segment_reduce.cpp")
# -ffp-contract=off: no fused multiply-adds, so that every distance is rounded exactly as the
# separate torch ops round it. -fopenmp: at::parallel_for is a header template that only runs in
# parallel when compiled with OpenMP; the library then shares torch's own libgomp (same soname,
# already loaded), so torch.set_num_threads applies to it too.
_CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")
_LDFLAGS = ("-fopenmp",)

_lock = threading.Lock()
_state: dict[str, object] = {
    "tried": False, "ok": False, "error": None, "full_error": None, "path": None
}


def _ninja_id() -> str:
    # The ninja that runs the build (the venv's or the system's, whichever PATH finds first)
    # keeps its own log format in the build folder; two ninjas sharing one folder rebuild each
    # time PATH switches between them. Its resolved path gives each its own folder.
    import shutil

    found = shutil.which("ninja")
    return os.path.realpath(found) if found else ""


def _build_id() -> str:
    # Everything that ends up in the compiler's command line: the sources' content, the flags,
    # and the Python and torch installations whose headers and libraries are used (two virtual
    # environments with the same torch version must not rebuild each other's library).
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode())
        h.update((_CSRC / name).read_bytes())
    setup = (_CFLAGS, _LDFLAGS, sysconfig.get_paths()["include"], os.path.dirname(torch.__file__),
             _ninja_id())
    h.update(repr(setup).encode())
    return f"{_NAME}-py{sys.version_info[0]}{sys.version_info[1]}-{h.hexdigest()[:12]}"


def _stage_sources(directory: Path) -> list[str]:
    # Compile copies kept in the build folder, so that every checkout with the same sources
    # hands ninja the same paths (with the checkout's own paths, ninja would rebuild whenever
    # another checkout had built last). Written only when missing, so that ninja sees no change.
    staged = directory / "csrc"
    staged.mkdir(exist_ok=True)
    paths = []
    for name in _SOURCES:
        target = staged / name
        text = (_CSRC / name).read_bytes()
        if not target.exists() or target.read_bytes() != text:
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(text)
            os.replace(tmp, target)
        paths.append(str(target))
    return paths


def build_directory() -> Path:
    """Folder the operators are built in (and loaded from) for this torch and these sources."""
    root = os.environ.get("PYG_VIG_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "pyg_vig" / "extensions"
    return base / torch.__version__ / _build_id()


def _compile(verbose: bool) -> str:
    import fcntl  # POSIX only: elsewhere the ImportError is the reported build failure

    from torch.utils import cpp_extension

    cpp_extension.verify_ninja_availability()
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            # Holding the flock, nobody else of ours is building here: a leftover lock file of
            # cpp_extension's FileBaton comes from a killed build and would block us forever.
            stale = directory / "lock"
            if stale.exists():
                stale.unlink()
            path = cpp_extension.load(
                name=_NAME,
                sources=_stage_sources(directory),
                extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS),
                build_directory=str(directory),
                is_python_module=False,
                verbose=verbose,
            )
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return str(path)


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # A failed compile reports ninja's whole log; the compiler's error lines are near its end.
    return text if len(lines) <= 12 else "\n".join(lines[:2] + ["..."] + lines[-10:])


def load(verbose: bool = False) -> bool:
    """Build (if needed) and load the compiled operators; :obj:`True` on success.

    Only the first call of a process does any work; later calls return the cached outcome. A
    failure warns once (with the reason) and is not retried in this process.
    """
    if _state["tried"]:
        return bool(_state["ok"])
    with _lock:
        if _state["tried"]:
            return bool(_state["ok"])
        try:
            _state["path"] = _compile(verbose)
            from pyg_vig.ops import knn, segment  # registers the fake kernels and autograd

            knn._register()
            segment._register()
            _state["ok"] = True
        except Exception as error:  # noqa: BLE001 - any failure means: use the torch path
            _state["error"] = _short(error)
            _state["full_error"] = f"{type(error).__name__}: {error}"
            warnings.warn(
                "pyg_vig.ops: could not build the compiled CPU operators, using the pure-torch "
                f"path instead. Reason: {_state['error']}",
                RuntimeWarning,
                stacklevel=3,
            )
        _state["tried"] = True
    return bool(_state["ok"])


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the compiled operators can run (builds them on the first call of a process).

    Under :func:`torch.compile` the answer is taken at trace time and baked into the graph.
    """
    return load()


def build_error() -> str | None:
    """Why the build failed (the compiler's last lines included), or :obj:`None`."""
    return _state["full_error"]  # type: ignore[return-value]


def library_path() -> str | None:
    """Path of the loaded shared library, or :obj:`None` if it is not loaded."""
    return _state["path"] if _state["ok"] else None  # type: ignore[return-value]


IMPLS = ("auto", "cpp", "torch")

#: dtypes the compiled operators handle exactly like the torch ops they replace
COMPILED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def compiled_for(tensor) -> bool:
    """The one place that decides whether library code (k-NN selection, message reduction)
    runs the compiled kernels on ``tensor``: a CPU tensor of a supported dtype, outside
    :func:`torch.compile` / :func:`torch.export` and ONNX export (traced programs stay pure
    PyTorch: portable and ONNX-friendly), with the kernels built. Callers then pass
    ``impl="auto"``.
    """
    if tensor.device.type != "cpu" or tensor.dtype not in COMPILED_DTYPES:
        return False
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return False
    return available()


@functools.cache
def _has_fused_linear() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fused_linear_for(tensor) -> bool:
    """The one place that decides whether library code runs oneDNN's fused linear + activation
    kernel (``torch.ops.mkldnn._linear_pointwise``, shipped with PyTorch) on ``tensor``: a CPU
    float32 tensor in eager mode (not under :func:`torch.compile` / :func:`torch.export` or
    ONNX export, nor under CPU autocast) of a PyTorch built with oneDNN. Whether a gradient is
    wanted is the caller's check (the kernel has none).
    """
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        return False
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast would not cast the fused kernel's inputs
        return False
    return _has_fused_linear()


def default_impl(tensor) -> str:
    """``"auto"`` where :func:`compiled_for` holds, else ``"torch"``: the ``impl`` library
    code passes to the operators.
    """
    return "auto" if compiled_for(tensor) else "torch"


def use_compiled(impl: str, op: str, unsupported: str | None) -> bool:
    """Decide between the compiled kernel and the pure-torch path for one call.

    Args:
        impl (str): ``"auto"`` (compiled when available and ``unsupported`` is :obj:`None`),
            ``"cpp"`` (compiled, or raise) or ``"torch"``.
        op (str): operator name, for messages.
        unsupported (str, optional): why the compiled kernel cannot take these inputs.

    Raises:
        ValueError: for an unknown ``impl``.
        RuntimeError: for ``impl="cpp"`` when the compiled kernel cannot run.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    if impl == "torch":
        return False
    if unsupported is None and torch.onnx.is_in_onnx_export():
        unsupported = "ONNX export (ONNX has no pyg_vig operators; the torch path is exported)"
    if impl == "auto":
        return unsupported is None and available()
    if unsupported is not None:
        raise RuntimeError(
            f"{op}(impl='cpp'): the compiled kernel does not support {unsupported}; "
            "use impl='auto' or impl='torch'"
        )
    if not available():
        raise RuntimeError(
            f"{op}(impl='cpp'): the compiled operators could not be built: {build_error()}"
        )
    return True
