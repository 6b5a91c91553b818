"""Pretrained weights: download through ``torch.hub``, convert, load (timm's ``load_pretrained``).

.. code-block:: python

    from pyg_vig.hub import list_pretrained, get_pretrained_cfg

    list_pretrained()                       # ['pvig_b_224_gelu.in1k', ..., 'vig_ti_224_gelu.in1k']
    get_pretrained_cfg("pvig_s")["url"]     # the release file create_model(pretrained=True) fetches

Files are cached under ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), downloaded to a
temporary ``<name>.<pid>.<id>.partial`` file that is renamed only when complete (a partial
file whose process is gone, e.g. after ``kill -9``, is deleted by the next download), read with
``torch.load(weights_only=True)`` (or safetensors), converted by
:func:`~pyg_vig.models.official.checkpoint_filter_fn` and loaded strictly. A second call finds
the file in the cache and needs no network.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from pyg_vig.models._registry import get_pretrained_cfg, list_pretrained

__all__ = ["WeightsDownloadError", "cache_dir", "cached_path", "download_cached_file",
           "get_pretrained_cfg", "list_pretrained", "load_pretrained"]

_logger = logging.getLogger(__name__)

# Seconds without data before a download gives up (urlopen itself has no timeout).
DOWNLOAD_TIMEOUT = 60.0


class WeightsDownloadError(OSError):
    """The weights could not be fetched or the fetched file is unusable (one clear message)."""


def cache_dir() -> Path:
    """Where downloaded weights live: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_name(url: str) -> str:
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"cannot derive a file name from the URL {url!r}")
    return name


def cached_path(url: str) -> Path:
    """The cache file that ``url`` downloads to (it may not exist yet)."""
    return cache_dir() / _file_name(url)


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _manual_route(url: str, path: Path) -> str:
    return (f"Without internet access, download {url} by hand and pass the file: "
            f"create_model(..., checkpoint='{path.name}') (or pretrained=True with "
            f"pretrained_cfg_overlay=dict(file='{path.name}')), or copy it to {path}")


def download_cached_file(url: str, progress: bool = True) -> tuple[Path, bool]:
    """Download ``url`` into the cache unless it is there already.

    Returns:
        (Path, bool): the cached file and whether this call downloaded it.

    Raises:
        WeightsDownloadError: no network, an HTTP error (404, ...), or an interrupted transfer;
            the message names the URL and the manual route.
    """
    path = cached_path(url)
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    # stderr, so that `pyg-vig predict --json` keeps stdout clean
    print(f'Downloading "{url}" to {path}', file=sys.stderr, flush=True)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            _download(url, path, progress)
    except http.client.IncompleteRead as e:
        raise WeightsDownloadError(
            f"the download of {url} was cut short"
            f"{'' if e.expected is None else f' ({e.expected} bytes missing)'}; nothing was "
            f"cached, try again. {_manual_route(url, path)}"
        ) from None
    except urllib.error.HTTPError as e:
        raise WeightsDownloadError(
            f"cannot download {url}: HTTP {e.code} {e.reason}. {_manual_route(url, path)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsDownloadError(
            f"cannot download {url} ({type(e).__name__}: {reason}). {_manual_route(url, path)}"
        ) from None
    return path, True


def _partial_name(path: Path) -> Path:
    # the pid tells a later call whether the writer is still alive (see _remove_stale_partials)
    return path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale_partials(path: Path) -> list[Path]:
    """Delete ``<name>.<pid>.<id>.partial`` files left by dead downloads (``kill -9``) →
    the removed paths. A partial file of a process that still runs is left alone.
    """
    removed = []
    for p in path.parent.glob(f"{path.name}.*.partial"):
        pid = p.name[len(path.name) + 1:].split(".")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _download(url: str, path: Path, progress: bool) -> None:
    """Stream ``url`` into a pid-named ``.partial`` file, renamed to ``path`` only when complete."""
    tmp = _partial_name(path)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "pyg_vig"})
        with urllib.request.urlopen(req) as response, open(tmp, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = None
            if progress and total:
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr)
                except ImportError:
                    bar = None
            done = 0
            try:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    done += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and done != total:
                raise http.client.IncompleteRead(b"", total - done)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _head_size(state_dict: dict[str, Tensor]) -> int | None:
    for key in ("prediction.4.weight", "head.out.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return None


def _adapt_in_chans(weight: Tensor, in_chans: int) -> Tensor:
    """First-conv weights for ``in_chans`` inputs from RGB weights (timm's ``adapt_input_conv``)."""
    c = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def load_pretrained(model: nn.Module, pretrained_cfg: dict | None = None, *,
                    num_classes_given: bool = False, progress: bool = True,
                    filter_fn: Callable | None = None) -> nn.Module:
    """Load the weights ``pretrained_cfg`` points to (``file`` or ``url``) into ``model``.

    * A classifier of another size than the weights' is either rebuilt for the weights
      (``num_classes_given=False``: the caller did not ask for a class count) or kept freshly
      initialised (``num_classes_given=True``, fine-tuning); both cases are logged.
    * ``filter_fn(state_dict, model)`` converts the file's keys (default:
      :func:`~pyg_vig.models.official.convert_state_dict`, official or our layout).
    * RGB stem weights are adapted to a model with another ``in_chans``.
    * A downloaded file that cannot be read (truncated, corrupt) is deleted from the cache; a
      readable one that holds no usable weights is kept and the error says why.

    Raises:
        ValueError: the configuration names no weights, or they do not fit the model.
        WeightsDownloadError: the download failed or gave an unusable file.
    """
    from pyg_vig.models.official import check_state_dict_keys, convert_state_dict
    from pyg_vig.utils.checkpoint import UnreadableCheckpointError, load_state_dict_file

    cfg = dict(pretrained_cfg or getattr(model, "pretrained_cfg", None) or {})
    name = cfg.get("name") or cfg.get("architecture") or type(model).__name__
    file, url = cfg.get("file"), cfg.get("url")
    if file:
        state_dict, _ = load_state_dict_file(file)
        source = str(file)
    elif url:
        path, fresh = download_cached_file(url, progress=progress)
        try:
            state_dict, _ = load_state_dict_file(path)
        except UnreadableCheckpointError as e:
            # only a file that cannot be read at all is deleted; one that reads but holds
            # something else stays, and the error says what it holds
            if fresh:
                path.unlink(missing_ok=True)
                raise WeightsDownloadError(
                    f"the file downloaded from {url} is corrupt or truncated ({e}); it was "
                    f"removed from the cache, try again. {_manual_route(url, path)}"
                ) from None
            raise WeightsDownloadError(
                f"the cached weights {path} are corrupt or truncated ({e}); delete the file to "
                f"download it again. {_manual_route(url, path)}"
            ) from None
        source = url
    else:
        raise ValueError(
            f"no pretrained weights are registered for {name}; pass checkpoint=<file> or "
            "pretrained_cfg_overlay=dict(file=... or url=...)"
        )
    head = getattr(getattr(model, "head", None), "out", None)
    ours = int(head.out_features) if isinstance(head, nn.Linear) else 0
    theirs = _head_size(state_dict)
    drop_head = False
    if theirs is not None and theirs != ours:
        if num_classes_given or ours == 0:
            drop_head = True
            _logger.info("%s: the weights have a %d-class classifier; keeping a new %d-class "
                         "one (head.out is randomly initialised)", name, theirs, ours)
        else:
            model.reset_classifier(theirs)
            _logger.info("%s: the weights have a %d-class classifier; model rebuilt for %d "
                         "classes", name, theirs, theirs)
    # the filter converts keys; the key check below runs after the head is (maybe) dropped
    converted = (filter_fn or convert_state_dict)(state_dict, model)
    target = model.state_dict()
    stem = "stem.convs.0.weight"
    if stem in converted and stem in target and converted[stem].shape[1] != target[stem].shape[1]:
        _logger.info("%s: stem weights adapted from %d to %d input channels", name,
                     converted[stem].shape[1], target[stem].shape[1])
        converted[stem] = _adapt_in_chans(converted[stem], target[stem].shape[1])
    if drop_head:
        converted = {k: v for k, v in converted.items() if not k.startswith("head.out.")}
        target = {k: v for k, v in target.items() if not k.startswith("head.out.")}
    try:
        check_state_dict_keys(converted, target)
    except ValueError as e:
        raise ValueError(f"pretrained weights {source} do not fit {name}: {e}") from None
    result = model.load_state_dict(converted, strict=not drop_head)
    assert all(k.startswith("head.out.") for k in result.missing_keys), result.missing_keys
    _logger.info("%s: loaded pretrained weights from %s", name, source)
    return model
