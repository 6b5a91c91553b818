"""Detection training: the paper's 1x recipe, crash-safe checkpoints, data-parallel runs.

The recipe of the paper's COCO experiments (Table 10, following PVT and mmdetection): AdamW,
learning rate 1e-4, weight decay 0.05, the "1x" schedule of 12 epochs with the learning rate
multiplied by 0.1 after epochs 8 and 11, and a linear warm-up over the first iterations.

A run folder holds::

    config.json      the complete configuration (categories from the annotation file included)
    last.pt          everything ``--resume`` needs, rewritten atomically after every epoch
    best.pt          the weights with the best box mAP so far (what ``detect eval`` / ``predict``
                     load from a run folder), written atomically when an evaluation improves
    metrics.json     one row per epoch (losses, learning rate, time, mAP when evaluated) and
                     the final summary; metrics.csv holds the same rows

.. code-block:: python

    from pyg_vig.detection.engine import DetectConfig, DetectTrainer

    cfg = DetectConfig(backbone="pvig_s", data_dir="coco/train2017",
                       train_ann="coco/annotations/instances_train2017.json", ...)
    summary = DetectTrainer(cfg, "runs/retinanet").fit()
"""

from __future__ import annotations

import functools
import gc
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from pyg_vig.train.config import ConfigError, RunSettings
from pyg_vig.train.distributed import DistInfo, init_distributed
from pyg_vig.train.state import rng_state, seed_all, set_rng_state
from pyg_vig.utils.checkpoint import atomic_save

__all__ = [
    "BEST_FILE",
    "DEMO_CONFIGS",
    "LAST_FILE",
    "DetectConfig",
    "DetectTrainer",
    "build_detector",
    "load_detector",
    "lr_factor",
]

LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
MODELS = ("retinanet", "maskrcnn")


@dataclass
class DetectConfig(RunSettings):
    """Everything that defines a detection run (saved as the run folder's ``config.json``).

    The defaults are the paper's recipe; ``categories`` and ``num_classes`` come from the
    training annotation file.
    """

    model: str = "retinanet"
    backbone: str = "pvig_s"
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    checkpoint: str | None = None
    trainable_stages: int | None = None
    batch_norm: str | None = None
    data_dir: str | None = None
    train_ann: str | None = None
    val_dir: str | None = None
    val_ann: str | None = None
    epochs: int = 12
    lr: float = 1e-4
    weight_decay: float = 0.05
    lr_steps: list[int] | None = None
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    clip_grad: float | None = 35.0
    batch_size: int = 2
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: list[int] | None = None
    seed: int = 0
    # settings that may change on --resume (they do not change what is computed)
    device: str = "auto"
    workers: int = 0
    eval_every: int = 0
    log_every: int = 50
    # from the data
    num_classes: int | None = None
    categories: dict[str, str] | None = None

    _KIND = "detection setting"
    _NO_CONFIG = "no config.json in {folder}: not a `pyg-vig detect train` run folder"

    def steps(self) -> list[int]:
        """Epochs after which the learning rate drops: ``lr_steps``, or 2/3 and 11/12 of the run
        (8 and 11 for the 12-epoch 1x schedule).
        """
        if self.lr_steps is not None:
            return sorted(int(s) for s in self.lr_steps)
        return [round(self.epochs * 8 / 12), round(self.epochs * 11 / 12)]

    def check(self) -> None:
        """Reject impossible settings with one line naming the option."""
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        for name in ("epochs", "batch_size", "min_size", "max_size"):
            if getattr(self, name) < 1:
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.warmup_iters < 0 or not 0 < self.warmup_ratio <= 1:
            raise ConfigError("--warmup-iters must be >= 0 and --warmup-ratio in (0, 1]")
        if self.eval_every < 0:
            raise ConfigError(f"--eval-every must be >= 0 (0: only after the last epoch), got "
                              f"{self.eval_every}")


#: Settings of a run that ``--resume`` may change.
RUNTIME_FIELDS = frozenset({"device", "workers", "eval_every", "log_every"})

#: What ``pyg-vig detect train --demo`` runs: a small, randomly initialised pyramid ViG-Ti
#: RetinaNet on Fashion-MNIST canvases (``small`` is a seconds-long version for tests).
DEMO_CONFIGS: dict[str, dict[str, Any]] = {
    "full": dict(
        # 2-6 items per canvas (as many as fit): more objects per pixel of compute
        canvas=dict(n_train=1000, n_val=200, canvas_size=128, objects_per_image=(2, 6)),
        config=dict(
            model="retinanet", backbone="pvig_ti", epochs=24, lr=1e-3, warmup_iters=100,
            batch_size=16, min_size=128, max_size=128, anchor_sizes=[16, 32, 64, 128, 256],
            clip_grad=10.0, eval_every=0, log_every=20,
            # pvig_ti's layout, narrower and shallower (1.3M parameters instead of 9.3M), and
            # a 64-channel FPN / head: what 15 minutes of 2 CPU cores can train from scratch
            model_args=dict(use_dilation=False, embed_dims=[32, 64, 128, 192],
                               depths=[1, 1, 2, 1], out_channels=64),
        ),
    ),
    "small": dict(
        canvas=dict(n_train=8, n_val=4, canvas_size=96, objects_per_image=(1, 4)),
        config=dict(
            model="retinanet", backbone="pvig_ti", epochs=2, lr=1e-3, warmup_iters=2,
            batch_size=4, min_size=96, max_size=96, anchor_sizes=[16, 32, 64, 128, 256],
            clip_grad=10.0, eval_every=0, log_every=0,
            model_args=dict(use_dilation=False, embed_dims=[16, 32, 48, 64],
                               depths=[1, 1, 1, 1], out_channels=32),
        ),
    ),
}


def lr_factor(it: int, *, warmup_iters: int, warmup_ratio: float, step_iters: list[int],
              gamma: float) -> float:
    """Learning-rate multiplier after ``it`` iterations: a linear warm-up from
    ``warmup_ratio`` to 1 over ``warmup_iters`` iterations (mmdetection's), times ``gamma``
    for every step already passed.
    """
    decay = gamma ** sum(it >= s for s in step_iters)
    if it < warmup_iters:
        return decay * (warmup_ratio + (1 - warmup_ratio) * it / warmup_iters)
    return decay


def build_detector(cfg: DetectConfig, *, weights: bool = True) -> nn.Module:
    """The torchvision detector a configuration describes. ``weights=False`` skips the
    backbone's ImageNet weights (the model is about to load a checkpoint of ours).
    """
    from pyg_vig import detection

    kwargs: dict[str, Any] = dict(cfg.model_args)
    kwargs.update(num_classes=cfg.num_classes, min_size=cfg.min_size, max_size=cfg.max_size)
    if cfg.trainable_stages is not None:
        kwargs["trainable_stages"] = cfg.trainable_stages
    if cfg.batch_norm is not None:
        kwargs["batch_norm"] = cfg.batch_norm
    if weights and cfg.pretrained:
        kwargs["pretrained"] = True
    if weights and cfg.checkpoint:
        kwargs["checkpoint"] = cfg.checkpoint
    if cfg.anchor_sizes:
        kwargs.update(_anchor_kwargs(cfg))
    builder = detection.retinanet_pvig_fpn if cfg.model == "retinanet" else \
        detection.maskrcnn_pvig_fpn
    return builder(cfg.backbone, **kwargs)


def _anchor_kwargs(cfg: DetectConfig) -> dict[str, Any]:
    """Anchors for small images: ``anchor_sizes`` (one base size per pyramid level) with
    torchvision's three scales and three aspect ratios per level.
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple(tuple(round(s * 2 ** (i / 3)) for i in range(3)) for s in cfg.anchor_sizes)
    gen = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    key = "anchor_generator" if cfg.model == "retinanet" else "rpn_anchor_generator"
    return {key: gen}


def load_detector(source: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, DetectConfig, dict[str, Any]]:
    """A trained detector from a run folder (its ``best.pt``, else ``last.pt``) or a ``.pt``
    file written by :class:`DetectTrainer`; returns ``(model in eval mode, config, info)``.
    """
    path = Path(source)
    if path.is_dir():
        for name in (BEST_FILE, LAST_FILE):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ConfigError(f"no {BEST_FILE} or {LAST_FILE} in {source}: not a finished "
                              "`pyg-vig detect train` run folder")
    elif not path.is_file():
        raise ConfigError(f"checkpoint {source} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = DetectConfig.from_dict(state["config"], str(path))
        weights = state["model"]
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{path} is not a detection checkpoint of `pyg-vig detect train` "
                          f"({type(e).__name__}: {e})") from None
    model = build_detector(cfg, weights=False)
    model.load_state_dict(weights)
    info = {"file": str(path), "epoch": state.get("epoch"), "metrics": state.get("metrics")}
    return model.to(device).eval(), cfg, info


class DetectTrainer:
    """Trains a detector into a run folder; :meth:`fit` runs to the end and returns the
    summary.

    Args:
        config (DetectConfig): the configuration (categories are filled in from the data).
        run_dir (str or Path): the run folder; a new run needs it empty or absent.
        resume (bool): continue the run saved in ``run_dir`` (default: :obj:`False`).
        log (callable, optional): where progress lines go (default: flushed :func:`print`,
            rank 0 only).
    """

    def __init__(self, config: DetectConfig, run_dir: str | Path, resume: bool = False,
                 log: Callable[[str], None] | None = None):
        config.check()
        self.cfg, self.run_dir, self.resume = config, Path(run_dir), resume
        self.dist: DistInfo = init_distributed(config.device)
        self._log = log or functools.partial(print, flush=True)
        self._check_run_dir()

    def log(self, msg: str) -> None:
        """Print on rank 0 only."""
        if self.dist.is_main:
            self._log(msg)

    # ------------------------------------------------------------------ set-up
    def _check_run_dir(self) -> None:
        d = self.run_dir
        if self.resume:
            if not (d / LAST_FILE).is_file():
                raise ConfigError(f"cannot resume: no {LAST_FILE} in {d}")
            saved = DetectConfig.load(d / "config.json")
            a, b = saved.to_dict(), self.cfg.to_dict()
            diff = {k: (a[k], b[k]) for k in a
                    if k not in RUNTIME_FIELDS and b[k] is not None and a[k] != b[k]}
            if diff:
                what = ", ".join(f"{k}: saved {x!r} vs given {y!r}" for k, (x, y) in diff.items())
                raise ConfigError(f"resume folder {d} does not match the configuration ({what}); "
                                  "resume with the saved settings, or start a new run folder")
            runtime = {k: v for k, v in b.items() if k in RUNTIME_FIELDS}
            self.cfg = DetectConfig.from_dict({**a, **runtime})
        elif d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise ConfigError(f"run folder {d} already exists and is not empty; pass --resume {d} "
                              "to continue it, or choose another --output")

    def _datasets(self):
        from pyg_vig import detection

        cfg = self.cfg
        for flag, value in (("--data-dir", cfg.data_dir), ("--train-ann", cfg.train_ann)):
            if not value:
                raise ConfigError(f"{flag} is required (COCO-format data), or pass --demo")
        masks = cfg.model == "maskrcnn"
        train = _coco(detection, cfg.data_dir, cfg.train_ann, True, masks, "--train-ann")
        val = None
        if cfg.val_ann:
            val = _coco(detection, cfg.val_dir or cfg.data_dir, cfg.val_ann, False, masks,
                        "--val-ann")
        cats = _categories(train)
        if cfg.categories is None:
            cfg.categories = {str(k): v for k, v in cats.items()}
            cfg.num_classes = max(cats) + 1 if cats else 2
        elif {str(k): v for k, v in cats.items()} != cfg.categories:
            raise ConfigError(f"the categories of {cfg.train_ann} differ from the saved run's")
        return train, val

    def _build(self) -> None:
        cfg, dev = self.cfg, self.dist.device
        from pyg_vig import detection

        self.train_set, self.val_set = self._datasets()
        ws = self.dist.world_size
        if cfg.batch_size % ws:
            raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by {ws} processes")
        self.loader_generator = torch.Generator()
        # the permutation depends on seed + epoch only, so a resumed run sees the same order
        self.sampler = DistributedSampler(self.train_set, num_replicas=ws, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=False)
        self.train_loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size // ws, sampler=self.sampler,
            num_workers=cfg.workers, collate_fn=detection.collate,
            pin_memory=dev.type == "cuda", persistent_workers=cfg.workers > 0,
            # its own generator (re-seeded every epoch): worker seeds must not shift the global
            # RNG stream the augmentations draw from, and must not depend on where a run resumed
            generator=self.loader_generator,
        )
        # weights come from last.pt when resuming: no download
        first = self.dist.distributed and (cfg.pretrained or cfg.checkpoint) and not self.resume
        if first and not self.dist.is_main:
            dist.barrier()  # rank 0 downloads the backbone weights once, the others read its cache
        model = build_detector(cfg, weights=not self.resume).to(dev)
        # the defaults that depend on loaded weights, made explicit: a resumed run (and
        # eval/predict) rebuild the model without downloading them
        cfg.trainable_stages = model.backbone.trainable_stages
        cfg.batch_norm = model.backbone.batch_norm
        if first and self.dist.is_main:
            dist.barrier()
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.iters_per_epoch = len(self.train_loader)
        step_iters = [s * self.iters_per_epoch for s in cfg.steps()]
        warmup = min(cfg.warmup_iters, max(cfg.epochs * self.iters_per_epoch - 1, 0))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            functools.partial(lr_factor, warmup_iters=warmup, warmup_ratio=cfg.warmup_ratio,
                              step_iters=step_iters, gamma=cfg.lr_gamma),
        )
        self.ddp_model: nn.Module = model
        if self.dist.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )

    # ------------------------------------------------------------------ state
    def _save_last(self, epoch: int) -> None:
        rng = rng_state()
        if self.dist.distributed:
            all_rng: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        if not self.dist.is_main:
            return
        state = {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "global_step": self.global_step,
            "world_size": self.dist.world_size,
            "rng": all_rng,
            "history": json.dumps(self.history),
            "best": json.dumps(self.best),
        }
        atomic_save(state, self.run_dir / LAST_FILE)

    def _save_best(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.dist.is_main:
            state = {"config": self.cfg.to_dict(), "model": self.model.state_dict(),
                     "epoch": epoch, "metrics": json.dumps(metrics)}
            atomic_save(state, self.run_dir / BEST_FILE)

    def _load_last(self) -> int:
        path = self.run_dir / LAST_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"cannot resume: {path} is unreadable ({type(e).__name__})") from None
        saved = DetectConfig.from_dict(state["config"], str(path)).to_dict()
        now = self.cfg.to_dict()
        if any(saved[k] != now[k] for k in saved if k not in RUNTIME_FIELDS):
            raise ConfigError(f"cannot resume: {path} does not match {self.run_dir}/config.json")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step = state["global_step"]
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:  # another process count: fresh but reproducible streams
            seed_all(self.cfg.seed + 1000 * self.global_step + self.dist.rank)
        return state["epoch"]

    # ------------------------------------------------------------------ outputs
    def _write_metrics(self, summary: dict | None = None) -> None:
        if not self.dist.is_main:
            return
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        lines = [",".join(keys)]
        for row in self.history:
            lines.append(",".join("" if row.get(k) is None else f"{row[k]}" for k in keys))
        atomic_save(("\n".join(lines) + "\n").encode(), self.run_dir / "metrics.csv")
        payload = {"epochs": self.history, "summary": summary}
        atomic_save(json.dumps(payload, indent=2).encode(), self.run_dir / "metrics.json")

    # ------------------------------------------------------------------ loop
    def evaluate(self) -> dict[str, Any] | None:
        """COCO mAP of the current weights on the validation split (rank 0 scores the whole
        split; the other ranks wait). ``None`` without a validation split.
        """
        result = None
        if self.val_set is not None and self.dist.is_main:
            from pyg_vig.detection import evaluate_coco

            iou_types = ("bbox", "segm") if self.cfg.model == "maskrcnn" else ("bbox",)
            self.model.eval()
            result = evaluate_coco(self.model, self.val_set, iou_types=iou_types,
                                   device=self.dist.device)
        if self.dist.distributed:
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        return result

    def fit(self) -> dict[str, Any]:
        """Train (or continue training) to ``cfg.epochs``; returns the summary."""
        cfg, dev = self.cfg, self.dist.device
        t_start = time.perf_counter()
        seed_all(cfg.seed + self.dist.rank)
        self._build()
        self.global_step, self.history, self.best = 0, [], None
        start_epoch = 0
        if self.resume:
            start_epoch = self._load_last()
            self.log(f"resuming {self.run_dir} after epoch {start_epoch} "
                     f"(iteration {self.global_step})")
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_save(json.dumps(cfg.to_dict(), indent=2).encode(),
                        self.run_dir / "config.json")
        n_params = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_val = len(self.val_set) if self.val_set is not None else 0
        self.log(f"{cfg.model} with {cfg.backbone} backbone: {n_params / 1e6:.2f}M params "
                 f"({n_train / 1e6:.2f}M trainable) | {len(self.train_set)} train / {n_val} val "
                 f"images, {len(cfg.categories or {})} categories | {self.dist.world_size} "
                 f"process(es) on {dev} | run folder {self.run_dir}")
        metrics = None
        for epoch in range(start_epoch, cfg.epochs):
            row = self._train_epoch(epoch)
            metrics = None
            if self._evaluates_after(epoch + 1):
                metrics = self.evaluate()
                if metrics is not None:
                    row.update({f"{t}_{k}": v for t, m in metrics.items() for k, v in m.items()})
                    if self.best is None or metrics["bbox"]["mAP"] > self.best["bbox"]["mAP"]:
                        self.best = {**metrics, "epoch": epoch + 1}
                        self._save_best(epoch + 1, self.best)
            self.history.append(row)
            self._save_last(epoch + 1)
            self._write_metrics()
            box = f" | box mAP {metrics['bbox']['mAP']:.4f} mAP50 {metrics['bbox']['mAP50']:.4f}" \
                if metrics else ""
            self.log(f"epoch {epoch + 1}/{cfg.epochs} | loss {row['loss']:.4f} | lr "
                     f"{row['lr']:.2e}{box} | {row['epoch_time_s']:.0f}s")
        if self.val_set is not None and metrics is None and self.history:
            # resumed after the last epoch, or a run without evaluations so far
            metrics = self.evaluate()
        if self.val_set is None:  # no validation split: the last weights are the best known
            self._save_best(cfg.epochs, {})
        elif self.best is None and metrics is not None:
            self.best = {**metrics, "epoch": cfg.epochs}
            self._save_best(cfg.epochs, self.best)
        summary = {
            "final": metrics,
            "best": self.best,
            "epochs": cfg.epochs,
            "iterations": self.global_step,
            "world_size": self.dist.world_size,
            "wall_time_s": round(time.perf_counter() - t_start, 1),
        }
        self._write_metrics(summary)
        self._release_ddp()
        if self.dist.distributed:
            dist.barrier()
        return summary

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, dev = self.cfg, self.dist.device
        self.sampler.set_epoch(epoch)
        self.loader_generator.manual_seed(cfg.seed + 1000 * epoch + self.dist.rank)
        self.ddp_model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n = 0
        for i, (images, targets) in enumerate(self.train_loader):
            if not images:  # every image of the batch was unreadable (reported by the dataset)
                continue
            images = [im.to(dev, non_blocking=True) for im in images]
            targets = [{k: v.to(dev) if torch.is_tensor(v) else v for k, v in t.items()}
                       for t in targets]
            losses = self.ddp_model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, iteration {i + 1} "
                    f"({ {k: round(v.item(), 4) for k, v in losses.items()} }); lower --lr or "
                    "set --clip-grad"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.optimizer.step()
            self.scheduler.step()
            self.global_step += 1
            n += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            if cfg.log_every and (i + 1) % cfg.log_every == 0:
                rate = (i + 1) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                self.log(f"epoch {epoch + 1}/{cfg.epochs} iter {i + 1}/{self.iters_per_epoch} | "
                         f"loss {loss.item():.4f} | lr {self.optimizer.param_groups[0]['lr']:.2e}"
                         f" | {rate:.1f} img/s")
        if self.dist.distributed:
            t = torch.tensor([n, *sums.values()], dtype=torch.float64, device=dev)
            dist.all_reduce(t)
            n, vals = int(t[0].item()), t[1:].tolist()
            sums = dict(zip(sums, vals, strict=True))
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "iteration": self.global_step,
                               "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({k: v / max(n, 1) for k, v in sums.items()})
        row.update(epoch_time_s=round(dt, 2),
                   img_per_s=round(len(self.sampler) * self.dist.world_size / max(dt, 1e-9), 2))
        return row

    def _evaluates_after(self, epoch: int) -> bool:
        every = self.cfg.eval_every
        return epoch >= self.cfg.epochs or (every > 0 and epoch % every == 0)

    def _release_ddp(self) -> None:
        """Drop the DDP wrapper before the process group goes (see
        :meth:`pyg_vig.train.Trainer._release_ddp`: a late free can deadlock gloo at exit).
        """
        if self.ddp_model is not self.model:
            self.ddp_model = self.model
            gc.collect()


def _coco(detection, img_dir: str, ann: str, train: bool, masks: bool, flag: str):
    if not Path(ann).is_file():
        raise ConfigError(f"{flag} {ann}: no such annotation file (COCO-format JSON)")
    if not Path(img_dir).is_dir():
        raise ConfigError(f"image folder {img_dir} does not exist (--data-dir / --val-dir)")
    return detection.CocoDetection(img_dir, ann, transforms=detection.detection_transforms(train),
                                   with_masks=masks)


def _categories(dataset) -> dict[int, str]:
    """{category id: name} of a :class:`~pyg_vig.detection.CocoDetection`."""
    return {int(k): str(v) for k, v in sorted(dataset.classes.items())}
