"""The library on every available device (the ``device`` fixture: cpu, and cuda with a GPU).

Each test builds its inputs and modules on the CPU, runs a copy on ``device`` and compares. On a
CPU-only machine the comparisons are CPU against CPU, which keeps the tests themselves exercised;
``benchmarks/gpu.sh`` runs their CUDA cases (``pytest -m cuda``) on a GPU machine.

Near ties: two devices sum floats in a different order, so a k-NN neighbour that is tied with
another to within rounding may flip. The graph tests accept a different neighbour only where
its float64 distance equals the CPU one to 1e-5; the layer tests use graphs built once on the
CPU, and the whole-model comparison runs in float64, where rounding flips nothing.
"""

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import pyg_vig
from pyg_vig.data import GridLayout
from pyg_vig.nn import EdgeConv, GINConv, Grapher, MRConv, SAGEConv
from pyg_vig.nn import knn_graph as pyg_knn_graph

C = 16
TOL = dict(atol=1e-4, rtol=1e-4)
MODELS = ["vig_mini", "pvig_mini"]

# ViG's graph (normalised features, self-loops); PyG's defaults are tested in test_knn_pyg.py
knn_graph = partial(pyg_knn_graph, loop=True, normalize=True)


def plain(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor (``knn_graph`` may return a torch_geometric ``EdgeIndex``)."""
    t = t.detach().cpu()
    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


def knn_distances(edge_index, x, y=None, bias=None, n=None, m=None):
    """float64 distance of every edge, as ``knn_graph`` ranks them (normalised features)."""
    src, dst = plain(edge_index)
    xq = F.normalize(x.detach().cpu().double(), dim=-1)
    xk = xq if y is None else F.normalize(y.detach().cpu().double(), dim=-1)
    d = (xq[dst] - xk[src]).pow(2).sum(-1)
    if bias is not None:
        d = d + bias.double().cpu()[dst % n, src % m]
    return d


def assert_same_graph(on_device, on_cpu, k, **dist_kwargs):
    """Equal edges, except where a neighbour is tied with the CPU's to within 1e-5."""
    a, b = plain(on_device), plain(on_cpu)
    assert a.shape == b.shape
    assert torch.equal(a[1], b[1])  # same targets, k per target, sorted
    d_dev = knn_distances(a, **dist_kwargs).view(-1, k)
    d_cpu = knn_distances(b, **dist_kwargs).view(-1, k)
    torch.testing.assert_close(d_dev, d_cpu, atol=1e-5, rtol=0)  # rank by rank
    assert (a == b).all(0).double().mean() >= 0.99  # and ties are rare


def randomize_bn(module):
    """Non-trivial BatchNorm statistics, so that eval outputs are not a near identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return module


def run_both(module, device, *inputs, train=True):
    """Forward (and backward with ``train``) of ``module`` on the CPU and of a copy on ``device``.

    Returns ``[(output, input grads, parameter grads)]`` for the CPU and for the device, all on
    the CPU. Tensor inputs that are floating point get gradients; others (edge indices, batch
    vectors, layouts) are passed as they are.
    """
    results = []
    for dev in (torch.device("cpu"), device):
        m = copy.deepcopy(module).to(dev).train(train)
        args = []
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t = t.to(dev)
                if t.is_floating_point() and train:
                    t = t.clone().requires_grad_()
            elif isinstance(t, tuple):
                t = tuple(u.to(dev).clone().requires_grad_(train) for u in t)
            args.append(t)
        out = m(*args)
        grads_in, grads_p = [], []
        if train:
            # a fixed random projection, so every output element gets its own gradient
            w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(dev)
            (out * w).sum().backward()
            leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            leaves += [u for a in args if isinstance(a, tuple) for u in a]
            grads_in = [t.grad.cpu() for t in leaves]
            grads_p = [p.grad.cpu() for p in m.parameters() if p.grad is not None]
        results.append((out.detach().cpu(), grads_in, grads_p))
    return results


def assert_match(results):
    (out_c, gin_c, gp_c), (out_d, gin_d, gp_d) = results
    torch.testing.assert_close(out_d, out_c, **TOL)
    assert len(gin_d) == len(gin_c) and len(gp_d) == len(gp_c)
    for a, b in zip(gin_d + gp_d, gin_c + gp_c, strict=True):
        torch.testing.assert_close(a, b, **TOL)


# --------------------------------------------------------------------------- k-NN graph
def test_knn_graph_matches_cpu(device):
    B, n, k = 3, 49, 9
    x = torch.randn(B * n, C)
    batch = torch.arange(B).repeat_interleave(n)
    on_cpu = knn_graph(x, k, batch, dilation=2)
    on_device = knn_graph(x.to(device), k, batch.to(device), dilation=2)
    assert on_device.device.type == device.type
    assert_same_graph(on_device, on_cpu, k, x=x)


def test_knn_graph_bipartite_with_bias_matches_cpu(device):
    B, n, m, k = 2, 64, 16, 4
    x, y = torch.randn(B * n, C), torch.randn(B * m, C)
    batch = torch.arange(B).repeat_interleave(n)
    batch_y = torch.arange(B).repeat_interleave(m)
    bias = 0.1 * torch.randn(n, m)
    on_cpu = knn_graph(x, k, batch, y=y, batch_y=batch_y, bias=bias)
    on_device = knn_graph(x.to(device), k, batch.to(device), y=y.to(device),
                          batch_y=batch_y.to(device), bias=bias.to(device))
    assert_same_graph(on_device, on_cpu, k, x=x, y=y, bias=bias, n=n, m=m)


# --------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("conv_cls", [MRConv, EdgeConv, GINConv, SAGEConv],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("graph", ["knn", "irregular"])
def test_conv_matches_cpu(device, conv_cls, graph):
    """Forward and backward of each conv: the k-NN graph (fused path) and an irregular graph
    (PyG's generic message + scatter path) give the CPU result on the device."""
    B, n, k = 2, 49, 9
    x = torch.randn(B * n, C)
    edge_index = knn_graph(x, k, torch.arange(B).repeat_interleave(n))
    if graph == "irregular":  # every fifth edge dropped: degrees 7 to 9, not k-regular
        ei = plain(edge_index)
        edge_index = ei[:, torch.arange(ei.size(1)) % 5 != 0]
    conv = randomize_bn(conv_cls(C, 2 * C))
    for train in (True, False):
        assert_match(run_both(conv, device, x, edge_index, train=train))


def test_conv_bipartite_matches_cpu(device):
    B, n, m, k = 2, 36, 9, 4
    x, y = torch.randn(B * n, C), torch.randn(B * m, C)
    edge_index = knn_graph(x, k, torch.arange(B).repeat_interleave(n), y=y,
                           batch_y=torch.arange(B).repeat_interleave(m))
    conv = randomize_bn(MRConv(C, 2 * C))
    assert_match(run_both(conv, device, (y, x), edge_index))


# --------------------------------------------------------------------------- Grapher
@pytest.mark.parametrize("conv", ["mr", "edge", "gin", "sage"])
def test_grapher_matches_cpu(device, conv):
    B, n = 2, 16  # small graphs: well-separated neighbours, so no rounding flips
    x = torch.randn(B * n, C)
    batch = torch.arange(B).repeat_interleave(n)
    grapher = randomize_bn(Grapher(C, k=4, dilation=2, conv=conv))
    for train in (True, False):
        assert_match(run_both(grapher, device, x, batch, train=train))


def test_pyramid_grapher_matches_cpu(device):
    """Pooled keys (a bipartite graph) and the official relative-position bias."""
    layout = GridLayout.uniform_grid(2, 4, 4)
    x = torch.randn(layout.num_nodes, C)
    grapher = randomize_bn(Grapher(C, k=2, reduction=2, relative_pos="official"))

    class WithLayout(torch.nn.Module):  # passes the layout as a keyword argument
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, x):
            return self.g(x, layout=layout)

    for train in (True, False):
        assert_match(run_both(WithLayout(grapher), device, x, train=train))


# --------------------------------------------------------------------------- models
def _images(name, batch=2, dtype=torch.float32):
    chans, h, w = pyg_vig.models.default_cfgs[name]["input_size"]
    return torch.randn(batch, chans, h, w, dtype=dtype)


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_backward(device, name):
    model = pyg_vig.create_model(name, num_classes=10).to(device).train()
    x = _images(name).to(device)
    out = model(x)
    assert out.shape == (2, 10) and out.device.type == device.type
    assert torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient on {device}: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_model_eval_matches_cpu_float64(device, name):
    """Eval logits on the device equal the CPU ones; float64, so no k-NN neighbour flips."""
    model = randomize_bn(pyg_vig.create_model(name, num_classes=10)).double().eval()
    x = _images(name, dtype=torch.float64)
    with torch.inference_mode():
        ref = model(x)
        out = copy.deepcopy(model).to(device)(x.to(device)).cpu()
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_has_no_host_sync(device, name):
    """No ``.item()`` / ``.tolist()`` / ``bool(tensor)`` on the eval path: CUDA would stall."""
    if device.type != "cuda":
        pytest.skip("torch.cuda.set_sync_debug_mode needs a CUDA device "
                    "(test_eval_forward_is_sync_free_on_meta checks the same on the CPU)")
    model = pyg_vig.create_model(name).to(device).eval()
    x = _images(name).to(device)
    with torch.inference_mode():
        model(x)  # the first call builds and caches the position tables
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape[0] == 2


class HostToDevice(TorchDispatchMode):
    """Records the ops that move CPU tensor data into a ``meta`` tensor (on a GPU: a blocking
    host-to-device copy, which synchronises like a device-to-host read)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = tree_leaves((args, kwargs))
        host = any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0
                   for t in leaves)
        if host and any(isinstance(t, torch.Tensor) and t.is_meta for t in tree_leaves(out)):
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_is_sync_free_on_meta(name):
    """The same property on any machine: the forward runs on the ``meta`` device, whose tensors
    have shapes but no data, so a host read of tensor values (``.item()``, ``.tolist()``,
    ``bool(t)``, data-dependent shapes) raises; and after a first call (which may build cached
    tables on the CPU) no CPU tensor is copied to the device."""
    model = pyg_vig.create_model(name).eval().to("meta")
    x = _images(name).to("meta")
    with torch.inference_mode():
        model(x)
        with HostToDevice() as mode:
            out = model(x)
    assert out.device.type == "meta" and out.shape[0] == 2
    assert not mode.ops, f"host-to-device copies in the eval forward: {mode.ops}"
