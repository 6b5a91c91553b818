"""ONNX export and ONNX Runtime (CPU) helpers for ``benchmarks/throughput.py``.

A user who deploys ViG on a CPU exports the model with
``torch.onnx.export(model, (x,), path, dynamo=True)`` (default opset, the exporter's default
graph optimisation, static shapes) and runs the file with onnxruntime's CPU execution provider.
:func:`export_onnx` does exactly that; :func:`session` opens the file with the settings of the
benchmark (``intra_op_num_threads`` = the torch threads, ``ORT_ENABLE_ALL``).

Checking an export
------------------
A fast number from a wrong graph (a traced training branch, a dropped block, a wrong shape) must
not pass unnoticed, so every exported model is compared with the eager model. Comparing the
float32 logits of ONNX Runtime and PyTorch says little for a randomly initialised ViG, though:
its dynamic k-NN makes it chaotic. Two kernels that sum in a different order differ by ~1e-7, a
few of the many near-tied neighbours flip, and the flips grow through the blocks into logit
differences of 5-30% (measured: perturbing the *input* by 1e-7 moves the eager logits as much).
The check therefore runs in float64, where rounding differences (~1e-16) flip no neighbour:

* :func:`export_onnx` keeps the exported graph *before* the exporter's optimisation pass. That
  pass (``ONNXProgram.optimize()``, which ``optimize=True`` runs) folds constants such as
  BatchNorm scales in float32, which in float64 would again seed the chaos; it is
  semantics-preserving by design, so the timed file is that graph after the pass.
* :func:`graph_error` casts that graph to float64 (:func:`to_float64`), evaluates it with ONNX's
  reference evaluator (:class:`onnx.reference.ReferenceEvaluator`; its ``Conv`` and
  ``GatherElements`` and ``Gelu`` are replaced by PyTorch calls: onnxruntime has no float64
  ``Conv``, the reference ``Conv`` is slow, its ``GatherElements`` fails on large index ranges
  and its ``Gelu`` uses float32 constants) and returns the largest absolute
  difference to the float64 eager logits, relative to the largest eager logit. Measured:
  1e-7 to 3e-6 for the official and our models (a wrong graph gives O(1)).

:func:`max_rel_error` also reports the float32 ONNX Runtime vs eager difference, for information.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch

__all__ = [
    "available",
    "export_onnx",
    "export_ours",
    "session",
    "run",
    "to_float64",
    "graph_error",
    "max_rel_error",
    "file_mb",
]


def available() -> str | None:
    """``None`` when onnx, onnxscript and onnxruntime import, else the reason they do not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return f"{e} (pip install onnx onnxscript onnxruntime)"
    return None


# --------------------------------------------------------------------------- export
def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: str) -> Any:
    """Export ``model`` for input ``x`` to ``path`` as ``torch.onnx.export(..., dynamo=True)``.

    The file written is what ``torch.onnx.export(model, (x,), path, dynamo=True)`` writes: the
    exported graph, then the exporter's default optimisation pass, then ``save``. Returns the
    graph before that pass (an ``onnx.ModelProto``) for :func:`graph_error`.
    """
    model.eval()
    # One eager call first, as the timed eager paths had: tables that the model caches on first
    # use (relative-position bias) then enter the graph as constants instead of being traced as
    # float32 computations, which the float64 check could not tell from the model's own maths.
    # The timed file is the same either way (the optimisation pass folds such subgraphs).
    with torch.no_grad():
        model(x)
    program = torch.onnx.export(model, (x,), dynamo=True, optimize=False, verbose=False)
    unoptimized = program.model_proto  # a serialised copy; optimize() works on program.model
    program.optimize()
    program.save(path)
    return unoptimized


def export_ours(model: torch.nn.Module, x: torch.Tensor, path: str) -> tuple[Any, str]:
    """Export one of our models; returns ``(graph to check, how the timed file was made)``.

    The timed file is what a user of the package gets: ``pyg_vig.export.to_onnx(model, path,
    x, dynamic_batch=False)`` (a static batch, like the official export above; its own float32
    verification is off because it cannot tell rounding from a wrong graph on random weights,
    see the module docstring). The graph returned for the float64 check is the same
    ``torch.onnx.export`` of the model before the exporter's optimisation pass (so it has the
    ONNX formulation of the k-NN that the timed file has, see docs/export.md).
    Without ``pyg_vig.export``: :func:`export_onnx`.
    """
    try:
        from pyg_vig.export import to_onnx
    except ImportError:
        return export_onnx(model, x, path), "torch.onnx.export"
    model.eval()
    with torch.no_grad():
        model(x)  # warm caches, as in export_onnx
    to_onnx(model, path, x, dynamic_batch=False, verify=False)
    with torch.no_grad():
        check = torch.onnx.export(model, (x,), dynamo=True, optimize=False, verbose=False)
    return check.model_proto, "pyg_vig.export.to_onnx"


# --------------------------------------------------------------------------- runtime
def session(path: str, threads: int, *, arena: bool = True) -> Any:
    """An onnxruntime CPU session as the benchmark runs it.

    ``intra_op_num_threads=threads`` (the torch thread count), one inter-op thread, sequential
    execution and ``ORT_ENABLE_ALL`` graph optimisations; everything else is onnxruntime's
    default. ``arena=False`` turns off the CPU memory arena so that freed tensors go back to
    ``malloc`` and the process's resident-set high-water mark measures the peak working set
    (with the arena, memory reserved by earlier runs stays resident and hides the peak).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = arena
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(sess: Any, x: np.ndarray) -> np.ndarray:
    """Logits of the single-input, single-output model in ``sess`` for ``x``."""
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# --------------------------------------------------------------------------- float64 check
def to_float64(model_proto: Any) -> Any:
    """A copy of an ONNX model computing in float64 where it computed in float32.

    Every float32 initializer, constant, value type and cast becomes float64, except the casts
    that *round* a float64 value to float32 (code that computes a table in float64 and stores it
    in float32, as the official relative-position recipe does): they become a cast to float32 and
    back, so the float64 graph keeps that rounding exactly as the float64 eager model does.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32, f64 = TensorProto.FLOAT, TensorProto.DOUBLE
    out = copy.deepcopy(model_proto)
    # element types of the float32 graph, to recognise float64 -> float32 roundings
    inferred = onnx.shape_inference.infer_shapes(model_proto).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.input, *inferred.output, *inferred.value_info)}
    types.update({t.name: t.data_type for t in inferred.initializer})

    def tensor64(t: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)

    def convert(graph: Any) -> None:
        for i, t in enumerate(graph.initializer):
            if t.data_type == f32:
                graph.initializer[i].CopyFrom(tensor64(t))
        for v in (*graph.input, *graph.output, *graph.value_info):
            if v.type.tensor_type.elem_type == f32:
                v.type.tensor_type.elem_type = f64
        nodes = []
        for node in graph.node:
            rounds = (node.op_type in ("Cast", "CastLike") and types.get(node.input[0]) == f64
                      and types.get(node.output[0]) == f32)
            if rounds:  # x (float64) -> float32 -> float64
                mid = node.output[0] + "__float32"
                nodes.append(helper.make_node("Cast", [node.input[0]], [mid], to=f32,
                                              name=node.name + "__round"))
                nodes.append(helper.make_node("Cast", [mid], [node.output[0]], to=f64,
                                              name=node.name))
                continue
            convert_attributes(node)
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)

    def convert_attributes(node: Any) -> None:
        for a in node.attribute:
            if a.name == "to" and node.op_type == "Cast" and a.i == f32:
                a.i = f64
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f32:
                a.t.CopyFrom(tensor64(a.t))
            elif a.type == onnx.AttributeProto.GRAPH:
                convert(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    convert(g)

    convert(out.graph)
    for fn in out.functions:
        for node in fn.node:
            convert_attributes(node)
    return out


def _reference_ops() -> list[type]:
    from onnx.reference.op_run import OpRun

    class Conv(OpRun):  # the reference Conv is a Python loop: minutes at 224x224
        op_domain = ""

        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None,  # noqa: N803
                 kernel_shape=None, pads=None, strides=None):
            if auto_pad not in (None, "NOTSET", b"NOTSET"):
                raise NotImplementedError(f"Conv auto_pad={auto_pad!r}")
            nd = X.ndim - 2
            pads = list(pads or [0] * (2 * nd))
            x = torch.from_numpy(np.ascontiguousarray(X))
            # ONNX pads: (begin_1, ..., begin_n, end_1, ..., end_n); F.pad: last dim first.
            x = torch.nn.functional.pad(x, [p for i in reversed(range(nd))
                                            for p in (pads[i], pads[i + nd])])
            conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                    3: torch.nn.functional.conv3d}[nd]
            w = torch.from_numpy(np.ascontiguousarray(W))
            b = None if B is None else torch.from_numpy(np.ascontiguousarray(B))
            y = conv(x, w, b, stride=list(strides or [1] * nd),
                     dilation=list(dilations or [1] * nd), groups=group or 1)
            return (y.numpy(),)

    class GatherElements(OpRun):  # the reference one fails on large index ranges
        op_domain = ""

        def _run(self, data, indices, axis=None):
            d = torch.from_numpy(np.ascontiguousarray(data))
            axis = (axis or 0) % d.dim()
            i = torch.from_numpy(np.ascontiguousarray(indices)).long()
            i = torch.where(i < 0, i + d.size(axis), i)
            return (torch.gather(d, axis, i).numpy(),)

    class Gelu(OpRun):  # the reference expands Gelu with float32 constants (1/sqrt(2))
        op_domain = ""

        def _run(self, X, approximate=None):  # noqa: N803
            mode = approximate.decode() if isinstance(approximate, bytes) else approximate
            x = torch.from_numpy(np.ascontiguousarray(X))
            return (torch.nn.functional.gelu(x, approximate=mode or "none").numpy(),)

    return [Conv, GatherElements, Gelu]


def graph_error(model_proto: Any, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |graph - eager| / largest |eager| of the logits, both evaluated in float64."""
    from onnx.reference import ReferenceEvaluator

    graph64 = to_float64(model_proto)
    x64 = x.detach().double().cpu()
    evaluator = ReferenceEvaluator(graph64, new_ops=_reference_ops())
    with torch.no_grad():  # threads stay as the caller set them
        out = evaluator.run(None, {graph64.graph.input[0].name: x64.numpy()})[0]
    eager = copy.deepcopy(model).cpu().double().eval()
    with torch.inference_mode():
        ref = eager(x64).numpy()
    del eager
    return max_rel_error(out, ref)


def max_rel_error(out: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``; ``inf`` for a shape mismatch or non-finite output."""
    out = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, np.float64)
    ref = np.asarray(ref.detach().cpu() if isinstance(ref, torch.Tensor) else ref, np.float64)
    if out.shape != ref.shape or not np.isfinite(out).all():
        return float("inf")
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


def file_mb(path: str) -> float:
    """Size of an exported file in MiB."""
    return os.path.getsize(path) / 2**20
