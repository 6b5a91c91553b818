"""Checkpoint files that survive crashes: atomic writes, safetensors weights, tolerant loading."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

__all__ = ["UnreadableCheckpointError", "atomic_save", "load_state_dict_file", "save_safetensors"]

# top-level keys that wrap the actual state dict in training checkpoints (timm, DeiT, ViG)
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; checkpoints get the usual 0o666 & ~umask
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj_or_writer: Any | Callable[[BinaryIO], None], path: str | Path) -> Path:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    The data go to a temporary file in the same folder, are flushed and ``fsync``-ed, and the
    file is then renamed over ``path`` with :func:`os.replace` (atomic on POSIX and Windows). A
    crash or ``kill -9`` at any moment leaves no half-written checkpoint behind.

    Args:
        obj_or_writer: ``bytes`` to write as is, a callable ``writer(file)`` that writes to a
            binary file object, or any other object, which is written with :func:`torch.save`.
        path (str or Path): destination.

    Returns:
        Path: ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(obj_or_writer, bytes | bytearray | memoryview):
                f.write(obj_or_writer)
            elif callable(obj_or_writer) and not isinstance(obj_or_writer, torch.nn.Module):
                obj_or_writer(f)
            else:
                torch.save(obj_or_writer, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def save_safetensors(
    path: str | Path, state_dict: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Atomically save ``state_dict`` as a ``.safetensors`` file with string ``metadata``.

    Tensors are moved to the CPU and made contiguous; tensors sharing memory (tied weights) are
    cloned, since safetensors refuses shared storage.
    """
    from safetensors.torch import save

    bad = {k: type(v).__name__ for k, v in (metadata or {}).items() if not isinstance(v, str)}
    if bad:
        raise TypeError(f"safetensors metadata values must be str, got {bad}")
    tensors, seen = {}, set()
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr in seen:
            v = v.clone()
        elif ptr is not None:
            seen.add(ptr)
        tensors[k] = v
    return atomic_save(save(tensors, metadata=dict(metadata or {})), path)


class UnreadableCheckpointError(ValueError):
    """The file itself cannot be read (corrupt, truncated, not a checkpoint format at all)."""


def _unwrap(obj: Any, path: Path, use_ema: bool = True) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        # timm's load_state_dict order: EMA weights first when use_ema, then the plain ones
        keys = _WRAPPER_KEYS if use_ema else tuple(k for k in _WRAPPER_KEYS if "ema" not in k)
        for key in keys:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"{path} does not hold a state dict (expected a dict of tensors, optionally under "
            f"one of the keys {list(_WRAPPER_KEYS)})"
        )
    # DataParallel / DDP checkpoints prefix every key with "module."
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(e).__name__


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, also accepting the ``argparse.Namespace`` that timm's
    ``CheckpointSaver`` stores under ``args`` (a plain attribute holder: no code runs).
    """
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict_file(path: str | Path, use_ema: bool = True
                         ) -> tuple[dict[str, Tensor], dict]:
    """Read model weights from a ``.safetensors`` file or a torch checkpoint (``.pth``/``.pt``).

    Torch files are read with ``torch.load(weights_only=True)`` (no pickled code runs); a
    top-level ``state_dict_ema``/``model_ema``/``state_dict``/``model`` wrapper is unwrapped
    (in that order of preference, as timm's ``load_checkpoint(use_ema=True)``; with
    ``use_ema=False`` the EMA entries are skipped) and a ``module.`` prefix is stripped. The
    ``argparse.Namespace`` that timm's ``CheckpointSaver`` pickles under ``args`` is accepted.

    Returns:
        (dict, dict): the state dict (CPU tensors) and the metadata: the safetensors header
        metadata, or for torch files the other top-level non-tensor entries (e.g. ``epoch``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UnreadableCheckpointError: when the file is corrupt or truncated (a ``ValueError``).
        ValueError: when it holds no state dict, or pickled objects other than tensors,
            containers and ``argparse.Namespace``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and not head.startswith((b"PK", b"\x80"))):
        from safetensors import safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own SafetensorError
            raise UnreadableCheckpointError(
                f"corrupt or unreadable safetensors file {path}: {e}") from None
        return tensors, metadata
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text or "Unsupported class" in text:
            what = text.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in text else "an object"
            raise ValueError(
                f"{path} holds a pickled {what} besides the weights, which torch.load("
                "weights_only=True) refuses to run. If you trust the file, re-save only the "
                "weights: torch.save(torch.load(f, weights_only=False)['state_dict'], 'w.pth')"
            ) from None
        raise UnreadableCheckpointError(f"corrupt or unreadable checkpoint {path}: "
                                        f"{_first_line(e)}") from None
    except Exception as e:  # zip/EOF errors come in many types
        raise UnreadableCheckpointError(f"corrupt or unreadable checkpoint {path}: "
                                        f"{_first_line(e)}") from None
    state_dict = _unwrap(obj, path, use_ema)
    metadata = {}
    if isinstance(obj, dict):
        metadata = {k: v for k, v in obj.items() if not isinstance(v, dict | Tensor | io.IOBase)}
    return state_dict, metadata
