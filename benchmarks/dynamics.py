"""Next-observation prediction of a SIMULATED double pendulum sampled at irregular times: S7 (async and zoh), S5 and
a GRU against the last-value and constant-velocity baselines.

The task (`statelayers/data/dynamics.py`, data name `double_pendulum`) is Walker2d's of ODE-LSTM (Lechner &
Hasani) on a system simulated here, since no recorded data installs offline: a damped, driven double pendulum
integrated by fixed-step RK4 (2 ms), observed at random gaps of 0.02-0.18 s; at each step the model gets the
observation (positions of both bobs, both angular velocities: 6 values, z-scored with the training split's
statistics) and the time to the next observation, with `tau` = the time since the previous one (both in units of
the 0.1 s mean gap), and predicts the next observation. 512 training / 256 evaluation trajectories of 100 steps,
the same for every seed. Errors are per step and per value, in the normalised units.

Models (timm names, `statelayers/models/s7_seq.py`; `--models` picks among the keys):

| key | model | what |
| --- | --- | --- |
| `s7_async` | `s7_small` discretization=async | S7 (H = 64, P = 32, 4 blocks), input-dependent Δ, B, C; the |
| | | state decays over the gap Δ·τ, the input enters with the unit step Δ |
| `s7_zoh` | `s7_small` discretization=zoh | the same, zero-order hold over Δ·τ |
| `s5` | `s5_small` | S5: the same network without input dependence (zoh over Δ·τ) |
| `gru` | `gru_small` | a 2-layer GRU (width 64; `--gru-width`); it does not read τ (the gap is in its input) |

Every run goes through the training engine (`statelayers.engine.train`, task `sequence`, recipe `s7`: AdamW, wd
0.05, lr 2e-3 per 32 sequences, 1 warm-up epoch then cosine, the SSM parameters at 0.25x the rate, batch 32;
the loss is the engine's per-step MSE), the same budget for every model. The engine keeps the best weights by
the lowest evaluation MSE; the table reports the last epoch's evaluation (as `benchmarks/s7_study.py` does).

Defaults: 4 epochs, seeds 0 1 2 (12 runs). Sized from one measured epoch (training and evaluation) per model, with
1 thread on the 2-core machine while another benchmark used it (2026-11-28): `s7_small` async 30 s, zoh 29 s,
`s5_small` 5 s, `gru_small` 5 s, so 69 s per seed and epoch: 4 epochs x 3 seeds is ~14 min at that speed, about 10
min or less with both cores free (torch's default threads). At this budget (64 optimizer steps) the models are far
from converged: `s5_small` and `gru_small` ended at eval MSE 0.17-0.18 after 4 epochs, above the constant-velocity
baseline's 0.081 (measured, seed 0); the study compares the models at a small, equal budget; scale it with
`--epochs`. The script times a few real training steps and one evaluation batch per model and prints the estimated
time of every pending run before starting (`--estimate-only` stops there; `--budget-min M` refuses to start above M
minutes unless `--force`).

Resumable like `benchmarks/depth_study.py` (whose helpers this script uses): run folders
`OUTPUT/runs/double_pendulum-<model>[-<kwargs>]-s<seed>`; a finished run is read, not trained again; an interrupted
one resumes from its last checkpoint (one killed before its first checkpoint starts again); a folder that holds
another budget, or anything that is not a run folder, is an error, never overwritten (use another `--output`).

Outputs (in `--output`, default `runs/dynamics`): `dynamics.md` (the report: the command, the machine, one table of
eval MSE and MAE as mean ± sample std over seeds, their ratio to the constant-velocity baseline, params, training
time; the two baselines as rows), `dynamics.csv` (every run); `--out FILE.md` appends the report.

    python benchmarks/dynamics.py                                   # the default study (~10 min on 2 cores)
    python benchmarks/dynamics.py --estimate-only                   # time a few steps, print the estimate, stop
    python benchmarks/dynamics.py --smallest                        # 64 / 32 trajectories x 20 steps, 1 epoch: < 1 min
    python benchmarks/dynamics.py --models s7_async s5 --epochs 20 --seeds 0 1 2 3 4 --force --out BENCHMARKS.md
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
    check_existing,
    estimate,
    kwargs_tag,
    kwargs_text,
    machine_lines,
    md_table,
    mean_std,
    run_job,
    write_csv,
)

DATA = "double_pendulum"
MODELS = {  # key: (label in the table, timm name, model kwargs)
    "s7_async": ("S7 (async)", "s7_small", {"discretization": "async"}),
    "s7_zoh": ("S7 (zoh)", "s7_small", {"discretization": "zoh"}),
    "s5": ("S5", "s5_small", {}),
    "gru": ("GRU", "gru_small", {}),
}
DEFAULT_EPOCHS, DEFAULT_SEEDS = 4, (0, 1, 2)
BASELINE_LABELS = {"constant_velocity": "constant velocity (baseline)", "last_value": "last value (baseline)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="default: all four")
    p.add_argument("--epochs", type=int, help=f"default {DEFAULT_EPOCHS}")
    p.add_argument("--seeds", type=int, nargs="+", help=f"default {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--subset", type=int, help="random training trajectories (default: all 512)")
    p.add_argument("--eval-subset", type=int, help="first K evaluation trajectories (default: all 256)")
    p.add_argument("--max-len", type=int, help="keep the first steps of every trajectory (default: all 100)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (32)")
    p.add_argument("--gru-width", type=int, default=None, help="GRU hidden width (default: gru_small's, 64)")
    p.add_argument("--output", help="study folder (default runs/dynamics, or runs/dynamics_smallest)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--budget-min", type=float, default=None, help="refuse to start above this estimate (minutes)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    p.add_argument("--estimate-steps", type=int, default=2, help="timed training steps per model (default 2)")
    p.add_argument("--smallest", action="store_true",
                   help="64 training / 32 evaluation trajectories of 20 steps, 1 epoch, seed 0, all four models: "
                        "proves the script runs (CI)")
    p.add_argument("--out", help="append the report (markdown) to this file")
    args = p.parse_args(argv)
    # flags left unset take these (--smallest: its own)
    defaults = dict(epochs=DEFAULT_EPOCHS, seeds=list(DEFAULT_SEEDS), output="runs/dynamics")
    if args.smallest:
        defaults.update(epochs=1, seeds=[0], output="runs/dynamics_smallest", subset=64, eval_subset=32, max_len=20)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("epochs", "subset", "eval_subset", "max_len", "batch_size", "gru_width", "estimate_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    args.output = Path(args.output)
    return args


def make_jobs(args) -> list[Job]:
    jobs = []
    for seed in args.seeds:
        for key in args.models:
            label, model, kwargs = MODELS[key]
            kwargs = dict(kwargs)
            if key == "gru" and args.gru_width is not None:
                kwargs["d_model"] = args.gru_width
            jobs.append(Job(DATA, label, None, model, kwargs, seed, f"{DATA}-{model}{kwargs_tag(kwargs)}-s{seed}"))
    return jobs


def config_factory(args):
    from statelayers.engine import TrainConfig

    def make(j: Job) -> TrainConfig:
        return TrainConfig(model=j.model, data=DATA, recipe="s7", epochs=args.epochs, subset=args.subset,
                           eval_subset=args.eval_subset, max_len=args.max_len, batch_size=args.batch_size,
                           seed=j.seed, model_kwargs=dict(j.kwargs), output=str(args.output / "runs"), name=j.name,
                           quiet=True)

    return make


# ------------------------------------------------------------------------------------------------ the runs


def check_folder(run_dir: Path, cfg) -> None:
    """A run folder is this script's run of the same budget (`depth_study.check_existing`), or absent: a non-empty
    folder without a config.yaml is not one of our runs, and is refused rather than replaced."""
    check_existing(run_dir, cfg)
    if run_dir.is_dir() and not (run_dir / "config.yaml").is_file() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} exists and holds no run config; use another --output or move it away")


def run_all(jobs: list[Job], make_cfg, run_root: Path) -> dict:
    """Train (or read, or resume) every job in order; {job name: (summary, seconds spent here, how)}."""
    results = {}
    t_start = time.perf_counter()
    for i, j in enumerate(jobs):
        t0 = time.perf_counter()
        cfg = make_cfg(j)
        check_folder(run_root / j.name, cfg)
        summary, how = run_job(cfg, run_root / j.name)
        dt = time.perf_counter() - t0
        results[j.name] = (summary, dt, how)
        final = summary["final"]
        print(f"  [{time.perf_counter() - t_start:7.0f} s] {i + 1}/{len(jobs)} {j.name}: {how}, eval MSE "
              f"{final['eval_mse']:.4f}, MAE {final['eval_mae']:.4f}, {dt:.0f} s", file=sys.stderr, flush=True)
    return results


def best_mse(run_dir: Path) -> float:
    """The lowest evaluation MSE over the run's epochs (metrics.csv): what its best weights scored."""
    from statelayers.engine import read_metrics

    vals = [float(r["eval_mse"]) for r in read_metrics(run_dir) if r.get("eval_mse") not in ("", None)]
    return min(vals) if vals else float("nan")


# ------------------------------------------------------------------------------------------------ the report


def baselines(args) -> tuple[dict, object, object]:
    """({kind: {"mse", "rmse", "mae"}} on the evaluation trajectories the runs are scored on, eval set, info)."""
    from statelayers.data.dynamics import BASELINES, baseline_metrics
    from statelayers.data.sequences import build_sequence_datasets

    _, eval_ds, info = build_sequence_datasets(DATA, subset=args.subset, seed=0, max_len=args.max_len)
    if args.eval_subset:  # the engine scores the first K
        eval_ds = eval_ds.select(list(range(min(args.eval_subset, len(eval_ds)))))
    return {kind: baseline_metrics(eval_ds, kind) for kind in BASELINES}, eval_ds, info


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import statelayers  # noqa: F401  (registers the models with timm)

    jobs = make_jobs(args)
    make_cfg = config_factory(args)
    run_root = args.output / "runs"
    for j in jobs:  # before any timing: a folder of another budget is an error, not a finished run
        check_folder(run_root / j.name, make_cfg(j))
    base, eval_ds, info = baselines(args)
    t0 = time.perf_counter()
    total = estimate(jobs, make_cfg, run_root, args.estimate_steps)
    if args.estimate_only:
        return 0
    if not check_budget(total, args):
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    results = run_all(jobs, make_cfg, run_root)
    elapsed = time.perf_counter() - t0

    cv = base["constant_velocity"]["mse"]
    mse, mae, train_s, params, csv_rows = {}, {}, {}, {}, []
    for j in jobs:
        summary, _, how = results[j.name]
        final = summary["final"]
        seen = summary.get("global_step", 0) * make_cfg(j).resolved().batch_size
        t_train = seen / summary["images_per_s"] if summary.get("images_per_s") else float("nan")
        mse.setdefault(j.label, []).append(final["eval_mse"])
        mae.setdefault(j.label, []).append(final["eval_mae"])
        train_s.setdefault(j.label, []).append(t_train)
        params[j.label] = summary["params"]
        csv_rows.append(dict(label=j.label, model=j.model, model_kwargs=kwargs_text(j.kwargs), seed=j.seed,
                             run=j.name, epochs=args.epochs, final_mse=f"{final['eval_mse']:.6f}",
                             final_rmse=f"{final.get('eval_rmse', float('nan')):.6f}",
                             final_mae=f"{final['eval_mae']:.6f}", best_mse=f"{best_mse(run_root / j.name):.6f}",
                             ratio_to_constant_velocity=f"{final['eval_mse'] / cv:.4f}", params=summary["params"],
                             train_s=f"{t_train:.1f}", wall_s=f"{final.get('elapsed_s', float('nan')):.1f}",
                             status=how))

    rows = []
    for j in [j for j in jobs if j.seed == args.seeds[0]]:
        ratios = [m / cv for m in mse[j.label]]
        rows.append([j.label, f"`{j.model}` {kwargs_text(j.kwargs)}".strip(), f"{params[j.label]:,}",
                     str(len(mse[j.label])), mean_std(mse[j.label]), mean_std(mae[j.label]), mean_std(ratios, 2),
                     f"{statistics.mean(train_s[j.label]):.0f}"])
    for kind in ("constant_velocity", "last_value"):
        b = base[kind]
        rows.append([BASELINE_LABELS[kind], "–", "0", "–", f"{b['mse']:.4f}", f"{b['mae']:.4f}",
                     f"{b['mse'] / cv:.2f}", "–"])
    n_train = info.train_size
    lines = ["# Double-pendulum next-observation prediction (simulated data): S7 async / zoh, S5, GRU", ""]
    lines += machine_lines(__file__, threads)
    lines += [
        f"- data `{DATA}` (SIMULATED, `statelayers/data/dynamics.py`): {info.note}",
        f"- {n_train} training / {len(eval_ds)} evaluation trajectories × {info.max_len} steps; recipe `s7`, batch "
        f"{args.batch_size or 32}, {args.epochs} epochs; seeds {' '.join(map(str, args.seeds))}; wall clock of the "
        f"whole study {elapsed / 60:.1f} min",
        "- eval MSE / MAE: the last epoch's, per step and per value in the normalised units (each observation "
        "channel z-scored with the training split's statistics), mean ± sample std over seeds; ratio: eval MSE / "
        "the constant-velocity baseline's (below 1: better than extrapolating the last two observations); the "
        "baselines are computed on the same evaluation trajectories; train s: time in training steps per run",
        "",
    ]
    lines += md_table(["model", "timm model", "params", "seeds", "eval MSE (mean ± std)", "eval MAE (mean ± std)",
                       "MSE / constant velocity", "train s"], rows)
    csv_path = args.output / "dynamics.csv"
    write_csv(csv_path, csv_rows)
    lines += ["", f"Every run: `{csv_path}` (final and best eval MSE); run folders: `{run_root}/`"]
    text = "\n".join(lines) + "\n"
    print(text)
    (args.output / "dynamics.md").write_text(text)
    if args.out:
        append_report(args.out, text, [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
