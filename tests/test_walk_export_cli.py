"""``pyg-vig export``: the file it writes can be read back by its name (a new user's walk)."""

import pytest

from pyg_vig.cli import main


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("pyg-vig: error: ") and match in err[-1], err[-1]


@pytest.mark.parametrize("argv, match", [
    (["--format", "pt2", "-o", "m.onnx"], "--format pt2 writes a .pt2 file"),
    (["--format", "onnx", "-o", "m.pt2"], "name it m.onnx"),
    (["-o", "model.safetensors"], "ends in .safetensors"),
    (["-o", "model"], "has no suffix"),
])  # fmt: skip
def test_output_named_for_another_format_is_refused_before_work(argv, match, capsys, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(capsys, ["export", "vig_mini", *argv], match)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


@pytest.mark.parametrize("name, written", [("tiny.pt2", "pt2"), ("tiny.onnx", "onnx")])
def test_format_follows_the_output_suffix(name, written, capsys, tmp_path, monkeypatch):
    import pyg_vig.export

    calls = []  # record the writer the CLI picks instead of running a slow export
    monkeypatch.setattr(pyg_vig.export, "save_program",
                        lambda model, out, x, **kw: calls.append(("pt2", out)))
    monkeypatch.setattr(pyg_vig.export, "to_onnx",
                        lambda model, out, x, **kw: calls.append(("onnx", out)))
    out = tmp_path / name  # no --format
    assert main(["export", "vig_mini", "-o", str(out), "--batch-size", "1"]) == 0
    assert calls == [(written, out)]
    assert f"({written}, dynamic batch" in capsys.readouterr().out
