"""A tiny MLP that stands in for ViG in fast trainer tests (not a ViG: no graph)."""

import torch.nn as nn


class StandInMLP(nn.Module):
    """Flatten -> Linear -> BatchNorm -> GELU -> Linear; ``bn=False`` drops BatchNorm."""

    def __init__(self, in_chans=1, num_classes=10, image_size=28, width=32, bn=True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_chans * image_size * image_size, width),
            nn.BatchNorm1d(width) if bn else nn.Identity(),
            nn.GELU(),
        )
        self.head = nn.Linear(width, num_classes)

    def no_weight_decay(self):
        return {"head.weight"}

    def forward(self, x):
        return self.head(self.body(x))


def stand_in_fn(cfg):
    """``model_fn`` for :class:`pyg_vig.train.Trainer`: reads width/bn from ``cfg.model_args``."""
    args = dict(cfg.model_args)
    return StandInMLP(
        cfg.in_chans, cfg.num_classes, cfg.image_size, args.get("width", 32), args.get("bn", True)
    )
