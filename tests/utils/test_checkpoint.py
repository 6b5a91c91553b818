import os

import pytest
import torch

from pyg_vig.utils.checkpoint import atomic_save, load_state_dict_file, save_safetensors


def _sd():
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    return m.state_dict()


def test_safetensors_round_trip_with_metadata(tmp_path):
    sd = _sd()
    path = save_safetensors(
        tmp_path / "m.safetensors", sd, {"model": "vig_mini", "num_classes": "10"}
    )
    out, meta = load_state_dict_file(path)
    assert meta == {"model": "vig_mini", "num_classes": "10"}
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)
    with pytest.raises(TypeError, match="must be str"):
        save_safetensors(tmp_path / "x.safetensors", sd, {"num_classes": 10})


def test_shared_tensors_are_saved(tmp_path):
    w = torch.randn(4, 4)
    out, _ = load_state_dict_file(save_safetensors(tmp_path / "t.safetensors", {"a": w, "b": w}))
    assert torch.equal(out["a"], out["b"])


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "state_dict_ema"])
def test_torch_files_are_unwrapped(tmp_path, wrapper):
    sd = _sd()
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 7}
    out, meta = load_state_dict_file(atomic_save(obj, tmp_path / "ckpt.pth"))
    assert out.keys() == sd.keys()
    assert meta == ({} if wrapper is None else {"epoch": 7})


def test_ema_preferred_and_module_prefix_stripped(tmp_path):
    sd = {"module.w": torch.zeros(2)}
    ema = {"module.w": torch.ones(2)}
    out, _ = load_state_dict_file(
        atomic_save({"model": sd, "state_dict_ema": ema}, tmp_path / "c.pt")
    )
    assert list(out) == ["w"] and torch.equal(out["w"], torch.ones(2))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_state_dict_file(tmp_path / "nothing.pth")
    good = atomic_save(_sd(), tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt or unreadable checkpoint .*cut.pth"):
        load_state_dict_file(tmp_path / "cut.pth")
    st = save_safetensors(tmp_path / "good.safetensors", _sd()).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[:50])
    with pytest.raises(ValueError, match="corrupt or unreadable safetensors file"):
        load_state_dict_file(tmp_path / "cut.safetensors")
    atomic_save({"not": "tensors"}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_state_dict_file(tmp_path / "odd.pth")


def test_atomic_save_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    atomic_save(b"old content", p)
    atomic_save(lambda f: f.write(b"new"), p)
    assert p.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.bin"]

    def failing_writer(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_save(failing_writer, p)
    assert p.read_bytes() == b"new"  # the old file survives a failed write
    assert os.listdir(tmp_path) == ["f.bin"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old
