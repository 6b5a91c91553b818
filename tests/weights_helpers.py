"""Test helpers: official-layout weight files and a local HTTP server (127.0.0.1 only).

The released ImageNet files cannot be fetched here, so the tests build files with the same
layout (official key names and shapes, see ``tests/fixtures/official/*_keys.pt``) from a model
with random weights, and serve them from a local ``http.server``.
"""

from __future__ import annotations

import http.server
import math
import threading
from pathlib import Path

import torch

import pyg_vig
from pyg_vig.models.official import official_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights at the scale of trained ones (logits of order 1, not 1e7 as a fresh deep
    model gives): fan-in scaled matrices, BatchNorm statistics near (0, 1), and the last
    BatchNorm of each residual branch (``fc2.1``) damped, so that exported graphs and eager
    runs agree on the k-NN neighbours instead of flipping near-ties of huge activations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(0.5 + 0.5 * r.abs())
            elif name.endswith("running_mean"):
                t.copy_(0.1 * r)
            elif name == "pos_embed":
                t.copy_(0.02 * r)
            elif t.dim() >= 2:
                t.copy_(r / math.sqrt(t[0].numel()))  # fan-in scaling
            elif name.endswith("fc2.1.weight"):
                t.copy_(0.2 + 0.02 * r)  # end of a residual branch
            elif name.endswith(".weight"):
                t.copy_(1 + 0.1 * r)  # norm weights
            else:
                t.copy_(0.1 * r)  # biases, GIN eps
    return model.eval()


def official_weights(name: str, seed: int = 0, **kwargs) -> tuple[torch.nn.Module, dict]:
    """A randomised model and its weights in the official layout (with the frozen
    ``relative_pos`` tables of the pyramid models, as the released files hold them)."""
    model = randomised(pyg_vig.create_model(name, **kwargs), seed)
    sd = official_state_dict(model)
    if hasattr(model, "stages"):  # official files also store the frozen tables
        i = 0
        grid = model.img_size // model.stem_stride
        for s, stage in enumerate(model.stages):
            i += stage.downsample is not None
            n = (grid // 2**s) ** 2
            r = model.reductions[s]
            for _ in stage.blocks:
                sd[f"backbone.{i}.0.relative_pos"] = torch.zeros(1, n, n // (r * r))
                i += 1
    return model, sd


def save_official(path: Path, name: str, seed: int = 0, wrap: str | None = None,
                  **kwargs) -> torch.nn.Module:
    """Write an official-layout file for ``name``; returns the model holding those weights."""
    model, sd = official_weights(name, seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrap: sd} if wrap else sd, path)
    return model


class WeightsServer:
    """Serves ``files`` (``{'/path': bytes}``) on 127.0.0.1; ``truncate`` paths send half the
    bytes under the full ``Content-Length`` and drop the connection."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
