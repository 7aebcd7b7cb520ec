"""Byte-level causal language modelling on Debian's fortunes: S7, S5, a GRU (and S6) against n-gram baselines.

Data: the engine's `fortunes` set (`statelayers/data/text.py`): the entries of Debian's `fortunes` package
(`sudo apt-get install -y fortunes`), deduplicated, about 10 % of them held out by a hash of their text, each split
one byte stream cut into windows of `--max-len` bytes (default 256). Every byte of a split but its first is a
target, predicted once, from the bytes before it *in its window* (the context restarts at every window).

Models (timm names from `statelayers/models/s7_seq.py`, causal: the engine refuses bidirectional layers on this
data; the data sets `vocab_size=256, head="none"`, one 256-way output per byte): `s7_small` (S7: input-dependent
Δ, B, C), `s5_small` (the same network, not input-dependent: ~17× fewer parameters), `gru_small` (2-layer GRU,
width 64), `s6_small` (Mamba's block). Every run goes through the training engine (`statelayers.engine.train`, task
`sequence`) with the `s7` recipe (AdamW, wd 0.05, lr 2e-3 at batch 32, the SSM parameters at 0.25× the rate without
weight decay), batch 32, and **the same number of optimizer steps for every model** (`--max-steps`).

**The schedule spans exactly the budget**: when `--max-steps` is at most one epoch (280 steps at the default window),
each run trains one epoch over a random subset of `max-steps × 32` training windows (drawn by the run seed, so every
model of a seed sees the same windows), with the cosine schedule over those steps and a linear warm-up over the
first 10 % of them (`warmup_steps`; the recipe's one warm-up *epoch* would be the whole run). Longer budgets train
whole epochs of all windows, the last one cut by `--max-steps` (the cosine then stops short of zero).

**The score**: the best weights of the run (the engine keeps them by lowest `eval_loss`; with one epoch there is one
evaluation, so they are the final weights) are scored on the WHOLE held-out split with
`statelayers.engine.evaluate(None, run_dir)`: bits per byte = mean cross-entropy / ln 2, perplexity per byte, and
next-byte accuracy, over every held-out byte but the first. During training the engine evaluates on the first
`--eval-subset` held-out windows only (the number that picks the best weights; 0: all).

**Baselines**, computed here from the training stream only and scored on exactly the bytes the engine scores:
uniform (8 bits), unigram with add-one smoothing, and byte n-grams of order 2 and 3 with additive smoothing
P(b | c) = (n(c, b) + α) / (n(c) + 256 α), α chosen from a log grid (1e-4 … 10) by the bits per byte of the last
10 % of the training stream under counts of its first 90 %, then the counts of the whole training stream used.
Each n-gram sees the context the models see: the bytes before the target in its window, up to order − 1 of them;
where the window holds fewer (the first target of a window, for order 3), the next lower order is used (with its
own α). The report also gives the order-3 figure with the context running across windows (the whole stream), and
the difference. Accuracy of a baseline: its most probable byte (the most frequent next byte of the context in the
training counts, ties to the lowest byte value; an unseen context predicts byte 0).

**Samples**: after training, each model continues the prompt "The " by 200 bytes at temperature 0.8 with a fixed
generator seed (`S7Sequence.generate`, streaming token by token; a model without `generate`, the GRU, is run on the
growing prefix, which is the same computation for a causal model), decoded with `statelayers.data.text.decode_bytes`.

**The default budget**: `s7_small s5_small gru_small`, seed 0, window 256, 150 steps each (4,800 windows, 1.23 M
predicted bytes, about half an epoch), in-training evaluation on the first 128 held-out windows. Chosen from per-step
times measured with 1 thread on the 2-core machine while another benchmark kept its load average at 4-5 (2026-11-28,
`python benchmarks/language_model.py --estimate-only --estimate-steps 3`, run three times, plus a 2-step run):
s7_small 2.9-5.4 s, s5_small 0.20-0.32 s, gru_small 0.36-0.39 s, s6_small 7.8-8.7 s per training step (batch 32 ×
256 bytes); one held-out window takes 21-37 ms to evaluate with s7_small (the whole split, 1,031 windows, about 30 s)
and 95-107 ms with s6_small. The script's estimate of the default study was 10.3 min of runs (plus 0.2 min for the
baselines) at s7_small's 3.1 s per step (about 16 min at its slowest measured 5.4 s); a 2-step `s7_small` run was
estimated at 0.9 min and took 57 s. `s6_small` does not fit: 150 of its steps alone take 20 min (add it with
`--models s7_small s5_small gru_small s6_small`). These numbers measure what each model learns from the same short
budget, far from converged. Scale up with `--max-steps`, `--seeds`, `--max-len` (and `--force` / `--budget-min`).

Before training the script times a few real training steps and one evaluation batch per model, prints the estimate
of every pending run and the total, and refuses to start above `--budget-min` (default 30) unless `--force`
(`--estimate-only` stops after the estimate). `--threads` (default 1): two threads per process were slower than one
on the shared 2-core machine (benchmarks/uea_protocol.py).

**Resumable** (the helpers of `benchmarks/depth_study.py`): run folders `OUTPUT/runs/fortunes-<model>-s<seed>` (a
finished run is skipped, an interrupted one resumed from its last checkpoint, written every 50 steps), the
held-out score and the sample of a run in `OUTPUT/heldout/<run>.json` (recomputed only when the run's best weights
change). Rerunning a finished study trains and evaluates nothing. A folder holding another budget is an error: use
another `--output`.

Outputs (in `--output`): `language_model.md` (the report), `language_model.csv` (every run); `--out FILE.md`
appends the report.

    python benchmarks/language_model.py                      # the default study (the estimate is printed first)
    python benchmarks/language_model.py --estimate-only      # time a few steps per model, print the estimate, stop
    python benchmarks/language_model.py --smallest           # s7_tiny + gru_small, 3 steps, window 64: CI
    python benchmarks/language_model.py --max-steps 2000 --seeds 0 1 2 --force --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from depth_study import (  # noqa: E402  (the shared study helpers next to this script)
    EPOCH_OVERHEAD_S,
    RUN_OVERHEAD_S,
    Job,
    append_report,
    check_budget,
    check_existing,
    machine_lines,
    md_table,
    mean_std,
    run_job,
    write_csv,
)

DATA = "fortunes"
DEFAULT_MODELS = ("s7_small", "s5_small", "gru_small")  # s6_small: --models (see the docstring)
DEFAULT_SEEDS = (0,)
DEFAULT_MAX_STEPS = 150
DEFAULT_MAX_LEN = 256
DEFAULT_EVAL_SUBSET = 128
BATCH = 32
WARMUP_FRACTION = 0.10  # of the budget's steps: the linear warm-up
CKPT_EVERY = 50  # steps between mid-epoch checkpoints (an interrupted run resumes from the last one)
SMALLEST = dict(models=["s7_tiny", "gru_small"], max_steps=3, max_len=64, eval_subset=8, seeds=[0], estimate_steps=1)
LABELS = {"s7_tiny": "S7", "s7_small": "S7", "s7_base": "S7", "s5_small": "S5", "gru_small": "GRU",
          "s6_tiny": "S6 (Mamba-style)", "s6_small": "S6 (Mamba-style)"}
# the sample each model writes
PROMPT, SAMPLE_BYTES, TEMPERATURE, SAMPLE_SEED = "The ", 200, 0.8, 1234
# the baselines
NGRAM_ORDERS = (2, 3)
ALPHA_GRID = tuple(float(a) for a in 10.0 ** np.linspace(-4, 1, 26))  # additive smoothing, 5 per decade
TUNE_FRACTION = 0.10  # the last 10 % of the training stream chooses α
# seconds outside the timed parts: a held-out evaluation's data and model build, and writing one sample
# (assumed); and the baselines (measured: 5 s on the 2-core machine, busy)
FINAL_EVAL_OVERHEAD_S, SAMPLE_S, BASELINES_S = 2.0, 3.0, 10.0


# ------------------------------------------------------------------------------------------------ n-gram baselines


def kgram_codes(stream: np.ndarray, k: int, positions: np.ndarray | None = None) -> np.ndarray:
    """Base-256 codes of k-grams (k ≤ 7): of every k-gram of ``stream`` (the one ending at i, for i = k−1 … N−1), or
    of the k-grams ending at ``positions`` (each ≥ k − 1)."""
    s = stream.astype(np.int64)
    ends = np.arange(k - 1, s.size) if positions is None else np.asarray(positions, dtype=np.int64)
    code = np.zeros(ends.size, dtype=np.int64)
    for j in range(k - 1, -1, -1):  # the oldest byte first: code = b_{i-k+1} · 256^(k-1) + … + b_i
        code = code * 256 + s[ends - j]
    return code


class ByteNgram:
    """Counts of the k-grams of a training byte stream (k − 1 bytes of context, then the byte predicted), with
    additive smoothing: P(b | c) = (n(c, b) + α) / (n(c) + 256 α); k = 1 is the unigram (no context, n(·) = N).
    Held as sorted unique codes and their counts (a k = 3 table would be 16.7 M dense entries)."""

    def __init__(self, train: np.ndarray, k: int):
        if not 1 <= k <= 7:
            raise ValueError(f"order k must be in 1..7, got {k}")
        self.k = k
        self.keys, self.counts = np.unique(kgram_codes(train, k), return_counts=True)
        ctx = self.keys // 256  # sorted, since the keys are
        self.ctx_keys, first = np.unique(ctx, return_index=True)
        self.ctx_counts = np.add.reduceat(self.counts, first)
        # the most frequent next byte of each seen context; the keys of a context are in byte order, so the first
        # maximum is the lowest byte among ties
        top = np.maximum.reduceat(self.counts, first)
        seg = np.repeat(np.arange(first.size), np.diff(np.append(first, self.keys.size)))
        at_max = np.flatnonzero(self.counts == top[seg])
        _, first_max = np.unique(seg[at_max], return_index=True)
        self.ctx_best = (self.keys[at_max[first_max]] % 256).astype(np.int64)

    @staticmethod
    def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
        """values[keys == q] for each q, 0 where q is not a key (keys sorted)."""
        i = np.clip(np.searchsorted(keys, query), 0, max(keys.size - 1, 0))
        hit = keys[i] == query if keys.size else np.zeros(query.shape, bool)
        return np.where(hit, values[i] if keys.size else 0, 0)

    def counts_of(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n(c, b), n(c)) for k-gram codes (context c, byte b)."""
        return self._lookup(self.keys, self.counts, codes), self._lookup(self.ctx_keys, self.ctx_counts, codes // 256)

    def predicted(self, codes: np.ndarray) -> np.ndarray:
        """The most probable byte after each code's context (byte 0 for an unseen context: all equal)."""
        return self._lookup(self.ctx_keys, self.ctx_best, codes // 256)


def context_lengths(n_bytes: int, order: int, window: int | None) -> np.ndarray:
    """For the targets t = 1 … N−1 of a stream (every byte but the first, as the engine scores them): how many bytes
    before t an order-``order`` model reads. ``window`` L: only those of t's window, whose inputs start at
    ⌊(t−1)/L⌋·L (`TokenStreamDataset`: window j holds inputs [jL, jL+L) and targets [jL+1, jL+L+1)); None: the
    whole stream before t."""
    t = np.arange(1, n_bytes, dtype=np.int64)
    start = 0 if window is None else ((t - 1) // window) * window
    return np.minimum(order - 1, t - start)


def ngram_score(models: dict, alphas: dict, stream: np.ndarray, order: int, window: int | None) -> dict:
    """Bits per byte and next-byte accuracy of the order-``order`` model over the targets of ``stream`` (every byte
    but the first), each from at most ``order − 1`` bytes of context within its window (see `context_lengths`); a
    target with fewer bytes before it in its window is scored by the order its context allows. ``models`` and
    ``alphas``: {k: ByteNgram}, {k: α} for every order that may be used. Returns bits, acc, n (targets) and
    {k: targets scored by order k}."""
    m = context_lengths(stream.size, order, window)
    t = np.arange(1, stream.size, dtype=np.int64)
    bits, hits, used = 0.0, 0, {}
    for k in range(1, order + 1):
        pos = t[m == k - 1]
        if not pos.size:
            continue
        used[k] = int(pos.size)
        codes = kgram_codes(stream, k, pos)
        n_cb, n_c = models[k].counts_of(codes)
        a = alphas[k]
        bits -= float(np.sum(np.log2((n_cb + a) / (n_c + 256 * a))))
        hits += int(np.sum(models[k].predicted(codes) == stream[pos]))
    n = int(t.size)
    return dict(bits=bits / max(n, 1), acc=hits / max(n, 1), n=n, used=used)


def choose_alpha(train: np.ndarray, k: int, alphas_below: dict, grid=ALPHA_GRID) -> tuple[float, dict]:
    """The α of the grid with the lowest bits per byte on the last TUNE_FRACTION of ``train`` (as one stream: the
    context runs across it), the counts taken from the rest; lower orders keep their α (``alphas_below``).
    Returns (α, {α: bits per byte})."""
    cut = int(round(train.size * (1 - TUNE_FRACTION)))
    head, tail = train[:cut], train[cut:]
    models = {j: ByteNgram(head, j) for j in range(1, k + 1)}
    curve = {}
    for a in grid:
        curve[a] = ngram_score(models, {**alphas_below, k: a}, tail, k, None)["bits"]
    best = min(grid, key=lambda a: (curve[a], a))
    return best, curve


def baselines(train: np.ndarray, evals: np.ndarray, window: int) -> dict:
    """The baselines' figures on the held-out stream (see the module docstring); from the training stream only."""
    out = {"uniform": dict(bits=8.0, acc=float("nan"), n=evals.size - 1, alpha=None, note="log2 256")}
    alphas = {1: 1.0}  # add-one
    models = {1: ByteNgram(train, 1)}
    out["unigram"] = dict(ngram_score(models, alphas, evals, 1, window), alpha=1.0, note="add-one")
    for k in range(2, max(NGRAM_ORDERS) + 1):
        alphas[k], _ = choose_alpha(train, k, alphas)
        models[k] = ByteNgram(train, k)
        if k in NGRAM_ORDERS:
            windowed = ngram_score(models, alphas, evals, k, window)
            whole = ngram_score(models, alphas, evals, k, None)
            out[f"order {k}"] = dict(windowed, alpha=alphas[k], whole=whole)
    return out


# ------------------------------------------------------------------------------------------------ the study


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", help=f"timm sequence models (default {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--seeds", type=int, nargs="+", help=f"default {' '.join(map(str, DEFAULT_SEEDS))}")
    p.add_argument("--max-steps", type=int, help=f"optimizer steps per run, every model (default {DEFAULT_MAX_STEPS})")
    p.add_argument("--max-len", type=int, help=f"window in bytes (default {DEFAULT_MAX_LEN})")
    p.add_argument("--eval-subset", type=int, help=f"held-out windows evaluated during training (0: all; default "
                                                   f"{DEFAULT_EVAL_SUBSET}); the reported score is on all of them")
    p.add_argument("--data-dir", default=None, help="a folder of fortune files (default: Debian's, "
                                                    "/usr/share/games/fortunes)")
    p.add_argument("--output", default=None, help="study folder (default runs/language_model, or "
                                                   "runs/language_model_smallest)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--budget-min", type=float, default=30.0, help="refuse to start above this estimate (minutes)")
    p.add_argument("--force", action="store_true", help="start even if the estimate is over --budget-min")
    p.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    p.add_argument("--estimate-steps", type=int, help="timed training steps per model for the estimate (default 2)")
    p.add_argument("--smallest", action="store_true",
                   help="s7_tiny and gru_small, 3 steps, window 64, 8 evaluation windows during training: proves the "
                        "script runs (CI)")
    p.add_argument("--out", help="append the report (markdown) to this file")
    args = p.parse_args(argv)
    defaults = dict(models=list(DEFAULT_MODELS), seeds=list(DEFAULT_SEEDS), max_steps=DEFAULT_MAX_STEPS,
                    max_len=DEFAULT_MAX_LEN, eval_subset=DEFAULT_EVAL_SUBSET, estimate_steps=2)
    if args.smallest:
        defaults.update(SMALLEST)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.max_steps < 1 or args.max_len < 1 or args.eval_subset < 0:
        p.error("--max-steps and --max-len must be positive, --eval-subset 0 (all) or positive")
    args.output = Path(args.output or ("runs/language_model_smallest" if args.smallest else "runs/language_model"))
    return args


def schedule(max_steps: int, n_windows: int) -> dict:
    """The engine settings that make a run's schedule span ``max_steps`` (see the module docstring): epochs, the
    training subset (windows), warm-up steps."""
    per_epoch = n_windows // BATCH
    if per_epoch < 1:
        raise SystemExit(f"{n_windows} training windows make no batch of {BATCH}")
    warmup = max(1, round(WARMUP_FRACTION * max_steps))
    if max_steps <= per_epoch:
        return dict(epochs=1, subset=max_steps * BATCH, warmup_steps=warmup)
    return dict(epochs=math.ceil(max_steps / per_epoch), subset=None, warmup_steps=warmup)


def make_config(args, j: Job, plan: dict):
    from statelayers.engine import TrainConfig

    return TrainConfig(model=j.model, data=DATA, data_dir=args.data_dir, recipe="s7", batch_size=BATCH,
                       max_len=args.max_len, max_steps=args.max_steps, epochs=plan["epochs"], subset=plan["subset"],
                       warmup_steps=plan["warmup_steps"], eval_subset=args.eval_subset or None, seed=j.seed,
                       ckpt_every=CKPT_EVERY, output=str(args.output / "runs"), name=j.name, quiet=True)


def check_run(run_dir: Path, cfg) -> None:
    """The run folder holds this run: depth_study's keys and the ones this study sets besides."""
    check_existing(run_dir, cfg)
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    import yaml

    saved = yaml.safe_load(path.read_text()) or {}
    want = dataclasses.asdict(cfg.resolved())
    diff = [f"{k}: {saved.get(k)!r} there, {want[k]!r} asked" for k in ("max_steps", "warmup_steps", "data_dir")
            if saved.get(k) != want[k]]
    if diff:
        raise SystemExit(f"{run_dir} holds a different run ({'; '.join(diff)}); use another --output or delete it")


def time_model(cfg, steps: int) -> dict:
    """Seconds per training step (the engine's loss, optimizer and a real batch of full windows) and per held-out
    window of evaluation, for cfg's model: one untimed and ``steps`` timed steps; one untimed, one timed batch."""
    import torch

    from statelayers.engine.optim import build_optimizer, learning_rate
    from statelayers.engine.tasks import call_model, get_task

    cfg = cfg.resolved()
    task = get_task(cfg.task)
    torch.manual_seed(cfg.seed)
    data = task.build_data(cfg)
    model = task.build_model(cfg, data.model_kwargs)
    loss_fn = task.build_loss(cfg, None, data.info)
    opt = build_optimizer(cfg, model, learning_rate(cfg, 1))
    x, y = data.collate([data.train[i] for i in range(min(BATCH, len(data.train)))])
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss_fn(call_model(model, x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    xe, _ = data.collate([data.eval[i] for i in range(min(BATCH, len(data.eval)))])
    model.eval()
    with torch.no_grad():
        call_model(model, xe)
        t0 = time.perf_counter()
        call_model(model, xe)
        eval_s = (time.perf_counter() - t0) / len(xe["tokens"])
    return dict(step_s=statistics.mean(times), eval_window_s=eval_s, params=sum(p.numel() for p in model.parameters()))


def heldout_path(args, j: Job) -> Path:
    return args.output / "heldout" / f"{j.name}.json"


def weights_digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "best.safetensors").read_bytes()).hexdigest()


def heldout_done(args, j: Job) -> bool:
    path, run_dir = heldout_path(args, j), args.output / "runs" / j.name
    if not (path.is_file() and (run_dir / "best.safetensors").is_file()):
        return False
    return json.loads(path.read_text()).get("weights_sha256") == weights_digest(run_dir)


def estimate(args, jobs: list[Job], plan: dict, n_eval: int, t_data: float) -> float:
    """Time each model of the pending runs, print the estimate per run and the total; total seconds."""
    run_root = args.output / "runs"
    for j in jobs:  # before any timing: a folder of another budget is an error, not a finished run
        check_run(run_root / j.name, make_config(args, j, plan))
    speeds, total, lines, n_pending = {}, 0.0, [], 0
    in_training = min(args.eval_subset, n_eval) if args.eval_subset else n_eval
    for j in jobs:
        trained = (run_root / j.name / "summary.yaml").is_file()
        scored = heldout_done(args, j)
        if trained and scored:
            continue
        if j.model not in speeds:
            speeds[j.model] = time_model(make_config(args, j, plan), args.estimate_steps)
            s = speeds[j.model]
            print(f"  timed {j.model}: {s['step_s']:.3f} s per training step (batch {BATCH} × {args.max_len} bytes), "
                  f"{1000 * s['eval_window_s']:.1f} ms per held-out window, {s['params']:,} params",
                  file=sys.stderr, flush=True)
        s = speeds[j.model]
        sec = 0.0
        if not trained:
            n_pending += 1
            sec += (args.max_steps * s["step_s"] + plan["epochs"] * (in_training * s["eval_window_s"]
                                                                     + EPOCH_OVERHEAD_S) + t_data + RUN_OVERHEAD_S)
        sec += n_eval * s["eval_window_s"] + t_data + FINAL_EVAL_OVERHEAD_S + SAMPLE_S
        total += sec
        lines.append(f"  {j.name:40s} {sec / 60:6.1f} min" + ("" if not trained else " (held-out score only)"))
    total += BASELINES_S
    print(f"# estimate: {plural(n_pending, 'run')} to train ({len(jobs) - len(lines)} already done and scored), from "
          f"{args.estimate_steps} timed step(s) per model; {t_data:.1f} s per data build")
    print("\n".join(lines + [f"  {'baselines (n-gram counts)':40s} {BASELINES_S / 60:6.1f} min"]))
    print(f"# estimated total: {total / 60:.1f} min", flush=True)
    return total


def sample_text(model, prompt: str, steps: int, temperature: float, seed: int) -> str:
    """``prompt`` continued by ``steps`` bytes (softmax(logits / temperature), a torch.Generator seeded by ``seed``),
    decoded as UTF-8. Models with ``generate`` stream token by token; others (the GRU) are run on the whole prefix
    for every new byte, the same distribution for a causal model."""
    import torch

    from statelayers.data.text import decode_bytes

    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([list(prompt.encode("utf-8"))], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        if hasattr(model, "generate"):
            out = model.generate(ids, steps, temperature=temperature, generator=g)
        else:
            out = ids
            for _ in range(steps):
                logits = model(tokens=out)[:, -1].float()
                probs = torch.softmax(logits / temperature, dim=-1)
                out = torch.cat([out, torch.multinomial(probs, 1, generator=g)], dim=1)
    return decode_bytes(out[0])


def score_run(args, j: Job, data_kwargs: dict) -> dict:
    """The held-out figures of a finished run's best weights on the whole held-out split, and its sample; cached in
    OUTPUT/heldout/<run>.json, keyed by the SHA-256 of the weights."""
    import timm

    from statelayers.checkpoint import load_weights
    from statelayers.engine import evaluate

    path, run_dir = heldout_path(args, j), args.output / "runs" / j.name
    if heldout_done(args, j):
        return json.loads(path.read_text())
    digest = weights_digest(run_dir)
    t0 = time.perf_counter()
    metrics = evaluate(None, run_dir)  # the run folder names its model, data, window and data folder
    eval_s = time.perf_counter() - t0
    model = timm.create_model(j.model, **data_kwargs, **j.kwargs)
    load_weights(model, run_dir / "best.safetensors", expect_model=j.model)
    sample = sample_text(model, PROMPT, SAMPLE_BYTES, TEMPERATURE, SAMPLE_SEED)
    record = dict(run=j.name, weights_sha256=digest, metrics=metrics, eval_s=eval_s, sample=sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def printable(text: str) -> str:
    """``text`` with its control characters but newline and tab written as escapes (\\x07, \\x1b, ...): an
    undertrained model emits any byte, and raw control bytes would garble the report and the terminal."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) != "Cc" else ascii(ch)[1:-1] for ch in text)


def fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    run, longest = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def report(args, jobs, results, scores, base, info, plan, n_train_windows, t_total, threads) -> tuple[str, list]:
    from statelayers.engine.optim import learning_rate

    lr = learning_rate(make_config(args, jobs[0], plan).resolved(), 1)
    n_eval_bytes = base["uniform"]["n"]
    lines = [f"# Byte-level language modelling on Debian's fortunes: {args.max_steps} steps × batch {BATCH} × "
             f"{args.max_len} bytes per model", ""]
    lines += machine_lines(__file__, threads)
    subset = (f"{plan['subset']:,} of the {n_train_windows:,} training windows drawn by the seed, one epoch"
              if plan["subset"] else f"all {n_train_windows:,} training windows, {plan['epochs']} epochs")
    lines += [
        f"- data: {info.note}",
        f"- training: engine, recipe `s7` (AdamW, lr {lr:g} at batch {BATCH}, wd 0.05, SSM parameters at 0.25× lr), "
        f"batch {BATCH}, {args.max_steps} steps per run ({subset}), cosine over the budget after a linear warm-up "
        f"of {plural(plan['warmup_steps'], 'step')}; seeds {' '.join(map(str, args.seeds))}",
        f"- score: best weights (lowest in-training eval_loss on the first "
        f"{args.eval_subset or 'all'} held-out windows) evaluated with `statelayers.engine.evaluate` on the whole "
        f"held-out split: {n_eval_bytes:,} predicted bytes (every held-out byte but the first), each from the bytes "
        f"before it in its {args.max_len}-byte window; mean ± sample std over seeds when several",
        f"- training bytes seen: steps × {BATCH} windows × {args.max_len} bytes (predicted bytes); training s: the "
        f"engine's training steps only; wall clock of this invocation {t_total / 60:.1f} min",
        "",
    ]
    rows, csv_rows = [], []
    for model in args.models:
        mine = [j for j in jobs if j.model == model]
        summ = [results[j.name][0] for j in mine]
        mets = [scores[j.name]["metrics"] for j in mine]
        steps = [s.get("global_step", 0) for s in summ]
        train_s = [s.get("global_step", 0) * BATCH / s["images_per_s"] if s.get("images_per_s") else float("nan")
                   for s in summ]
        rows.append([f"{LABELS.get(model, model)} `{model}`", f"{summ[0]['params']:,}",
                     " / ".join(dict.fromkeys(map(str, steps))),
                     f"{statistics.mean(steps) * BATCH * args.max_len / 1e6:.2f} M",
                     mean_std([m["eval_bits_per_byte"] for m in mets], 3), mean_std([m["eval_ppl"] for m in mets], 2),
                     mean_std([m["eval_acc"] for m in mets], 3), f"{statistics.mean(train_s):.0f}"])
        for j, s, m, ts in zip(mine, summ, mets, train_s):
            csv_rows.append(dict(model=model, seed=j.seed, run=j.name, params=s["params"], steps=s.get("global_step"),
                                 max_len=args.max_len, train_bytes=s.get("global_step", 0) * BATCH * args.max_len,
                                 heldout_bytes=n_eval_bytes, bits_per_byte=f"{m['eval_bits_per_byte']:.4f}",
                                 ppl=f"{m['eval_ppl']:.3f}", acc=f"{m['eval_acc']:.4f}", train_s=f"{ts:.1f}",
                                 status=results[j.name][1]))
    lines += md_table(["model", "params", "steps", "training bytes seen", "held-out bits/byte", "perplexity/byte",
                       "next-byte acc", "training s"], rows)
    k_top = max(NGRAM_ORDERS)
    top = base[f"order {k_top}"]
    brows = []
    for name, b in base.items():
        acc = "–" if math.isnan(b["acc"]) else f"{b['acc']:.3f}"
        how = b.get("note") or f"additive, α = {b['alpha']:.3g}"
        brows.append([name, how, f"{b['bits']:.3f}", f"{2 ** b['bits']:.2f}", acc])
    n_start = top["used"].get(k_top - 1, 0)
    lines += ["", f"Baselines (counts of the training stream only, {n_eval_bytes:,} held-out bytes as above):", ""]
    lines += md_table(["baseline", "smoothing", "held-out bits/byte", "perplexity/byte", "next-byte acc"], brows)
    lines += ["", f"α of the n-grams: the lowest bits per byte on the last {100 * TUNE_FRACTION:.0f} % of the "
                  f"training stream with counts of its first {100 * (1 - TUNE_FRACTION):.0f} %, over "
                  f"{len(ALPHA_GRID)} values 1e-4 … 10 (log grid); then counts of the whole training stream. The "
                  f"n-grams read the bytes of the target's window, as the models do: for order {k_top} the "
                  f"{n_start:,} targets with one byte before them in their window (the first target of each window) "
                  f"are scored by order {k_top - 1}. With the context running across windows (the whole stream) "
                  f"order {k_top} scores {top['whole']['bits']:.4f} bits per byte instead of {top['bits']:.4f} "
                  f"(difference {top['bits'] - top['whole']['bits']:+.4f}); orders below {k_top} read one byte of "
                  f"context, which every window holds, so they are the same either way."]
    lines += ["", f"Samples: the prompt {PROMPT!r} continued by {SAMPLE_BYTES} bytes at temperature {TEMPERATURE}, "
                  f"generator seed {SAMPLE_SEED}, best weights of seed {args.seeds[0]} (UTF-8, undecodable bytes as "
                  "U+FFFD, control characters but newline and tab as escapes):", ""]
    for model in args.models:
        j = next(j for j in jobs if j.model == model and j.seed == args.seeds[0])
        text = printable(scores[j.name]["sample"])
        f = fence(text)
        lines += [f"{LABELS.get(model, model)} `{model}`:", "", f, text, f, ""]
    csv_path = args.output / "language_model.csv"
    lines += [f"Every run: `{csv_path}`; run folders: `{args.output / 'runs'}/`; held-out scores and samples: "
              f"`{args.output / 'heldout'}/`"]
    return "\n".join(lines) + "\n", csv_rows


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from statelayers.data.images import DatasetMissing
    from statelayers.data.sequences import build_sequence_datasets  # importing statelayers registers the models

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    try:
        train_ds, eval_ds, info = build_sequence_datasets(DATA, data_dir=args.data_dir, max_len=args.max_len)
    except DatasetMissing as e:
        print(f"nothing to run: {e}")
        return 0
    t_data = time.perf_counter() - t0
    plan = schedule(args.max_steps, len(train_ds))
    jobs = [Job(DATA, LABELS.get(m, m), None, m, {}, s, f"{DATA}-{m}-s{s}") for s in args.seeds for m in args.models]
    total = estimate(args, jobs, plan, len(eval_ds), t_data)
    if args.estimate_only:
        return 0
    if not check_budget(total, args):
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    run_root = args.output / "runs"
    data_kwargs = {"num_classes": info.num_outputs(), **info.model_kwargs()}
    results, scores = {}, {}
    for i, j in enumerate(jobs):
        t0 = time.perf_counter()
        cfg = make_config(args, j, plan)
        check_run(run_root / j.name, cfg)
        summary, how = run_job(cfg, run_root / j.name)
        results[j.name] = (summary, how)
        scores[j.name] = score_run(args, j, data_kwargs)
        m = scores[j.name]["metrics"]
        print(f"  [{time.perf_counter() - t_start:6.0f} s] {i + 1}/{len(jobs)} {j.name}: {how}, held-out "
              f"{m['eval_bits_per_byte']:.3f} bits/byte, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
    # the baselines read the same streams the engine windows (build_fortunes' TokenStreamDataset.stream)
    train_stream = getattr(train_ds, "stream", None)
    if train_stream is None:
        raise SystemExit(f"{DATA}: expected a token stream dataset, got {type(train_ds).__name__}")
    base = baselines(train_stream, eval_ds.stream, eval_ds.window)
    if base["uniform"]["n"] != eval_ds.num_targets():  # the baselines score the bytes the engine scores
        raise SystemExit(f"baselines score {base['uniform']['n']} bytes, the engine {eval_ds.num_targets()}")
    text, csv_rows = report(args, jobs, results, scores, base, info, plan, len(train_ds),
                            time.perf_counter() - t_start, threads)
    print(text)
    (args.output / "language_model.md").write_text(text)
    write_csv(args.output / "language_model.csv", csv_rows)
    if args.out:
        append_report(args.out, text, [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
