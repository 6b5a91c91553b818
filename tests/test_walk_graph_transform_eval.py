"""README's ``dropout_edge`` graph transform drops edges while training only (a new user's walk)."""

import re
from pathlib import Path

import torch
from torch_geometric.utils import dropout_edge

from pyg_vig.nn import Grapher

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_dropout_edge_transform_keeps_every_edge_in_eval():
    line = next(s for s in README.read_text().splitlines()
                if s.startswith("grapher.graph_transform = ") and "dropout_edge" in s)
    torch.manual_seed(0)
    grapher = Grapher(16, k=4)
    exec(line, {"grapher": grapher, "dropout_edge": dropout_edge})  # the README's own line
    plain = Grapher(16, k=4)
    plain.load_state_dict(grapher.state_dict())
    x, batch = torch.randn(40, 16), torch.arange(2).repeat_interleave(20)
    grapher.eval(), plain.eval()
    with torch.no_grad():
        out, ei = grapher(x, batch, return_edge_index=True)
        torch.testing.assert_close(out, plain(x, batch))  # eval: the full k-NN graph
        assert ei.size(1) == 40 * 4
        grapher.train()
        torch.manual_seed(1)
        _, ei_train = grapher(x, batch, return_edge_index=True)
    assert ei_train.size(1) < 40 * 4  # training: dropout_edge removed some edges
    assert re.search(r"training=grapher\.training", line)
