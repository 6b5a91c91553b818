"""The training loop: the paper's recipe, crash-safe checkpoints, data-parallel.

A run folder holds::

    config.json            the complete configuration (data-derived fields filled in)
    train_state.pt         everything --resume needs; rewritten atomically every N steps
    model.safetensors      inference weights (EMA when enabled) + metadata to rebuild the model
    metrics.csv / .json    one row per epoch; the JSON also holds the final summary
    confusion_matrix.png   on the test split, final weights
    training_curves.png    loss and accuracy per epoch
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from pyg_vig.datasets import build_transform, load_dataset
from pyg_vig.train.config import RUNTIME_FIELDS, ConfigError, TrainConfig
from pyg_vig.train.data import data_stats
from pyg_vig.train.distributed import DistInfo, ResumableSampler, init_distributed
from pyg_vig.train.loop import EvalResult, evaluate, train_one_epoch
from pyg_vig.train.model import WEIGHTS_FILE, build_model, load_weights, model_metadata
from pyg_vig.train.optim import build_ema, build_optimizer, build_scheduler, resolve_amp
from pyg_vig.train.plots import confusion_matrix, plot_confusion_matrix, plot_training_curves
from pyg_vig.train.state import STATE_FILE, rng_state, seed_all, set_rng_state
from pyg_vig.utils.checkpoint import atomic_save, save_safetensors

__all__ = ["STATE_FILE", "WEIGHTS_FILE", "Trainer"]

METRIC_KEYS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "epoch_time_s",
    "img_per_s",
)


class Trainer:
    """Trains a model into a run folder; :meth:`fit` runs to the end and returns the summary.

    Args:
        config (TrainConfig): the configuration. Data-derived fields are filled in.
        run_dir (str or Path): the run folder. A new run needs it empty or absent.
        resume (bool): continue the run saved in ``run_dir`` (default: :obj:`False`).
        model_fn (callable, optional): ``model_fn(config) -> nn.Module`` instead of the
            registry (tests use small stand-ins).
        log (callable, optional): where progress lines go (default: flushed :func:`print`;
            rank 0 only).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        model_fn: Callable[[TrainConfig], nn.Module] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.cfg, self.run_dir, self.resume = config, Path(run_dir), resume
        self.model_fn = model_fn or build_model
        self.dist: DistInfo = init_distributed(config.device)
        self._log = log or functools.partial(print, flush=True)
        self.extend_from: int | None = None  # saved epoch count when --epochs grows on resume
        self._check_run_dir()
        if self.dist.distributed:  # every rank checks the folder before rank 0 writes to it
            dist.barrier()

    def log(self, msg: str) -> None:
        """Print on rank 0 only."""
        if self.dist.is_main:
            self._log(msg)

    # ------------------------------------------------------------------ set-up
    def _check_run_dir(self) -> None:
        d = self.run_dir
        if self.resume:
            if not (d / STATE_FILE).is_file():
                raise ConfigError(f"cannot resume: no {STATE_FILE} in {d}")
            saved = TrainConfig.load(d / "config.json")
            diff = saved.differences(self.cfg)
            # data-derived fields left empty in the new config are taken from the saved one
            diff = {k: v for k, v in diff.items() if v[1] is not None}
            # more epochs extend the run: the cosine schedule stretches to the new length
            if "epochs" in diff and diff["epochs"][1] > diff["epochs"][0]:
                self.extend_from = diff.pop("epochs")[0]
            if diff:
                what = ", ".join(f"{k}: saved {a!r} vs given {b!r}" for k, (a, b) in diff.items())
                hint = (" (fewer epochs than saved cannot be resumed)" if "epochs" in diff
                        else "")
                raise ConfigError(
                    f"resume folder {d} does not match the configuration ({what}){hint}"
                )
            runtime = {k: v for k, v in self.cfg.to_dict().items() if k in RUNTIME_FIELDS}
            if self.extend_from is not None:
                runtime["epochs"] = self.cfg.epochs
            self.cfg = TrainConfig.from_dict({**saved.to_dict(), **runtime})
        elif d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise ConfigError(
                f"run folder {d} already exists and is not empty; pass --resume {d} to continue "
                "it, or choose another --output"
            )

    def _pretrained_data_cfg(self) -> dict | None:
        """Size, crop and statistics the pretrained weights expect (``cfg.pretrained``)."""
        if not self.cfg.pretrained:
            return None
        from pyg_vig.models._registry import get_pretrained_cfg

        return get_pretrained_cfg(self.cfg.model)

    def _build_data(self) -> None:
        cfg = self.cfg
        pcfg = self._pretrained_data_cfg()
        if pcfg is not None:
            # fine-tuning: the resolution and normalisation the weights were trained with
            if cfg.image_size is None:
                cfg.image_size = int(pcfg["input_size"][-1])
            if cfg.mean is None or cfg.std is None:
                c = cfg.in_chans or int(pcfg["input_size"][0])
                m, sd = pcfg["mean"], pcfg["std"]
                cfg.mean = list(m) if len(m) == c else [sum(m) / len(m)] * c
                cfg.std = list(sd) if len(sd) == c else [sum(sd) / len(sd)] * c
        folder_kw = dict(interpolation=pcfg["interpolation"]) if pcfg else {}
        train = load_dataset(
            cfg.data, "train", image_size=cfg.image_size, in_chans=cfg.in_chans or 3, **folder_kw
        )
        if cfg.in_chans is None:
            cfg.in_chans = train.in_chans
        native = tuple(train[0][0].shape[-2:])
        if cfg.image_size is None:
            cfg.image_size = int(native[-1])
        resize = native != (cfg.image_size, cfg.image_size)
        if cfg.classes is None:
            cfg.classes = list(train.classes)
        if cfg.num_classes is None:
            cfg.num_classes = len(cfg.classes)
        if cfg.mean is None or cfg.std is None:
            cfg.mean, cfg.std = data_stats(train)
        train.transform = build_transform(
            True, cfg.image_size, cfg.mean, cfg.std, cfg.crop_padding, cfg.hflip, cfg.reprob,
            resize, auto_augment=cfg.auto_augment,
        )
        if pcfg is not None:  # image folders: the evaluation crop of the weights
            folder_kw["crop_pct"] = float(pcfg["crop_pct"])
        test = load_dataset(
            cfg.data,
            "test",
            transform=build_transform(False, cfg.image_size, cfg.mean, cfg.std, resize=resize),
            image_size=cfg.image_size,
            in_chans=cfg.in_chans,
            classes=cfg.classes,
            **folder_kw,
        )
        ws = self.dist.world_size
        if cfg.batch_size % ws:
            raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {ws} processes")
        self.sampler = ResumableSampler(
            len(train), cfg.batch_size, self.dist.rank, ws, shuffle=True, seed=cfg.seed
        )
        pin = self.dist.device.type == "cuda"
        self.train_loader = DataLoader(
            train,
            batch_size=cfg.batch_size // ws,
            sampler=self.sampler,
            num_workers=cfg.workers,
            pin_memory=pin,
            drop_last=True,
            persistent_workers=cfg.workers > 0,
            # its own generator: starting an epoch's iterator draws a worker seed, which must
            # not shift the global RNG stream that augmentation uses (exact mid-epoch resume)
            generator=torch.Generator().manual_seed(cfg.seed + self.dist.rank),
        )
        # each rank evaluates every world_size-th test image; the predictions are gathered
        shard = Subset(test, range(self.dist.rank, len(test), ws)) if ws > 1 else test
        # its own generator too: each evaluation's iterator would otherwise draw from the global
        # stream, and how often the test split is scored (--eval-every) would change training
        self.test_loader = DataLoader(
            shard, batch_size=256, shuffle=False, num_workers=cfg.workers, pin_memory=pin,
            generator=torch.Generator(),
        )
        self.train_set, self.test_set = train, test

    def warmup_epochs(self) -> float:
        """``cfg.warmup_epochs``, clamped (with a warning) when it would fill the whole run."""
        cfg = self.cfg
        if cfg.warmup_epochs >= cfg.epochs > 0:
            clamped = round(0.1 * cfg.epochs, 3)
            msg = (f"--warmup-epochs {cfg.warmup_epochs:g} >= --epochs {cfg.epochs} would make "
                   f"the whole run a warm-up; using {clamped:g} warm-up epochs (10% of the run)")
            if self.dist.is_main:
                warnings.warn(msg, UserWarning, stacklevel=2)
                self.log(f"warning: {msg}")
            return clamped
        return cfg.warmup_epochs

    def _build_model(self) -> None:
        cfg, dev = self.cfg, self.dist.device
        # weights come from train_state.pt when resuming: no download
        build_cfg = dataclasses.replace(cfg, pretrained=False) if self.resume else cfg
        first = self.dist.distributed and build_cfg.pretrained
        if first and not self.dist.is_main:
            dist.barrier()  # rank 0 downloads the weights once, the others read its cache
        model = self.model_fn(build_cfg).to(dev)
        if first and self.dist.is_main:
            dist.barrier()
        self.model = model
        self.optimizer = build_optimizer(model, cfg, dev)
        steps = self.sampler.steps_per_epoch
        total = cfg.epochs * steps
        warmup = min(int(round(self.warmup_epochs() * steps)), max(total - 1, 0))
        self.scheduler = build_scheduler(self.optimizer, cfg, total, warmup)
        # EMA of parameters and buffers (BatchNorm statistics)
        self.ema = build_ema(model, cfg)
        self.amp_dtype = resolve_amp(cfg.amp, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype == torch.float16)
        self.ddp_model: nn.Module = model
        if self.dist.distributed:
            if dev.type == "cuda":
                # CPU BatchNorm cannot synchronise; on GPUs statistics span the global batch
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.model = model
            self.ddp_model = DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        self.mixup = None
        if cfg.mixup_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0):
            if (cfg.batch_size // self.dist.world_size) % 2:
                raise ConfigError(
                    f"mixup/cutmix need an even batch per process; batch size {cfg.batch_size} "
                    f"over {self.dist.world_size} process(es) is odd: change --batch-size"
                )
            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                prob=cfg.mixup_prob,
                label_smoothing=cfg.label_smoothing,
                num_classes=cfg.num_classes,
            )
        # Hard labels are smoothed by the loss; Mixup's soft targets are smoothed already, so
        # they get a plain soft-target cross-entropy (smoothing once, as the official recipe).
        self.mixup_criterion = SoftTargetCrossEntropy()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, step_in_epoch: int) -> dict[str, Any]:
        rng = rng_state()
        if self.dist.distributed:
            all_rng: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "world_size": self.dist.world_size,
            "rng": all_rng,
            "history": json.dumps(self.history),
        }

    def save_state(self, epoch: int, step_in_epoch: int) -> None:
        """Write ``train_state.pt`` atomically (all ranks take part, rank 0 writes)."""
        state = self._state(epoch, step_in_epoch)
        if self.dist.is_main:
            atomic_save(state, self.run_dir / STATE_FILE)

    def _load_state(self) -> tuple[int, int]:
        path = self.run_dir / STATE_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"cannot resume: {path} is unreadable ({type(e).__name__})") from None
        saved = TrainConfig.from_dict(state["config"], str(path))
        ignore = RUNTIME_FIELDS | ({"epochs"} if self.extend_from is not None else set())
        if saved.differences(self.cfg, ignore=frozenset(ignore)):
            raise ConfigError(f"cannot resume: {path} does not match {self.run_dir}/config.json")
        load_weights(self.model, state["model"], str(path))
        if self.ema is not None and state["ema"] is not None:
            ema = dict(state["ema"])
            # runs saved by earlier releases averaged with torch's AveragedModel, whose state holds
            # its update count; timm's ModelEmaV3 takes the step from the loop (global_step)
            ema.pop("n_averaged", None)
            load_weights(self.ema, ema, f"{path} (EMA)")
        self.optimizer.load_state_dict(state["optimizer"])
        # the closed-form schedule needs only the step count (it may have been stretched)
        self.scheduler.step_update(state["global_step"])
        self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        self.history = json.loads(state["history"])
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:  # another process count: fresh but reproducible streams
            seed_all(self.cfg.seed + 1000 * self.global_step + self.dist.rank)
        return state["epoch"], state["step_in_epoch"]

    # ------------------------------------------------------------------ outputs
    def _final_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _write_metrics(self, summary: dict | None = None) -> None:
        if not self.dist.is_main:
            return
        buf = [",".join(METRIC_KEYS)]
        for row in self.history:
            buf.append(",".join("" if row.get(k) is None else f"{row[k]}" for k in METRIC_KEYS))
        atomic_save(("\n".join(buf) + "\n").encode(), self.run_dir / "metrics.csv")
        payload = {"epochs": self.history, "summary": summary}
        atomic_save(json.dumps(payload, indent=2).encode(), self.run_dir / "metrics.json")

    def _write_weights(self, **extra: Any) -> None:
        if self.dist.is_main:
            meta = model_metadata(self.cfg, ema=self.ema is not None, **extra)
            save_safetensors(self.run_dir / WEIGHTS_FILE, self._final_model().state_dict(), meta)

    # ------------------------------------------------------------------ loop
    def _reduce(self, *values: float) -> list[float]:
        if not self.dist.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.dist.device)
        dist.all_reduce(t)
        return t.tolist()

    def _check_image_size(self) -> None:
        """Refuse an image size the model cannot take (too few nodes for k) before any writing."""
        size, check = self.cfg.image_size, getattr(self.model, "_check_size", None)
        if size and check is not None:
            try:
                check(int(size), int(size))
            except NotImplementedError:  # a model without a size rule
                pass

    def fit(self) -> dict[str, Any]:
        """Train (or continue training) to ``cfg.epochs``; returns the final summary."""
        cfg, dev = self.cfg, self.dist.device
        t_start = time.perf_counter()
        seed_all(cfg.seed + self.dist.rank)
        self._build_data()
        self._build_model()
        self._check_image_size()  # before the run folder exists: a refused size leaves nothing
        self.global_step, self.history, self._last_eval = 0, [], None
        start_epoch, start_step = 0, 0
        if self.resume:
            start_epoch, start_step = self._load_state()
            self.log(f"resuming {self.run_dir} at epoch {start_epoch}, step {self.global_step}")
            if self.extend_from is not None and self.dist.is_main:
                self.log(f"extending the run from {self.extend_from} to {cfg.epochs} epochs "
                         "(the cosine schedule stretches to the new length)")
                atomic_save(cfg.to_json().encode(), self.run_dir / "config.json")
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_save(cfg.to_json().encode(), self.run_dir / "config.json")
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"model {cfg.model}: {n_params / 1e6:.2f}M params | data {cfg.data}: "
            f"{len(self.train_set)} train / {len(self.test_set)} test, {cfg.num_classes} classes "
            f"| {self.dist.world_size} process(es) on {dev} | run folder {self.run_dir}"
        )
        steps = self.sampler.steps_per_epoch
        for epoch in range(start_epoch, cfg.epochs):
            self.sampler.set_epoch(epoch, start_step)
            t0 = time.perf_counter()
            bar = self._progress_bar(epoch, steps, start_step)
            on_step = functools.partial(self._on_step, epoch=epoch, steps=steps, bar=bar, t0=t0,
                                        first=start_step)
            stats = train_one_epoch(
                self.ddp_model, self.train_loader, self.optimizer, device=dev,
                criterion=self.criterion, global_step=self.global_step, start_step=start_step,
                mixup=self.mixup, mixup_criterion=self.mixup_criterion,
                amp_dtype=self.amp_dtype, scaler=self.scaler if self.scaler.is_enabled() else None,
                clip_grad=cfg.clip_grad, clip_params=self.model.parameters(),
                scheduler=self.scheduler, ema=self.ema, ema_model=self.model, on_step=on_step,
            )
            self.global_step = stats.global_step
            loss_sum, correct, seen = stats.loss_sum, stats.correct, stats.seen
            if bar is not None:
                bar.close()
            loss_sum, correct, seen = self._reduce(loss_sum, correct, seen)
            epoch_time = time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "step": self.global_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "epoch_time_s": round(epoch_time, 2),
                "img_per_s": round(seen / max(epoch_time, 1e-9), 1),
            }
            if self._evaluates_after(epoch + 1):
                self._last_eval = self._evaluate()  # the weights model.safetensors holds
                row["test_loss"], row["test_acc"] = self._last_eval.loss, self._last_eval.top1
            else:
                self._last_eval = None
                row["test_loss"] = row["test_acc"] = None
            self.history.append(row)
            start_step = 0
            self.save_state(epoch + 1, 0)
            self._write_weights(epoch=epoch + 1)
            self._write_metrics()
            if self.dist.is_main:
                test = (f"test_acc {row['test_acc']:.4f}{' (EMA)' if cfg.ema else ''}"
                        if row["test_acc"] is not None else "test_acc -")
                self.log(
                    f"epoch {epoch + 1}/{cfg.epochs} | loss {row['train_loss']:.4f} | {test} | "
                    f"{row['img_per_s']:.0f} img/s | {epoch_time:.0f}s"
                )
        summary = self._finish(time.perf_counter() - t_start)
        self._release_ddp()
        return summary

    def _on_step(self, i: int, loss: float, global_step: int, *, epoch: int, steps: int, bar,
                 t0: float, first: int) -> None:
        """Progress output and mid-epoch checkpoints after batch ``i`` of ``epoch``."""
        cfg = self.cfg
        if cfg.progress and self.dist.is_main:
            seen = (i + 1 - first) * (cfg.batch_size // self.dist.world_size)
            rate = seen * self.dist.world_size / max(time.perf_counter() - t0, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
                bar.update(1)
            elif (i + 1) % max(1, steps // 10) == 0 and i + 1 < steps:
                self.log(f"epoch {epoch + 1}/{cfg.epochs} step {i + 1}/{steps} | "
                         f"loss {loss:.4f} | lr {lr:.2e} | {rate:.0f} img/s")
        if cfg.checkpoint_every > 0 and global_step % cfg.checkpoint_every == 0:
            if i + 1 < steps:  # the epoch-end checkpoint follows otherwise
                self.global_step = global_step
                self.save_state(epoch, i + 1)

    def _evaluates_after(self, epoch: int) -> bool:
        """Whether the test split is scored after ``epoch`` (1-based): every ``eval_every``
        epochs and always after the last one.
        """
        return epoch % self.cfg.eval_every == 0 or epoch >= self.cfg.epochs  # eval_every >= 1

    def _release_ddp(self) -> None:
        """Free the :class:`DistributedDataParallel` wrapper once training is over.

        Its reducer holds a reference to the process group. Freed later, after
        ``destroy_process_group``, the reducer would drop the group's last reference with the
        GIL held, and the gloo destructor joins its worker threads, one of which may still have
        to free a Python-owned tensor of the last collective (it needs the GIL): a deadlock at
        exit. Freed here, the last reference is the one ``destroy_process_group`` drops, whose
        destructor releases the GIL. Evaluation after :meth:`fit` uses the plain model.
        """
        if self.ddp_model is not self.model:
            self.ddp_model = self.model
            gc.collect()  # DDP holds reference cycles: free it now, not at some later collection

    def _progress_bar(self, epoch: int, steps: int, start_step: int):
        """A tqdm bar on a terminal; ``None`` (periodic plain lines instead) when stderr is a
        log file, a pipe or CI, where carriage-return updates would flood the output.
        """
        if not (self.dist.is_main and self.cfg.progress):
            return None
        isatty = getattr(sys.stderr, "isatty", None)
        if not (callable(isatty) and isatty()):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=steps,
            initial=start_step,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )

    def _sync_eval_buffers(self) -> None:
        """Give every rank rank 0's buffers of the final weights before a sharded evaluation.

        Parameters are equal on all ranks, but on CPU each rank's BatchNorm running statistics
        (and so the EMA's averaged buffers) follow its own batches. Rank 0's are the ones
        ``model.safetensors`` holds, so with them every shard scores the saved weights and the
        reported accuracy equals ``pyg-vig eval RUN``. Rank 0 is unchanged, and nothing flows
        back into training (DDP broadcasts rank 0's buffers before each training step anyway).
        """
        if self.dist.distributed:
            for buf in self._final_model().buffers():
                dist.broadcast(buf, src=0)

    def _evaluate(self, loader: DataLoader | None = None) -> EvalResult:
        """:func:`~pyg_vig.train.loop.evaluate` of the final weights over every rank's shard of
        ``loader`` (default: the test split), gathered into one result.
        """
        self._sync_eval_buffers()
        r = evaluate(self._final_model(), loader or self.test_loader, device=self.dist.device,
                     amp_dtype=self.amp_dtype)
        if not self.dist.distributed:
            return r
        parts: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(parts, (r.loss * r.n, r.top5 * r.n, r.pred, r.target))
        n = sum(len(p[3]) for p in parts)
        pred = torch.cat([p[2] for p in parts])
        target = torch.cat([p[3] for p in parts])
        top1 = (pred == target).float().mean().item() if n else 0.0
        return EvalResult(sum(p[0] for p in parts) / max(n, 1), top1,
                          sum(p[1] for p in parts) / max(n, 1), n, pred, target)

    def evaluate_dataset(self, data: str, split: str = "test") -> dict[str, Any]:
        """Score the final weights on another dataset with this run's classes and evaluation
        transform, sharded over all ranks like the per-epoch test (call it after :meth:`fit`).

        The demo uses it to report the full Fashion-MNIST test set (10,000 images) next to the
        embedded subset's 5,000. The result is added to ``metrics.json``'s summary under
        ``extra_eval`` and returned: ``{"data", "split", "images", "loss", "accuracy"}``.
        """
        cfg, ws = self.cfg, self.dist.world_size
        dataset = load_dataset(
            data,
            split,
            transform=build_transform(False, cfg.image_size, cfg.mean, cfg.std),
            image_size=cfg.image_size,
            in_chans=cfg.in_chans,
            classes=cfg.classes,
        )
        if tuple(dataset[0][0].shape[-2:]) != (cfg.image_size, cfg.image_size):
            dataset.transform = build_transform(
                False, cfg.image_size, cfg.mean, cfg.std, resize=True
            )
        shard = Subset(dataset, range(self.dist.rank, len(dataset), ws)) if ws > 1 else dataset
        loader = DataLoader(shard, batch_size=256, shuffle=False, num_workers=cfg.workers,
                            generator=torch.Generator())
        r = self._evaluate(loader)
        result = {
            "data": data,
            "split": split,
            "images": r.n,
            "loss": r.loss,
            "accuracy": r.top1,
            "top5": r.top5,
        }
        if self.dist.is_main:
            path = self.run_dir / "metrics.json"
            payload = json.loads(path.read_text()) if path.is_file() else {}
            summary = payload.get("summary") or {}
            summary.setdefault("extra_eval", []).append(result)
            payload["summary"] = summary
            atomic_save(json.dumps(payload, indent=2).encode(), path)
        return result

    def _finish(self, wall_time: float) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        if self._last_eval is None:  # resumed after the last epoch had finished
            self._last_eval = self._evaluate()
        if self.dist.is_main:
            final = self._final_model()
            loss, acc, pred, target = (self._last_eval.loss, self._last_eval.top1,
                                       self._last_eval.pred, self._last_eval.target)
            cm = confusion_matrix(pred, target, self.cfg.num_classes)
            summary = {
                "test_accuracy": acc,
                "test_loss": loss,
                "test_top5": self._last_eval.top5,
                "weights": "ema" if self.ema is not None else "final",
                "epochs": self.cfg.epochs,
                "global_step": self.global_step,
                "params": sum(p.numel() for p in final.parameters()),
                "world_size": self.dist.world_size,
                "wall_time_s": round(wall_time, 1),
                "confusion_matrix": cm.tolist(),
            }
            self._write_weights(epoch=self.cfg.epochs, test_accuracy=f"{acc:.4f}")
            self._write_metrics(summary)
            plot_confusion_matrix(
                cm,
                self.cfg.classes,
                self.run_dir / "confusion_matrix.png",
                title=f"{self.cfg.model} on {self.cfg.data} (test): accuracy {acc:.4f}",
            )
            if self.history:
                plot_training_curves(
                    self.history,
                    self.run_dir / "training_curves.png",
                    test_label="test (EMA weights)" if self.ema is not None else "test",
                )
        if self.dist.distributed:
            dist.barrier()
        return summary
