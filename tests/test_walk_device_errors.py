"""A device the machine lacks, or that torch does not know, is one error line, not a traceback."""

import pytest
import torch

from pyg_vig.cli import main
from pyg_vig.inference import resolve_device


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it():
    with pytest.raises(ValueError, match="CUDA is not available here; use --device cpu"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("command", [["predict", "--model", "vig_mini", "x.png"],
                                     ["eval", "--model", "vig_mini", "--data", "nowhere"],
                                     ["graph", "vig_mini", "x.png"]])
def test_cli_reports_a_bad_device_in_one_line(command, capsys):
    assert main([*command, "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("pyg-vig: error: unknown device 'tpu'")
