"""Training and evaluation engine: one CPU to many GPUs (torchrun / DDP), exact resume.

Everything random in a run is a function of (seed, epoch, sample index) or (seed, step):
the data order, each sample's augmentation, Mixup/CutMix and dropout. A resumed run therefore
repeats exactly what the interrupted run would have done, and needs no RNG state from it.

    from statelayers.engine.loop import TrainConfig, train
    result = train(TrainConfig(model="s6la_cifar_resnet20", data="fashion_mnist", epochs=5))
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checkpoint import CheckpointError, latest_checkpoint, load_weights, read_state, save_weights, write_checkpoint
from .recipes import get_recipe

__all__ = ["TrainConfig", "train", "evaluate", "RunResult"]

_RECIPE_FIELDS = (
    "opt", "momentum", "weight_decay", "lr_base", "lr_base_size", "sched", "decay_epochs", "decay_rate",
    "warmup_epochs", "warmup_lr", "min_lr", "epochs", "batch_size", "img_size", "train_aug", "smoothing",
    "mixup", "cutmix", "drop_path", "repeated_aug", "clip_grad", "ssm_lr_scale", "ssm_weight_decay",
    "decay_milestones", "warmup_steps",
)
TASKS = ("image", "sequence", "detection")


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
    name: str | None = None  # run folder name under `output`
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
    eval_batch_size: int = 500
    grad_accum: int = 1
    amp: str = "none"  # "none" | "bf16" (CPU or GPU) | "fp16" (GPU)
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    workers: int = 0
    ckpt_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    max_steps: int | None = None  # stop after this many optimizer steps (budgets, tests)
    quiet: bool = False
    resume: str | None = None  # a run folder to continue

    def resolved(self) -> TrainConfig:
        task = self.task or infer_task(self.data)
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        recipe_name = self.recipe or default_recipe(task, self.model)
        recipe = get_recipe(recipe_name)
        values = {f: getattr(self, f) for f in _RECIPE_FIELDS}
        for f in _RECIPE_FIELDS:
            if values[f] is None:
                values[f] = recipe.get(f)
        if self.train_aug is not None:
            values["train_aug"] = {**(recipe.get("train_aug") or {}), **self.train_aug}
        cfg = dataclasses.replace(self, task=task, recipe=recipe_name, **values)
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {cfg.amp!r}")
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
            raise ValueError("grad_accum, batch_size and epochs must be positive")
        if task == "sequence":
            unusable = [f for f, bad in (("channels_last", cfg.channels_last), ("mixup", cfg.mixup),
                                         ("cutmix", cfg.cutmix), ("repeated_aug", cfg.repeated_aug)) if bad]
            if unusable:
                raise ValueError(f"{', '.join(unusable)} apply to images only, not to task 'sequence'")
        if task == "detection":
            unusable = [f for f, bad in (("channels_last", cfg.channels_last), ("mixup", cfg.mixup),
                                         ("cutmix", cfg.cutmix), ("repeated_aug", cfg.repeated_aug),
                                         ("smoothing", cfg.smoothing)) if bad]
            if unusable:
                raise ValueError(f"{', '.join(unusable)} do not apply to task 'detection'")
            # detection images are large: load at most one training batch of them per evaluation step
            cfg = dataclasses.replace(cfg, eval_batch_size=min(cfg.eval_batch_size, cfg.batch_size))
        return cfg


def default_recipe(task: str, model: str = "") -> str:
    """The recipe of a task when none is named (RetinaNet has its own learning rate in the S6LA paper)."""
    if task == "detection":
        return "detection_retinanet" if str(model).strip().lower() == "retinanet" else "detection"
    return "s7" if task == "sequence" else "small"


def infer_task(data: str) -> str:
    """"sequence" for the names and files `statelayers.data.sequences` reads, "detection" for a COCO-format folder
    (`statelayers.data.coco`), "image" otherwise."""
    from ..data.coco import is_coco_folder
    from ..data.sequences import is_sequence_data

    if is_coco_folder(data):
        return "detection"

    return "sequence" if is_sequence_data(data) else "image"


def build_data(cfg: TrainConfig, *, eval_only: bool = False):
    """(train set, eval set, info, model kwargs from the data, collate_fn) for a resolved config."""
    if cfg.task == "detection":
        from ..data.coco import build_detection_datasets, detection_collate, needs_masks

        train_ds, eval_ds, info = build_detection_datasets(cfg.data, with_masks=needs_masks(cfg.model),
                                                           train_aug=cfg.train_aug, seed=cfg.seed,
                                                           subset=None if eval_only else cfg.subset)
        return train_ds, eval_ds, info, {"num_classes": info.num_classes}, detection_collate
    if cfg.task == "sequence":
        from ..data.sequences import build_sequence_datasets, pad_collate

        train_ds, eval_ds, info = build_sequence_datasets(cfg.data, data_dir=cfg.data_dir, subset=None if eval_only
                                                          else cfg.subset, seed=cfg.seed, max_len=cfg.max_len)
        return train_ds, eval_ds, info, {"num_classes": info.num_classes, **info.model_kwargs()}, pad_collate
    from ..data.images import build_datasets

    train_ds, eval_ds, info = build_datasets(cfg.data, img_size=cfg.img_size, train_aug=cfg.train_aug,
                                             subset=None if eval_only else cfg.subset, seed=cfg.seed)
    return train_ds, eval_ds, info, {"num_classes": info.num_classes, "in_chans": info.in_chans}, None


def to_device(x, device: torch.device):
    """A tensor, or a dict of tensors (sequence batches), or lists / dicts of those (detection batches), on
    `device`."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x.to(device, non_blocking=True)


def call_model(model: nn.Module, x):
    """Images go in positionally; sequence batches (dicts) as keyword tensors."""
    return model(**x) if isinstance(x, dict) else model(x)


@dataclass
class RunResult:
    run_dir: Path
    final_metrics: dict
    best_acc: float
    images_per_s: float
    params: int


# ---------------------------------------------------------------------------------------------
# distributed setup


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


# ---------------------------------------------------------------------------------------------
# data order and augmentation, reproducible by construction


def _mix(*xs: int) -> int:
    """A deterministic 63-bit seed from integers."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSeeded(Dataset):
    """Each sample's random augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed, self.epoch = ds, seed, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if hasattr(self.ds, "epoch"):  # datasets that seed their own augmentation (event streams)
            self.ds.epoch = self.epoch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, self.epoch, i))
            return self.ds[i]


class ShardSampler(Sampler):
    """Per-process slice of a seeded permutation of the data, resumable mid-epoch.

    Rank r takes items r, r+W, r+2W, ... so the global batch of step k is the same set of images
    whatever the number of processes. `repeats` > 1 is DeiT's repeated augmentation: every image
    appears `repeats` times (on different processes) and the epoch keeps its original length.
    """

    def __init__(self, n: int, world: int, rank: int, seed: int, shuffle: bool, batch: int, repeats: int = 1,
                 drop_last: bool = True):
        self.n, self.world, self.rank, self.seed = n, world, rank, seed
        self.shuffle, self.batch, self.repeats, self.drop_last = shuffle, batch, repeats, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0):
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        if self.repeats > 1:
            idx = idx.repeat_interleave(self.repeats)[: self.n]
        if self.drop_last:
            usable = (len(idx) // (self.world * self.batch)) * self.world * self.batch
            idx = idx[:usable]
        mine = idx[self.rank :: self.world].tolist()
        return mine[self.start_batch * self.batch :]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self):
        return len(self._indices())

    def batches_per_epoch(self) -> int:
        n = self.n if not self.drop_last else (self.n // (self.world * self.batch)) * self.world * self.batch
        return n // self.world // self.batch


# ---------------------------------------------------------------------------------------------
# model, optimizer, schedule


def build_model(cfg: TrainConfig, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
    """`restoring`: the weights will be replaced by a checkpoint of this run (resume, eval)."""
    if cfg.task == "detection":  # --model is the detector, --model-kwargs go to statelayers.models.detectors.build
        from ..models.detectors import build_from_config

        return build_from_config(cfg.model, data_kwargs["num_classes"], cfg.model_kwargs, restoring=restoring)
    import timm

    import statelayers  # noqa: F401  (registers the models)

    if not timm.is_model(cfg.model):
        raise ValueError(f"unknown model {cfg.model!r}; `statelayers models` lists ours, any timm name works too")
    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_path:
        kwargs.setdefault("drop_path_rate", cfg.drop_path)
    return timm.create_model(cfg.model, **data_kwargs, **kwargs)


def global_batch(cfg: TrainConfig, world: int) -> int:
    return cfg.batch_size * world * cfg.grad_accum


def learning_rate(cfg: TrainConfig, world: int) -> float:
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


def autocast_ctx(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a GPU; use amp=bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def run_eval(model: nn.Module, loader: DataLoader, cfg: TrainConfig, d: Dist) -> dict:
    if cfg.task == "detection":  # COCO metrics; "eval_acc" is the box AP
        from .detection_eval import run_detection_eval

        return run_detection_eval(model, loader, cfg, d)
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1, top-5, count
    for x, y in loader:
        x, y = to_device(x, d.device), y.to(d.device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_ctx(cfg, d.device):
            logits = call_model(model, x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        sums += torch.tensor([
            F.cross_entropy(logits, y, reduction="sum").item(),
            (top[:, 0] == y).sum().item(),
            (top == y[:, None]).any(dim=1).sum().item(),
            len(y),
        ], dtype=torch.float64)
    if d.world > 1:
        dist.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    return {"eval_loss": loss / max(n, 1), "eval_acc": top1 / max(n, 1), "eval_top5": top5 / max(n, 1)}


def eval_loader(ds: Dataset, cfg: TrainConfig, d: Dist, collate_fn=None) -> DataLoader:
    sampler = ShardSampler(len(ds), d.world, d.rank, cfg.seed, shuffle=False, batch=1, drop_last=False)
    return DataLoader(ds, batch_size=cfg.eval_batch_size, sampler=sampler, num_workers=cfg.workers,
                      collate_fn=collate_fn)


# ---------------------------------------------------------------------------------------------
# run folder: config, metrics.csv, TensorBoard, plot


def _write_config(run_dir: Path, cfg: TrainConfig, extra: dict) -> None:
    import yaml

    from ..checkpoint import atomic_write_bytes

    data = {**dataclasses.asdict(cfg), **extra}
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False).encode())


def _read_config(run_dir: Path) -> dict:
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


METRIC_FIELDS = ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "eval_top5", "ema_eval_acc",
                 "images_per_s", "elapsed_s")


def _append_metrics(run_dir: Path, row: dict) -> None:
    """One row; the columns are METRIC_FIELDS then any other key of the first row (e.g. COCO metrics)."""
    path = run_dir / "metrics.csv"
    new = not path.exists()
    fields = list(METRIC_FIELDS) + [k for k in row if k not in METRIC_FIELDS]
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), None) or fields
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _truncate_metrics(run_dir: Path, upto_epoch: int) -> None:
    """Drop rows of epochs the resumed run will repeat."""
    rows = [r for r in read_metrics(run_dir) if int(r["epoch"]) < upto_epoch]
    path = run_dir / "metrics.csv"
    if path.exists():
        path.unlink()
    for r in rows:
        _append_metrics(run_dir, r)


def plot_curves(runs: dict[str, list[dict]], path: Path, title: str = "", acc_label: str = "top-1 accuracy",
                loss_label: str = "cross-entropy") -> None:
    """Loss and accuracy against epoch, one line per run, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        ep = [int(r["epoch"]) + 1 for r in rows]
        ax_loss.plot(ep, [float(r["train_loss"]) for r in rows], marker="o", label=f"{label} train")
        if any(r.get("eval_loss") not in (None, "") for r in rows):  # detectors report no eval loss
            ax_loss.plot(ep, [float(r.get("eval_loss") or "nan") for r in rows], marker="x", linestyle="--",
                         label=f"{label} test")
        ax_acc.plot(ep, [float(r["eval_acc"]) for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="loss")
    ax_acc.set(xlabel="epoch", ylabel=acc_label, title=f"test {acc_label}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# training


def train(cfg: TrainConfig) -> RunResult:
    """Train (or resume) one run; returns where it went and what it measured."""
    d = setup_distributed()
    resume_state = None
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = _read_config(run_dir)
        overrides = {k: v for k, v in dataclasses.asdict(cfg).items() if k in ("epochs", "quiet", "workers")
                     and v is not None}
        cfg = dataclasses.replace(TrainConfig(**{k: v for k, v in saved.items() if k in _CONFIG_KEYS}),
                                  **overrides, resume=str(run_dir))
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise CheckpointError(f"{run_dir} has no checkpoint to resume from")
        resume_state = (ckpt, read_state(ckpt))
    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)

    train_ds, eval_ds, info, data_kwargs, collate_fn = build_data(cfg)
    if cfg.eval_subset:
        eval_ds = torch.utils.data.Subset(eval_ds, range(min(cfg.eval_subset, len(eval_ds))))
    model = build_model(cfg, data_kwargs, restoring=resume_state is not None).to(d.device)
    params = sum(p.numel() for p in model.parameters())
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = learning_rate(cfg, d.world)
    optimizer = build_optimizer(cfg, model, lr)
    train_seeded = EpochSeeded(train_ds, cfg.seed)
    sampler = ShardSampler(len(train_ds), d.world, d.rank, cfg.seed, shuffle=True, batch=cfg.batch_size,
                           repeats=3 if cfg.repeated_aug else 1)
    micro_per_epoch = sampler.batches_per_epoch()
    steps_per_epoch = micro_per_epoch // cfg.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training set ({len(train_ds)} images) is smaller than one global batch "
            f"({global_batch(cfg, d.world)}); lower batch_size or grad_accum"
        )
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    mixup_fn = None
    if (cfg.mixup or 0) > 0 or (cfg.cutmix or 0) > 0:
        from timm.data import Mixup

        mixup_fn = Mixup(mixup_alpha=cfg.mixup or 0.0, cutmix_alpha=cfg.cutmix or 0.0,
                         label_smoothing=cfg.smoothing or 0.0, num_classes=info.num_classes)
    if mixup_fn is not None:
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.smoothing or 0.0)
    if cfg.task == "detection":
        from .detection_eval import DetectionLoss

        criterion = DetectionLoss()  # the sum of the loss dict a torchvision detector returns

    # run folder
    if cfg.resume:
        run_dir = Path(cfg.resume)
    else:
        name = cfg.name or f"{cfg.model}-{info.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.output) / name
    start_epoch, start_batch, global_step, best_acc = 0, 0, 0, -1.0
    if resume_state is not None:
        ckpt, state = resume_state
        if state.get("model") != cfg.model:
            raise CheckpointError(f"checkpoint {ckpt} is for model {state.get('model')!r}, not {cfg.model!r}")
        load_weights(model, ckpt / "model.safetensors")
        if ema is not None:
            load_weights(ema.module, ckpt / "ema.safetensors", "EMA checkpoint")
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {ckpt} has an optimizer state that does not fit: {e}") from e
        start_epoch, start_batch = state["epoch"], state["batch_in_epoch"]
        global_step, best_acc = state["step"], state["best_acc"]
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run_dir, cfg, {"world_size": d.world, "lr_resolved": lr, "global_batch":
                                     global_batch(cfg, d.world), "params": params, "data_info":
                                     dataclasses.asdict(info)})
        if resume_state is not None:
            _truncate_metrics(run_dir, start_epoch)

    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if d.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
        )
    loader_eval = eval_loader(eval_ds, cfg, d, collate_fn)
    writer = None
    if d.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step or None)
        except ImportError:
            writer = None

    def save(epoch: int, batch_in_epoch: int) -> None:
        if not d.main:
            return
        weights = {"model.safetensors": model}
        if ema is not None:
            weights["ema.safetensors"] = ema.module
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "best_acc": best_acc, "model": cfg.model}
        write_checkpoint(run_dir / "checkpoints", global_step, weights, state, {"model": cfg.model})

    from tqdm import tqdm

    seen, train_time = 0, 0.0
    final = {}
    t_run = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        train_seeded.epoch = epoch
        skip = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * cfg.grad_accum)
        loader = DataLoader(train_seeded, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            drop_last=True, persistent_workers=False, collate_fn=collate_fn)
        train_model.train()
        loss_sum, loss_n = torch.zeros((), dtype=torch.float64), 0
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=cfg.quiet or not d.main, leave=False, unit="step")
        batch_in_epoch, micro = skip, 0
        t0 = time.time()
        stop = False
        for x, y in loader:
            x, y = to_device(x, d.device), y.to(d.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            torch.manual_seed(_mix(cfg.seed, global_step, micro, d.rank))  # dropout, drop-path, random h0
            if mixup_fn is not None:
                np.random.seed(_mix(cfg.seed, global_step, micro, d.rank) % (2**32))
                x, y = mixup_fn(x, y)
            last_micro = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (last_micro or d.world == 1) else train_model.no_sync()
            with sync:
                with autocast_ctx(cfg, d.device):
                    loss = criterion(call_model(train_model, x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {global_step}; lower the learning rate")
                scaler.scale(loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().double().cpu()
            loss_n += 1
            seen += len(y)
            micro += 1
            if not last_micro:
                continue
            micro = 0
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            batch_in_epoch += 1
            scheduler.step_update(global_step)
            if ema is not None:
                ema.update(model, step=global_step)
            bar.update(1)
            if bar.n % 10 == 0 or batch_in_epoch == steps_per_epoch:
                elapsed = time.time() - t0
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / max(train_time + elapsed, 1e-9):.0f}")
            if writer is not None and global_step % 10 == 0:
                writer.add_scalar("train/loss", loss.item(), global_step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
                for k, v in getattr(criterion, "last", {}).items():  # detection: each loss term
                    writer.add_scalar(f"train/{k}", v.item(), global_step)
            if cfg.ckpt_every and global_step % cfg.ckpt_every == 0 and batch_in_epoch < steps_per_epoch:
                save(epoch, batch_in_epoch)
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                stop = True
                break
        bar.close()
        train_time += time.time() - t0
        if d.world > 1:  # the logged training loss is the mean over all processes
            totals = torch.stack([loss_sum, torch.tensor(float(loss_n), dtype=torch.float64)])
            dist.all_reduce(totals)
            loss_sum, loss_n = totals[0], int(totals[1].item())
        sync_buffers(model, d)
        metrics = run_eval(model, loader_eval, cfg, d)
        if ema is not None:
            metrics["ema_eval_acc"] = run_eval(ema.module, loader_eval, cfg, d)["eval_acc"]
        score = metrics.get("ema_eval_acc", metrics["eval_acc"])
        improved = score > best_acc
        best_acc = max(best_acc, score)
        if stop and batch_in_epoch < steps_per_epoch:
            save(epoch, batch_in_epoch)
        else:
            save(epoch + 1, 0)
        row = {"epoch": epoch, "step": global_step, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": (loss_sum / max(loss_n, 1)).item(), **metrics,
               "images_per_s": seen / max(train_time, 1e-9), "elapsed_s": time.time() - t_run}
        final = row
        if d.main:
            if improved:
                save_weights(ema.module if ema is not None else model, run_dir / "best.safetensors",
                             {"model": cfg.model, "step": str(global_step), "eval_acc": f"{score:.6f}"})
            _append_metrics(run_dir, row)
            if writer is not None:
                for k, v in row.items():
                    if (k == "train_loss" or k.startswith("eval_")) and isinstance(v, (int, float)):
                        writer.add_scalar(f"epoch/{k}", v, epoch)
                writer.flush()
            detection = cfg.task == "detection"
            plot_curves({cfg.model: read_metrics(run_dir)}, run_dir / "curves.png", f"{cfg.model} on {info.name}",
                        **(dict(acc_label="box AP", loss_label="sum of detector losses") if detection else {}))
            if not cfg.quiet:
                shown = f"box_ap {row['eval_acc']:.4f}" if detection else (f"eval_loss {row['eval_loss']:.4f}  "
                                                                         f"eval_acc {row['eval_acc']:.4f}")
                print(f"epoch {epoch + 1}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  {shown}  "
                      f"{row['images_per_s']:.0f} img/s", flush=True)
        if stop:
            break
    if writer is not None:
        writer.close()
    images_per_s = seen / max(train_time, 1e-9)
    # every process must end with the same weights; check it rather than assume it
    checksums = [weights_checksum(model)]
    if d.world > 1:
        gathered = [None] * d.world
        dist.all_gather_object(gathered, checksums[0])
        checksums = gathered
    if d.main:
        import yaml

        from ..checkpoint import atomic_write_bytes

        summary = {"model": cfg.model, "world_size": d.world, "global_step": global_step, "best_acc": best_acc,
                   "images_per_s": images_per_s, "params": params, "final": final, "replica_checksums": checksums}
        atomic_write_bytes(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
    if len(set(checksums)) > 1:
        raise RuntimeError(f"processes ended with different weights: {checksums}")
    return RunResult(run_dir, final, best_acc, images_per_s, params)


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start
    of each forward pass, so after the last training step each process holds its own statistics; without
    this, evaluation and the checkpoint would depend on the rank and the final weight check would fail."""
    if d.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def weights_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state_dict order."""
    import hashlib

    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


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
            saved = _read_config(path)
            img_size = img_size or saved.get("img_size")
            model_kwargs = model_kwargs or saved.get("model_kwargs")
            task = task or saved.get("task")
            if saved.get("data") == data:
                train_aug = saved.get("train_aug")  # ImageFolder: the run's eval resize / crop / interpolation
                data_dir = data_dir or saved.get("data_dir")
                max_len = max_len or saved.get("max_len")
        path = path / "best.safetensors"
    d = setup_distributed()
    cfg = TrainConfig(model=model_name, data=data, task=task, img_size=img_size, eval_batch_size=batch_size,
                      model_kwargs=model_kwargs or {}, amp=amp, data_dir=data_dir, max_len=max_len).resolved()
    if cfg.task == "image":
        cfg = dataclasses.replace(cfg, train_aug=train_aug)
    _, eval_ds, info, data_kwargs, collate_fn = build_data(cfg, eval_only=True)
    model = build_model(cfg, data_kwargs, restoring=True).to(d.device)
    meta = load_weights(model, path)
    if meta.get("model") not in (None, model_name):
        raise CheckpointError(f"{path} was written for model {meta['model']!r}, not {model_name!r}")
    out = run_eval(model, eval_loader(eval_ds, cfg, d, collate_fn), cfg, d)
    out["images"] = len(eval_ds)
    return out
