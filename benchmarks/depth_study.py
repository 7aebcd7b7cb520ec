"""What S6LA buys: vanilla vs S6LA vs RLA vs MRLA on CIFAR-style ResNet-56 and ResNet-110, on Fashion-MNIST.

Every run goes through the training engine (`statelayers.engine.loop.train`) with one recipe and one budget for all
models: recipe `small` (SGD 0.9, wd 5e-4, lr 0.1 per 128 images, 1 warm-up epoch then cosine, 2-px padded crop +
flip, batch 128), a class-balanced training subset picked by the seed (the same images for every model of a seed),
and a fixed evaluation set. Models: `cifar_resnet{D}`, `s6la_cifar_resnet{D}` (N = 16), `rla_cifar_resnet{D}`,
`mrla_cifar_resnet{D}` for D in `--depths`; ablations of `s6la_cifar_resnet56` through `model_kwargs`: N = 16
(the default model, the same runs as the main table), N = 32, N = 64, `selective=False` (Δ and B learned per-block
constants) and `h0="random"` (the initial state re-drawn every training forward, zeros in eval). Every model gets
`zero_init_last=False` (`--zero-init-last off`, RLA's official init) so that all start alike: with timm's
per-model defaults RLA alone started with non-zero residual branches, which decided the comparison at this budget.

**The default budget**: a class-balanced 2,000-image training subset of Fashion-MNIST, 2 epochs (the first is the
recipe's warm-up) at batch 32 (lr 0.025, the recipe's 0.1 per 128 scaled linearly), evaluation on the first
2,000 images of the 10,000-image test set, seeds 0 1 2 — 4 families × 2 depths × 3 seeds + 4 ablations × 3 seeds
= 36 runs. Chosen from measured speed so that it fits 90 minutes on 2 cores even when they are shared: the
script's own estimate was 100 min for a 3,000-image subset with 1 thread on the quiet machine (2026-11-24); the
default was run with 1 thread while the other core ran `benchmarks/s7_study.py` (BENCHMARKS.md has its wall
clock). Batch 32 rather than the recipe's 128 because 2,000 images at 128 are only 16 steps per epoch: measured,
the first runs of that setting ended at 0.11–0.45 test accuracy (RLA-56 at chance), which compares nothing.
At this budget the networks are far from converged: it measures what each method does with the same small budget,
not their final accuracy. Scale it up with `--subset` / `--epochs` / `--eval-subset 0` (the full test set) /
`--seeds` (and `--force` or `--budget-min`).

Before training, the script times a few real training steps and one evaluation batch of every model to be
trained, prints the estimated time of every pending run and the total, and refuses to start when the total is over
`--budget-min` (default 90) unless `--force` is given (`--estimate-only` stops after the estimate). The estimate is
only as good as the machine's quietness while it is measured.

**Resumable**: each (model, kwargs, seed) has its own run folder `OUTPUT/runs/<model>[-<kwargs>]-s<seed>`; a folder
with a `summary.yaml` is skipped (its results are read), a folder with a checkpoint is resumed from it (the engine's
exact resume), anything else is started afresh. A folder whose config differs from the requested one (another
budget) is an error: use another `--output`.

**`--preset gpu`**: the same comparison at the recipe's own setting, on one CUDA GPU: the full Fashion-MNIST
training set (60,000 images) and test set (10,000), batch 128 (lr 0.1, the recipe's), vanilla / S6LA / RLA / MRLA at
depths 56 and 110, seeds 0 1 2 (24 runs; no ablations unless `--ablations`), engine option `amp=bf16` (autocast),
`--workers 1` per run. Each run is its own `python -m statelayers train` process (its output in
`OUTPUT/logs/<run>.log`), `--parallel N` of them at once (default min(8, CPUs / 2): one CPU for each training
process and one for its data worker; 0: all at once; the models are small, and the estimate prints the peak GPU
memory each probe process allocated), longest estimated first; every other flag keeps its meaning.
`--threads` is the CPU threads of each process (default 1). The number of epochs is not fixed: the preset sizes it
to `--budget-min` (default 8 minutes for the whole invocation, sized for an H100) from its own estimate:

1. *Probe*: `--parallel` processes at once (each model of the pending runs dealt to them in turn, repeated to fill
   them; one round per `--parallel` models) each build the run's data, model and optimizer as the engine does, take
   `--estimate-steps` (5) untimed warm-up steps, wait until all are ready, then time the engine's training step
   (real batches from a DataLoader with the run's workers, bf16, the per-step sync of the loss) for
   `--probe-seconds` (6) together, and one evaluation batch. So the step time is measured under the contention of
   the training itself (GPU time-slicing, shared CPUs), not assumed. Each process also reports its start-up (spawn
   to ready: imports, CUDA, data, model, warm-up); the slowest is used for every run.
2. *Model*: a run takes start-up + epochs × (steps × its contended step time + test set / its eval speed + 3 s of
   checkpoint, plot and worker start-up) + 2 s. Every run is assumed at the contended speed throughout, although
   the last runs have fewer neighbours (so the estimate errs long). The runs go longest first into `--parallel`
   slots, each as soon as one is free; the makespan of that schedule (the script runs them in the same order),
   times 1.10, plus the time already spent (start, probe) and 20 s for the report, is the estimate.
3. *Choice*: the most epochs (30 down to 2: the first epoch is the recipe's warm-up, so 1 epoch would end at the
   peak learning rate) of the full training set that fit; if not even 2 epochs fit, 2 epochs of the largest
   class-balanced subset (55,000, 50,000, ... 10,000) that fits; if not even that, it refuses to start (exit 2)
   unless `--force` (then it takes 2 epochs of 10,000). Given `--epochs`, it checks that budget instead of
   choosing one; given `--subset`, it chooses the epochs only. It prints the probe's figures, every run's
   estimate, the total and the chosen budget before training; `--estimate-only` stops there. The choice is kept in
   `OUTPUT/gpu_budget.yaml`: a later invocation on the same folder reuses it, so an interrupted study resumes with
   the same budget (it re-probes the pending runs; a resumed run is estimated in full).

Resumable as above: finished runs are skipped, interrupted ones continue from their last epoch-end checkpoint
(`python -m statelayers train --resume`); SIGTERM / Ctrl-C stops the running processes. A failed run does not stop
the others; the script then exits 1 and names the logs. The report gets a line on the device, the processes and the
estimate against the wall clock, and a table of this invocation's processes (pid, start, end, exit); the same in
`processes.csv`. Train img/s is each process's own figure, with the others running beside it.
`--preset gpu --smallest` is its CPU-sized form (CI): digits, 512 images, batch 64, ResNet-20 vanilla + S6LA, 1
seed, 1 epoch, amp none (bf16 autocast is slow on CPUs), `--workers 0`, 2 processes at once, a 1 s probe and a
3-minute budget: it goes through the probe, the estimate, the choice, the parallel processes, the resume and the
report in about 50 s on 2 quiet cores.

Outputs (in `--output`): `depth_study.md` (the report: mean ± sample std of the final-epoch test accuracy over seeds,
params, GMACs at the data's image size, training images/s as the engine measured them), `depth_study.png`
(accuracy against depth per family with ±1 std error bars, and the ablation bars), `depth_study.csv` (every run).
`--out FILE.md` also appends the report, with the plot embedded, to FILE.md. Whatever the result, it is printed as
measured.

    python benchmarks/depth_study.py                              # the default study (prints its estimate first)
    python benchmarks/depth_study.py --estimate-only              # time a few steps, print the estimate, stop
    python benchmarks/depth_study.py --smallest                   # digits, 1 epoch, 1 seed, 3 runs: < 1 min
    python benchmarks/depth_study.py --subset 20000 --epochs 15 --eval-subset 0 --seeds 0 1 2 3 4 --force \\
        --output runs/depth_study_long --out BENCHMARKS.md
    PYTHONPATH=$PWD python benchmarks/depth_study.py --preset gpu  # on a GPU: probe, size to 8 min, 24 runs, 8 at once
    python benchmarks/depth_study.py --preset gpu --estimate-only  # probe and print the chosen budget only
    python benchmarks/depth_study.py --preset gpu --smallest       # its CPU-sized form: 2 processes at once, < 1 min
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SUBSET, DEFAULT_EPOCHS, DEFAULT_EVAL_SUBSET, DEFAULT_SEEDS, DEFAULT_BATCH = 2000, 2, 2000, (0, 1, 2), 32
FAMILIES = {  # label: timm name pattern
    "vanilla": "cifar_resnet{}",
    "s6la": "s6la_cifar_resnet{}",
    "rla": "rla_cifar_resnet{}",
    "mrla": "mrla_cifar_resnet{}",
}
ABLATIONS = {  # key: (label, model_kwargs of the S6LA ResNet)
    "N16": ("N = 16 (default)", {}),
    "N32": ("N = 32", {"d_state": 32}),
    "N64": ("N = 64", {"d_state": 64}),
    "no-selection": ("no selection (selective=False)", {"selective": False}),
    "random-h0": ("random h0 (h0=random)", {"h0": "random"}),
}
# seconds the engine spends outside the timed steps: per epoch (checkpoint, curves.png, TensorBoard) and per run
# (data, model, run folder); measured on the smallest setting
EPOCH_OVERHEAD_S, RUN_OVERHEAD_S = 1.5, 3.0
CONFIG_KEYS = ("model", "data", "task", "recipe", "epochs", "batch_size", "subset", "eval_subset", "seed",
               "model_kwargs", "max_len", "lr", "amp")

# --preset gpu: the settings it gives to flags left unset (--smallest: its CPU-sized form). No epochs: the preset
# picks them (or, failing that, a smaller training subset) from its measured estimate, within the budget.
PRESET_GPU = dict(data="fashion_mnist", seeds=[0, 1, 2], subset=0, eval_subset=0, batch_size=128, depths=[56, 110],
                  families=list(FAMILIES), ablations=False, ablation_depth=56, amp="bf16", workers=1, budget_min=8.0,
                  probe_seconds=6.0, estimate_steps=5, min_epochs=2, max_epochs=30,
                  fallback_subsets=tuple(range(55000, 9999, -5000)))
PRESET_GPU_SMALLEST = dict(data="digits", seeds=[0], subset=512, eval_subset=0, batch_size=64, depths=[20],
                           families=["vanilla", "s6la"], ablations=False, ablation_list=["N32"], ablation_depth=20,
                           amp="none", workers=0, budget_min=3.0, probe_seconds=1.0, estimate_steps=1, min_epochs=1,
                           max_epochs=1, fallback_subsets=(), parallel=2)
# the parallel estimate: seconds per epoch outside the timed steps and the evaluation (checkpoint, curves.png,
# TensorBoard, two DataLoader worker start-ups; assumed, twice the CPU figure above, as 8 processes share the CPUs),
# per run after its last epoch (summary, weight checksum, exit), for the final report (GMACs of every model, plot);
# and the margin on the training makespan
PAR_EPOCH_OVERHEAD_S, PAR_RUN_END_S, REPORT_S, MARGIN = 3.0, 2.0, 20.0, 0.10
BUDGET_FILE = "gpu_budget.yaml"  # the budget the preset chose for its study folder (later invocations reuse it)
PROBE_TIMEOUT_S, BARRIER_TIMEOUT_S = 300, 120
ROOT = Path(__file__).resolve().parents[1]


def default_parallel() -> int:
    """--preset gpu: at most 8 runs at once, and one CPU per training process plus one for its data worker."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    # flags left unset take the default below, or the --smallest / --preset value
    p.add_argument("--data", help="engine data name (default fashion_mnist)")
    p.add_argument("--seeds", type=int, nargs="+", help=f"default {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--epochs", type=int, help=f"default {DEFAULT_EPOCHS} (--preset gpu: chosen from its estimate)")
    p.add_argument("--subset", type=int, help=f"class-balanced training images (0: all; default {DEFAULT_SUBSET}; "
                                              "--preset gpu: all, or less when that does not fit)")
    p.add_argument("--eval-subset", type=int,
                   help=f"evaluate on the first K test images (0: the whole test set; default {DEFAULT_EVAL_SUBSET})")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULT_BATCH} (lr scaled linearly, as the recipe does)")
    p.add_argument("--depths", type=int, nargs="+", help="default 56 110")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                   help="the S6LA ablations (--no-ablations: the depth comparison only; --preset gpu: off)")
    p.add_argument("--ablation-list", nargs="+", choices=list(ABLATIONS), help="default: all")
    p.add_argument("--ablation-depth", type=int, help="default 56")
    p.add_argument("--output", default=None, help="study folder (default runs/depth_study, or "
                                                   "runs/depth_study_smallest with --smallest; --preset gpu: "
                                                   "runs/depth_study_gpu[_smallest])")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's default; --preset gpu: of each training process, default 1)")
    p.add_argument("--budget-min", type=float, default=None,
                   help="refuse to start above this estimate (minutes; default 90, --preset gpu 8)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    p.add_argument("--estimate-steps", type=int, help="timed training steps per model for the estimate (default 3; "
                                                      "--preset gpu: untimed warm-up steps before its timed window)")
    p.add_argument("--smallest", action="store_true",
                   help="digits, 1 epoch, 256 images, batch 64, 1 seed, ResNet-20 vanilla + S6LA and one "
                        "ablation (N = 32): proves the script runs (CI); with --preset gpu: its CPU-sized form")
    p.add_argument("--zero-init-last", choices=["off", "timm"], default="off",
                   help="off (default): no model zero-initialises the last BN of its residual branches (RLA's "
                        "official init, now given to all); timm: each model's timm default (RLA keeps off)")
    p.add_argument("--out", help="append the report (markdown, plot embedded) to this file")
    g = p.add_argument_group("--preset gpu (the runs side by side on one GPU, sized to --budget-min)")
    g.add_argument("--preset", choices=["gpu"],
                   help="gpu: full Fashion-MNIST, batch 128, 4 families x depths 56 110 x seeds 0 1 2, bf16, each run "
                        "its own `python -m statelayers train` process, epochs chosen to fit --budget-min")
    g.add_argument("--parallel", type=int, help="runs at once (0: all; default min(8, CPUs / 2); --smallest 2)")
    g.add_argument("--workers", type=int, help="DataLoader workers of each run (default 1; --smallest 0)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], help="engine autocast (default bf16; --smallest none)")
    g.add_argument("--probe-seconds", type=float,
                   help="length of the timed window of the estimate's probe (default 6; --smallest 1)")
    p.add_argument("--probe-worker", help=argparse.SUPPRESS)  # internal: one process of the estimate's probe
    args = p.parse_args(argv)
    if args.probe_worker:
        return args
    args.auto_epochs, args.auto_subset = args.epochs is None, args.subset is None
    if not args.preset:
        given = [f"--{k.replace('_', '-')}" for k in ("parallel", "workers", "amp", "probe_seconds")
                 if getattr(args, k) is not None]
        if given:
            p.error(f"{', '.join(given)}: for --preset gpu only")
    defaults = dict(data="fashion_mnist", seeds=list(DEFAULT_SEEDS), epochs=DEFAULT_EPOCHS, subset=DEFAULT_SUBSET,
                    eval_subset=DEFAULT_EVAL_SUBSET, batch_size=DEFAULT_BATCH, depths=[56, 110],
                    families=list(FAMILIES), ablations=True, ablation_list=list(ABLATIONS), ablation_depth=56,
                    estimate_steps=3, budget_min=90.0, amp="none", workers=0)
    if args.preset == "gpu":
        defaults.update(epochs=None, parallel=default_parallel())
        defaults.update(PRESET_GPU_SMALLEST if args.smallest else PRESET_GPU)
    elif args.smallest:
        defaults.update(data="digits", seeds=[0], epochs=1, subset=256, eval_subset=0, batch_size=64, depths=[20],
                        families=["vanilla", "s6la"], ablation_list=["N32"], ablation_depth=20, estimate_steps=1)
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    folder = "runs/depth_study" + ("_gpu" if args.preset else "") + ("_smallest" if args.smallest else "")
    args.output = Path(args.output or folder)
    return args


# ------------------------------------------------------------------------------------------------ shared helpers
# (benchmarks/s7_study.py imports these)


@dataclasses.dataclass
class Job:
    group: str  # "main" | "ablation" (or the dataset, in the S7 study)
    label: str  # family / ablation / model label
    depth: int | None
    model: str
    kwargs: dict
    seed: int
    name: str  # run folder name


def kwargs_tag(kwargs: dict) -> str:
    return "".join(f"-{k}{v}" for k, v in sorted(kwargs.items()))


def kwargs_text(kwargs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def machine_lines(script: str, threads: int) -> list[str]:
    import timm
    import torch

    from statelayers.tools.profile import cpu_model

    return [
        f"- command: `python {' '.join([os.path.relpath(script)] + sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), load average {os.getloadavg()[0]:.2f} at the end",
        f"- threads: {threads}; torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}",
    ]


def mean_std(vals: list[float], digits: int = 4) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def check_existing(run_dir: Path, cfg) -> None:
    """A run folder must hold the run we are asking for (same model, data, budget, seed)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    saved = _read_yaml(path)
    want = dataclasses.asdict(cfg.resolved())
    diff = [f"{k}: {saved.get(k)!r} there, {want.get(k)!r} asked" for k in CONFIG_KEYS if saved.get(k) != want.get(k)]
    if diff:
        raise SystemExit(f"{run_dir} holds a different run ({'; '.join(diff)}); use another --output or delete it")


def run_job(cfg, run_dir: Path) -> tuple[dict, str]:
    """(summary.yaml of the run, "done" | "resumed" | "trained"): skip a finished run, resume an interrupted one."""
    from statelayers.checkpoint import CheckpointError, latest_checkpoint
    from statelayers.engine import TrainConfig, train

    check_existing(run_dir, cfg)
    if (run_dir / "summary.yaml").is_file():
        return _read_yaml(run_dir / "summary.yaml"), "done"
    how = "trained"
    try:
        ckpt = latest_checkpoint(run_dir / "checkpoints") if run_dir.is_dir() else None
    except CheckpointError:
        ckpt = None
    if ckpt is not None:
        train(TrainConfig(model=cfg.model, resume=str(run_dir), quiet=True))
        how = "resumed"
    else:
        if run_dir.exists():  # started but killed before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
        train(cfg)
    return read_summary(run_dir), how


def read_summary(run_dir: Path) -> dict:
    """summary.yaml of a finished run, its final figures completed from metrics.csv when needed."""
    summary = _read_yaml(run_dir / "summary.yaml")
    if not summary.get("final"):  # resumed after its last checkpoint: the figures are in metrics.csv
        from statelayers.engine import read_metrics

        rows = read_metrics(run_dir)
        last = {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}
        summary["final"] = last
        summary["images_per_s"] = last.get("images_per_s", float("nan"))
    return summary


def measure_speed(cfg, steps: int) -> dict:
    """Training and evaluation throughput of cfg's model on real batches of cfg's data, with cfg's optimizer and the
    task's own loss (cross-entropy for classes, per-step MSE for `benchmarks/dynamics.py`, ...): one untimed and
    `steps` timed training steps; one untimed and one timed evaluation batch."""
    import torch
    from torch.utils.data import default_collate

    from statelayers.engine.optim import build_optimizer, learning_rate
    from statelayers.engine.runtime import autocast_ctx
    from statelayers.engine.tasks import build_data, build_model, call_model, get_task

    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    train_ds, eval_ds, info, data_kwargs, collate = build_data(cfg)
    collate = collate or default_collate
    model = build_model(cfg, data_kwargs)
    loss_fn = get_task(cfg.task).build_loss(cfg, None, info)
    opt = build_optimizer(cfg, model, learning_rate(cfg, 1))
    bs = min(cfg.batch_size, len(train_ds))
    x, y = collate([train_ds[i] for i in range(bs)])
    model.train()
    t = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with autocast_ctx(cfg, torch.device("cpu")):
            loss = loss_fn(call_model(model, x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            t.append(time.perf_counter() - t0)
    eval_n = min(cfg.eval_subset, len(eval_ds)) if cfg.eval_subset else len(eval_ds)
    eb = min(cfg.eval_batch_size, eval_n, 128)
    xe, _ = collate([eval_ds[i] for i in range(eb)])
    model.eval()
    with torch.no_grad():
        call_model(model, xe)
        t0 = time.perf_counter()
        call_model(model, xe)
        te = time.perf_counter() - t0
    steps_per_epoch = len(train_ds) // cfg.batch_size
    return dict(train_ips=bs * len(t) / sum(t), eval_ips=eb / te, train_n=steps_per_epoch * cfg.batch_size,
                eval_n=eval_n, epochs=cfg.epochs)


def estimate_seconds(speed: dict) -> float:
    per_epoch = speed["train_n"] / speed["train_ips"] + speed["eval_n"] / speed["eval_ips"] + EPOCH_OVERHEAD_S
    return speed["epochs"] * per_epoch + RUN_OVERHEAD_S


def estimate(jobs: list[Job], make_cfg, run_root: Path, steps: int) -> float:
    """Time every distinct model of the pending jobs, print the estimate per job and in total; total seconds."""
    unique = {}
    for j in jobs:  # a run shared by two tables (the N = 16 ablation is the main S6LA run) is trained once
        unique.setdefault(j.name, j)
    unique = list(unique.values())
    for j in unique:  # before any timing: a folder of another budget is an error, not a finished run
        check_existing(run_root / j.name, make_cfg(j))
    pending = [j for j in unique if not (run_root / j.name / "summary.yaml").is_file()]
    speeds, total, lines = {}, 0.0, []
    for j in pending:
        key = (j.group, j.model, kwargs_tag(j.kwargs))
        if key not in speeds:
            speeds[key] = measure_speed(make_cfg(j), steps)
            s = speeds[key]
            print(f"  timed {j.group} {j.model}{kwargs_tag(j.kwargs)}: train {s['train_ips']:.1f} /s, eval "
                  f"{s['eval_ips']:.1f} /s", file=sys.stderr, flush=True)
        sec = estimate_seconds(speeds[key])
        total += sec
        lines.append(f"  {j.name:48s} {sec / 60:6.1f} min")
    done = len(unique) - len(pending)
    print(f"# estimate: {len(pending)} runs to train ({done} already done), from {steps} timed steps per model")
    print("\n".join(lines))
    print(f"# estimated total: {total / 60:.1f} min", flush=True)
    return total


def check_budget(total_s: float, args) -> bool:
    if args.budget_min and total_s > 60 * args.budget_min:
        msg = (f"the estimate ({total_s / 60:.0f} min) is over --budget-min {args.budget_min:g}; lower --subset / "
               f"--epochs / --eval-subset, or pass --force")
        if not args.force:
            print("refusing to start: " + msg, file=sys.stderr)
            return False
        print("warning: " + msg.split("; ")[0] + "; starting anyway (--force)", file=sys.stderr)
    return True


def run_all(jobs: list[Job], make_cfg, run_root: Path) -> dict:
    """Train (or skip / resume) every job in order; {job name: (summary, seconds spent here, how)}."""
    results = {}
    t_start = time.perf_counter()
    for i, j in enumerate(jobs):
        t0 = time.perf_counter()
        summary, how = run_job(make_cfg(j), run_root / j.name)
        dt = time.perf_counter() - t0
        results[j.name] = (summary, dt, how)
        acc = summary["final"]["eval_acc"]
        print(f"  [{time.perf_counter() - t_start:7.0f} s] {i + 1}/{len(jobs)} {j.name}: {how}, test acc {acc:.4f}, "
              f"{summary['images_per_s']:.0f} train/s, {dt:.0f} s", file=sys.stderr, flush=True)
    return results


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def append_report(out: str, text: str, images: list[Path]) -> None:
    """Append `text` and the images (as links relative to `out`) to the markdown file `out`."""
    base = Path(out).resolve().parent
    links = [f"![{p.stem}]({os.path.relpath(Path(p).resolve(), base)})" for p in images]
    with open(out, "a") as f:
        f.write("\n" + text + ("\n" + "\n".join(links) + "\n" if links else ""))


# ------------------------------------------------------------------------------------------------ this study


def make_jobs(args) -> list[Job]:
    import timm

    import statelayers  # noqa: F401

    per_seed = []
    for depth in args.depths:
        for fam in args.families:
            per_seed.append(("main", fam, depth, FAMILIES[fam].format(depth), {}))
    if args.ablations:
        for key in args.ablation_list:
            per_seed.append(("ablation", key, args.ablation_depth, FAMILIES["s6la"].format(args.ablation_depth),
                             ABLATIONS[key][1]))
    jobs = []
    for seed in args.seeds:  # seed-major: an interrupted study has every model at the seeds it finished
        for group, label, depth, model, kw in per_seed:
            if not timm.is_model(model):
                raise SystemExit(f"no model {model!r} (depth {depth}); `statelayers models` lists them")
            # the N = 16 ablation has the name of the main S6LA run: one run folder serves both
            jobs.append(Job(group, label, depth, model, kw, seed, f"{model}{kwargs_tag(kw)}-s{seed}"))
    return jobs


def config_factory(args):
    from statelayers.engine import TrainConfig

    def make(j: Job) -> TrainConfig:
        return TrainConfig(model=j.model, data=args.data, recipe="small", epochs=args.epochs,
                           subset=args.subset or None, eval_subset=args.eval_subset or None,
                           batch_size=args.batch_size, seed=j.seed,
                           model_kwargs={**j.kwargs, **init_kwargs(args)}, amp=args.amp, workers=args.workers,
                           output=str(args.output / "runs"), name=j.name, quiet=True)

    return make


def init_kwargs(args) -> dict:
    """`--zero-init-last off` (default): every model starts with non-zero last BNs in its residual branches, as
    the official RLA code does. timm's default zeroes them in vanilla, S6LA and MRLA but not in RLA, and at a
    126-step budget that difference alone moved vanilla ResNet-56 from 0.467 to 0.734 (BENCHMARKS.md)."""
    return {"zero_init_last": False} if args.zero_init_last == "off" else {}


def gmacs(model: str, kwargs: dict, img: int) -> float:
    import timm

    from statelayers.tools.profile import count_macs

    m = timm.create_model(model, in_chans=1, num_classes=10, **kwargs)
    return count_macs(m, (1, img, img), fake=True) / 1e9


def plot(path: Path, main_rows: dict, abl_rows: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if abl_rows else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for fam in FAMILIES:
        pts = sorted((d, accs) for (f, d), accs in main_rows.items() if f == fam)
        if not pts:
            continue
        xs = [d for d, _ in pts]
        ys = [statistics.mean(a) for _, a in pts]
        es = [statistics.stdev(a) if len(a) > 1 else 0.0 for _, a in pts]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=4, label=fam)
    ax.set(xlabel="depth", ylabel="test accuracy (mean ± std over seeds)", title="accuracy against depth")
    ax.set_xticks(sorted({d for _, d in main_rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    if abl_rows:
        ax = axes[0, 1]
        labels = list(abl_rows)
        ys = [statistics.mean(abl_rows[k]) for k in labels]
        es = [statistics.stdev(abl_rows[k]) if len(abl_rows[k]) > 1 else 0.0 for k in labels]
        ax.bar(range(len(labels)), ys, yerr=es, capsize=4, color="tab:orange")
        ax.set_xticks(range(len(labels)), [ABLATIONS[k][0] for k in labels], rotation=25, ha="right", fontsize=8)
        lo = min(y - e for y, e in zip(ys, es))
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(y + e for y, e in zip(ys, es)) + 0.02))
        ax.set(ylabel="test accuracy", title="S6LA ablations")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    if args.probe_worker:
        return probe_worker(Path(args.probe_worker))
    import torch

    from statelayers.data.images import DatasetMissing, build_datasets

    if args.threads and not args.preset:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    try:
        _, eval_ds, info = build_datasets(args.data, subset=args.subset or None, seed=0)
    except DatasetMissing as e:
        print(f"data missing: {e}", file=sys.stderr)
        return 3
    jobs = make_jobs(args)
    if args.preset:
        return run_preset(args, jobs, t_start)
    make_cfg = config_factory(args)
    run_root = args.output / "runs"
    t0 = time.perf_counter()
    total = estimate(jobs, make_cfg, run_root, args.estimate_steps)
    if args.estimate_only:
        return 0
    if not check_budget(total, args):
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    results = run_all(jobs, make_cfg, run_root)
    write_report(args, jobs, results, time.perf_counter() - t0, threads, info, eval_ds)
    return 0


def write_report(args, jobs: list[Job], results: dict, elapsed: float, threads: int, info, eval_ds,
                 extra_lines: list[str] = (), extra_sections: list[str] = ()) -> str:
    """Print the report and write depth_study.{md,png,csv} (and append to --out); `extra_lines` go after the
    budget lines, `extra_sections` (markdown lines) after the tables."""
    run_root = args.output / "runs"
    macs = {}
    csv_rows, main_rows, abl_rows, speed, params = [], {}, {}, {}, {}
    for j in jobs:
        summary, dt, how = results[j.name]
        key = (j.model, kwargs_tag(j.kwargs))
        if key not in macs:
            macs[key] = gmacs(j.model, j.kwargs, info.img_size)
        acc = summary["final"]["eval_acc"]
        row_key = (j.label, j.depth) if j.group == "main" else j.label
        (main_rows if j.group == "main" else abl_rows).setdefault(row_key, []).append(acc)
        speed.setdefault(row_key if j.group == "main" else ("abl", j.label), []).append(summary["images_per_s"])
        params[key] = summary["params"]
        csv_rows.append(dict(group=j.group, label=j.label, depth=j.depth, model=j.model,
                             model_kwargs=kwargs_text(j.kwargs), seed=j.seed, run=j.name,
                             data=args.data, epochs=args.epochs, subset=args.subset or "", eval_subset=args.eval_subset
                             or "", final_acc=f"{acc:.4f}", best_acc=f"{summary['best_acc']:.4f}",
                             params=summary["params"], gmacs=f"{macs[key]:.4f}",
                             train_img_s=f"{summary['images_per_s']:.1f}",
                             run_s=f"{summary['final'].get('elapsed_s', float('nan')):.0f}", status=how))

    img = info.img_size
    n_eval = min(args.eval_subset, len(eval_ds)) if args.eval_subset else len(eval_ds)
    seeds = " ".join(map(str, args.seeds))
    main_table = md_table(
        ["family", "depth", "model", "seeds", "test acc (mean ± std)", "params", f"GMACs ({img}²)", "train img/s"],
        [[fam, str(d), FAMILIES[fam].format(d), str(len(accs)), mean_std(accs),
          f"{params[(FAMILIES[fam].format(d), '')]:,}", f"{macs[(FAMILIES[fam].format(d), '')]:.4f}",
          f"{statistics.mean(speed[(fam, d)]):.0f}"]
         for d in args.depths for fam in args.families for accs in [main_rows[(fam, d)]]])
    lines = [f"# Depth study: vanilla / S6LA / RLA / MRLA CIFAR-style ResNets on {info.name}", ""]
    lines += machine_lines(__file__, threads)
    lines += [
        f"- init: `--zero-init-last {args.zero_init_last}`; budget: recipe `small`, {args.epochs} epoch(s), "
        f"{info.train_size:,} class-balanced training images "
        f"(picked by the seed), batch {args.batch_size}; test accuracy after the last epoch on "
        f"{n_eval:,} test images; seeds {seeds}; wall clock {elapsed / 60:.1f} min",
        "- acc: mean ± sample std over seeds of the final-epoch test accuracy; train img/s: the engine's measurement, "
        "mean over seeds (other jobs on the machine lower it)",
    ]
    lines += list(extra_lines)
    lines += [""]
    lines += main_table
    if abl_rows:
        s6 = FAMILIES["s6la"].format(args.ablation_depth)
        lines += ["", f"Ablations of {s6} (same budget and seeds):", ""]
        lines += md_table(
            ["variant", "model_kwargs", "seeds", "test acc (mean ± std)", "params", f"GMACs ({img}²)", "train img/s"],
            [[ABLATIONS[k][0], kwargs_text(ABLATIONS[k][1]) or "–", str(len(abl_rows[k])),
              mean_std(abl_rows[k]), f"{params[(s6, kwargs_tag(ABLATIONS[k][1]))]:,}",
              f"{macs[(s6, kwargs_tag(ABLATIONS[k][1]))]:.4f}", f"{statistics.mean(speed[('abl', k)]):.0f}"]
             for k in args.ablation_list])
    lines += list(extra_sections)
    png, csv_path = args.output / "depth_study.png", args.output / "depth_study.csv"
    plot(png, main_rows, abl_rows, f"{info.name}: {info.train_size:,} train images, {args.epochs} epoch(s), "
                                   f"seeds {seeds}")
    write_csv(csv_path, csv_rows)
    lines += ["", f"Plot: `{png}`; every run: `{csv_path}`; run folders: `{run_root}/`"]
    text = "\n".join(lines) + "\n"
    print(text)
    (args.output / "depth_study.md").write_text(text)
    if args.out:
        append_report(args.out, text, [png])
    return text


# ------------------------------------------------------------------------------------------------ --preset gpu


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """One job per run folder (the N = 16 ablation is the main S6LA run)."""
    out = {}
    for j in jobs:
        out.setdefault(j.name, j)
    return list(out.values())


def model_key(j: Job) -> str:
    return j.model + kwargs_tag(j.kwargs)


def child_env(args) -> dict:
    """Environment of the training and probe processes: the checkout importable, `--threads` (default 1) CPU
    threads each (their work is on the GPU; eight processes with a full thread pool each would fight for the CPUs)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(args.threads or 1)
    return env


def train_argv(cfg) -> list[str]:
    """`python -m statelayers train ...` for a TrainConfig: every field that differs from its default."""
    from statelayers.engine import TrainConfig

    argv = [sys.executable, "-m", "statelayers", "train"]
    default = TrainConfig(model="")
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None or (v == getattr(default, f.name) and f.name != "model"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, dict):  # KEY=VALUE, the value read back as YAML (JSON is YAML)
            if any(isinstance(x, (dict, list)) for x in v.values()):
                raise ValueError(f"{f.name}={v!r}: nested values cannot go through the command line")
            argv += [flag] + [f"{k}={_yaml_scalar(x)}" for k, x in v.items()]
        elif isinstance(v, (list, tuple)):
            argv += [flag] + [str(x) for x in v]
        else:
            argv += [flag, str(v)]
    return argv


def _yaml_scalar(x) -> str:
    """x as text that YAML reads back as x (JSON, with a point in floats: PyYAML reads 1e-05 as a string)."""
    text = json.dumps(x)
    if isinstance(x, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e")
    return text


def _stop(procs) -> None:
    """Terminate the processes still running (a training run keeps its last epoch-end checkpoint)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def probe_worker(spec_path: Path) -> int:
    """One process of the probe (`--probe-worker SPEC.json`): build the run's data, model and optimizer as the
    engine does, take warm-up steps, wait until every probe process is ready, then time training steps for a
    fixed window (all processes in their windows together), then one evaluation batch; write the figures."""
    t_import = time.time()
    spec = json.loads(Path(spec_path).read_text())
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset, default_collate

    from statelayers.engine import TrainConfig
    from statelayers.engine.optim import build_optimizer, learning_rate
    from statelayers.engine.runtime import autocast_ctx, to_device
    from statelayers.engine.samplers import EpochSeeded, ShardSampler
    from statelayers.engine.tasks import build_data, build_model, call_model

    cfg = TrainConfig(**spec["config"]).resolved()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(cfg.seed)
    train_ds, eval_ds, _, data_kwargs, collate = build_data(cfg)
    if cfg.eval_subset:
        eval_ds = Subset(eval_ds, range(min(cfg.eval_subset, len(eval_ds))))
    model = build_model(cfg, data_kwargs).to(device)
    opt = build_optimizer(cfg, model, learning_rate(cfg, 1))
    sampler = ShardSampler(len(train_ds), 1, 0, cfg.seed, shuffle=True, batch=cfg.batch_size)
    loader = DataLoader(EpochSeeded(train_ds, cfg.seed), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.workers, drop_last=True, collate_fn=collate)
    batches = iter(loader)

    def step() -> None:  # the engine's step, with its per-step host sync (the loss goes to the CPU)
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast_ctx(cfg, device):
            loss = F.cross_entropy(call_model(model, x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    model.train()
    for _ in range(max(1, spec["warmup"])):
        step()
    sync()
    startup_s = time.time() - spec["spawned_at"]
    ready = Path(spec["ready_dir"])
    (ready / f"{spec['index']}").touch()
    deadline = time.time() + BARRIER_TIMEOUT_S
    while len(list(ready.iterdir())) < spec["processes"] and time.time() < deadline:
        time.sleep(0.01)
    barrier_ok = len(list(ready.iterdir())) >= spec["processes"]
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < spec["window_s"]:
        step()
        n += 1
    sync()
    step_s = (time.perf_counter() - t0) / n
    eb = min(cfg.eval_batch_size, len(eval_ds))
    xe, _ = (collate or default_collate)([eval_ds[i] for i in range(eb)])
    xe = to_device(xe, device)
    model.eval()
    with torch.no_grad(), autocast_ctx(cfg, device):
        call_model(model, xe)
        sync()
        t1 = time.perf_counter()
        for _ in range(2):
            call_model(model, xe)
        sync()
        eval_ips = 2 * eb / (time.perf_counter() - t1)
    result = dict(key=spec["key"], step_s=step_s, steps=n, eval_ips=eval_ips, startup_s=startup_s,
                  import_s=t_import - spec["spawned_at"], barrier_ok=barrier_ok, pid=os.getpid(),
                  device=torch.cuda.get_device_name() if cuda else "cpu",
                  peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def probe(pending: list[Job], make_cfg, n_procs: int, args) -> dict:
    """Time every model of the pending runs with `n_procs` probe processes at once (the concurrency of the
    training), each running its model's real training steps on real batches. Models are dealt to the processes
    in turn, repeated to fill them (8 models, 24 at once: each model 3 times); more models than processes: one
    round per `n_procs` models. {model key: step_s, eval_ips (means over its processes), startup_s (the
    slowest process of all: spawn to ready)}."""
    keys, first = [], {}
    for j in pending:
        if model_key(j) not in first:
            first[model_key(j)] = j
            keys.append(model_key(j))
    rounds = [keys[i:i + n_procs] for i in range(0, len(keys), n_procs)]
    env = child_env(args)
    found: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="depth_study_probe_") as tmp:
        for r, chunk in enumerate(rounds):
            assigned = [chunk[i % len(chunk)] for i in range(n_procs)]
            ready = Path(tmp) / f"ready{r}"
            ready.mkdir()
            procs, logs = [], []
            try:
                for i, key in enumerate(assigned):
                    cfg = make_cfg(first[key])
                    spec = dict(config=dataclasses.asdict(cfg), key=key, warmup=args.estimate_steps,
                                window_s=args.probe_seconds, ready_dir=str(ready), processes=n_procs, index=i,
                                result=str(Path(tmp) / f"r{r}-{i}.json"), spawned_at=time.time())
                    spec_path = Path(tmp) / f"r{r}-{i}.spec.json"
                    spec_path.write_text(json.dumps(spec))
                    logs.append(Path(tmp) / f"r{r}-{i}.log")
                    with open(logs[-1], "w") as log:
                        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--probe-worker",
                                                       str(spec_path)], stdout=log, stderr=subprocess.STDOUT,
                                                      env=env))
                deadline = time.time() + PROBE_TIMEOUT_S
                while any(p.poll() is None for p in procs) and time.time() < deadline:
                    time.sleep(0.1)
            finally:
                _stop(procs)
            for i, (p, key) in enumerate(zip(procs, assigned)):
                res = Path(tmp) / f"r{r}-{i}.json"
                if p.returncode != 0 or not res.is_file():
                    raise SystemExit(f"the estimate's probe of {key} failed (exit {p.returncode}):\n{_tail(logs[i])}")
                found.setdefault(key, []).append(json.loads(res.read_text()))
    every = [x for xs in found.values() for x in xs]
    startup = max(x["startup_s"] for x in every)
    out = {k: dict(step_s=statistics.mean(x["step_s"] for x in xs), eval_ips=statistics.mean(x["eval_ips"] for x in xs),
                   steps=sum(x["steps"] for x in xs), startup_s=startup) for k, xs in found.items()}
    out["_"] = dict(rounds=len(rounds), processes=n_procs, startup_s=startup, device=every[0]["device"],
                    peak_mib=max(x["peak_mib"] for x in every), barrier_ok=all(x["barrier_ok"] for x in every),
                    import_s=max(x["import_s"] for x in every), pids=len({x["pid"] for x in every}))
    return out


def plan(pending: list[Job], speeds: dict, epochs: int, n_train: int, n_eval: int, batch: int,
         n_procs: int) -> tuple[list[Job], dict, float]:
    """(the runs longest first, {run: estimated seconds}, makespan): each run takes the probe's start-up, then per
    epoch its steps at the probe's contended step time, the evaluation and PAR_EPOCH_OVERHEAD_S, then
    PAR_RUN_END_S; `n_procs` slots take the runs longest first (each as soon as a slot is free)."""
    dur = {}
    for j in pending:
        s = speeds[model_key(j)]
        per_epoch = (n_train // batch) * s["step_s"] + n_eval / s["eval_ips"] + PAR_EPOCH_OVERHEAD_S
        dur[j.name] = s["startup_s"] + epochs * per_epoch + PAR_RUN_END_S
    order = sorted(pending, key=lambda j: -dur[j.name])
    slots = [0.0] * max(1, n_procs)
    for j in order:
        i = slots.index(min(slots))
        slots[i] += dur[j.name]
    return order, dur, max(slots) if pending else 0.0


def choose_budget(candidates: list[tuple[int, int]], plan_of, spent_s: float, budget_s: float):
    """The first (epochs, subset) of `candidates` (largest first) whose estimate fits `budget_s`, else the last.
    Estimate: `spent_s` (start-up and probe, already spent) + the makespan that `plan_of(epochs, subset)` gives,
    times 1 + MARGIN, + REPORT_S. ((epochs, subset), run order, {run: s}, makespan, estimate, (epochs, subset,
    estimate) of the last candidate over the budget or None)."""
    over = None
    for i, (epochs, subset) in enumerate(candidates):
        order, dur, makespan = plan_of(epochs, subset)
        total = spent_s + (1 + MARGIN) * makespan + REPORT_S
        if total <= budget_s or i == len(candidates) - 1:
            return (epochs, subset), order, dur, makespan, total, over
        over = (epochs, subset, total)
    raise ValueError("no candidate budget")


def run_parallel(jobs: list[Job], order: list[Job], make_cfg, args, n_procs: int):
    """Train the runs as separate `python -m statelayers train` processes, `n_procs` at once, in `order`
    (finished runs skipped, interrupted ones resumed from their checkpoint). (results as run_all's, process
    records, names of the failed runs); each run's output goes to OUTPUT/logs/<run>.log."""
    from statelayers.checkpoint import CheckpointError, latest_checkpoint

    run_root, logs = args.output / "runs", args.output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    unique = unique_jobs(jobs)
    rank = {j.name: i for i, j in enumerate(order)}
    results, records, failed, queue = {}, [], [], []
    t_start = time.perf_counter()

    def note(i_done: int, name: str, text: str) -> None:
        print(f"  [{time.perf_counter() - t_start:7.0f} s] {i_done}/{len(unique)} {name}: {text}", file=sys.stderr,
              flush=True)

    for j in unique:
        check_existing(run_root / j.name, make_cfg(j))
        if (run_root / j.name / "summary.yaml").is_file():
            results[j.name] = (read_summary(run_root / j.name), 0.0, "done")
            note(len(results), j.name, "done")
        else:
            queue.append(j)
    queue.sort(key=lambda j: rank.get(j.name, len(rank)))
    env = child_env(args)
    running = {}  # name: (Popen, start, how)
    try:
        while queue or running:
            while queue and len(running) < n_procs:
                j = queue.pop(0)
                cfg, run_dir = make_cfg(j), run_root / j.name
                try:
                    ckpt = latest_checkpoint(run_dir / "checkpoints") if run_dir.is_dir() else None
                except CheckpointError:
                    ckpt = None
                if ckpt is not None:
                    how = "resumed"
                    argv = [sys.executable, "-m", "statelayers", "train", "--resume", str(run_dir), "--quiet",
                            "--workers", str(args.workers)]
                else:
                    how = "trained"
                    if run_dir.exists():  # started but killed before its first checkpoint: nothing to keep
                        shutil.rmtree(run_dir)
                    argv = train_argv(cfg)
                with open(logs / f"{j.name}.log", "a") as log:
                    log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {how}: "
                              f"{' '.join(argv[1:])}\n")
                    log.flush()
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
                running[j.name] = (proc, time.perf_counter() - t_start, how)
            time.sleep(0.2)
            for name, (proc, t0, how) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                t1 = time.perf_counter() - t_start
                ok = proc.returncode == 0 and (run_root / name / "summary.yaml").is_file()
                records.append(dict(run=name, pid=proc.pid, start_s=round(t0, 1), end_s=round(t1, 1),
                                    exit=proc.returncode, status=how if ok else "failed"))
                if ok:
                    summary = read_summary(run_root / name)
                    results[name] = (summary, t1 - t0, how)
                    note(len(results), name, f"{how} (pid {proc.pid}), test acc {summary['final']['eval_acc']:.4f}, "
                                             f"{summary['images_per_s']:.0f} train/s, {t1 - t0:.0f} s; "
                                             f"{len(running)} running, {len(queue)} waiting")
                else:
                    failed.append(name)
                    note(len(results), name, f"FAILED (exit {proc.returncode}); log {logs / (name + '.log')}:\n"
                                             + _tail(logs / f"{name}.log"))
    finally:
        if running:
            print(f"stopping {len(running)} running run(s): {', '.join(running)}; the same command resumes them from "
                  f"their last epoch-end checkpoint", file=sys.stderr, flush=True)
        _stop([proc for proc, *_ in running.values()])
    return results, records, failed


def max_overlap(records: list[dict]) -> int:
    """The largest number of these processes that ran at the same time."""
    events = sorted([(r["start_s"], 1) for r in records] + [(r["end_s"], -1) for r in records],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def run_preset(args, jobs: list[Job], t_start: float) -> int:
    """--preset gpu: probe, size the budget to --budget-min, train side by side, report."""
    import torch

    from statelayers.data.images import build_datasets

    cuda = torch.cuda.is_available()
    if not cuda and not args.smallest:
        print("--preset gpu needs a CUDA GPU (`--preset gpu --smallest` runs its tiny form on the CPU)",
              file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the child processes on the way out
    run_root, budget_path = args.output / "runs", args.output / BUDGET_FILE
    if args.auto_epochs and budget_path.is_file():
        saved = _read_yaml(budget_path)
        args.epochs = int(saved["epochs"])
        if args.auto_subset:
            args.subset = int(saved["subset"])
        print(f"# budget of this study folder, chosen by an earlier invocation ({budget_path}): {args.epochs} "
              f"epoch(s) on {'all' if not args.subset else f'{args.subset:,}'} training images")
    auto = args.epochs is None
    make_cfg = config_factory(args)
    unique = unique_jobs(jobs)
    if not auto:  # before any timing: a folder of another budget is an error, not a finished run
        for j in unique:
            check_existing(run_root / j.name, make_cfg(j))
    pending = [j for j in unique if not (run_root / j.name / "summary.yaml").is_file()]
    n_procs = max(1, min(args.parallel or len(pending), len(pending)))
    train_full, eval_ds, _ = build_datasets(args.data, seed=0)
    n_eval = min(args.eval_subset, len(eval_ds)) if args.eval_subset else len(eval_ds)

    sizes = {0: len(train_full)}

    def n_train(subset: int) -> int:
        if (subset or 0) not in sizes:
            sizes[subset] = len(build_datasets(args.data, subset=subset, seed=0)[0])
        return sizes[subset or 0]

    # (the device's name comes from the probe: this process leaves CUDA alone)
    at_once = f", {n_procs} at once as separate processes" if pending else ""
    print(f"# estimate: {len(pending)} runs to train ({len(unique) - len(pending)} already done){at_once}, on "
          f"{'CUDA' if cuda else 'the CPU'}", flush=True)
    speeds, chosen, order, dur, makespan, total, over = {}, None, pending, {}, 0.0, 0.0, None
    if pending:
        speeds = probe(pending, make_cfg, n_procs, args)
        meta = speeds["_"]
        print(f"# probe on {meta['device']}: {meta['processes']} processes at once ({meta['pids']} pids), "
              f"{meta['rounds']} round(s), "
              f"{args.estimate_steps} warm-up step(s) then a {args.probe_seconds:g} s timed window each"
              f"{'' if meta['barrier_ok'] else ' (some processes were not ready in time: the windows did not overlap)'}"
              f"; start-up (spawn to ready) up to {meta['startup_s']:.1f} s"
              + (f"; peak GPU memory allocated per process {meta['peak_mib']:.0f} MiB" if cuda else ""))
        for key in dict.fromkeys(model_key(j) for j in pending):
            s = speeds[key]
            print(f"  {key:44s} {1000 * s['step_s']:8.1f} ms/step at {n_procs} at once, eval "
                  f"{s['eval_ips']:8.0f} img/s")
        t_probe = time.perf_counter() - t_start
        if auto:
            candidates = [(e, args.subset) for e in range(args.max_epochs, args.min_epochs - 1, -1)]
            if args.auto_subset:
                candidates += [(args.min_epochs, s) for s in args.fallback_subsets
                               if s < n_train(args.subset)]
        else:
            candidates = [(args.epochs, args.subset)]
        chosen, order, dur, makespan, total, over = choose_budget(
            candidates, lambda e, sub: plan(pending, speeds, e, n_train(sub), n_eval, args.batch_size, n_procs),
            t_probe, 60 * args.budget_min)
        args.epochs, args.subset = chosen
        print(f"# per run, {args.epochs} epoch(s) on {n_train(args.subset):,} training images, {n_eval:,} test "
              f"images, at the probe's speed:")
        for j in order:
            print(f"  {j.name:48s} {dur[j.name] / 60:6.1f} min")
        print(f"# estimated total: {total / 60:.1f} min = {t_probe:.0f} s so far (start, probe) + training makespan "
              f"{makespan:.0f} s x {1 + MARGIN:.2f} + report {REPORT_S:.0f} s; budget {args.budget_min:g} min")
        if over is not None:
            print(f"# the next larger budget, {over[0]} epoch(s) on {n_train(over[1]):,} images, would take "
                  f"{over[2] / 60:.1f} min")
    elif auto:
        raise SystemExit(f"{args.output}: every run is finished but {budget_path} is missing; pass --epochs")
    fits = total <= 60 * args.budget_min
    subset_text = "all" if not args.subset else f"a class-balanced {args.subset:,} of the"
    print(f"# chosen budget: {args.epochs} epoch(s) on {subset_text} {len(train_full):,} training images, batch "
          f"{args.batch_size}, amp {args.amp}" + ("" if fits else " (over --budget-min)"), flush=True)
    if args.estimate_only:
        return 0
    if not fits:
        msg = (f"{'even the smallest' if auto else 'the'} budget ({args.epochs} epoch(s), {n_train(args.subset):,} "
               f"images) is estimated at {total / 60:.1f} min, over --budget-min {args.budget_min:g}")
        if not args.force:
            print(f"refusing to start: {msg}; give a smaller --epochs / --subset, raise --budget-min, or pass "
                  f"--force", file=sys.stderr)
            return 2
        print(f"warning: {msg}; starting anyway (--force)", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    if auto:
        import yaml

        for j in unique:
            check_existing(run_root / j.name, make_cfg(j))
        budget_path.write_text(yaml.safe_dump(dict(epochs=args.epochs, subset=args.subset or 0,
                                                   estimate_min=round(total / 60, 2), parallel=n_procs)))
    t_train = time.perf_counter()
    results, records, failed = run_parallel(jobs, order, make_cfg, args, n_procs)
    train_s = time.perf_counter() - t_train
    if records:
        write_csv(args.output / "processes.csv", records)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}; their logs are in {args.output / 'logs'}; run "
              f"the same command again to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    _, eval_ds, info = build_datasets(args.data, subset=args.subset or None, seed=0)
    most = max_overlap(records) if records else 0
    extra = [f"- GPU preset: device {speeds['_']['device'] if speeds else ('cuda' if cuda else 'cpu')}, amp "
             f"`{args.amp}`, `--workers {args.workers}`; {len(records)} run(s) trained here, each its own "
             f"`python -m statelayers train` process, at most {most} at once (`--parallel` {n_procs}); estimated "
             f"{total / 60:.1f} min (`--budget-min {args.budget_min:g}`{', budget chosen from it' if auto else ''}), "
             f"took {(time.perf_counter() - t_start) / 60:.1f} min before this report, training "
             f"{train_s / 60:.1f} min of it; train img/s is per process, with the others running beside it"]
    sections = []
    if records:
        sections = ["", "Processes (this invocation; seconds from the start of training):", ""]
        sections += md_table(["run", "pid", "start s", "end s", "exit", "status"],
                             [[r["run"], str(r["pid"]), f"{r['start_s']:.1f}", f"{r['end_s']:.1f}", str(r["exit"]),
                               r["status"]] for r in sorted(records, key=lambda r: r["start_s"])])
    write_report(args, jobs, results, time.perf_counter() - t_start, int(args.threads or 1), info, eval_ds,
                 extra, sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
