"""Crash-safe run state: what ``--resume`` needs, written atomically.

No library resumes a run mid-epoch with the random streams of every process restored (timm's
``CheckpointSaver`` resumes at epoch boundaries only), so this stays ours.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["STATE_FILE", "rng_state", "seed_all", "set_rng_state"]

STATE_FILE = "train_state.pt"


def rng_state() -> dict[str, Any]:
    """torch, numpy (timm's Mixup), Python (timm's RandomErasing) and CUDA random states."""
    # numpy's key array becomes a tensor so the file loads with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
