"""Export a ViG for deployment: a ``torch.export`` program (``.pt2``) or an ONNX file.

.. code-block:: python

    import pyg_vig
    from pyg_vig.export import to_onnx, load_exported

    model = pyg_vig.create_model("pvig_s", pretrained=True).eval()
    to_onnx(model, "pvig_s.onnx")              # batch dimension dynamic, checked with onnxruntime
    runner = load_exported("pvig_s.onnx")      # the same call for .onnx and .pt2 files
    logits = runner(images)                    # (B, 1000) torch tensor

Both formats carry the model name, class names and preprocessing (``input_size``,
``crop_pct``, ``interpolation``, ``mean``, ``std``) as metadata, so ``pyg-vig predict`` and
``pyg-vig eval --runtime onnxruntime`` need nothing but the file. The exported graph is what the
model computes in eval mode (BatchNorm statistics, no drop-path).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ExportedModel", "example_input", "export_program", "export_metadata",
           "load_exported", "save_program", "to_onnx"]

METADATA_KEY = "pyg_vig"


def export_metadata(model: nn.Module, classes: Sequence[str] | None = None,
                    data_config: dict | None = None) -> dict[str, Any]:
    """What travels with an exported file: model name, classes and preprocessing."""
    from pyg_vig.datasets.preprocess import (
        class_names,
        imagenet_class_names,
        imagenet_synsets,
        resolve_data_config,
    )
    from pyg_vig.version import __version__

    cfg = data_config or resolve_data_config(model)
    classes = list(classes) if classes is not None else class_names(model)
    # folder names an evaluation set uses for these classes (ImageNet: WordNet ids)
    keys = imagenet_synsets() if classes == imagenet_class_names() else classes
    return {
        "format": "pyg_vig-export",
        "version": __version__,
        "model": getattr(model, "model_name", type(model).__name__),
        "num_classes": int(getattr(model, "num_classes", 0)),
        "classes": classes,
        "class_keys": keys,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }


def example_input(model: nn.Module, batch_size: int = 2,
                  data_config: dict | None = None) -> Tensor:
    """A random ``(batch_size, C, H, W)`` input of the model's configured size."""
    from pyg_vig.datasets.preprocess import resolve_data_config

    c, h, w = (data_config or resolve_data_config(model))["input_size"]
    p = next(model.parameters())
    return torch.randn(batch_size, c, h, w, device=p.device, dtype=p.dtype)


def export_program(model: nn.Module, example: Tensor | None = None, *,
                   dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the eval-mode model, with a dynamic batch dimension.

    Raises:
        RuntimeError: the model cannot be exported as asked (the message says whether a
            static batch, ``dynamic_batch=False``, would work).
    """
    model = model.eval()
    x = example if example is not None else example_input(model)
    if dynamic_batch and x.shape[0] < 2:
        x = torch.cat([x, x])  # a batch of 1 would be specialised to the constant 1
    with _explained("torch.export", model, dynamic_batch), torch.no_grad():
        return torch.export.export(model, (x,), dynamic_shapes=_batch_shapes(dynamic_batch),
                                   strict=False)


def _batch_shapes(dynamic_batch: bool) -> tuple | None:
    return ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None


@contextlib.contextmanager
def _explained(what: str, model: nn.Module, dynamic_batch: bool):
    """Turn an exporter's failure into one RuntimeError that says what to try."""
    try:
        yield
    except Exception as e:  # torch.export raises many types (UserError, GuardOnDataDependent...)
        first = " ".join(str(e).split())[:400]
        hint = (" A static batch may still export: pass dynamic_batch=False "
                "(pyg-vig export --static-batch)." if dynamic_batch else "")
        raise RuntimeError(f"{what} failed for {type(model).__name__} "
                           f"({type(e).__name__}: {first}).{hint}") from e


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # the real suffix last: runtimes pick the format by it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Move the finished temporary file into place with the mode of any new file (``mkstemp``
    creates 0600; the rest of a run folder follows the umask, usually 0644).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_program(model: nn.Module, path: str | Path, example: Tensor | None = None, *,
                 dynamic_batch: bool = True, classes: Sequence[str] | None = None,
                 data_config: dict | None = None) -> Path:
    """Export with :func:`export_program` and save a ``.pt2`` file (``torch.export.save``)
    with the metadata of :func:`export_metadata` as the extra file ``pyg_vig.json``.
    """
    path = Path(path)
    program = export_program(model, example, dynamic_batch=dynamic_batch)
    meta = export_metadata(model, classes, data_config)
    tmp = _atomic_target(path)
    try:
        torch.export.save(program, str(tmp), extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_onnx(model: nn.Module, path: str | Path, example: Tensor | None = None, *,
            dynamic_batch: bool = True, opset: int | None = None, verify: bool = True,
            classes: Sequence[str] | None = None, data_config: dict | None = None,
            tolerance: float = 1e-2) -> Path:
    """Export to ONNX through ``torch.export`` (``torch.onnx.export(dynamo=True)``).

    Args:
        model (nn.Module): the model (exported in eval mode).
        path (str or Path): the ``.onnx`` file, written atomically.
        example (Tensor, optional): an input; by default a random one of the configured size.
        dynamic_batch (bool): a symbolic batch dimension (default: :obj:`True`).
        opset (int, optional): ONNX opset (default: the exporter's).
        verify (bool): run the file with onnxruntime on ``example`` (and another batch size
            when dynamic) and compare with the eager model (default: :obj:`True`).
        classes (sequence of str, optional): class names stored as metadata (default: the
            model's).
        data_config (dict, optional): preprocessing stored as metadata (default: the
            model's ``pretrained_cfg``).
        tolerance (float): largest accepted ``max|onnx - eager| / max|eager|`` in the
            verification. Another summation order can flip a k-NN neighbour that is tied to a
            few ulps, which moves the logits by about 1e-3 relative; a wrong graph moves them by
            far more. (default: :obj:`1e-2`)

    Raises:
        ImportError: onnx / onnxscript (and onnxruntime to verify) are missing:
            ``pip install 'pyg-vig[export]'``.
        RuntimeError: export failed, or the file's outputs differ from the model's.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({e}): "
                          "pip install 'pyg-vig[export]'") from None
    path = Path(path)
    model = model.eval()
    x = example if example is not None else example_input(model)
    if dynamic_batch and x.shape[0] < 2:
        x = torch.cat([x, x])
    kwargs: dict[str, Any] = dict(dynamo=True, input_names=["images"], output_names=["logits"],
                                  verbose=False, dynamic_shapes=_batch_shapes(dynamic_batch))
    if opset is not None:
        kwargs["opset_version"] = opset
    meta = export_metadata(model, classes, data_config)
    tmp = _atomic_target(path)
    try:
        # The model itself, not a torch.export program: while torch.onnx traces it, the k-NN
        # takes its ONNX formulation (pyg_vig.nn.knn: one GEMM of augmented features).
        with _explained("ONNX export", model, dynamic_batch), torch.no_grad():
            onnx_program = torch.onnx.export(model, (x,), **kwargs)
        onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
        onnx_program.save(str(tmp))
        if verify:
            _verify_onnx(model, tmp, x, dynamic_batch, tolerance)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@torch.no_grad()
def _verify_onnx(model: nn.Module, path: Path, x: Tensor, dynamic: bool,
                 tolerance: float) -> None:
    runner = ExportedModel(path)
    if dynamic and runner.static_batch is not None:
        raise RuntimeError(f"the ONNX file has a fixed batch of {runner.static_batch}: the "
                           "model did not export with a dynamic batch dimension")
    inputs = [x] + ([torch.cat([x, x[:1]])] if dynamic else [])  # another batch size
    for xb in inputs:
        want = model(xb).float().cpu()
        got = runner(xb.cpu())
        if got.shape != want.shape:
            raise RuntimeError(f"the exported ONNX model gives outputs of shape "
                               f"{tuple(got.shape)} for a batch of {len(xb)}, the eager model "
                               f"{tuple(want.shape)}; not saved")
        rel = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
        if not rel <= tolerance:
            raise RuntimeError(
                f"the exported ONNX model disagrees with the eager model on a batch of "
                f"{len(xb)} (max difference {rel:.2e} of the largest logit, tolerance "
                f"{tolerance:g}); not saved. An untrained model's logits are nearly equal, so "
                f"k-NN ties can pick other neighbours in onnxruntime and exceed the tolerance: "
                f"export a trained model, or skip the check with --no-verify "
                f"(to_onnx(verify=False))")


class ExportedModel:
    """Run an exported ``.onnx`` (onnxruntime) or ``.pt2`` (``torch.export.load``) file.

    Calling it with a float ``(B, C, H, W)`` tensor returns the logits as a CPU tensor. Files
    with a fixed batch size are fed in chunks of that size. :attr:`metadata` holds the model
    name, ``classes`` and ``data_config`` written at export time.
    """

    def __init__(self, path: str | Path, runtime: str = "auto", threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model not found: {self.path}")
        if runtime == "auto":
            runtime = "onnxruntime" if self.path.suffix == ".onnx" else "torch"
        if runtime not in ("onnxruntime", "torch"):
            raise ValueError(f"runtime must be 'onnxruntime' or 'torch', got {runtime!r}")
        if (runtime == "onnxruntime") != (self.path.suffix == ".onnx"):
            raise ValueError(f"runtime {runtime!r} cannot run {self.path.name}: onnxruntime runs "
                             ".onnx files, torch runs .pt2 files")
        self.runtime = runtime
        self.static_batch: int | None = None
        if runtime == "onnxruntime":
            try:
                import onnxruntime as ort
            except ImportError:
                raise ImportError("running .onnx files needs onnxruntime: "
                                  "pip install 'pyg-vig[export]'") from None
            try:
                opts = ort.SessionOptions()
                if threads:
                    opts.intra_op_num_threads = threads
                self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ValueError(f"cannot load ONNX model {self.path}: "
                                 f"{' '.join(str(e).split())[:300]}") from None
            meta = self.session.get_modelmeta().custom_metadata_map
            self.input_name = self.session.get_inputs()[0].name
            dim0 = self.session.get_inputs()[0].shape[0]
            self.static_batch = dim0 if isinstance(dim0, int) else None
        else:
            extra = {f"{METADATA_KEY}.json": ""}
            try:
                program = torch.export.load(str(self.path), extra_files=extra)
            except Exception as e:
                raise ValueError(f"cannot load exported program {self.path}: "
                                 f"{' '.join(str(e).split())[:300]}") from None
            self.module = program.module()
            meta = extra
        raw = meta.get(METADATA_KEY) or meta.get(f"{METADATA_KEY}.json") or "{}"
        self.metadata: dict[str, Any] = json.loads(raw)

    @property
    def classes(self) -> list[str]:
        """Label names stored at export time (``class <i>`` when missing)."""
        return list(self.metadata.get("classes") or [])

    @property
    def data_config(self) -> dict:
        """The preprocessing stored at export time (for :func:`create_transform`)."""
        cfg = dict(self.metadata.get("data_config") or {})
        for k in ("input_size", "mean", "std"):
            if k in cfg:
                cfg[k] = tuple(cfg[k])
        return cfg

    def _run(self, x: Tensor) -> Tensor:
        if self.runtime == "onnxruntime":
            out = self.session.run(None, {self.input_name: x.float().cpu().numpy()})[0]
            return torch.from_numpy(out)
        with torch.no_grad():
            return self.module(x.float().cpu()).float()

    def __call__(self, x: Tensor) -> Tensor:
        b = self.static_batch
        if b is None or len(x) == b:
            return self._run(x)
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:  # pad with copies of the last image, then drop their outputs
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, *chunk.shape[1:])])
            outs.append(self._run(chunk)[:n])
        return torch.cat(outs)

    def __repr__(self) -> str:
        return (f"ExportedModel({str(self.path)!r}, runtime={self.runtime!r}, "
                f"model={self.metadata.get('model')!r})")


def load_exported(path: str | Path, runtime: str = "auto") -> ExportedModel:
    """Open an exported ``.onnx`` / ``.pt2`` file for inference (see :class:`ExportedModel`)."""
    return ExportedModel(path, runtime)
