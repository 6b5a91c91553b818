"""create_model overrides: unknown names are refused up front; errors raised inside the build
(a user's conv factory, out of memory) keep their own type and message."""

import pytest
from torch_geometric.nn import EdgeConv

import pyg_vig


def test_unknown_override_names_the_valid_arguments():
    with pytest.raises(ValueError, match=r"bad override for 'pvig_mini': unknown argument\(s\) "
                                         r"'kk'; valid arguments: .*\bk\b"):
        pyg_vig.create_model("pvig_mini", kk=3)


def test_friendly_alias_still_accepted():
    model = pyg_vig.create_model("vig_mini", num_knn=5)
    assert model.blocks[0].grapher.k == 5


def test_type_error_inside_a_conv_factory_keeps_its_cause():
    def factory(in_channels, out_channels):
        return EdgeConv(nn=None, aggr="max", bogus=1)  # a bug in the user's own code

    with pytest.raises(TypeError) as e:
        pyg_vig.create_model("vig_mini", conv=factory)
    assert "bad override" not in str(e.value)
    assert "bogus" in str(e.value)
    assert any(tb.name == "factory" for tb in e.traceback)


def test_runtime_error_inside_the_build_is_not_rewritten():
    def factory(in_channels, out_channels):
        raise RuntimeError("CUDA out of memory (simulated)")

    with pytest.raises(RuntimeError, match=r"^CUDA out of memory \(simulated\)$"):
        pyg_vig.create_model("pvig_mini", conv=factory)
