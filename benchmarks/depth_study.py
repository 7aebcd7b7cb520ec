"""What S6LA buys: vanilla vs S6LA vs RLA vs MRLA on CIFAR-style ResNet-56 and ResNet-110, on Fashion-MNIST.

Every run goes through the training engine (`statelayers.engine.train`) with one recipe and one budget for all
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
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import os
import platform
import shutil
import statistics
import sys
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
               "model_kwargs", "max_len", "lr")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    # flags left unset take the default below, or the --smallest value
    p.add_argument("--data", help="engine data name (default fashion_mnist)")
    p.add_argument("--seeds", type=int, nargs="+", help=f"default {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--epochs", type=int, help=f"default {DEFAULT_EPOCHS}")
    p.add_argument("--subset", type=int, help=f"class-balanced training images (0: all; default {DEFAULT_SUBSET})")
    p.add_argument("--eval-subset", type=int,
                   help=f"evaluate on the first K test images (0: the whole test set; default {DEFAULT_EVAL_SUBSET})")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULT_BATCH} (lr scaled linearly, as the recipe does)")
    p.add_argument("--depths", type=int, nargs="+", help="default 56 110")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="the S6LA ablations (--no-ablations: the depth comparison only)")
    p.add_argument("--ablation-list", nargs="+", choices=list(ABLATIONS), help="default: all")
    p.add_argument("--ablation-depth", type=int, help="default 56")
    p.add_argument("--output", default=None, help="study folder (default runs/depth_study, or "
                                                   "runs/depth_study_smallest with --smallest)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--budget-min", type=float, default=90.0, help="refuse to start above this estimate (minutes)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    p.add_argument("--estimate-steps", type=int, help="timed training steps per model for the estimate (default 3)")
    p.add_argument("--smallest", action="store_true",
                   help="digits, 1 epoch, 256 images, batch 64, 1 seed, ResNet-20 vanilla + S6LA and one "
                        "ablation (N = 32): proves the script runs (CI)")
    p.add_argument("--zero-init-last", choices=["off", "timm"], default="off",
                   help="off (default): no model zero-initialises the last BN of its residual branches (RLA's "
                        "official init, now given to all); timm: each model's timm default (RLA keeps off)")
    p.add_argument("--out", help="append the report (markdown, plot embedded) to this file")
    args = p.parse_args(argv)
    defaults = dict(data="fashion_mnist", seeds=list(DEFAULT_SEEDS), epochs=DEFAULT_EPOCHS, subset=DEFAULT_SUBSET,
                    eval_subset=DEFAULT_EVAL_SUBSET, batch_size=DEFAULT_BATCH, depths=[56, 110],
                    families=list(FAMILIES), ablation_list=list(ABLATIONS), ablation_depth=56, estimate_steps=3)
    if args.smallest:
        defaults.update(data="digits", seeds=[0], epochs=1, subset=256, eval_subset=0, batch_size=64, depths=[20],
                        families=["vanilla", "s6la"], ablation_list=["N32"], ablation_depth=20, estimate_steps=1)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.output = Path(args.output or ("runs/depth_study_smallest" if args.smallest else "runs/depth_study"))
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

    from statelayers.profile import cpu_model

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
    summary = _read_yaml(run_dir / "summary.yaml")
    if not summary.get("final"):  # resumed after its last checkpoint: the figures are in metrics.csv
        from statelayers.engine import read_metrics

        rows = read_metrics(run_dir)
        last = {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}
        summary["final"] = last
        summary["images_per_s"] = last.get("images_per_s", float("nan"))
    return summary, how


def measure_speed(cfg, steps: int) -> dict:
    """Training and evaluation throughput of cfg's model on real batches of cfg's data, with cfg's optimizer:
    one untimed and `steps` timed training steps; one untimed and one timed evaluation batch."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import default_collate

    from statelayers import engine

    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    train_ds, eval_ds, _, data_kwargs, collate = engine.build_data(cfg)
    collate = collate or default_collate
    model = engine.build_model(cfg, data_kwargs)
    opt = engine.build_optimizer(cfg, model, engine.learning_rate(cfg, 1))
    bs = min(cfg.batch_size, len(train_ds))
    x, y = collate([train_ds[i] for i in range(bs)])
    model.train()
    t = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with engine.autocast_ctx(cfg, torch.device("cpu")):
            loss = F.cross_entropy(engine.call_model(model, x), y)
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
        engine.call_model(model, xe)
        t0 = time.perf_counter()
        engine.call_model(model, xe)
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
                           model_kwargs={**j.kwargs, **init_kwargs(args)},
                           output=str(args.output / "runs"), name=j.name, quiet=True)

    return make


def init_kwargs(args) -> dict:
    """`--zero-init-last off` (default): every model starts with non-zero last BNs in its residual branches, as
    the official RLA code does. timm's default zeroes them in vanilla, S6LA and MRLA but not in RLA, and at a
    126-step budget that difference alone moved vanilla ResNet-56 from 0.467 to 0.734 (BENCHMARKS.md)."""
    return {"zero_init_last": False} if args.zero_init_last == "off" else {}


def gmacs(model: str, kwargs: dict, img: int) -> float:
    import timm

    from statelayers.profile import count_macs

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
    args = parse_args(argv)
    import torch

    from statelayers.data import DatasetMissing, build_datasets

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    try:
        _, eval_ds, info = build_datasets(args.data, subset=args.subset or None, seed=0)
    except DatasetMissing as e:
        print(f"data missing: {e}", file=sys.stderr)
        return 3
    jobs = make_jobs(args)
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
    elapsed = time.perf_counter() - t0

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
        "",
    ]
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
