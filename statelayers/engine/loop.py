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
import math
import sys
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
from ..checkpoint import (
    CheckpointError,
    load_weights,
    point_last_at,
    remove_temporaries,
    resume_checkpoint,
    save_weights,
    write_checkpoint,
)
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler, global_batch, learning_rate
from .rundir import (
    check_run_dir_free,
    claim_run_dir,
    config_yaml,
    default_run_name,
    lock_run_dir,
    open_tensorboard,
    plot_curves,
    read_config,
    weights_checksum,
    write_config,
    write_metrics,
    write_summary,
)
from .runtime import Dist, autocast_ctx, setup_distributed, sync_buffers, to_device
from .samplers import EpochSeeded, ShardSampler, mix_seeds
from .tasks import call_model, get_task

__all__ = ["RunResult", "TrainingRun", "train", "evaluate", "eval_loader"]

# what `train(TrainConfig(resume=RUN_DIR, ...))` may change of the run it continues: its length (the schedule is
# recomputed for a new --epochs, see `TrainingRun.restore`), how often it checkpoints, and what does not change
# the numbers
RESUME_OVERRIDES = ("epochs", "max_steps", "ckpt_every", "quiet", "workers", "eval_batch_size")


@dataclass
class RunResult:
    """What `train` returns: the run folder and what the run measured."""

    run_dir: Path
    final_metrics: dict
    best_acc: float  # the best value of `score_name` (accuracy for classifiers, whatever the task keeps best by)
    images_per_s: float
    params: int
    score_name: str = "eval_acc"  # the metric the run kept its best weights by (`Task.score_metric`)


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[dict], None] | None = None) -> RunResult:
    """Train (or resume) one run; returns where it went and what it measured. ``on_epoch_end(row)``, if given, is
    called on rank 0 after each epoch is logged, with that epoch's metrics.csv row (e.g. to report progress)."""
    d = setup_distributed()
    resume_from, lock = None, []
    if cfg.resume:
        # rank 0 holds the run folder's lock from here to the end of the run, and clears what killed writes left
        _on_rank0(d, lambda: lock.append(_open_for_resume(Path(cfg.resume))))
        cfg, resume_from = _resume_point(cfg, d)
    cfg = cfg.resolved()
    if not cfg.resume:  # refuse a taken name before building data and model; `open_run_dir` claims it
        _on_rank0(d, lambda: check_run_dir_free(cfg.output, cfg.name, overwrite=cfg.overwrite))
    torch.manual_seed(cfg.seed)
    run = TrainingRun(cfg, d, restoring=resume_from is not None)
    run.lock = lock[0] if lock else None
    if resume_from is not None:
        run.restore(*resume_from)
    run.open_run_dir(resumed=bool(cfg.resume))
    run.start()
    if run.finished:
        if d.main and not cfg.quiet:
            print(f"{run.run_dir} has finished its {cfg.epochs} epochs"
                  + (f" / {cfg.max_steps} steps" if cfg.max_steps is not None else "")
                  + ": nothing to train (extend it with --epochs or --max-steps)", flush=True)
    else:
        for epoch in range(run.start_epoch, cfg.epochs):
            train_loss, stopped = run.train_epoch(epoch)
            run.end_epoch(epoch, train_loss, stopped)
            if on_epoch_end is not None and d.main:
                on_epoch_end(run.final)
            if stopped:
                break
    return run.finish()


def _open_for_resume(run_dir: Path):
    """Rank 0, resuming: lock the run folder (ValueError when another process has it) and delete the temporary
    files that writes killed mid-way left in it. Returns the lock, held until the process ends."""
    if not (run_dir / "config.yaml").is_file():
        read_config(run_dir)  # the error that says what the folder lacks
    held = lock_run_dir(run_dir)
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_temporaries(folder)
    return held


def _on_rank0(d: Dist, fn):
    """fn() on rank 0; every process returns its result, or raises its ValueError / OSError (as ValueError on
    the other ranks), so that no rank waits forever for one that failed."""
    result, error = None, None
    if d.main:
        try:
            result = fn()
        except (ValueError, OSError, CheckpointError) as e:
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


def _given_fields(cfg: TrainConfig) -> dict:
    """The fields of ``cfg`` set to something other than TrainConfig's default (the model "" meaning unset)."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "resume" and v != defaults.get(k)}
    if given.get("model") == "":
        del given["model"]
    return given


def check_resume_changes(run_dir: str | Path, given: dict) -> None:
    """Refuse (ValueError naming them) settings ``given`` for resuming ``run_dir`` that would change the run: any
    field outside RESUME_OVERRIDES whose value differs from the run's config.yaml."""
    saved = read_config(Path(run_dir))

    def same(a, b):  # config.yaml holds lists where the config may hold tuples
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    changed = [k for k, v in given.items() if k not in RESUME_OVERRIDES and k != "resume" and not same(v, saved.get(k))]
    if changed:
        what = ", ".join(f"{k}={given[k]!r} (the run has {saved.get(k)!r})" for k in changed)
        safe = ", ".join(RESUME_OVERRIDES)
        raise ValueError(f"resuming {run_dir} keeps its settings, so {what} would change the run: start a new run "
                         f"for that; only {safe} may change when resuming")


def _resume_point(cfg: TrainConfig, d: Dist) -> tuple[TrainConfig, tuple[Path, dict] | None]:
    """The config of the run folder ``cfg.resume`` (with the RESUME_OVERRIDES ``cfg`` sets; other changes refused)
    and the checkpoint to continue from: (folder, state), or None when the run was stopped before its first one."""
    run_dir = Path(cfg.resume)
    check_resume_changes(run_dir, _given_fields(cfg))
    saved = read_config(run_dir)
    overrides = {k: v for k, v in dataclasses.asdict(cfg).items() if k in RESUME_OVERRIDES and v is not None}
    try:
        cfg = dataclasses.replace(TrainConfig.from_saved(saved), **overrides, resume=str(run_dir))
    except TypeError as e:
        raise CheckpointError(f"{run_dir}/config.yaml is damaged ({e})") from e
    found = resume_checkpoint(run_dir / "checkpoints")
    if found is None:
        if d.main and not cfg.quiet:
            print(f"{run_dir} has no checkpoint yet: starting it from the beginning", flush=True)
        return cfg, None
    ckpt, state, notes = found
    if d.world > 1:  # every rank has chosen (and read) its checkpoint before rank 0 moves LAST and prunes
        dist.barrier()
    if d.main:
        for note in notes:
            print(f"warning: {note}", file=sys.stderr, flush=True)
        # LAST names what this run continues from, and the checkpoints beyond the kept ones go (a run killed
        # between moving LAST and deleting the oldest left one too many); pruning never removes `ckpt`
        point_last_at(ckpt)
    return cfg, (ckpt, state)


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
        self.task.check_model_fits(self.model, self.info)
        self.score_name, self.higher_is_better = self.task.score_metric(self.info)
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
        self.loss_fn = self.task.build_loss(cfg, self.mixup, self.info)

        # a new run's folder is created by `open_run_dir` (rank 0, which tells the other ranks its name)
        self.run_dir = Path(cfg.resume) if cfg.resume else Path(cfg.output) / (cfg.name or "")

        # progress; `restore` sets it from a checkpoint
        # best_acc: the best value of the score so far (-1 or +inf before the first evaluation)
        self.start_epoch, self.start_batch, self.global_step = 0, 0, 0
        self.best_acc = -1.0 if self.higher_is_better else math.inf
        self.batch_in_epoch = 0
        self.seen, self.train_time = 0, 0.0  # samples trained on, seconds spent in training steps (this process)
        self.rows: list[dict] = []  # metrics.csv, a row per epoch (kept in every checkpoint too)
        self.final: dict = {}  # the last epoch's metrics.csv row
        # the (sum, count) of the training losses of the epoch so far, over all processes, when a checkpoint was
        # taken mid-epoch: so that the resumed epoch logs the same mean loss (rank 0 carries it, the others 0)
        self.resumed_loss = (0.0, 0)
        self.epoch_loss = (0.0, 0)  # the same, of the epoch that `train_epoch` last ran
        self.lock = None  # rank 0: the run folder's lock (`rundir.lock_run_dir`)
        # set by `start`
        self.train_model: nn.Module = self.model
        self.loader_eval: DataLoader | None = None
        self.writer = None
        self.started_at = 0.0

    def restore(self, ckpt: Path, state: dict) -> None:
        """Continue from a checkpoint of this run: weights, optimizer, schedule, loss scaler, progress and metrics.

        A new length (``--epochs`` on resume) recomputes the schedule for it, as if the run had been planned that
        long: a finished cosine run given more epochs goes on at the rate the longer cosine has at this epoch (up
        from its final, minimum rate) and decays to the minimum again at the new end. So a 2-epoch run extended to
        4 is not the same as a 4-epoch run (its first epochs decayed faster); a length shorter than what the run
        has trained is refused."""
        cfg, d = self.cfg, self.d
        if state.get("model") != cfg.model:
            raise CheckpointError(f"checkpoint {ckpt} is for model {state.get('model')!r}, not {cfg.model!r}")
        trained = state["epoch"] + (1 if state["batch_in_epoch"] else 0)
        if cfg.epochs < trained:
            raise ValueError(f"{self.run_dir} has trained {trained} epochs; --epochs {cfg.epochs} cannot take them "
                             "back (start a new run for a shorter one)")
        load_weights(self.model, ckpt / "model.safetensors")
        if self.ema is not None:
            load_weights(self.ema.module, ckpt / "ema.safetensors", "EMA checkpoint")
        planned = state.get("epochs", cfg.epochs)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if planned == cfg.epochs:
                self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {ckpt} has an optimizer state that does not fit: {e}") from e
        self.start_epoch, self.start_batch = state["epoch"], state["batch_in_epoch"]
        self.global_step, self.best_acc = state["step"], state["best_acc"]
        self.scheduler.step_update(self.global_step)  # the rate of the next step (changed when the length is)
        if planned != cfg.epochs and d.main and not cfg.quiet:
            print(f"{self.run_dir}: {planned} -> {cfg.epochs} epochs; the {cfg.sched} schedule is recomputed for "
                  f"{cfg.epochs} epochs (learning rate now {self.optimizer.param_groups[0]['lr']:.4g})", flush=True)
        self.rows = [dict(r) for r in state.get("rows", [])]
        if not self.finished:  # rows of epochs this run will train again (an extended partial epoch) go
            self.rows = [r for r in self.rows if r["epoch"] < self.start_epoch]
        self.final = self.rows[-1] if self.rows else {}
        if self.start_batch and d.main:
            self.resumed_loss = tuple(state.get("epoch_loss", (0.0, 0)))

    @property
    def finished(self) -> bool:
        """Whether the run has nothing left to train (all its epochs, or its max_steps)."""
        cfg = self.cfg
        return self.start_epoch >= cfg.epochs or (cfg.max_steps is not None and self.global_step >= cfg.max_steps)

    def open_run_dir(self, *, resumed: bool) -> None:
        """Rank 0: the run folder (a new run's created atomically by `claim_run_dir`, its name sent to the other
        ranks) with its config.yaml; a resumed run drops the metrics of the epochs it repeats."""
        cfg, d = self.cfg, self.d
        figures = {"world_size": d.world, "lr_resolved": self.lr, "global_batch": global_batch(cfg, d.world),
                   "params": self.params, "data_info": dataclasses.asdict(self.info)}
        if not resumed:
            # the folder appears with its config.yaml in it, so that any run folder can be resumed
            def claim():
                path = claim_run_dir(cfg.output, cfg.name, default_run_name(cfg.model, self.info.name),
                                     overwrite=cfg.overwrite, quiet=cfg.quiet,
                                     files={"config.yaml": config_yaml(cfg, figures)})
                self.lock = lock_run_dir(path)
                return str(path)

            self.run_dir = Path(_on_rank0(d, claim))
            return
        if d.main:  # the metrics of the checkpoint resumed from: later rows, of epochs to train again, go
            write_config(self.run_dir, cfg, figures)
            write_metrics(self.run_dir, self.rows)

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
            self.writer = open_tensorboard(self.run_dir, self.global_step if cfg.resume else None)
        self.started_at = time.time()

    def save(self, epoch: int, batch_in_epoch: int, epoch_loss: tuple[float, int] = (0.0, 0)) -> None:
        """Rank 0: a checkpoint to resume from at (epoch, batch_in_epoch), with the metrics so far and, mid-epoch,
        the epoch's loss totals so far (over all processes)."""
        if not self.d.main:
            return
        weights = {"model.safetensors": self.model}
        if self.ema is not None:
            weights["ema.safetensors"] = self.ema.module
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": epoch, "epochs": self.cfg.epochs,
                 "batch_in_epoch": batch_in_epoch, "best_acc": self.best_acc, "model": self.cfg.model,
                 "rows": [dict(r) for r in self.rows], "epoch_loss": (float(epoch_loss[0]), int(epoch_loss[1]))}
        write_checkpoint(self.run_dir / "checkpoints", self.global_step, weights, state, {"model": self.cfg.model})

    def _loss_totals(self, loss_sum: torch.Tensor, loss_n: int) -> tuple[float, int]:
        """(sum, count) of the training losses over all processes (a collective: every rank calls it)."""
        if self.d.world > 1:
            totals = torch.stack([loss_sum, torch.tensor(float(loss_n), dtype=torch.float64)])
            dist.all_reduce(totals)
            return totals[0].item(), int(totals[1].item())
        return loss_sum.item(), loss_n

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
        carried = self.resumed_loss if skip else (0.0, 0)
        loss_sum, loss_n = torch.tensor(carried[0], dtype=torch.float64), carried[1]
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
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                stop = True  # `end_epoch` checkpoints this step, once
                break
            if cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0 \
                    and self.batch_in_epoch < self.steps_per_epoch:
                self.save(epoch, self.batch_in_epoch, self._loss_totals(loss_sum, loss_n))
        bar.close()
        self.train_time += time.time() - epoch_started_at
        self.resumed_loss = (0.0, 0)
        # the logged training loss is the mean over all processes
        self.epoch_loss = self._loss_totals(loss_sum, loss_n)
        return self.epoch_loss[0] / max(self.epoch_loss[1], 1), stop

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
                raise FloatingPointError(_nonfinite_loss_message(loss, x, self.global_step))
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
        key = self.score_name
        metrics = self.task.evaluate(self.model, self.loader_eval, cfg, d, self.info)
        if self.ema is not None:
            metrics[f"ema_{key}"] = self.task.evaluate(self.ema.module, self.loader_eval, cfg, d, self.info)[key]
        score = metrics.get(f"ema_{key}", metrics[key])
        improved = score > self.best_acc if self.higher_is_better else score < self.best_acc
        if improved:
            self.best_acc = score
        row = {"epoch": epoch, "step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": train_loss, **metrics, "images_per_s": self.seen / max(self.train_time, 1e-9),
               "elapsed_s": time.time() - self.started_at}
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}  # plain numbers: state.pt
        self.rows.append(row)
        self.final = row
        if d.main:
            if improved:
                best = self.ema.module if self.ema is not None else self.model
                save_weights(best, self.run_dir / "best.safetensors",
                             {"model": cfg.model, "step": str(self.global_step), key: f"{score:.6f}"})
            self._log_epoch(epoch, row)
        # the checkpoint comes last: it is what makes the epoch done. A run killed before it resumes from the
        # previous checkpoint, trains this epoch again (exactly) and writes the same best weights and metrics.
        if stopped and self.batch_in_epoch < self.steps_per_epoch:
            self.save(epoch, self.batch_in_epoch, self.epoch_loss)
        else:
            self.save(epoch + 1, 0)

    def _log_epoch(self, epoch: int, row: dict) -> None:
        """metrics.csv, TensorBoard, curves.png and (unless quiet) a line."""
        cfg = self.cfg
        write_metrics(self.run_dir, self.rows)
        if self.writer is not None:
            for k, v in row.items():
                if (k == "train_loss" or k.startswith("eval_")) and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"epoch/{k}", v, epoch)
            self.writer.flush()
        labels = dict(self.task.curve_labels)
        if self.score_name != "eval_acc":
            labels.setdefault("acc_label", self.score_name[len("eval_"):])
        plot_curves({cfg.model: self.rows}, self.run_dir / "curves.png",
                    f"{cfg.model} on {self.info.name}", score_key=self.score_name, **labels)
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
                                         "best_metric": self.score_name,
                                         "images_per_s": images_per_s, "params": self.params, "final": self.final,
                                         "replica_checksums": checksums})
        if len(set(checksums)) > 1:
            raise RuntimeError(f"processes ended with different weights: {checksums}")
        return RunResult(self.run_dir, self.final, self.best_acc, images_per_s, self.params, self.score_name)


def _model_named_by(path: Path) -> str:
    """The model a statelayers weights file names in its metadata (ValueError when it names none)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            name = (f.metadata() or {}).get("model")
    except Exception as e:  # damaged header: the loader's message says so
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({e})") from e
    if not name:
        raise ValueError(f"{path} does not name its model: say which it is with --model")
    return name


def _nonfinite_loss_message(loss: torch.Tensor, x, step: int) -> str:
    """Why the loss is not finite, as far as can be told: the data (not finite, or too large for the model's
    arithmetic) or, after the first update, the learning rate."""
    parts = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else [x]
    tensors = [t for t in parts if torch.is_tensor(t) and t.is_floating_point()]
    if any(not torch.isfinite(t).all() for t in tensors):
        return f"loss is {loss.item()} at step {step}: the input batch holds NaN or inf values; check the data"
    big = max((t.abs().max().item() for t in tensors if t.numel()), default=0.0)
    if big > 1e6:
        return (f"loss is {loss.item()} at step {step}: the input batch holds values as large as {big:.3g}; "
                "scale or normalise the data")
    if step == 0:
        return (f"loss is {loss.item()} at the first step, before any update: the model's output on this batch is "
                "not finite; check the data and the model's settings")
    return f"loss is {loss.item()} at step {step}; lower the learning rate (or --clip-grad, --amp none)"


def eval_loader(ds: Dataset, cfg: TrainConfig, d: Dist, collate_fn=None) -> DataLoader:
    """This process's shard of the evaluation set, in order."""
    sampler = ShardSampler(len(ds), d.world, d.rank, cfg.seed, shuffle=False, batch=1, drop_last=False)
    return DataLoader(ds, batch_size=cfg.eval_batch_size, sampler=sampler, num_workers=cfg.workers,
                      collate_fn=collate_fn)


def evaluate(model_name: str | None, checkpoint: str | Path, data: str | None = None, *,
             img_size: int | None = None, batch_size: int = 500, model_kwargs: dict | None = None, amp: str = "none",
             task: str | None = None, data_dir: str | None = None, max_len: int | None = None,
             other_data: bool = False) -> dict:
    """The task's metrics (`Task.evaluate`: loss and top-1/top-5 accuracy for classifiers, MSE/RMSE/MAE/R² for
    regression, ...) of a checkpoint (a .safetensors file or a run folder, whose best.safetensors is used) on the
    evaluation split of `data`.

    A run folder supplies what it records: the model (``model_name`` may be None; another name is refused), the data
    (``data`` may be None; other data is refused unless ``other_data``, since a checkpoint scored on data it was not
    trained for measures nothing) and the settings not given. A weights file needs ``data``; its model defaults to
    the one its metadata names."""
    path = Path(checkpoint)
    train_aug = None
    if path.is_dir() and (path / "config.yaml").is_file():
        saved = read_config(path)
        if model_name and model_name != saved["model"]:
            raise ValueError(f"{path} was trained as {saved['model']!r}, not {model_name!r} (leave out --model: "
                             "the run folder names its model)")
        model_name = saved["model"]
        if data is None:
            data = saved.get("data")
        elif data != saved.get("data") and not other_data:
            raise ValueError(f"{path} was trained on {saved.get('data')!r}; scoring it on {data!r} measures "
                             "something else (its classes may mean other things): leave out --data, or say "
                             "--other-data if that is what you want")
        img_size = img_size or saved.get("img_size")
        model_kwargs = model_kwargs or saved.get("model_kwargs")
        task = task or saved.get("task")
        if saved.get("data") == data:
            train_aug = saved.get("train_aug")
            data_dir = data_dir or saved.get("data_dir")
            max_len = max_len or saved.get("max_len")
        path = path / "best.safetensors"
    elif path.is_dir():
        path = path / "best.safetensors"
    if data is None:
        raise ValueError(f"say which data to evaluate {path} on (--data): only a run folder records its own")
    if not model_name:
        model_name = _model_named_by(path)
    d = setup_distributed()
    cfg = TrainConfig(model=model_name, data=data, task=task, img_size=img_size, eval_batch_size=batch_size,
                      model_kwargs=model_kwargs or {}, amp=amp, data_dir=data_dir, max_len=max_len).resolved()
    the_task = get_task(cfg.task)
    cfg = the_task.evaluation_config(cfg, train_aug)
    eval_data = the_task.build_data(cfg, eval_only=True)
    model = the_task.build_model(cfg, eval_data.model_kwargs, restoring=True).to(d.device)
    the_task.check_model_fits(model, eval_data.info)
    load_weights(model, path, expect_model=model_name)
    out = the_task.evaluate(model, eval_loader(eval_data.eval, cfg, d, eval_data.collate), cfg, d, eval_data.info)
    out["images"] = len(eval_data.eval)
    return out
