"""ONNX has no pyg_vig operators: under torch.onnx.export, impl="auto" exports the torch path."""

import pytest
import torch

from pyg_vig import ops

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


class _KNNAggregate(torch.nn.Module):
    def forward(self, x):  # (B, n, C) -> (B * n, C): max over each node's 4 nearest nodes
        B, n, C = x.shape
        dot = torch.bmm(x, x.transpose(1, 2))
        q_sq = (x * x).sum(-1, keepdim=True)
        idx = ops.knn_select(dot, q_sq, q_sq.transpose(1, 2), None, 4)  # (B, n, 4)
        src = (idx + (torch.arange(B) * n).view(B, 1, 1)).reshape(-1)
        ptr = torch.arange(B * n + 1) * 4
        return ops.gather_segment_reduce(x.reshape(B * n, C), src, ptr, "max")


def test_onnx_export_uses_torch_path(tmp_path):
    model = _KNNAggregate().eval()
    x = torch.randn(2, 10, 6)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x))
