"""Lazy and tuple ``in_channels``, ``(x_src, None)`` and ``to_hetero``, as a PyG user uses them.

PyG's convs take ``in_channels=-1`` (or ``(-1, -1)``) and size their weights from the first
input, which is how :func:`torch_geometric.nn.to_hetero` models are written. Ours do the same,
keep the multi-head update, and where PyG has the same layer (``EdgeConv`` and ``GINConv`` with
our update as their ``nn``) give PyG's result on the same inputs.
"""

import copy

import pytest
import torch
import torch_geometric.nn as pyg_nn
from dense_reference import CountPaths, plain, random_graph
from torch.nn.parameter import UninitializedParameter
from torch_geometric.data import HeteroData

from pyg_vig.nn import EdgeConv, GINConv, MRConv, SAGEConv

B, N, M, C, OUT, K = 2, 12, 6, 8, 16, 4
CONVS = [MRConv, EdgeConv, GINConv, SAGEConv]


def lazy_params(module):
    return [n for n, p in module.named_parameters() if isinstance(p, UninitializedParameter)]


def randomize_norms(conv):
    with torch.no_grad():
        for m in conv.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return conv


@pytest.mark.parametrize("in_channels", [-1, (-1, -1)], ids=["int", "tuple"])
@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_lazy_init_equals_sized_conv(conv_cls, in_channels):
    torch.manual_seed(0)
    lazy = conv_cls(in_channels, OUT).eval()
    assert str(lazy) == f"{conv_cls.__name__}({in_channels}, {OUT}, heads=4)"
    assert lazy_params(lazy) or conv_cls is SAGEConv and lazy.nn1 is None
    x, _, _, edge_index = random_graph(B, N, C, K)
    out = lazy(x, edge_index)  # first call: weights sized from x (fused path)
    assert out.shape == (B * N, OUT) and not lazy_params(lazy)
    sized = conv_cls(C, OUT).eval()
    assert [p.shape for p in sized.parameters()] == [p.shape for p in lazy.parameters()]
    randomize_norms(sized).load_state_dict(randomize_norms(lazy).state_dict())
    for ei in (edge_index, plain(edge_index)):  # fused and generic path
        torch.testing.assert_close(lazy(x, ei), sized(x, ei))
    # the multi-head update is kept: grouped weights (out, in / heads)
    first = lazy.nn1 if conv_cls is SAGEConv else lazy.nn
    assert first[0].weight.shape[1] * 4 == first[0].in_channels


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_lazy_state_dict_and_deepcopy(conv_cls):
    x, _, _, edge_index = random_graph(B, N, C, K)
    lazy = conv_cls(-1, OUT)
    twin = copy.deepcopy(lazy)  # to_hetero copies modules before their first call
    # an uninitialised conv saves and loads a state dict
    assert set(conv_cls(-1, OUT).state_dict()) <= set(lazy.state_dict())
    lazy.eval()(x, edge_index)
    assert lazy_params(twin) or conv_cls is SAGEConv and twin.nn1 is None  # copy untouched
    fresh = conv_cls(-1, OUT).eval()
    fresh.load_state_dict(randomize_norms(lazy).state_dict())  # materialised by the load
    assert not lazy_params(fresh)
    torch.testing.assert_close(fresh(x, edge_index), lazy(x, edge_index))
    with pytest.raises(ValueError, match="input channels"):  # sized now: other widths fail
        lazy(torch.randn(B * N, 2 * C), edge_index)


@pytest.mark.parametrize("bipartite", [False, True])
def test_lazy_edge_conv_equals_pyg(bipartite):
    # PyG's EdgeConv(nn) computes nn([x_i, x_j - x_i]) with max: ours with our update as nn.
    ours = EdgeConv(-1, OUT).eval()
    theirs = pyg_nn.EdgeConv(ours.nn, aggr="max")  # shares the still-lazy update
    x, y, _, edge_index = random_graph(B, N, C, K, M=M if bipartite else None)
    inputs = (y, x) if bipartite else x
    expected = theirs(inputs, plain(edge_index))  # PyG's first call sizes the shared weights
    assert not lazy_params(ours)
    randomize_norms(ours)
    expected = theirs(inputs, plain(edge_index))
    for ei in (edge_index, plain(edge_index)):
        torch.testing.assert_close(ours(inputs, ei), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggr", ["add", "mean", "max"])
@pytest.mark.parametrize("targets", ["self", "pair", "none"])
def test_lazy_gin_conv_equals_pyg(targets, aggr):
    # PyG's GINConv(nn, train_eps=True); x=(x_src, None) drops the root term in both.
    ours = GINConv((-1, -1), OUT, eps=0.25, aggr=aggr).eval()
    theirs = pyg_nn.GINConv(ours.nn, eps=0.25, train_eps=True, aggr=aggr)
    x, y, _, edge_index = random_graph(B, N, C, K, M=None if targets == "self" else M)
    inputs = {"self": x, "pair": (y, x), "none": (y, None)}[targets]
    theirs(inputs, edge_index)  # sizes the shared update
    randomize_norms(ours)
    expected = theirs(inputs, edge_index)  # PyG: generic path on the EdgeIndex
    assert expected.shape == (B * N, OUT)
    # (x_src, None) with a plain tensor has no target count (PyG assumes |targets| = |sources|
    # then, and fails on this graph as ours does); the EdgeIndex carries it
    for ei in (edge_index,) if targets == "none" else (edge_index, plain(edge_index)):
        with CountPaths(ours) as paths:
            out = ours(inputs, ei)
        assert paths.fused == (ei is edge_index)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_sage_conv_tuple_channels():
    # SAGE maps sources and targets separately, so they may differ in width (as PyG's SAGEConv).
    x_src, x_dst = torch.randn(B * M, 12), torch.randn(B * N, C)
    _, _, _, edge_index = random_graph(B, N, 12, K, M=M)  # bipartite graph M -> N per image
    sized = SAGEConv((12, C), OUT).eval()
    assert str(sized) == f"SAGEConv((12, {C}), {OUT}, heads=4)"
    assert sized.nn1[0].in_channels == 12 and sized.nn2[0].in_channels == C + 12
    lazy = SAGEConv((-1, -1), OUT).eval()
    out = lazy((x_src, x_dst), edge_index)
    sized.load_state_dict(randomize_norms(lazy).state_dict())
    assert out.shape == (B * N, OUT)
    torch.testing.assert_close(lazy((x_src, x_dst), edge_index), sized((x_src, x_dst), edge_index))
    torch.testing.assert_close(sized((x_src, x_dst), plain(edge_index)),
                               sized((x_src, x_dst), edge_index), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv_cls", [MRConv, EdgeConv, GINConv], ids=lambda c: c.__name__)
def test_channel_mismatch_is_a_clear_error(conv_cls):
    # x_j - x_i (and (1 + eps) x_i + sum x_j) need one width on both sides.
    with pytest.raises(ValueError, match=r"same channels.*in_channels=\(8, 16\)"):
        conv_cls((8, 16), OUT)
    x, y, _, edge_index = random_graph(B, N, C, K, M=M)
    with pytest.raises(ValueError, match="same number of channels; got 4 and 8"):
        conv_cls(-1, OUT)((y[:, :4], x), edge_index)
    with pytest.raises(TypeError, match="pair of ints"):
        conv_cls((8, 8, 8), OUT)


@pytest.mark.parametrize("conv_cls", [MRConv, EdgeConv, SAGEConv], ids=lambda c: c.__name__)
def test_missing_targets_is_a_clear_error(conv_cls):
    x, y, _, edge_index = random_graph(B, N, C, K, M=M)
    with pytest.raises(ValueError, match=r"x=\(x_src, None\) is not supported"):
        conv_cls(C, OUT)((y, None), edge_index)


def hetero_data():
    torch.manual_seed(0)
    data = HeteroData()
    data["patch"].x = torch.randn(10, C)
    data["object"].x = torch.randn(6, 12)
    data["patch", "near", "patch"].edge_index = torch.randint(0, 10, (2, 30))
    data["patch", "in", "object"].edge_index = torch.stack(
        [torch.randint(0, 10, (20,)), torch.randint(0, 6, (20,))])
    data["object", "has", "patch"].edge_index = torch.stack(
        [torch.randint(0, 6, (20,)), torch.randint(0, 10, (20,))])
    return data


class _Net(torch.nn.Module):
    def __init__(self, conv_cls, project):
        super().__init__()
        # MR/Edge/GIN combine x_i and x_j channel by channel: project every type to one width
        self.lin = pyg_nn.Linear(-1, 16) if project else torch.nn.Identity()
        self.conv1 = conv_cls((-1, -1), 32)
        self.conv2 = conv_cls(-1, 8, heads=2)

    def forward(self, x, edge_index):
        x = self.conv1(self.lin(x), edge_index)
        return self.conv2(x, edge_index)


@pytest.mark.parametrize("conv_cls", CONVS, ids=lambda c: c.__name__)
def test_to_hetero(conv_cls):
    data = hetero_data()
    model = pyg_nn.to_hetero(_Net(conv_cls, project=conv_cls is not SAGEConv), data.metadata(),
                             aggr="sum")
    with torch.no_grad():  # the usual lazy initialisation
        model(data.x_dict, data.edge_index_dict)
    assert not lazy_params(model)
    out = model(data.x_dict, data.edge_index_dict)
    assert {k: v.shape for k, v in out.items()} == {"patch": (10, 8), "object": (6, 8)}
    sum(v.square().sum() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # one conv per edge type, each sized by its own source and target types
    convs = model.conv1
    assert len(convs) == 3
    if conv_cls is SAGEConv:
        assert convs["object__has__patch"].nn1[0].in_channels == 12
        assert convs["object__has__patch"].nn2[0].in_channels == C + 12
        assert convs["patch__in__object"].nn2[0].in_channels == 12 + C
    # the "object" output is the conv of its only incoming edge type (aggr="sum" of one term)
    model.eval()
    with torch.no_grad():
        out = model(data.x_dict, data.edge_index_dict)
        x = {k: model.lin[k](v) for k, v in data.x_dict.items()} if hasattr(
            model.lin, "keys") else data.x_dict
        h = {"object": convs["patch__in__object"](
            (x["patch"], x["object"]), data["patch", "in", "object"].edge_index)}
        h["patch"] = sum(convs[key]((x[src], x["patch"]), data[src, rel, "patch"].edge_index)
                         for key, src, rel in (("patch__near__patch", "patch", "near"),
                                               ("object__has__patch", "object", "has")))
        expected = model.conv2["patch__in__object"](
            (h["patch"], h["object"]), data["patch", "in", "object"].edge_index)
    torch.testing.assert_close(out["object"], expected)
