"""pyg_vig.ops.rows: fused linear + activation and row-chunked node-wise inference."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pyg_vig import ops
from pyg_vig.nn import FFN
from pyg_vig.nn.linear import MultiHeadUpdate, interleave
from pyg_vig.ops import rows

FUSED = ops.fused_linear_for(torch.empty(1))


def _small_chunks(monkeypatch, elements=64):
    # Chunk anything: tiny inputs then take the chunked path.
    monkeypatch.setattr(rows, "_MIN_CHUNKED", 1)
    monkeypatch.setattr(rows, "CHUNK_ELEMENTS", elements)


@pytest.mark.parametrize("act", [nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), None,
                                 nn.Identity(), nn.SiLU()])
def test_linear_act_equals_torch(act):
    torch.manual_seed(0)
    x, w, b = torch.randn(37, 12), torch.randn(20, 12), torch.randn(20)
    ref = F.linear(x, w, b) if act is None else act(F.linear(x, w, b))
    with torch.inference_mode():
        out = ops.linear_act(x, w, b, act)
        assert torch.equal(ops.linear_act(x, w, b, act, impl="torch"), ref)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # 3-D input keeps its leading dims
    with torch.inference_mode():
        out3 = ops.linear_act(x.view(1, 37, 12), w, None, act)
    assert out3.shape == (1, 37, 20)


@pytest.mark.skipif(not FUSED, reason="this PyTorch has no oneDNN fused linear")
def test_linear_act_cpp_path_and_its_errors():
    x, w, b = torch.randn(8, 4), torch.randn(6, 4), torch.randn(6)
    with torch.no_grad():
        torch.testing.assert_close(ops.linear_act(x, w, b, nn.GELU(), impl="cpp"),
                                   F.gelu(F.linear(x, w, b)))
    # A gradient is wanted: the fused kernel has none, "auto" takes the torch path ...
    wg = w.clone().requires_grad_()
    out = ops.linear_act(x, wg, b, nn.GELU())
    out.sum().backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0
    # ... and "cpp" says why it cannot run.
    with pytest.raises(RuntimeError, match="cannot run here"):
        ops.linear_act(x, wg, b, nn.GELU(), impl="cpp")
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot run here"):
        ops.linear_act(x.double(), w.double(), b.double(), nn.GELU(), impl="cpp")
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.linear_act(x, w, b, None, impl="mkl")


def test_fused_linear_for_dispatch():
    assert not ops.fused_linear_for(torch.empty(2, dtype=torch.float64))
    assert not ops.fused_linear_for(torch.empty(2, device="meta"))


def test_feed_forward_chunked_equals_unchunked(monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(301, 16)
    w1, b1, w2, b2 = torch.randn(64, 16), torch.randn(64), torch.randn(16, 64), torch.randn(16)
    with torch.inference_mode():
        whole = ops.feed_forward(x, w1, b1, nn.GELU(), w2, b2, shortcut=x)
        _small_chunks(monkeypatch)  # 1 row per chunk of 64 hidden channels
        assert rows.chunk_rows(x, 64) == 1
        chunked = ops.feed_forward(x, w1, b1, nn.GELU(), w2, b2, shortcut=x)
        no_shortcut = ops.feed_forward(x, w1, b1, nn.GELU(), w2, b2)
    # Same maths row by row; BLAS may pick another kernel for a 1-row chunk (last-bit rounding).
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(whole, F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2) + x,
                               rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(no_shortcut, whole - x, rtol=1e-5, atol=1e-4)


def test_chunk_rows_only_in_eager_inference(monkeypatch):
    _small_chunks(monkeypatch, 1 << 10)
    x = torch.randn(50, 8)
    assert rows.chunk_rows(x, 64) is None  # grad mode: autograd keeps whole tensors
    with torch.no_grad():
        assert rows.chunk_rows(x, 64) == 16
        assert rows.chunk_rows(x.view(5, 10, 8), 64) is None  # 2-D node features only


def test_ffn_eval_chunked_equals_unfolded_ffn(monkeypatch):
    torch.manual_seed(2)
    ffn = FFN(8, 32)
    for bn in (ffn.fc1[1], ffn.fc2[1]):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    ffn.eval()
    x = torch.randn(123, 8)
    with torch.no_grad():
        ref = ffn.fc2(ffn.act(ffn.fc1(x))) + x  # LinearBN folds too: same maths, one path
        unfolded = ffn.fc2[1](ffn.fc2[0](ffn.act(ffn.fc1[1](ffn.fc1[0](x))))) + x
        whole = ffn(x)
        _small_chunks(monkeypatch)
        chunked = ffn(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, unfolded, rtol=1e-4, atol=1e-4)
    # gradients still flow in eval mode (explainers): the differentiable path is taken
    xg = x.clone().requires_grad_()
    ffn(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_multihead_update_pair_input(monkeypatch):
    torch.manual_seed(3)
    upd = MultiHeadUpdate(16, 24, heads=4)
    upd[1].running_mean.uniform_(-1, 1)
    upd.eval()
    x, m = torch.randn(77, 8), torch.randn(77, 8)
    with torch.no_grad():
        ref = upd(interleave(x, m))
        assert torch.equal(upd((x, m)), ref)
        _small_chunks(monkeypatch)
        torch.testing.assert_close(upd((x, m)), ref, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(upd(interleave(x, m)), ref, rtol=1e-5, atol=1e-4)
    # training mode (BatchNorm on batch statistics) and a lazy update accept the pair too
    upd.train()
    torch.testing.assert_close(upd((x, m)), upd(interleave(x, m)))
    lazy = MultiHeadUpdate(-1, 24, heads=4)
    assert lazy((x, m)).shape == (77, 24) and lazy.in_channels == 16


def test_autocast_keeps_the_unfused_unchunked_path(monkeypatch):
    # Under CPU autocast the FFN must compute in bfloat16 as the plain modules do (the fused
    # kernel would silently run in float32), chunked or not.
    torch.manual_seed(4)
    ffn = FFN(8, 32).eval()
    x = torch.randn(200, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.fused_linear_for(x)
        ref = ffn.fc2(ffn.act(ffn.fc1(x))) + x
        out = ffn(x)
        _small_chunks(monkeypatch)
        assert rows.chunk_rows(x, 32) is None
        chunked = ffn(x)
    assert out.dtype == ref.dtype and torch.equal(out, ref) and torch.equal(chunked, ref)
    with torch.no_grad():
        y = ops.feed_forward(x, torch.randn(32, 8), None, nn.GELU(), torch.randn(8, 32), None)
    assert y.dtype == torch.float32
