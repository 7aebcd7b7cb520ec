"""`TrainConfig`: what a run is. Fields left unset take the named recipe's values (`statelayers.engine.recipes`);
`TrainConfig.resolved` fills them in, picks the task from the data when it is not named
(`statelayers.engine.tasks`) and lets the task refuse the options it cannot use."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field

from .recipes import get_recipe
from .tasks import get_task, infer_task

__all__ = ["TrainConfig", "check_numbers", "check_run_name"]

# the fields a recipe gives a value to (`statelayers.engine.recipes.RECIPES`)
_RECIPE_FIELDS = (
    "opt", "momentum", "weight_decay", "lr_base", "lr_base_size", "sched", "decay_epochs", "decay_rate",
    "warmup_epochs", "warmup_lr", "min_lr", "epochs", "batch_size", "img_size", "train_aug", "smoothing",
    "mixup", "cutmix", "drop_path", "repeated_aug", "clip_grad", "ssm_lr_scale", "ssm_weight_decay",
    "decay_milestones", "warmup_steps",
)

# the real-valued fields and their ranges: (low, low included, high, high included); None (unset) always passes
_NUMBER_RANGES = {
    "lr": (0.0, False, math.inf, False),
    "lr_base": (0.0, False, math.inf, False),
    "momentum": (0.0, True, 1.0, False),
    "weight_decay": (0.0, True, math.inf, False),
    "decay_epochs": (0.0, False, math.inf, False),
    "decay_rate": (0.0, False, math.inf, False),
    "warmup_epochs": (0.0, True, math.inf, False),
    "warmup_lr": (0.0, True, math.inf, False),
    "min_lr": (0.0, True, math.inf, False),
    "smoothing": (0.0, True, 1.0, False),
    "mixup": (0.0, True, math.inf, False),
    "cutmix": (0.0, True, math.inf, False),
    "drop_path": (0.0, True, 1.0, False),
    "clip_grad": (0.0, True, math.inf, False),  # 0: off
    "ssm_lr_scale": (0.0, True, math.inf, False),
    "ssm_weight_decay": (0.0, True, math.inf, False),
    "ema_decay": (0.0, True, 1.0, True),
}


def _range_text(low: float, low_in: bool, high: float, high_in: bool) -> str:
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_numbers(cfg: TrainConfig) -> None:
    """A one-line ValueError naming the first real-valued field of ``cfg`` that is not a finite number in its range
    (NaN, inf, a negative learning rate, a string, ...)."""
    for name, (low, low_in, high, high_in) in _NUMBER_RANGES.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and (
            (low <= value if low_in else low < value) and (value <= high if high_in else value < high))
        if not ok:
            raise ValueError(f"{name} must be a finite number {_range_text(low, low_in, high, high_in)}, "
                             f"got {value!r}")


# the defaults of the run options that are None until `TrainConfig.resolved`
RUN_OPTION_DEFAULTS = {"eval_batch_size": 500, "workers": 0, "ckpt_every": 0, "quiet": False}


@dataclass
class TrainConfig:
    """A run. Fields left None take the recipe's value; see `statelayers.engine.recipes`."""

    model: str
    data: str = "digits"
    task: str | None = None  # "image" | "sequence" | "detection"; default: inferred from `data`
    recipe: str | None = None  # default: "small" for images, "s7" for sequences
    data_dir: str | None = None  # sequence data that lives in a user folder (dvs_gesture, shd, lra_*, eigenworms)
    max_len: int | None = None  # sequences: truncate to this many steps
    output: str = "runs"
    name: str | None = None  # run folder name under `output` (one path component); default: model-data-time
    overwrite: bool = False  # an existing non-empty folder `name` is moved aside to NAME.old-<time>, not refused
    model_kwargs: dict = field(default_factory=dict)
    # recipe fields
    opt: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr: float | None = None  # absolute learning rate; default lr_base × global batch / lr_base_size
    lr_base: float | None = None
    lr_base_size: int | None = None
    sched: str | None = None
    decay_epochs: float | None = None
    decay_rate: float | None = None
    decay_milestones: list | None = None  # sched="multistep": epochs after which the lr is multiplied by decay_rate
    warmup_epochs: float | None = None
    warmup_lr: float | None = None
    warmup_steps: int | None = None  # linear warm-up over this many optimizer steps (instead of warmup_epochs)
    min_lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None  # per process
    img_size: int | None = None
    train_aug: dict | None = None
    smoothing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    drop_path: float | None = None
    repeated_aug: bool | None = None
    clip_grad: float | None = None
    ssm_lr_scale: float | None = None  # S7: learning-rate multiplier of the SSM group (eigenvalues, static B)
    ssm_weight_decay: float | None = None
    # run options
    subset: int | None = None  # class-balanced training subset
    eval_subset: int | None = None  # evaluate on the first K items of the evaluation split (quick runs)
    eval_batch_size: int | None = None  # default 500
    grad_accum: int = 1
    amp: str = "none"  # "none" | "bf16" (CPU or GPU) | "fp16" (GPU)
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    workers: int | None = None  # default 0
    ckpt_every: int | None = None  # also checkpoint every N optimizer steps (0, default: at epoch ends only)
    max_steps: int | None = None  # stop after this many optimizer steps (budgets, tests)
    quiet: bool | None = None  # default False
    resume: str | None = None  # a run folder to continue

    @classmethod
    def from_saved(cls, saved: dict) -> TrainConfig:
        """The config a run folder's config.yaml holds (which also has figures of the run: world_size, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def resolved(self) -> TrainConfig:
        """This config with its task and recipe named, the recipe's values filled in, and checked."""
        task = get_task(self.task or infer_task(self.data))
        recipe_name = self.recipe or task.default_recipe(self.model)
        recipe = get_recipe(recipe_name)
        values = {f: getattr(self, f) for f in _RECIPE_FIELDS}
        for f in _RECIPE_FIELDS:
            if values[f] is None:
                values[f] = recipe.get(f)
        if self.train_aug is not None and not isinstance(self.train_aug, dict):
            raise ValueError(f"train_aug must be a dict of KEY=VALUE settings, got {self.train_aug!r}")
        if self.train_aug is not None:
            values["train_aug"] = {**(recipe.get("train_aug") or {}), **self.train_aug}
        cfg = dataclasses.replace(self, task=task.name, recipe=recipe_name, **values)
        # run options left None ("not given", so that a resumed run can tell what was asked of it) take their defaults
        cfg = dataclasses.replace(cfg, **{k: v for k, v in RUN_OPTION_DEFAULTS.items() if getattr(cfg, k) is None})
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {cfg.amp!r}")
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
            raise ValueError("grad_accum, batch_size and epochs must be positive")
        if cfg.ckpt_every < 0:
            raise ValueError(f"ckpt_every must be 0 (checkpoint at epoch ends only) or positive, got {cfg.ckpt_every}")
        check_numbers(cfg)
        check_run_name(cfg.name)
        return task.checked_config(cfg)


def check_run_name(name: str | None) -> None:
    """A run name is one folder name, so that the run stays inside its output folder: no path separator, not
    absolute, not empty, "." or ".."."""
    if name is None:
        return
    seps = {"/", "\\"} | ({os.sep, os.altsep} - {None})
    if not isinstance(name, str) or name in ("", ".", "..") or any(s in name for s in seps) or "\0" in name \
            or os.path.isabs(name):
        raise ValueError(f"run name {name!r} must be a single folder name inside the output folder "
                         "(no path separators, not '.' or '..')")
