"""torch.export and ONNX export give the eager model's program: from a fresh model, repeatedly,
with a dynamic batch dimension, and on the official fixtures."""

import importlib.util
from functools import cache
from pathlib import Path

import pytest
import torch
from torch.export import Dim

from pyg_vig import create_model, from_official

FIXTURES = Path(__file__).parent.parent / "fixtures" / "official"
HAS_ORT = all(importlib.util.find_spec(m) is not None
              for m in ("onnx", "onnxscript", "onnxruntime"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="the 'export' extra is not installed")


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@cache
def _fixture(name):
    return torch.load(FIXTURES / name, weights_only=True)


def _official_model(name):
    fx = _fixture(name)
    arch = "vig" if fx["config"]["module"].startswith("vig.") else "pvig"
    return from_official(arch, fx["config"]["opt"], fx["state_dict"]).eval(), fx


def _fixture_input():
    torch.manual_seed(0)
    return torch.randn(2, 3, 224, 224)


# Fixtures whose official k-NN distances have no exact float32 tie (fixtures README:
# min_gap_within_topkd / min_gap_at_boundary > 0); c_tiny_iso_gin has a gap of 0.0, so any other
# summation order may legitimately pick the other neighbour there.
TIE_FREE = ["c_tiny_iso_fanin.pt", "c_tiny_iso_edge_fanin.pt", "c_tiny_iso_sage_fanin.pt",
            "d_tiny_pyr_fanin.pt", "d_tiny_pyr_edge_fanin.pt", "d_tiny_pyr_gin_fanin.pt",
            "d_tiny_pyr_sage_fanin.pt"]


def test_tie_free_list_matches_fixtures():
    for name in TIE_FREE:
        gaps = [min(r["min_gap_within_topkd"], r["min_gap_at_boundary"])
                for r in _fixture(name)["knn"]]
        assert min(gaps) > 0, name


@pytest.mark.parametrize("name", ["pvig_mini", "vig_mini"])
def test_fresh_model_exports_twice_with_dynamic_batch(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 1, 28, 28)
    # before any eager call: nothing cached yet (the bug: a cache filled while tracing)
    programs = [torch.export.export(model, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
                for _ in range(2)]
    # the shared table cache holds real tensors only, never the tracer's fake ones
    from torch._subclasses.fake_tensor import FakeTensor

    from pyg_vig.nn import pos_embed

    cached = [t for v in pos_embed.relative_position_cache._data.values()
              for t in (v if isinstance(v, tuple) else (v,))]
    assert not any(isinstance(t, FakeTensor) for t in cached)
    for batch in (1, 2, 5):
        xb = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            eager = model(xb)
        for ep in programs:
            out = ep.module()(xb)
            assert out.shape == (batch, model.num_classes)
            assert _rel(out, eager) <= 1e-5


@pytest.mark.parametrize("name", TIE_FREE)
def test_exported_program_equals_eager_on_official_fixtures(name):
    model, fx = _official_model(name)
    x = _fixture_input()
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
    assert _rel(program.module()(x), eager) <= 1e-5
    assert _rel(eager, fx["logits"]) <= 5e-3  # and eager is the official model


def test_export_at_another_resolution_and_eager_afterwards():
    model = create_model("pvig_mini").eval()
    x = torch.randn(1, 1, 40, 36)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
    assert _rel(program.module()(x), eager) <= 1e-5


@needs_ort
@pytest.mark.parametrize("name", ["pvig_mini"])
def test_onnx_dynamic_batch(name, tmp_path):
    # (random untrained weights: the isotropic model is checked on official weights below,
    # where the k-NN has no near-ties that another summation order could flip)
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), str(path), dynamo=True,
                      dynamic_shapes={"x": {0: Dim("batch")}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        xb = torch.randn(batch, 1, 28, 28)
        out = session.run(None, {session.get_inputs()[0].name: xb.numpy()})[0]
        with torch.no_grad():
            assert _rel(torch.from_numpy(out), model(xb)) <= 1e-5


@needs_ort
@pytest.mark.parametrize("name", ["c_tiny_iso_fanin.pt", "d_tiny_pyr_fanin.pt"])
def test_onnx_equals_eager_on_official_fixtures(name, tmp_path):
    import onnxruntime as ort

    from pyg_vig.nn import to_official_numerics

    # The default model's ONNX graph ranks k-NN keys by another float formula (one GEMM of
    # augmented features): a neighbour tied to a few ulps may flip (this fixture has gaps of
    # 2.4e-7), within to_onnx's tolerance. The official-numerics twin exports the official
    # operation order: its ONNX graph equals it to float noise.
    model, _ = _official_model(name)
    twin = to_official_numerics(_official_model(name)[0])
    x = _fixture_input()
    for net, tolerance in ((model, 1e-3), (twin, 1e-5)):
        path = tmp_path / "model.onnx"
        torch.onnx.export(net, (x,), str(path), dynamo=True,
                          dynamic_shapes={"x": {0: Dim("batch")}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for xb in (x, x[1:]):
            out = session.run(None, {session.get_inputs()[0].name: xb.numpy()})[0]
            with torch.no_grad():
                assert _rel(torch.from_numpy(out), net(xb)) <= tolerance
