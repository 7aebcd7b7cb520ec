"""The training loop and the evaluation of a checkpoint: one CPU to many GPUs (torchrun / DDP), exact resume.

`train` resolves a `TrainConfig`, builds the run from its task and recipe (`TrainingRun`: data, model,
optimizer, schedule, EMA, loss), restores the last checkpoint when resuming, then trains epoch by epoch,
evaluating, checkpointing and logging after each. Everything random in a run is seeded by construction
(`statelayers.engine.samplers`), so a resumed run repeats exactly what the interrupted run would have done and
needs no RNG state from it.

    from statelayers.engine import TrainConfig, train
    result = train(TrainConfig(model="s6la_cifar_resnet20", data="fashion_mnist", epochs=5))
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from .._extras import require
from ..checkpoint import CheckpointError, latest_checkpoint, load_weights, read_state, save_weights, write_checkpoint
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler, global_batch, learning_rate
from .rundir import (
    append_metrics,
    check_run_dir_free,
    claim_run_dir,
    default_run_name,
    open_tensorboard,
    plot_curves,
    read_config,
    read_metrics,
    truncate_metrics,
    weights_checksum,
    write_config,
    write_summary,
)
from .runtime import Dist, autocast_ctx, setup_distributed, sync_buffers, to_device
from .samplers import EpochSeeded, ShardSampler, mix_seeds
from .tasks import call_model, get_task

__all__ = ["RunResult", "TrainingRun", "train", "evaluate", "eval_loader"]

# what `train(TrainConfig(resume=RUN_DIR, ...))` may change of the run it continues
RESUME_OVERRIDES = ("epochs", "quiet", "workers")


@dataclass
class RunResult:
    """What `train` returns: the run folder and what the run measured."""

    run_dir: Path
    final_metrics: dict
    best_acc: float
    images_per_s: float
    params: int


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[dict], None] | None = None) -> RunResult:
    """Train (or resume) one run; returns where it went and what it measured. ``on_epoch_end(row)``, if given, is
    called on rank 0 after each epoch is logged, with that epoch's metrics.csv row (e.g. to report progress)."""
    d = setup_distributed()
    resume_from = None
    if cfg.resume:
        cfg, resume_from = _resume_point(cfg)
    cfg = cfg.resolved()
    if resume_from is None:  # refuse a taken name before building data and model; `open_run_dir` claims it
        _on_rank0(d, lambda: check_run_dir_free(cfg.output, cfg.name, overwrite=cfg.overwrite))
    torch.manual_seed(cfg.seed)
    run = TrainingRun(cfg, d, restoring=resume_from is not None)
    if resume_from is not None:
        run.restore(*resume_from)
    run.open_run_dir(resumed=resume_from is not None)
    run.start()
    for epoch in range(run.start_epoch, cfg.epochs):
        train_loss, stopped = run.train_epoch(epoch)
        run.end_epoch(epoch, train_loss, stopped)
        if on_epoch_end is not None and d.main:
            on_epoch_end(run.final)
        if stopped:
            break
    return run.finish()


def _on_rank0(d: Dist, fn):
    """fn() on rank 0; every process returns its result, or raises its ValueError / OSError (as ValueError on
    the other ranks), so that no rank waits forever for one that failed."""
    result, error = None, None
    if d.main:
        try:
            result = fn()
        except (ValueError, OSError) as e:
            if d.world == 1:
                raise
            error = f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e)
    if d.world > 1:
        box = [result, error]
        dist.broadcast_object_list(box, src=0)
        result, error = box
        if error is not None:
            raise ValueError(error)
    return result


def _resume_point(cfg: TrainConfig) -> tuple[TrainConfig, tuple[Path, dict]]:
    """The config of the run folder ``cfg.resume`` (with the RESUME_OVERRIDES ``cfg`` sets), and its last
    checkpoint: (folder, state)."""
    run_dir = Path(cfg.resume)
    saved = read_config(run_dir)
    overrides = {k: v for k, v in dataclasses.asdict(cfg).items() if k in RESUME_OVERRIDES and v is not None}
    cfg = dataclasses.replace(TrainConfig.from_saved(saved), **overrides, resume=str(run_dir))
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from")
    return cfg, (ckpt, read_state(ckpt))


class TrainingRun:
    """One run's parts (built from a resolved config on this process) and its progress, stepped by `train`."""

    def __init__(self, cfg: TrainConfig, d: Dist, *, restoring: bool = False):
        """``restoring``: the weights will be replaced by a checkpoint of this run."""
        self.cfg, self.d = cfg, d
        self.task = get_task(cfg.task)

        # data and model
        data = self.task.build_data(cfg)
        self.info, self.collate = data.info, data.collate
        self.eval_set = data.eval
        if cfg.eval_subset:
            self.eval_set = torch.utils.data.Subset(data.eval, range(min(cfg.eval_subset, len(data.eval))))
        self.model = self.task.build_model(cfg, data.model_kwargs, restoring=restoring).to(d.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        # optimization
        self.lr = learning_rate(cfg, d.world)
        self.optimizer = build_optimizer(cfg, self.model, self.lr)
        self.train_set = EpochSeeded(data.train, cfg.seed)
        self.sampler = ShardSampler(len(data.train), d.world, d.rank, cfg.seed, shuffle=True, batch=cfg.batch_size,
                                    repeats=3 if cfg.repeated_aug else 1)
        self.steps_per_epoch = self.sampler.batches_per_epoch() // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set ({len(data.train)} images) is smaller than one global batch "
                f"({global_batch(cfg, d.world)}); lower batch_size or grad_accum"
            )
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
        self.ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay)
        self.mixup = self.task.build_mixup(cfg, self.info)
        self.loss_fn = self.task.build_loss(cfg, self.mixup)

        # a new run's folder is created by `open_run_dir` (rank 0, which tells the other ranks its name)
        self.run_dir = Path(cfg.resume) if cfg.resume else Path(cfg.output) / (cfg.name or "")

        # progress; `restore` sets it from a checkpoint
        self.start_epoch, self.start_batch, self.global_step, self.best_acc = 0, 0, 0, -1.0
        self.batch_in_epoch = 0
        self.seen, self.train_time = 0, 0.0  # samples trained on, seconds spent in training steps (this process)
        self.final: dict = {}  # the last epoch's metrics.csv row
        # set by `start`
        self.train_model: nn.Module = self.model
        self.loader_eval: DataLoader | None = None
        self.writer = None
        self.started_at = 0.0

    def restore(self, ckpt: Path, state: dict) -> None:
        """Continue from a checkpoint of this run: weights, optimizer, schedule, loss scaler and progress."""
        cfg = self.cfg
        if state.get("model") != cfg.model:
            raise CheckpointError(f"checkpoint {ckpt} is for model {state.get('model')!r}, not {cfg.model!r}")
        load_weights(self.model, ckpt / "model.safetensors")
        if self.ema is not None:
            load_weights(self.ema.module, ckpt / "ema.safetensors", "EMA checkpoint")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {ckpt} has an optimizer state that does not fit: {e}") from e
        self.start_epoch, self.start_batch = state["epoch"], state["batch_in_epoch"]
        self.global_step, self.best_acc = state["step"], state["best_acc"]

    def open_run_dir(self, *, resumed: bool) -> None:
        """Rank 0: the run folder (a new run's created atomically by `claim_run_dir`, its name sent to the other
        ranks) with its config.yaml; a resumed run drops the metrics of the epochs it repeats."""
        cfg, d = self.cfg, self.d
        if not resumed:
            self.run_dir = Path(_on_rank0(d, lambda: str(claim_run_dir(
                cfg.output, cfg.name, default_run_name(cfg.model, self.info.name), overwrite=cfg.overwrite,
                quiet=cfg.quiet))))
        if not d.main:
            return
        write_config(self.run_dir, cfg, {"world_size": d.world, "lr_resolved": self.lr, "global_batch":
                                         global_batch(cfg, d.world), "params": self.params, "data_info":
                                         dataclasses.asdict(self.info)})
        if resumed:
            truncate_metrics(self.run_dir, self.start_epoch)

    def start(self) -> None:
        """The model as it trains (compiled, wrapped in DDP), the evaluation loader and TensorBoard."""
        cfg, d = self.cfg, self.d
        if cfg.compile:
            self.train_model = torch.compile(self.model)
        if d.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
            )
        self.loader_eval = eval_loader(self.eval_set, cfg, d, self.collate)
        if d.main:
            self.writer = open_tensorboard(self.run_dir, self.global_step or None)
        self.started_at = time.time()

    def save(self, epoch: int, batch_in_epoch: int) -> None:
        """Rank 0: a checkpoint to resume from at (epoch, batch_in_epoch)."""
        if not self.d.main:
            return
        weights = {"model.safetensors": self.model}
        if self.ema is not None:
            weights["ema.safetensors"] = self.ema.module
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "best_acc": self.best_acc, "model": self.cfg.model}
        write_checkpoint(self.run_dir / "checkpoints", self.global_step, weights, state, {"model": self.cfg.model})

    # ---- one epoch

    def train_epoch(self, epoch: int) -> tuple[float, bool]:
        """Train one epoch (its rest, when resuming mid-epoch). Returns (mean training loss over all processes,
        whether `max_steps` stopped it)."""
        cfg, d = self.cfg, self.d
        tqdm = require("tqdm", "the progress bar").tqdm
        self.train_set.epoch = epoch
        skip = self.start_batch if epoch == self.start_epoch else 0
        self.sampler.set_epoch(epoch, skip * cfg.grad_accum)
        loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.workers,
                            drop_last=True, persistent_workers=False, collate_fn=self.collate)
        self.train_model.train()
        loss_sum, loss_n = torch.zeros((), dtype=torch.float64), 0
        bar = tqdm(total=self.steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=cfg.quiet or not d.main, leave=False, unit="step")
        self.batch_in_epoch, micro = skip, 0
        epoch_started_at = time.time()
        stop = False
        for x, y in loader:
            last_micro = micro == cfg.grad_accum - 1
            loss = self._forward_backward(x, y, micro, last_micro)
            loss_sum += loss.detach().double().cpu()
            loss_n += 1
            self.seen += len(y)
            micro += 1
            if not last_micro:
                continue
            micro = 0
            self._optimizer_step()
            bar.update(1)
            self._log_step(bar, loss, epoch_started_at)
            if cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0 \
                    and self.batch_in_epoch < self.steps_per_epoch:
                self.save(epoch, self.batch_in_epoch)
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                stop = True
                break
        bar.close()
        self.train_time += time.time() - epoch_started_at
        if d.world > 1:  # the logged training loss is the mean over all processes
            totals = torch.stack([loss_sum, torch.tensor(float(loss_n), dtype=torch.float64)])
            dist.all_reduce(totals)
            loss_sum, loss_n = totals[0], int(totals[1].item())
        return (loss_sum / max(loss_n, 1)).item(), stop

    def _forward_backward(self, x, y, micro: int, last_micro: bool) -> torch.Tensor:
        """Loss and gradients of one micro-batch; the gradients add up until the optimizer step."""
        cfg, d = self.cfg, self.d
        x, y = to_device(x, d.device), y.to(d.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(mix_seeds(cfg.seed, self.global_step, micro, d.rank))  # dropout, drop-path, random h0
        if self.mixup is not None:
            np.random.seed(mix_seeds(cfg.seed, self.global_step, micro, d.rank) % (2**32))
            x, y = self.mixup(x, y)
        # DDP averages the gradients over the processes on the last micro-batch of a step only
        sync = contextlib.nullcontext() if (last_micro or d.world == 1) else self.train_model.no_sync()
        with sync:
            with autocast_ctx(cfg, d.device):
                loss = self.loss_fn(call_model(self.train_model, x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step}; lower the learning rate")
            self.scaler.scale(loss / cfg.grad_accum).backward()
        return loss

    def _optimizer_step(self) -> None:
        """Clip, step, advance the schedule and the EMA."""
        cfg = self.cfg
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.batch_in_epoch += 1
        self.scheduler.step_update(self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _log_step(self, bar, loss: torch.Tensor, epoch_started_at: float) -> None:
        """The progress bar's figures, and TensorBoard every 10 steps."""
        if bar.n % 10 == 0 or self.batch_in_epoch == self.steps_per_epoch:
            elapsed = time.time() - epoch_started_at
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            img_s=f"{self.seen / max(self.train_time + elapsed, 1e-9):.0f}")
        if self.writer is not None and self.global_step % 10 == 0:
            self.writer.add_scalar("train/loss", loss.item(), self.global_step)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
            for k, v in getattr(self.loss_fn, "last", {}).items():  # detection: each loss term
                self.writer.add_scalar(f"train/{k}", v.item(), self.global_step)

    def end_epoch(self, epoch: int, train_loss: float, stopped: bool) -> None:
        """Evaluate (and the EMA weights), checkpoint, and on rank 0 keep the best weights and log the epoch."""
        cfg, d = self.cfg, self.d
        sync_buffers(self.model, d)
        metrics = self.task.evaluate(self.model, self.loader_eval, cfg, d)
        if self.ema is not None:
            metrics["ema_eval_acc"] = self.task.evaluate(self.ema.module, self.loader_eval, cfg, d)["eval_acc"]
        score = metrics.get("ema_eval_acc", metrics["eval_acc"])
        improved = score > self.best_acc
        self.best_acc = max(self.best_acc, score)
        if stopped and self.batch_in_epoch < self.steps_per_epoch:
            self.save(epoch, self.batch_in_epoch)
        else:
            self.save(epoch + 1, 0)
        row = {"epoch": epoch, "step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": train_loss, **metrics, "images_per_s": self.seen / max(self.train_time, 1e-9),
               "elapsed_s": time.time() - self.started_at}
        self.final = row
        if d.main:
            if improved:
                best = self.ema.module if self.ema is not None else self.model
                save_weights(best, self.run_dir / "best.safetensors",
                             {"model": cfg.model, "step": str(self.global_step), "eval_acc": f"{score:.6f}"})
            self._log_epoch(epoch, row)

    def _log_epoch(self, epoch: int, row: dict) -> None:
        """metrics.csv, TensorBoard, curves.png and (unless quiet) a line."""
        cfg = self.cfg
        append_metrics(self.run_dir, row)
        if self.writer is not None:
            for k, v in row.items():
                if (k == "train_loss" or k.startswith("eval_")) and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"epoch/{k}", v, epoch)
            self.writer.flush()
        plot_curves({cfg.model: read_metrics(self.run_dir)}, self.run_dir / "curves.png",
                    f"{cfg.model} on {self.info.name}", **self.task.curve_labels)
        if not cfg.quiet:
            print(f"epoch {epoch + 1}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
                  f"{self.task.epoch_summary(row)}  {row['images_per_s']:.0f} img/s", flush=True)

    # ---- the end

    def finish(self) -> RunResult:
        """Close the logs, check that every process ends with the same weights, write summary.yaml."""
        d = self.d
        if self.writer is not None:
            self.writer.close()
        images_per_s = self.seen / max(self.train_time, 1e-9)
        # every process must end with the same weights; check it rather than assume it
        checksums = [weights_checksum(self.model)]
        if d.world > 1:
            gathered = [None] * d.world
            dist.all_gather_object(gathered, checksums[0])
            checksums = gathered
        if d.main:
            write_summary(self.run_dir, {"model": self.cfg.model, "world_size": d.world,
                                         "global_step": self.global_step, "best_acc": self.best_acc,
                                         "images_per_s": images_per_s, "params": self.params, "final": self.final,
                                         "replica_checksums": checksums})
        if len(set(checksums)) > 1:
            raise RuntimeError(f"processes ended with different weights: {checksums}")
        return RunResult(self.run_dir, self.final, self.best_acc, images_per_s, self.params)


def eval_loader(ds: Dataset, cfg: TrainConfig, d: Dist, collate_fn=None) -> DataLoader:
    """This process's shard of the evaluation set, in order."""
    sampler = ShardSampler(len(ds), d.world, d.rank, cfg.seed, shuffle=False, batch=1, drop_last=False)
    return DataLoader(ds, batch_size=cfg.eval_batch_size, sampler=sampler, num_workers=cfg.workers,
                      collate_fn=collate_fn)


def evaluate(model_name: str, checkpoint: str | Path, data: str, *, img_size: int | None = None,
             batch_size: int = 500, model_kwargs: dict | None = None, amp: str = "none", task: str | None = None,
             data_dir: str | None = None, max_len: int | None = None) -> dict:
    """Top-1/top-5 accuracy and loss of a checkpoint (a .safetensors file or a run folder, whose
    best.safetensors is used) on the evaluation split of `data`. Settings not given are taken from the
    run folder's config.yaml when there is one."""
    path = Path(checkpoint)
    train_aug = None
    if path.is_dir():
        if (path / "config.yaml").is_file():
            saved = read_config(path)
            img_size = img_size or saved.get("img_size")
            model_kwargs = model_kwargs or saved.get("model_kwargs")
            task = task or saved.get("task")
            if saved.get("data") == data:
                train_aug = saved.get("train_aug")
                data_dir = data_dir or saved.get("data_dir")
                max_len = max_len or saved.get("max_len")
        path = path / "best.safetensors"
    d = setup_distributed()
    cfg = TrainConfig(model=model_name, data=data, task=task, img_size=img_size, eval_batch_size=batch_size,
                      model_kwargs=model_kwargs or {}, amp=amp, data_dir=data_dir, max_len=max_len).resolved()
    the_task = get_task(cfg.task)
    cfg = the_task.evaluation_config(cfg, train_aug)
    eval_data = the_task.build_data(cfg, eval_only=True)
    model = the_task.build_model(cfg, eval_data.model_kwargs, restoring=True).to(d.device)
    meta = load_weights(model, path)
    if meta.get("model") not in (None, model_name):
        raise CheckpointError(f"{path} was written for model {meta['model']!r}, not {model_name!r}")
    out = the_task.evaluate(model, eval_loader(eval_data.eval, cfg, d, eval_data.collate), cfg, d)
    out["images"] = len(eval_data.eval)
    return out
