"""The optimizer and the learning-rate schedule of a run, built with timm from the resolved config (its recipe's
values: `statelayers.engine.recipes`), and the learning rate scaled to the global batch."""

from __future__ import annotations

import torch.nn as nn

from .config import TrainConfig

__all__ = ["global_batch", "learning_rate", "build_optimizer", "build_scheduler"]


def global_batch(cfg: TrainConfig, world: int) -> int:
    """Samples per optimizer step: batch size × processes × accumulation steps."""
    return cfg.batch_size * world * cfg.grad_accum


def learning_rate(cfg: TrainConfig, world: int) -> float:
    """`cfg.lr` when given, else the recipe's `lr_base` per `lr_base_size` samples scaled to the global batch."""
    return cfg.lr if cfg.lr is not None else cfg.lr_base * global_batch(cfg, world) / cfg.lr_base_size


def build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float):
    from timm.optim import create_optimizer_v2

    # timm puts 1-D tensors (biases, norms, A_log, Δ biases) and model.no_weight_decay() (h0, ...)
    # into a no-weight-decay group
    kwargs = {"momentum": cfg.momentum} if cfg.opt in ("sgd", "nesterov", "momentum") else {}
    ssm = list(model.ssm_parameters()) if cfg.ssm_lr_scale is not None and hasattr(model, "ssm_parameters") else []
    if not ssm:
        return create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, **kwargs)
    # S7's recipe: the SSM parameters in their own group, with their own learning rate and weight decay;
    # timm's schedulers multiply each group's rate by its `lr_scale`
    from timm.optim import param_groups_weight_decay

    nwd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    ssm_ids = {id(p) for p in ssm}
    groups = [dict(g, params=[p for p in g["params"] if id(p) not in ssm_ids])
              for g in param_groups_weight_decay(model, cfg.weight_decay, nwd)]
    groups.append({"params": ssm, "weight_decay": cfg.ssm_weight_decay or 0.0, "lr_scale": cfg.ssm_lr_scale})
    return create_optimizer_v2([g for g in groups if g["params"]], opt=cfg.opt, lr=lr,
                               weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(cfg: TrainConfig, optimizer, updates_per_epoch: int):
    from timm.scheduler import create_scheduler_v2

    warmup_epochs = cfg.warmup_epochs or 0
    if cfg.warmup_steps:
        warmup_epochs = cfg.warmup_steps / updates_per_epoch  # timm counts warm-up in epochs
    sched, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, decay_epochs=cfg.decay_epochs or 30,
        decay_milestones=list(cfg.decay_milestones or (90, 180, 270)),
        decay_rate=cfg.decay_rate or 0.1, min_lr=cfg.min_lr or 0.0, warmup_lr=cfg.warmup_lr or 1e-5,
        warmup_epochs=warmup_epochs, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    return sched
