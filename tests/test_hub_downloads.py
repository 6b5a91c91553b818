"""Downloads and checkpoint files: stale ``.partial`` files after ``kill -9``, what is deleted,
timm's ``CheckpointSaver`` files (``argparse.Namespace``), EMA vs plain weights. Every download
comes from an HTTP server on 127.0.0.1 that the test starts."""

import argparse
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import pyg_vig
from pyg_vig.hub import _remove_stale_partials, cached_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weights_helpers import WeightsServer, official_weights  # noqa: E402

X28 = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))


def _logits(model):
    with torch.no_grad():
        return model.eval()(X28)


class _StallingServer:
    """Sends half of ``data`` under the full Content-Length, then stalls (for kill -9)."""

    def __init__(self, data: bytes):
        self.started = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                outer.started.set()
                time.sleep(30)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w/w.pth"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_kill_9_mid_download_leaves_no_partial_for_good(torch_home, tmp_path):
    _, sd = official_weights("vig_mini")
    torch.save(sd, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    stalling = _StallingServer(data)
    env = dict(os.environ, TORCH_HOME=str(torch_home))
    code = ("import pyg_vig.hub as h, sys; h.download_cached_file(sys.argv[1], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, stalling.url], env=env,
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        folder = torch_home / "hub" / "checkpoints"
        deadline = time.time() + 120
        while time.time() < deadline and not list(folder.glob("w.pth.*.partial")):
            time.sleep(0.2)
        partials = list(folder.glob("w.pth.*.partial"))
        assert len(partials) == 1 and f".{proc.pid}." in partials[0].name
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        stalling.stop()
    assert partials[0].exists()  # kill -9 runs no clean-up ...
    server = WeightsServer()
    try:
        server.files["/w/w.pth"] = data
        model = pyg_vig.create_model("vig_mini", pretrained=True,
                                     pretrained_cfg_overlay=dict(url=server.url("/w/w.pth")))
    finally:
        server.stop()
    assert sorted(p.name for p in folder.iterdir()) == ["w.pth"]  # ... the next download does
    assert model.pretrained_cfg["url"].endswith("/w/w.pth")


def test_partial_of_a_running_download_is_kept(torch_home):
    path = cached_path("http://127.0.0.1:1/w/x.pth")
    path.parent.mkdir(parents=True)
    mine = path.with_name(f"x.pth.{os.getpid()}.abcd.partial")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = path.with_name(f"x.pth.{dead}.abcd.partial")
    other = path.with_name(f"y.pth.{dead}.abcd.partial")  # another file's: not ours to judge
    for p in (mine, stale, other):
        p.write_bytes(b"half")
    assert _remove_stale_partials(path) == [stale]
    assert mine.exists() and other.exists() and not stale.exists()


def test_readable_file_without_weights_is_not_deleted(torch_home):
    server = WeightsServer()
    try:
        import io

        buf = io.BytesIO()
        torch.save({"epoch": 3, "notes": "no weights here"}, buf)
        server.files["/w/odd.pth"] = buf.getvalue()
        with pytest.raises(ValueError, match="does not hold a state dict"):
            pyg_vig.create_model("vig_mini", pretrained=True,
                                 pretrained_cfg_overlay=dict(url=server.url("/w/odd.pth")))
    finally:
        server.stop()
    assert (torch_home / "hub" / "checkpoints" / "odd.pth").is_file()


def _timm_saver_file(path: Path):
    """What timm's CheckpointSaver writes: args as argparse.Namespace, EMA beside the weights."""
    plain, sd = official_weights("vig_mini", seed=1)
    ema, sd_ema = official_weights("vig_mini", seed=2)
    torch.save({"epoch": 7, "arch": "vig_mini", "state_dict": sd, "state_dict_ema": sd_ema,
                "args": argparse.Namespace(model="vig_mini", lr=0.001), "version": 2}, path)
    return plain, ema


def test_timm_checkpoint_saver_file_downloads_and_loads_ema_first(torch_home, tmp_path):
    plain, ema = _timm_saver_file(tmp_path / "ckpt.pth.tar")
    server = WeightsServer()
    try:
        server.files["/w/ckpt.pth.tar"] = (tmp_path / "ckpt.pth.tar").read_bytes()
        model = pyg_vig.create_model("vig_mini", pretrained=True,
                                     pretrained_cfg_overlay=dict(url=server.url("/w/ckpt.pth.tar")))
    finally:
        server.stop()
    torch.testing.assert_close(_logits(model), _logits(ema), rtol=0, atol=0)
    assert (torch_home / "hub" / "checkpoints" / "ckpt.pth.tar").is_file()


def test_use_ema_chooses_as_timms_load_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    plain, ema = _timm_saver_file(tmp_path / "ckpt.pth.tar")
    for use_ema, expected in ((True, ema), (False, plain)):
        ours = pyg_vig.load_checkpoint(pyg_vig.create_model("vig_mini"), tmp_path / "ckpt.pth.tar",
                                       use_ema=use_ema)
        torch.testing.assert_close(_logits(ours), _logits(expected), rtol=0, atol=0)
        # timm's own choice of entry, on the same file
        sd = timm.models.load_state_dict(str(tmp_path / "ckpt.pth.tar"), use_ema=use_ema,
                                         weights_only=False)
        key = next(iter(sd))
        raw = torch.load(tmp_path / "ckpt.pth.tar", weights_only=False)
        chosen = "state_dict_ema" if use_ema else "state_dict"
        assert torch.equal(sd[key], raw[chosen][key])
