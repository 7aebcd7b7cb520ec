"""What layer aggregation costs: speed and peak memory of S6LA / RLA / MRLA against the vanilla network.

Families (timm names): ResNet-50 — `resnet50`, `s6la_resnet50`, `s6la_resnet50+fold` (the same model after
`reparameterize()`, which folds its state projection through each Bottleneck's bn3/conv3 for inference: timed in
inference only, its training step is s6la_resnet50's), `rla_resnet50`, `mrla_resnet50`; DeiT-Ti —
`deit_tiny_patch16_224`, `s6la_deit_tiny_patch16_224`, `mrla_deit_tiny_patch16_224`. Modes: `fp32`,
`channels_last`, `bf16` (CPU autocast) and `channels_last+bf16`. For every (model, mode):

* **inference** images/s: one eval-mode forward of a `--batch-size` batch under `torch.no_grad()`;
* **training step** images/s: forward + cross-entropy + backward + SGD step (momentum 0.9, lr 1e-4, random
  labels), the loss under autocast in the bf16 modes.

Interleaved: after `--warmup` untimed calls of everything, `--rounds` rounds each run every (model, mode) once —
modes in a rotating order and, within a family, the models in a rotating order — so that a drift of the machine's
speed (other jobs, thermal limits) hits every model alike. Within a round and mode, a family's models are timed
phase by phase: all their inference calls, then all their training steps, so that the inference calls being
compared are about a second apart rather than several training steps apart (on a shared VM the speed drifts
within seconds), and each inference follows inference, as in a serving loop. Each (model, mode, phase) gets
`--settle` untimed calls (default 1) right before its `--calls` timed ones (default 1), so that what is timed is
the steady state of calling one model repeatedly, not the cost of switching from another model's working set to
this one's (which inflated S6LA's inference ratio by ~3 points). Each figure is the median over rounds; each ratio is
the median over rounds of (time of the model / time of the family's vanilla model in the same round and mode),
with the range of the per-round ratios beside it. `time ratio` > 1 is slower than vanilla: 1.06 = +6 %.

**MACs** (`statelayers.tools.profile.count_macs`, batch 1, at `--img-size`) do not depend on the mode; `MAC ratio`
is the model's MACs over the vanilla model's. `bytes ratio` is the same for the bytes one fp32 inference forward of
a `--batch-size` batch reads and writes, op by op, as if nothing stayed in cache (`tools.profile.count_bytes`):
a model that adds element-wise ops and narrow convs adds more traffic than MACs, and on a machine where the backbone
is partly bandwidth-bound its time ratio lies above its MAC ratio.

**Peak memory**: torch has no allocator statistics on CPU, so this is the growth of the process's peak resident
set size (Linux VmHWM, reset by writing 5 to /proc/self/clear_refs; ru_maxrss where that is impossible) over its
resident size just before the phase, measured per (model, mode) in a fresh Python process that has built the
model and its input batch: `infer` = the first forward (no_grad, includes one-time workspaces); `train` = the
first two training steps (gradients, SGD momentum buffers, activations kept for backward, allocator slack),
after handing the memory freed by the inference phase back to the OS (glibc `malloc_trim`). `--memory in-process`
(implied by `--smallest`) measures in this process instead: faster, but memory the allocator kept from earlier
measurements can hide part of a peak.

**Targets** (the issue): S6LA-ResNet-50's inference time overhead no larger than its MAC overhead (≈ +6 %) and
its training step within +12 %, in fp32 and with channels_last / bf16. Each target is judged on the median
per-round ratio's distribution-free confidence interval (order statistics; ≥ 90 % where there are ≥ 5 rounds):
PASS when the whole interval is within the target, FAIL when the whole interval is beyond it, UNDECIDED when the
machine's noise in this run is too large to tell (more rounds narrow the interval). The script does not retry or
filter. `--profile MODEL` prints torch.profiler's top ops of MODEL and of its family's vanilla model, and which ops
account for the difference ("where the time goes").

Run time: on CPUs without native bf16 (AVX-512 BF16 / AMX) autocast bf16 is far slower than fp32 and dominates the
default run. On a 2-core AVX2 machine busy with other jobs (1 thread, 2026-11-24), one ResNet-50 training step at
224², batch 8, took 3.3 s in fp32 and 57 s under channels_last+bf16 (inference 1.0 s / 7.6 s; DeiT-Ti 0.9 s /
12 s), which puts the default (2 warm-up + 10 timed rounds, 4 modes, memory subprocesses) at several hours there.
`--modes fp32 channels_last --warmup 1` (both families, memory subprocesses) took 12 min with 2 threads on that
machine, and `--families resnet --modes bf16 --rounds 2 --warmup 0 --memory off` 11 min.

    python benchmarks/overhead.py                                   # the full comparison (see BENCHMARKS.md)
    python benchmarks/overhead.py --smallest                        # < 1 min: proves the script runs (CI)
    python benchmarks/overhead.py --families resnet --modes fp32 channels_last+bf16 --rounds 20 --out BENCHMARKS.md
    python benchmarks/overhead.py --profile s6la_resnet50 --modes fp32
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

FOLD = "+fold"  # suffix: the model after `reparameterize()` (S6LA-ResNet's inference-time fold), inference only
FAMILIES = {
    "resnet": ("resnet50", "s6la_resnet50", "s6la_resnet50" + FOLD, "rla_resnet50", "mrla_resnet50"),
    "deit": ("deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224", "mrla_deit_tiny_patch16_224"),
}
MODES = {  # name: (channels_last, bf16 autocast)
    "fp32": (False, False),
    "channels_last": (True, False),
    "bf16": (False, True),
    "channels_last+bf16": (True, True),
}
TARGET_MODEL, TARGET_TRAIN = "s6la_resnet50", 1.12  # inference target: time ratio <= MAC ratio
LR = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--modes", nargs="+", default=None, choices=list(MODES),
                   help=f"default: all ({', '.join(MODES)}); with --smallest: fp32 channels_last+bf16")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (every model and mode once per round)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before the timed ones")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed calls of the same model and phase right before its timed calls, in every round")
    p.add_argument("--calls", type=int, default=1, help="timed calls per (model, mode, phase) per round (mean)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--memory", choices=("subprocess", "in-process", "off"), default="subprocess",
                   help="peak memory: a fresh process per (model, mode) (default), in this process, or not at all")
    p.add_argument("--smallest", action="store_true",
                   help="img 32, batch 2, 1 round, no warm-up, modes fp32 and channels_last+bf16, memory "
                        "in-process: proves the script runs (CI)")
    p.add_argument("--out", help="append the report (markdown) to this file")
    p.add_argument("--profile", nargs="+", metavar="MODEL",
                   help="instead of the table: torch.profiler top ops of MODEL(s) and their family's vanilla model")
    p.add_argument("--profile-steps", type=int, default=3, help="profiled calls per phase (after one warm-up)")
    p.add_argument("--profile-rows", type=int, default=20, help="ops listed per table")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one memory measurement, JSON on stdout
    args = p.parse_args(argv)
    if args.smallest:
        args.img_size, args.batch_size, args.rounds, args.warmup, args.settle = 32, 2, 1, 0, 0
        args.modes = args.modes or ["fp32", "channels_last+bf16"]
        if args.memory == "subprocess":
            args.memory = "in-process"
        args.profile_steps = 1
    args.modes = args.modes or list(MODES)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be positive")
    return args


# ------------------------------------------------------------------------------------------------ helpers


def cpu_flags() -> str:
    """The CPU features that decide bf16 speed (AVX-512 BF16, AMX) and torch's kernel level."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{' '.join(wanted) or 'no AVX2'} (torch kernels: {torch.backends.cpu.get_cpu_capability()})"


def machine_lines(args, threads: int) -> list[str]:
    import timm
    import torch

    from statelayers.tools.profile import cpu_model

    return [
        f"- command: `python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), {cpu_flags()}; "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        f"- threads: {threads}; torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}",
    ]


def inference_only(name: str) -> bool:
    """Folded models have no training step (their training is the unfolded model's)."""
    return name.endswith(FOLD)


def build(name: str, img_size: int, channels_last: bool):
    import timm
    import torch

    import statelayers  # noqa: F401  (registers the models)

    base = name.removesuffix(FOLD)
    cfg = timm.models.get_pretrained_cfg(base)
    kwargs = {"img_size": img_size} if cfg is not None and cfg.fixed_input_size else {}
    model = timm.create_model(base, **kwargs)
    if name.endswith(FOLD):
        model.reparameterize()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_batch(args, channels_last: bool, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, 1000, (args.batch_size,), generator=g)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


class Bench:
    """One model in one memory layout, with its optimizer and a fixed input batch."""

    def __init__(self, name: str, args, channels_last: bool, state_dict=None):
        import torch

        self.name = name
        self.model = build(name, args.img_size, channels_last)
        if state_dict is not None:  # the same weights in both layouts
            self.model.load_state_dict(state_dict)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=0.9)
        self.x, self.y = make_batch(args, channels_last)

    def autocast(self, bf16: bool):
        import contextlib

        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def infer(self, bf16: bool):
        import torch

        self.model.eval()
        with torch.no_grad(), self.autocast(bf16):
            return self.model(self.x)

    def train_step(self, bf16: bool):
        import torch.nn.functional as F

        self.model.train()
        with self.autocast(bf16):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def timed(fn, *a) -> float:
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


def settled_time(args, fn, *a) -> float:
    """Seconds per call: `--settle` untimed calls, then the mean of `--calls` timed ones.

    The untimed call is there because the first call after switching models pays for the switch (the previous
    model's activations evicted from the caches, fresh pages for this one's buffers). Measured in-process on
    ResNet-50, 1 thread, that inflated S6LA's inference ratio by ~3 points (`--settle 0` is the old method), and
    it is not what a training or serving loop, which calls the same model again and again, sees."""
    for _ in range(args.settle):
        fn(*a)
    return sum(timed(fn, *a) for _ in range(args.calls)) / args.calls


def rotate(seq, k: int) -> list:
    seq = list(seq)
    k %= max(len(seq), 1)
    return seq[k:] + seq[:k]


# ------------------------------------------------------------------------------------------------ memory


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def release_memory() -> None:
    """Collect garbage and hand glibc's free pages back to the OS, so the next baseline is the live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> tuple[int, bool]:
    """(baseline bytes, whether the kernel's peak counter VmHWM could be reset to the current RSS)."""
    release_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False  # Linux: KiB


def peak_growth(base: tuple[int, bool]) -> int:
    if base[1]:
        return _status_bytes("VmHWM") - base[0]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base[0]


def measure_memory(spec: dict) -> dict:
    """Peak RSS growth (bytes) of the first inference call and of the first two training steps."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    channels_last, bf16 = MODES[spec["mode"]]
    ns = argparse.Namespace(img_size=spec["img_size"], batch_size=spec["batch_size"])
    bench = Bench(spec["model"], ns, channels_last)
    base = reset_peak()
    out = bench.infer(bf16)
    del out
    infer_peak = peak_growth(base)
    base = reset_peak()
    for _ in range(2):
        bench.train_step(bf16)
    train_peak = peak_growth(base)
    del bench
    release_memory()
    return {"infer_peak": infer_peak, "train_peak": train_peak, "hwm_reset": base[1]}


def memory_table(args, names: list[str], threads: int) -> dict:
    results = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in names:
        if inference_only(name):
            continue
        for mode in args.modes:
            spec = dict(model=name, mode=mode, img_size=args.img_size, batch_size=args.batch_size, threads=threads)
            if args.memory == "in-process":
                results[name, mode] = measure_memory(spec)
            else:
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                                      env=env, capture_output=True, text=True)
                if proc.returncode:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"memory measurement failed: {spec}")
                results[name, mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[name, mode]
            print(f"  memory {name} {mode}: infer {r['infer_peak'] / 2**20:.0f} MiB, "
                  f"train {r['train_peak'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    return results


# ------------------------------------------------------------------------------------------------ timing


def build_benches(args, names: list[str]) -> dict:
    """(name, channels_last) -> Bench; the two layouts of a model start from the same weights."""
    layouts = sorted({MODES[m][0] for m in args.modes})
    benches = {}
    for name in names:
        first = None
        for cl in layouts:
            benches[name, cl] = Bench(name, args, cl, state_dict=first)
            if first is None:
                first = benches[name, cl].model.state_dict()
    return benches


def run_rounds(args, benches: dict, families: dict) -> dict:
    """times[(name, mode)] = {"infer": [s per round], "train": [...]}, interleaved as the docstring says."""
    times = {(n, m): {"infer": [], "train": []} for fam in families.values() for n in fam for m in args.modes}
    t_start = time.perf_counter()
    for r in range(-args.warmup, args.rounds):
        for mode in rotate(args.modes, r):
            cl, bf16 = MODES[mode]
            for fam in families.values():
                for phase in ("infer", "train"):  # one phase of the whole family at a time: see the docstring
                    for name in rotate(fam, r):
                        if phase == "train" and inference_only(name):
                            continue
                        b = benches[name, cl]
                        t = settled_time(args, b.infer if phase == "infer" else b.train_step, bf16)
                        if r >= 0:
                            times[name, mode][phase].append(t)
        what = "warm-up" if r < 0 else "round"
        print(f"  [{time.perf_counter() - t_start:6.0f} s] {what} {r + 1 if r >= 0 else args.warmup + r + 1} done",
              file=sys.stderr, flush=True)
    return times


def median_ci(values: list[float], level: float = 0.9) -> tuple[float, float, float]:
    """Distribution-free confidence interval of the median: (x_(k), x_(n+1-k), coverage).

    For n independent draws, the interval between the k-th smallest and the k-th largest holds the true
    median with probability 1 - 2·P(Binomial(n, 1/2) <= k-1). k is the largest with coverage >= `level`;
    with too few values for that (n < 5 at 90 %), it is (min, max) with the coverage it has."""
    xs = sorted(values)
    n = len(xs)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def ratio_stats(times: dict, name: str, ref: str, mode: str, phase: str) -> dict:
    """Per-round ratios of `name` to `ref`: median, min, max and the median's confidence interval."""
    per_round = [a / b for a, b in zip(times[name, mode][phase], times[ref, mode][phase])]
    lo, hi, coverage = median_ci(per_round)
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
            "ci": (lo, hi), "coverage": coverage}


def verdict(stats: dict, target: float) -> str:
    """PASS / FAIL when the median's confidence interval lies on one side of the target, else UNDECIDED."""
    lo, hi = stats["ci"]
    return "PASS" if hi <= target else "FAIL" if lo > target else "UNDECIDED"


def fmt_ratio(stats, name: str, ref: str) -> str:
    if name == ref:
        return "1"
    return f"{stats['median']:.3f} [{stats['min']:.2f}–{stats['max']:.2f}]"


def fmt_ci(stats: dict) -> str:
    lo, hi = stats["ci"]
    return f"{stats['median']:.3f} ({stats['coverage']:.0%} CI {lo:.3f}–{hi:.3f})"


def report(args, families, times, macs, moved, params, memory, threads) -> tuple[list[str], list[tuple[str, str]]]:
    header = ["family", "model", "mode", "params (M)", "GMACs", "MAC ratio", "bytes ratio", "infer img/s",
              "infer time ratio",
              "train img/s", "train time ratio", "peak MiB infer / train", "train mem ratio"]
    rows, verdicts = [], []
    for fam_name, fam in families.items():
        ref = fam[0]
        for mode in args.modes:
            for name in fam:
                infer_only = inference_only(name)
                ti = statistics.median(times[name, mode]["infer"])
                tt = None if infer_only else statistics.median(times[name, mode]["train"])
                ri = ratio_stats(times, name, ref, mode, "infer")
                rt = None if infer_only else ratio_stats(times, name, ref, mode, "train")
                mem = memory.get((name, mode))
                ref_mem = memory.get((ref, mode))
                mem_s = f"{mem['infer_peak'] / 2**20:.0f} / {mem['train_peak'] / 2**20:.0f}" if mem else "–"
                mem_r = (f"{mem['train_peak'] / ref_mem['train_peak']:.3f}" if mem and ref_mem
                         and ref_mem["train_peak"] > 0 else "–")
                mac_ratio = macs[name] / macs[ref]
                rows.append([fam_name, name, mode, f"{params[name] / 1e6:.3f}", f"{macs[name] / 1e9:.3f}",
                             f"{mac_ratio:.3f}", f"{moved[name] / moved[ref]:.3f}", f"{args.batch_size / ti:.2f}",
                             fmt_ratio(ri, name, ref),
                             "–" if infer_only else f"{args.batch_size / tt:.2f}",
                             "–" if infer_only else fmt_ratio(rt, name, ref), mem_s, mem_r])
                if name == TARGET_MODEL + FOLD and TARGET_MODEL in macs:
                    paper_ratio = macs[TARGET_MODEL] / macs[ref]
                    verdicts.append((verdict(ri, paper_ratio), f"{name} {mode}: inference time ratio {fmt_ci(ri)} "
                                     f"≤ MAC ratio of {TARGET_MODEL} {paper_ratio:.3f} (its own, folded: "
                                     f"{mac_ratio:.3f})"))
                if name == TARGET_MODEL and ref == "resnet50":
                    verdicts.append((verdict(ri, mac_ratio), f"{TARGET_MODEL} {mode}: inference time ratio "
                                     f"{fmt_ci(ri)} ≤ MAC ratio {mac_ratio:.3f}"))
                    verdicts.append((verdict(rt, TARGET_TRAIN), f"{TARGET_MODEL} {mode}: training-step time ratio "
                                     f"{fmt_ci(rt)} ≤ {TARGET_TRAIN:.2f}"))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines, verdicts


# ------------------------------------------------------------------------------------------------ profile


def profile_model(args, threads: int) -> str:
    """torch.profiler top ops (self CPU time per call of the phase) of each model and of its family's vanilla
    model, and the ops whose time differs most between them."""
    from torch.profiler import ProfilerActivity, profile

    by_model = {m: fam for fam in FAMILIES.values() for m in fam}
    out = [f"# where the time goes: torch.profiler, batch {args.batch_size}, {args.img_size}², {threads} threads, "
           f"{args.profile_steps} profiled calls per phase after one warm-up; self CPU ms per call", ""]
    for target in args.profile:
        if target not in by_model:
            raise SystemExit(f"--profile: {target!r} is not one of {', '.join(by_model)}")
        ref = by_model[target][0]
        names = [ref] if target == ref else [ref, target]
        for mode in args.modes:
            cl, bf16 = MODES[mode]
            stats = {}
            for name in names:
                b = Bench(name, args, cl)
                for phase, fn in (("infer", b.infer), ("train", b.train_step)):
                    fn(bf16)  # warm-up
                    wall = [timed(fn, bf16) for _ in range(args.profile_steps)]
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        for _ in range(args.profile_steps):
                            fn(bf16)
                    ops = {e.key: (e.self_cpu_time_total / 1e3 / args.profile_steps, e.count / args.profile_steps)
                           for e in prof.key_averages()}
                    stats[name, phase] = (statistics.median(wall), ops)
                del b
                release_memory()
            for phase in ("infer", "train"):
                for name in names:
                    wall, ops = stats[name, phase]
                    total = sum(t for t, _ in ops.values())
                    out += [f"## {name}, {mode}, {phase}: {wall * 1e3:.1f} ms per call without the profiler, "
                            f"{total:.1f} ms self CPU time under it", "",
                            "| op | self ms / call | share | calls / call |", "|---|---|---|---|"]
                    for op, (t, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[: args.profile_rows]:
                        out.append(f"| `{op}` | {t:.2f} | {100 * t / max(total, 1e-9):.1f}% | {n:g} |")
                    out.append("")
                if len(names) == 2:
                    (w0, o0), (w1, o1) = stats[ref, phase], stats[target, phase]
                    keys = set(o0) | set(o1)
                    diff = sorted(((o1.get(k, (0, 0))[0] - o0.get(k, (0, 0))[0], k) for k in keys), reverse=True)
                    extra = sum(t for t, _ in o1.values()) - sum(t for t, _ in o0.values())
                    out += [f"## {target} − {ref}, {mode}, {phase}: {1e3 * (w1 - w0):+.1f} ms per call wall clock "
                            f"({w1 / w0:.3f}×), {extra:+.1f} ms self CPU; the ops that differ most", "",
                            f"| op | {ref} ms | {target} ms | difference ms | share of difference | calls "
                            f"{ref} → {target} |", "|---|---|---|---|---|---|"]
                    shown = [d for d in diff[: args.profile_rows // 2]] + [d for d in diff[-3:] if d[0] < 0]
                    for d, k in shown:
                        a, b2 = o0.get(k, (0.0, 0)), o1.get(k, (0.0, 0))
                        out.append(f"| `{k}` | {a[0]:.2f} | {b2[0]:.2f} | {d:+.2f} | "
                                   f"{100 * d / extra if extra else 0:.0f}% | {a[1]:g} → {b2[1]:g} |")
                    out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_memory(json.loads(args.child))))
        return 0
    import torch

    from statelayers.tools.profile import count_bytes, count_macs, count_params

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.profile:
        text = profile_model(args, threads)
        text += "\n" + "\n".join(machine_lines(args, threads)) + "\n"
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n" + text)
        return 0

    families = {f: FAMILIES[f] for f in args.families}
    names = [n for fam in families.values() for n in fam]
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    memory = memory_table(args, names, threads) if args.memory != "off" else {}
    benches = build_benches(args, names)
    macs, moved, params = {}, {}, {}
    for name in names:
        m = build(name, args.img_size, False)
        macs[name] = count_macs(m, (3, args.img_size, args.img_size), fake=True)
        moved[name] = count_bytes(m, (3, args.img_size, args.img_size), batch_size=args.batch_size, fake=True)
        params[name] = count_params(m)
        del m
    times = run_rounds(args, benches, families)
    table, verdicts = report(args, families, times, macs, moved, params, memory, threads)
    elapsed = time.perf_counter() - t0

    lines = [f"# Cost of aggregation: batch {args.batch_size}, {args.img_size}², {args.rounds} rounds after "
             f"{args.warmup} warm-up, {args.settle} settling + {args.calls} timed call(s) per slot, CPU", ""]
    lines += machine_lines(args, threads)
    lines += [
        f"- load average {load0:.2f} at the start; wall clock {elapsed:.0f} s",
        "- img/s: batch / median time of one call over rounds (inference: eval + no_grad; train: fwd + bwd + SGD "
        "step); time ratio: median over rounds of (model time / vanilla time, same round and mode) [min–max]; "
        "> 1 is slower",
        f"- GMACs: statelayers.tools.profile.count_macs at batch 1, {args.img_size}²; bytes ratio: "
        f"tools.profile.count_bytes (fp32 inference, batch {args.batch_size}); peak MiB: growth of peak RSS "
        + ("(in this process)" if args.memory == "in-process" else "(a fresh process per model and mode)"
           if args.memory == "subprocess" else "(not measured)")
        + " over the built model and input: first inference call / first two training steps",
        "",
    ]
    lines += table
    if verdicts:
        setting = "" if (args.img_size, args.batch_size) == (224, 8) else \
            f" (measured at {args.img_size}², batch {args.batch_size}, not the targets' 224², batch 8)"
        lines += ["", f"Targets{setting}; PASS / FAIL when the median ratio's confidence interval (CI, over rounds) "
                  "lies within / beyond the target, UNDECIDED when it contains it:", ""]
        lines += [f"- {label}: {text}" for label, text in verdicts]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
