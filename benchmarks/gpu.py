"""One GPU run: is every image model right on CUDA, what does layer aggregation cost, how fast are the scan and S7?

Made for a lent machine with one NVIDIA GPU (H100 / H200) and a few minutes of it. From the checkout:

    PYTHONPATH=$PWD python benchmarks/gpu.py                          # everything, at most --budget-s (480 s)
    PYTHONPATH=$PWD python benchmarks/gpu.py --sections speed --families resnet50 --modes eager
    PYTHONPATH=$PWD python benchmarks/gpu.py --sections scan s7       # the sequence side alone (~1.5 min)
    python benchmarks/gpu.py --smallest --out-dir /tmp/gpu_bench       # CPU, < 1 min: proves the script runs (CI)

**1. Correctness.** Every image model statelayers registers with timm (`s6la_*`, `rla_*`, `mrla_*`,
`cifar_resnet*`; not the sequence models `s7_*`, `s5_*`, `gru_*`) is built with seed 0, put in eval mode and run
in float32 on a fixed random batch (2 images at the model's default input size — 1×28×28 for the CIFAR-style ones;
1 image for the largest: `*_base`, ResNet-101/152) on the CPU and then, the same module moved, on CUDA with TF32
off (`torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False`). Reported: the largest
difference relative to the largest CPU logit, max|cuda − cpu| / max|cpu|, and PASS when it is at most `TOLERANCE`.
Without CUDA the model is compared with a copy of itself on the CPU (STATELAYERS_KERNELS unset): that proves the
section runs, nothing more, and the report says so.

**2. Speed.** Families (the first model is the vanilla reference): ResNet-50 (`resnet50`, `s6la_resnet50`,
`rla_resnet50`, `mrla_resnet50`; 224², batch 128 train / 256 inference, channels_last), DeiT-Ti
(`deit_tiny_patch16_224`, `s6la_`, `mrla_`; batch 256 / 512), Swin-T and PVTv2-B0 (vanilla and `s6la_`; batch
128 / 256), CIFAR ResNet-56 and ResNet-110 (`cifar_resnet56/110`, `s6la_`, `rla_`, `mrla_`; 1×28×28, batch 128 /
128, channels_last). A training step is forward + cross-entropy + backward + SGD step (momentum 0.9); inference is
an eval-mode forward under no_grad; both under bf16 autocast, in two modes: `eager` and `compiled`
(`torch.compile(model)`, default mode; a model whose compile fails gets its error in one line and the rest go on).
Timing: every model gets `--warmup` untimed calls of each phase (cudnn autotuning, compilation), then `--rounds`
rounds; a round runs the family's inference blocks, model after model in a rotating order, then its training
blocks, each block `--steps` calls between two `torch.cuda.synchronize()`. Figures are medians over rounds of the
time per call; a ratio is the median over rounds of (model time / vanilla time in the same round), with the range
of the per-round ratios; ratios never mix runs. Peak memory: `torch.cuda.max_memory_allocated` over a block after
`reset_peak_memory_stats`, less what the family's other models keep resident, i.e. about the model's peak if it
were alone on the GPU.

**3. Scan.** `statelayers.layers.scan.linear_scan` on complex64 (batch 8, 256 lanes, L = 1,024 / 4,096 / 16,384; random
stable inputs: |a| uniform in [0.5, 0.999), phase uniform, b and the cotangent standard complex normal): forward,
and forward + backward (∂a and ∂b by `torch.autograd.grad` with the fixed cotangent), for `impl="triton"` ("ours")
and `impl="torch"` (the chunked pure-torch path CUDA ran before), each after `--warmup` untimed calls (the first
compiles the Triton kernels), then `SCAN_REPS` timed repetitions of n calls between two `torch.cuda.synchronize()`
(n: enough calls for ~5 ms, from one timed call); figures are medians of the time per call. Beside them, in its own
process after the torch one (`XLA_PYTHON_CLIENT_PREALLOCATE=false`) and only when `import jax` works:
`jax.lax.associative_scan` of the same operator, (a₁, b₁) ∘ (a₂, b₂) = (a₂a₁, a₂b₁ + b₂), on the same sizes and
distribution, jitted; forward, and forward + `jax.vjp` (returning h and both cotangents), timed the same way with
`block_until_ready`. The bound: the forward's least memory traffic, reading a and b and writing h (24 bytes per
complex64 element), divided by the device-to-device copy bandwidth measured in the same process (a 1 GiB `copy_`
into a preallocated buffer, bytes read + written). Also reported: ours against the torch path, max |Δ| / max |ref|
of h, ∂a and ∂b (a wrong kernel shows there, not in the timings).

**4. S7.** The training step (as in Speed: forward + cross-entropy + backward + SGD, bf16 autocast, eager) and
inference of `s5_small` (the reference), `s7_small` and `gru_small` (`in_chans=8, num_classes=10`) on x of shape
(16, 4,096, 8), with the Speed section's machinery: warm-up, interleaved rounds, medians, per-round ratios to
`s5_small`, peak memory.

**5. Targets** (printed as verdicts): S6LA-ResNet-50's eager training step ≤ 1.15× vanilla and inference
≤ 1.10×, each below RLA-ResNet-50's ratio in the same rounds; compiled ratios no worse than eager ones. Each is
judged on the per-round ratios (the median's distribution-free confidence interval of benchmarks/overhead.py, which
is the min–max range at 5 rounds): PASS / FAIL when the interval lies within / beyond the target, UNDECIDED when it
straddles it; compiled vs eager: PASS when the compiled median ratio is at most the eager one, FAIL when the
compiled interval lies wholly above the eager interval, UNDECIDED between. `s7_small`'s eager training step
≤ `S7_TARGET` (1.5)× `s5_small`'s, judged the same way. The scan, at every L: ours faster than JAX, forward and
forward + backward (PASS when the confidence interval of our median time lies wholly below JAX's, FAIL when wholly
above, UNDECIDED when they overlap), and ours' forward within `SCAN_BOUND_TARGET` (3)× the bound (its interval
against 3 × the bound); over the L's: FAIL when one fails, PASS when all pass, N/A when one was not measured.

**Time plan.** Each section runs in its own process under a hard time limit, so a hang or a slow compile cannot
eat the rest, and writes its results as it goes: what a limit cuts off is listed as skipped, never lost silently.
Limits are seconds from the start of the command; one finishing early leaves its time to the next. First, from the
start: correctness and, beside it, the compiled-mode models' first compilation in parallel worker processes (up to
4, each ~24 GiB of GPU memory and 3 cores; a cold `torch.compile` is the slow part, and the workers leave its
results in Inductor's on-disk caches), both by `PHASE1_SHARE` (32 %) of the budget. Then, alone on the GPU, one
after the other: the scan (the torch process, then JAX's, which keeps `SCAN_JAX_SHARE` (40 %) of the scan's
window), S7, the eager timing and the compiled timing (cache hits; a model whose first compilation did not finish
is skipped); they share the rest of the budget, less `REPORT_RESERVE_S` (15 s for stopping what is late and writing
the report), in the proportions of `SHARES`, and the last one present runs to that end. With the default
`--budget-s 480` and every section: correctness and pre-compilation by 154 s, scan by 221 s (torch part by 194 s),
S7 by 273 s, eager timing by 384 s, compiled timing by 465 s. Inside a section, models and families go in
priority order (the smallest image models first in the correctness check; ResNet-50, DeiT-Ti, CIFAR-56, Swin-T,
PVTv2-B0, CIFAR-110 in the timing) and the rounds stop early when the next would not fit. An estimate, not a
measurement (no GPU was at hand when this was written): correctness about 1.5 min (the CPU side: the full check
took 6 min on a busy 2-core CPU running both sides there); the scan about 25–35 s for the torch process (start-up,
the Triton kernels compiled for each L's chunk length, forward and backward, then 3 L × 2 paths × 2 phases × ~25
timed calls of ≤ 20 ms) and 20–30 s for JAX's (start-up, 6 XLA compilations); S7 about 30–40 s (start-up, Triton
compilation, 5 rounds × 2 phases × 3 models × 5 calls of ~10 ms (S5, S7) to ~150 ms (the GRU's 4,096 sequential
cuDNN steps)); together ~60–75 s of the 119 s they may take. Eager timing about 2 min (its 111 s, plus what the
scan and S7 leave), and the compiled timing gets the remaining ~1.5 min, which may reach only the first families
(ResNet-50 first; the rest are then listed as skipped). `--smallest --compile` on that 2-core CPU: a cold
compilation of the DeiT-Ti pair alone took about 5 min.

`--smallest`: everything on the CPU (even where CUDA is present) in float32 (bf16 autocast is very slow on CPUs
without native bf16), 9 models checked at small sizes (`SMALLEST_CHECK`), every family with 2–3 models at small
sizes (ResNets 64², DeiT 32², Swin / PVT 64², CIFAR 28²) and batch 2, 1 warm-up, 2 rounds of 1 call, eager only
unless `--compile`; the scan at batch 2, 8 lanes, L 64 / 128 with `impl="auto"` (numba on the CPU) as "ours" and the
torch path, JAX only where it imports (on the CPU); S7 at batch 2, L 64. The correctness check, the eager timing,
the scan and S7 run side by side (nothing measured there matters). 40–48 s on 2 CPU cores with OMP_NUM_THREADS=1
(2026-11-28, the machine busy with another job; 25–27 s without the scan and S7 sections in the same conditions:
each section's process spends ~8 s of CPU importing torch, timm and statelayers). Without `--smallest` and without
CUDA the full-size settings run on the CPU (the scan with `impl="auto"`), which only fits the budget by skipping
most of it.

Output: the markdown report on stdout and in `OUT_DIR/gpu_bench.md`, everything (per-round and per-repetition times
included) in `OUT_DIR/gpu_bench.json`; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

T_START = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import median_ci, ratio_stats, rotate, verdict  # noqa: E402  (the CPU counterpart's statistics)

ROOT = Path(__file__).resolve().parents[1]

# Float32 on both sides with TF32 off, so the only differences are the order of the sums: cuDNN / cuBLAS
# algorithms and the Triton kernels' blocked reductions add the same terms in another order than the CPU. Each
# rounding is ~6e-8 relative (fp32 unit roundoff); over reductions of 10^3-10^4 terms and 50-150 layers the
# accumulated difference stays orders of magnitude below 1e-4 (the old code measured within 2e-6 on an H200),
# while a real fault (a wrong index, a missing term, a stale buffer) moves the logits by 1e-2 or more.
TOLERANCE = 1e-4
TARGET_MODEL, RLA_MODEL, TARGET_TRAIN, TARGET_INFER = "s6la_resnet50", "rla_resnet50", 1.15, 1.10
SEQUENCE_PREFIXES = ("s7_", "s5_", "gru_")
IMAGE_PREFIXES = ("s6la_", "rla_", "mrla_", "cifar_resnet")
BIG = ("_base", "resnet101", "resnet152")  # checked with batch 1 (the CPU side is the slow one)
# the checked subset with --smallest: one model of each kind, small sizes
SMALLEST_CHECK = ("cifar_resnet20", "s6la_cifar_resnet20", "rla_cifar_resnet20", "mrla_cifar_resnet20",
                  "s6la_resnet18", "s6la_deit_tiny_patch16_224",
                  "mrla_deit_tiny_patch16_224", "s6la_swin_tiny_patch4_window7_224", "s6la_pvt_v2_b0")
LR = 1e-4
REPORT_RESERVE_S = 15  # the end of the budget: killing what is late, writing the report
PHASE1_SHARE = 0.32  # correctness and pre-compilation: by this fraction of the budget when a timing section follows
# the sections alone on the GPU, in this order: their shares of what follows phase 1 (the last present runs to the end)
SHARES = {"scan": 0.14, "s7": 0.11, "eager": 0.23, "compiled": 0.17}
SCAN_JAX_SHARE = 0.4  # of the scan section's window, kept for the JAX process (when JAX imports)

# the scan section: complex64 (B, L, P); 24 bytes per element read and written by the forward at the least
SCAN_LENGTHS, SCAN_BATCH, SCAN_LANES = (1024, 4096, 16384), 8, 256
SCAN_SMALLEST = ((64, 128), 2, 8)  # lengths, batch, lanes with --smallest
SCAN_REPS, SCAN_REPS_SMALLEST = 20, 3  # timed repetitions per (L, implementation, phase)
SCAN_REP_S = 0.005  # a repetition is enough calls for about this long (on the CPU with --smallest: 1 call)
SCAN_BYTES_PER_ELEMENT = 24  # complex64: read a, read b, write h
COPY_BYTES, COPY_BYTES_SMALLEST = 2**30, 2**24  # the copy-bandwidth probe (bytes copied; twice that moved)
SCAN_BOUND_TARGET = 3.0  # ours' forward within this many times the bandwidth bound
# the S7 section: sequence classifiers on (batch, length, in_chans); the reference first
S7_MODELS, S7_TARGET_MODEL, S7_TARGET = ("s5_small", "s7_small", "gru_small"), "s7_small", 1.5
S7_SETTING = {"length": 4096, "in_chans": 8, "num_classes": 10, "train_batch": 16, "infer_batch": 16}
S7_SMALLEST = {"length": 64, "train_batch": 2, "infer_batch": 2}


@dataclass(frozen=True)
class Family:
    models: tuple[str, ...]  # the vanilla reference first
    img_size: int
    in_chans: int
    train_batch: int
    infer_batch: int
    channels_last: bool
    smallest_models: tuple[str, ...]
    smallest_img: int


# in priority order: what runs first when the budget is short
FAMILIES = {
    "resnet50": Family(("resnet50", "s6la_resnet50", "rla_resnet50", "mrla_resnet50"), 224, 3, 128, 256, True,
                       ("resnet50", "s6la_resnet50", "rla_resnet50"), 64),
    "deit_tiny": Family(("deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224", "mrla_deit_tiny_patch16_224"),
                        224, 3, 256, 512, False, ("deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224"), 32),
    "cifar_resnet56": Family(("cifar_resnet56", "s6la_cifar_resnet56", "rla_cifar_resnet56", "mrla_cifar_resnet56"),
                             28, 1, 128, 128, True, ("cifar_resnet56", "s6la_cifar_resnet56"), 28),
    "swin_tiny": Family(("swin_tiny_patch4_window7_224", "s6la_swin_tiny_patch4_window7_224"), 224, 3, 128, 256,
                        False, ("swin_tiny_patch4_window7_224", "s6la_swin_tiny_patch4_window7_224"), 64),
    "pvt_v2_b0": Family(("pvt_v2_b0", "s6la_pvt_v2_b0"), 224, 3, 128, 256, False, ("pvt_v2_b0", "s6la_pvt_v2_b0"),
                        64),
    "cifar_resnet110": Family(("cifar_resnet110", "s6la_cifar_resnet110", "rla_cifar_resnet110",
                               "mrla_cifar_resnet110"), 28, 1, 128, 128, True,
                              ("cifar_resnet110", "s6la_cifar_resnet110"), 28),
}
MODES = ("eager", "compiled")
SECTIONS = ("correctness", "speed", "scan", "s7")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def parse_args(argv=None):
    p = Parser(prog="gpu.py", description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="correctness: image models CUDA vs CPU; speed: image models' cost; scan: linear_scan vs "
                        "the torch path, JAX and the bandwidth bound; s7: S7 / S5 / GRU training steps")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                   help="speed families (run in the order of the default list)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None,
                   help="default: eager compiled on CUDA, eager on CPU and with --smallest")
    p.add_argument("--compile", action="store_true", help="add the compiled mode (e.g. with --smallest)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds of speed and s7 (default 5; --smallest 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per model and phase before the rounds, and per scan timing "
                        "(default 3; --smallest 1; >= 1)")
    p.add_argument("--steps", type=int, default=None, help="calls per timed block (default 5; --smallest 1)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="speed and s7 sections: bf16 autocast (default) or fp32; --smallest on CPU: fp32")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run (s)")
    p.add_argument("--out-dir", default="runs/gpu_bench", help="where gpu_bench.json and gpu_bench.md go")
    p.add_argument("--smallest", action="store_true",
                   help="small sizes, batch 2, 1 warm-up, 2 rounds of 1 call, 2-3 models per family, eager: "
                        "proves the script runs (CI)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one section's process, a JSON spec
    args = p.parse_args(argv)
    if args.child:
        return args
    for name, lo in (("rounds", 1), ("warmup", 1), ("steps", 1)):
        value = getattr(args, name)
        if value is not None and value < lo:
            p.error(f"--{name} must be at least {lo}, got {value}")
    if not math.isfinite(args.budget_s) or args.budget_s < 30:
        p.error(f"--budget-s must be at least 30, got {args.budget_s:g}")
    small = args.smallest
    args.rounds = args.rounds or (2 if small else 5)
    args.warmup = args.warmup or (1 if small else 3)
    args.steps = args.steps or (1 if small else 5)
    args.families = [f for f in FAMILIES if f in args.families]
    args.sections = [x for x in SECTIONS if x in args.sections]
    return args


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:limit]


def log(msg: str) -> None:
    print(f"[{time.time() - T_START:6.1f} s] {msg}", file=sys.stderr, flush=True)


def family_setting(fam: Family, smallest: bool) -> dict:
    img = fam.smallest_img if smallest else fam.img_size
    return {"models": list(fam.smallest_models if smallest else fam.models), "img_size": img,
            "in_chans": fam.in_chans, "train_batch": 2 if smallest else fam.train_batch,
            "infer_batch": 2 if smallest else fam.infer_batch, "channels_last": fam.channels_last}


def scan_setting(device: str, smallest: bool) -> dict:
    lengths, batch, lanes = SCAN_SMALLEST if smallest else (SCAN_LENGTHS, SCAN_BATCH, SCAN_LANES)
    ours = "triton" if device == "cuda" else "auto"  # auto: numba on the CPU (the torch path without numba)
    return {"lengths": list(lengths), "batch": batch, "lanes": lanes, "dtype": "complex64",
            "impls": {"ours": ours, "torch": "torch"}, "reps": SCAN_REPS_SMALLEST if smallest else SCAN_REPS,
            "rep_s": 0.0 if smallest else SCAN_REP_S, "copy_bytes": COPY_BYTES_SMALLEST if smallest else COPY_BYTES}


def s7_setting(smallest: bool) -> dict:
    return {"models": list(S7_MODELS), **S7_SETTING, **(S7_SMALLEST if smallest else {})}


# ================================================================================ child side (imports torch)


def kernel_info(device: str) -> dict:
    """Which S6LA implementation runs: statelayers.layers.kernels' setting, guarded (the module may not exist)."""
    info = {"env": os.environ.get("STATELAYERS_KERNELS")}
    try:
        import importlib

        kernels = importlib.import_module("statelayers.layers.kernels")
    except ImportError as e:
        info.update(module=False, note=f"statelayers.layers.kernels absent ({one_line(e, 120)}): the torch path")
        return info
    info["module"] = True
    mode = getattr(kernels, "kernel_mode", None)
    info["setting"] = mode() if callable(mode) else None
    avail = getattr(kernels, "triton_available", None)
    info["triton_available"] = avail() if callable(avail) else None
    fused = getattr(kernels, "fused_path", None)
    if callable(fused):
        import torch

        try:
            info["fused_on_device"] = bool(fused(torch.zeros(1, device=device)))
        except Exception as e:  # e.g. the triton setting without Triton
            info["fused_on_device"] = one_line(e, 160)
    return info


def environment(device: str) -> dict:
    import timm
    import torch

    env = {"device": device, "torch": torch.__version__, "timm": timm.__version__,
           "python": platform.python_version(), "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_mem_gib"] = round(props.total_memory / 2**30, 1)
    env["kernels"] = kernel_info(device)
    return env


class Recorder:
    """Appends one JSON object per line to the section's file, flushed at once (a killed section keeps them)."""

    def __init__(self, path: str):
        self.f = open(path, "a")

    def __call__(self, kind: str, **rec) -> None:
        self.f.write(json.dumps({"kind": kind, **rec}) + "\n")
        self.f.flush()


def small_check_size(name: str) -> tuple[int, int]:
    """(channels, pixels) of a model's small input in --smallest."""
    if "cifar" in name:
        return 1, 28
    return 3, 32 if "deit" in name else 64


def build_model(name: str, img_size: int | None = None):
    """timm model; `img_size` is passed only to fixed-input-size models (ViT, Swin) and only when it differs."""
    import timm

    import statelayers  # noqa: F401  (registers the models)

    cfg = timm.models.get_pretrained_cfg(name)
    kwargs = {}
    if img_size is not None and cfg is not None and cfg.fixed_input_size and cfg.input_size[-1] != img_size:
        kwargs["img_size"] = img_size
    return timm.create_model(name, **kwargs)


def image_models() -> list[str]:
    """statelayers' image models registered with timm: the cheap ones first, the largest last."""
    import timm

    import statelayers  # noqa: F401

    names = []
    for name in timm.list_models():
        module = getattr(timm.models.model_entrypoint(name), "__module__", "")
        if module.startswith("statelayers") and name.startswith(IMAGE_PREFIXES) \
                and not name.startswith(SEQUENCE_PREFIXES) and not module.endswith("s7_seq"):
            names.append(name)
    return sorted(names, key=lambda n: (any(b in n for b in BIG), n))


def child_correctness(spec: dict) -> None:
    import copy

    import torch

    rec = Recorder(spec["out"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # the model against itself, with the default kernel setting (read when statelayers loads)
        os.environ.pop("STATELAYERS_KERNELS", None)
    if device == "cuda":
        torch.set_num_threads(spec["threads"])
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    rec("env", **environment(device))
    names = spec["models"] or (list(SMALLEST_CHECK) if spec["smallest"] else image_models())
    rec("plan", models=names)
    slowest = 0.0
    for i, name in enumerate(names):
        left = spec["deadline"] - time.time()
        if left < 2 * slowest + 2:
            for rest in names[i:]:
                rec("skip", model=rest, reason=f"correctness budget: {left:.0f} s left")
            log(f"correctness: {len(names) - i} models skipped (budget)")
            return
        t0 = time.time()
        try:
            import timm

            if spec["smallest"]:
                chans, px = small_check_size(name)
                size = (chans, px, px)
            else:
                cfg = timm.models.get_pretrained_cfg(name)
                size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
                if "cifar" in name:
                    size = (1, 28, 28)
            batch = 1 if any(b in name for b in BIG) else 2
            torch.manual_seed(0)
            model = build_model(name, size[-1]).eval()
            x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref = model(x).float()
                other = model.to(device) if device == "cuda" else copy.deepcopy(model)
                out = other(x.to(device)).float().cpu()
            diff = (out - ref).abs().max().item()
            scale = ref.abs().max().item()
            rel = diff / scale if scale > 0 else math.inf
            ok = math.isfinite(rel) and bool(torch.isfinite(out).all()) and rel <= TOLERANCE
            rec("check", model=name, batch=batch, input_size=list(size), max_abs_diff=diff, max_abs_ref=scale,
                max_rel_diff=rel, verdict="PASS" if ok else "FAIL", seconds=round(time.time() - t0, 2))
            log(f"correctness {name}: max rel diff {rel:.2e} {'PASS' if ok else 'FAIL'}")
        except Exception as e:
            rec("check", model=name, verdict="ERROR", error=one_line(e), seconds=round(time.time() - t0, 2))
            log(f"correctness {name}: ERROR {one_line(e)}")
        finally:
            model = other = None
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        slowest = max(slowest, time.time() - t0)


class Runner:
    """One model of a family on the device: its optimizer, fixed batches, and the two timed phases."""

    def __init__(self, name: str, setting: dict, spec: dict, compiled: bool):
        import torch

        self.name, self.device, self.torch = name, spec["device"], torch
        torch.manual_seed(0)
        model = self.build(name, setting)
        self.model = model
        self.fn = torch.compile(model) if compiled else model
        self.opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        classes = setting.get("num_classes") or getattr(model, "num_classes", 1000) or 1000
        self.x_train = self.batch(setting, setting["train_batch"], g)
        self.y = torch.randint(0, classes, (setting["train_batch"],), generator=g).to(self.device)
        self.x_infer = self.batch(setting, setting["infer_batch"], g)
        self.bf16 = spec["precision"] == "bf16"

    def memory_format(self, setting: dict):
        return self.torch.channels_last if setting.get("channels_last") else self.torch.contiguous_format

    def build(self, name: str, setting: dict):
        return build_model(name, setting["img_size"]).to(self.device, memory_format=self.memory_format(setting))

    def batch(self, setting: dict, n: int, g):
        c, s = setting["in_chans"], setting["img_size"]
        return self.torch.randn(n, c, s, s, generator=g).to(self.device, memory_format=self.memory_format(setting))

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device, dtype=self.torch.bfloat16)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def train_step(self):
        import torch.nn.functional as F

        with self.autocast():
            loss = F.cross_entropy(self.fn(self.x_train).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def infer(self):
        with self.torch.no_grad(), self.autocast():
            self.fn(self.x_infer)

    def resident_bytes(self) -> int:
        """Weights, buffers, optimizer state and the batches: what stays allocated between this model's calls."""
        ts = list(self.model.parameters()) + list(self.model.buffers()) + [self.x_train, self.y, self.x_infer]
        ts += [v for st in self.opt.state.values() for v in st.values() if hasattr(v, "element_size")]
        return sum(t.numel() * t.element_size() for t in ts)

    def block(self, phase: str, calls: int) -> tuple[float, float | None]:
        """(seconds per call, peak MiB of this model alone or None on CPU) over `calls` calls of `phase`."""
        torch = self.torch
        self.model.train(phase == "train")
        fn = self.train_step if phase == "train" else self.infer
        cuda = self.device == "cuda"
        self.sync()
        if cuda:
            others = torch.cuda.memory_allocated() - self.resident_bytes()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        self.sync()
        dt = (time.perf_counter() - t0) / calls
        peak = (torch.cuda.max_memory_allocated() - others) / 2**20 if cuda else None
        return dt, peak


class SeqRunner(Runner):
    """A sequence classifier (`s7_small`, ...) on x of shape (batch, length, in_chans)."""

    def build(self, name: str, setting: dict):
        import timm

        import statelayers  # noqa: F401  (registers the models)

        return timm.create_model(name, in_chans=setting["in_chans"], num_classes=setting["num_classes"]).to(
            self.device)

    def batch(self, setting: dict, n: int, g):
        return self.torch.randn(n, setting["length"], setting["in_chans"], generator=g).to(self.device)


def release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def child_precompile(spec: dict) -> None:
    """Compile one model's training and inference graphs (Inductor's caches keep them for the timing process)."""
    name, rec = spec["model"], Recorder(spec["out"])
    import torch

    t0 = time.time()
    try:
        r = Runner(name, spec["setting"], spec, compiled=True)
        times = {}
        for phase in ("train", "infer"):
            t1 = time.time()
            r.block(phase, 1)
            times[phase] = round(time.time() - t1, 1)
        rec("precompile", model=name, status="ok", compile_s=times)
        log(f"precompile {name}: ok, first calls train {times['train']} s, infer {times['infer']} s")
    except Exception as e:
        oom = isinstance(e, getattr(torch, "OutOfMemoryError", MemoryError)) or "out of memory" in str(e).lower()
        rec("precompile", model=name, status="oom" if oom else "error", error=one_line(e),
            seconds=round(time.time() - t0, 1))
        log(f"precompile {name}: {one_line(e)}")


def time_family(fam_name: str, setting: dict, spec: dict, rec: Recorder, make=Runner) -> None:
    mode, device = spec["mode"], spec["device"]
    compiled = mode == "compiled"
    names, ref = setting["models"], setting["models"][0]
    runners, first_call = {}, {}
    pre = spec.get("precompiled") or {}
    for name in names:
        status = pre.get(name)
        if compiled and status is not None and status["status"] not in ("ok", "oom"):
            why = status.get("error") or status["status"]
            rec("model", family=fam_name, model=name, mode=mode, status="error" if status["status"] == "error"
                else "skipped", error=why)
            continue
        t0, error, r = time.time(), None, None
        try:
            r = make(name, setting, spec, compiled)
            first_call[name] = {}
            for phase in ("train", "infer"):  # the first call compiles (compiled) / autotunes; then --warmup - 1
                t1 = time.time()
                r.block(phase, 1)
                first_call[name][phase] = round(time.time() - t1, 2)
                if spec["warmup"] > 1:
                    r.block(phase, spec["warmup"] - 1)
        except Exception as e:
            error = one_line(e)
        if error is None:
            runners[name] = r
            log(f"{mode} {fam_name}: {name} warmed up in {time.time() - t0:.1f} s")
        else:  # out of the except block, so that the traceback no longer holds the model's memory
            rec("model", family=fam_name, model=name, mode=mode, status="error", error=error)
            log(f"{mode} {fam_name}: {name} failed: {error}")
            r = None
            release(device)
    if ref not in runners:
        rec("family", family=fam_name, mode=mode, status="skipped", reason=f"vanilla {ref} did not run",
            setting=setting)
        return
    order = [n for n in names if n in runners]
    times = {n: {"infer": [], "train": [], "peak_infer": [], "peak_train": []} for n in order}
    stopped = None
    try:
        for rnd in range(spec["rounds"]):
            t_round = time.time()
            for phase in ("infer", "train"):  # a phase of the whole family at a time, models in a rotating order
                for name in rotate(order, rnd):
                    dt, peak = runners[name].block(phase, spec["steps"])
                    times[name][phase].append(dt)
                    if peak is not None:
                        times[name]["peak_" + phase].append(peak)
            took = time.time() - t_round
            if rnd + 1 < spec["rounds"] and time.time() + took > spec["deadline"]:
                stopped = f"stopped after {rnd + 1} of {spec['rounds']} rounds (budget)"
                break
    except Exception as e:  # e.g. out of memory: keep the complete rounds, go on with the next family
        stopped = f"a round failed: {one_line(e)}"
        n = min(len(times[m][p]) for m in order for p in ("infer", "train"))
        for t in times.values():
            t["infer"], t["train"] = t["infer"][:n], t["train"][:n]
        if n == 0:
            rec("family", family=fam_name, mode=mode, status="skipped", reason=stopped, setting=setting)
            log(f"{mode} {fam_name}: {stopped}")
            return
    rec("family", family=fam_name, mode=mode, status="ok", setting=setting, times=times, first_call_s=first_call,
        stopped=stopped)
    log(f"{mode} {fam_name}: done" + (f", {stopped}" if stopped else ""))


def child_speed(spec: dict) -> None:
    import torch

    rec = Recorder(spec["out"])
    if spec["device"] == "cuda":
        torch.backends.cudnn.benchmark = True
    rec("env", **environment(spec["device"]))
    for fam_name in spec["families"]:
        left = spec["deadline"] - time.time()
        if left < spec["min_family_s"]:
            rec("family", family=fam_name, mode=spec["mode"], status="skipped",
                reason=f"{spec['mode']} budget: {left:.0f} s left", setting=spec["settings"][fam_name])
            continue
        time_family(fam_name, spec["settings"][fam_name], spec, rec)
        if spec["mode"] == "compiled":
            torch._dynamo.reset()
        release(spec["device"])


def child_s7(spec: dict) -> None:
    import torch

    rec = Recorder(spec["out"])
    if spec["device"] == "cuda":
        torch.backends.cudnn.benchmark = True
    rec("env", **environment(spec["device"]))
    time_family("s7_seq", spec["setting"], spec, rec, make=SeqRunner)


def time_calls(fn, wait, warmup: int, reps: int, rep_s: float) -> tuple[list[float], int]:
    """(seconds per call of each repetition, calls per repetition): `warmup` untimed calls, one timed call to size
    the repetitions (enough calls for ~rep_s each, at most 100), then `reps` repetitions, each ended by `wait(the
    last call's output)` (the device's work done: torch.cuda.synchronize, jax.block_until_ready)."""
    out = None
    for _ in range(warmup):
        out = fn()
    wait(out)
    t0 = time.perf_counter()
    wait(fn())
    one = time.perf_counter() - t0
    calls = max(1, min(100, int(rep_s / max(one, 1e-7))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn()
        wait(out)
        times.append((time.perf_counter() - t0) / calls)
    return times, calls


def rel_diff(x, ref) -> float:
    scale = ref.abs().max().item()
    return (x - ref).abs().max().item() / scale if scale > 0 else math.inf


def scan_inputs_torch(torch, shape: tuple, device: str, seed: int):
    """(a, b, cotangent): |a| uniform in [0.5, 0.999) with a uniform phase; b and the cotangent complex normal."""
    g = torch.Generator(device=device).manual_seed(seed)

    def unit():
        return torch.complex(torch.randn(shape, generator=g, device=device),
                             torch.randn(shape, generator=g, device=device)) / math.sqrt(2)

    r = 0.5 + 0.499 * torch.rand(shape, generator=g, device=device)
    a = torch.polar(r, (2 * torch.rand(shape, generator=g, device=device) - 1) * math.pi)
    return a, unit(), unit()


def scan_length(length: int, spec: dict, rec: Recorder, sync) -> None:
    """One L: every implementation's forward and forward + backward timed, and ours compared with the torch path."""
    import torch

    from statelayers.layers.scan import linear_scan

    st, device = spec["setting"], spec["device"]
    a, b, gy = scan_inputs_torch(torch, (st["batch"], length, st["lanes"]), device, length)
    results = {}
    for label, impl in st["impls"].items():
        aq, bq = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()

        def fwd(impl=impl):
            return linear_scan(a, b, impl=impl)

        def fwdbwd(impl=impl, aq=aq, bq=bq):
            h = linear_scan(aq, bq, impl=impl)
            return h, torch.autograd.grad(h, (aq, bq), gy)

        try:
            h, (ga, gb) = fwdbwd()  # the first call (compiles the Triton kernels), kept for the comparison
            results[label] = (h.detach(), ga, gb)
            ms = {}
            for phase, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                times, calls = time_calls(fn, sync, spec["warmup"], st["reps"], st["rep_s"])
                rec("scan", length=length, label=label, impl=impl, phase=phase, seconds=times, calls=calls)
                ms[phase] = 1e3 * statistics.median(times)
            log(f"scan L {length} {label} ({impl}): fwd {ms['fwd']:.3f} ms, fwd+bwd {ms['fwdbwd']:.3f} ms")
        except Exception as e:
            rec("scan", length=length, label=label, impl=impl, phase="error", error=one_line(e))
            log(f"scan L {length} {label} ({impl}): {one_line(e)}")
        h = ga = gb = None
    if len(results) == 2:
        ours, ref = results["ours"], results["torch"]
        rec("diff", length=length, **{k: rel_diff(x, y) for k, x, y in zip(("h", "grad_a", "grad_b"), ours, ref)})


def child_scan(spec: dict) -> None:
    """linear_scan's implementations on complex64, and the copy bandwidth that bounds its forward."""
    import torch

    from statelayers.layers.scan import numba_available

    rec = Recorder(spec["out"])
    device, st = spec["device"], spec["setting"]
    rec("env", **environment(device))
    cuda = device == "cuda"

    def sync(_=None):
        if cuda:
            torch.cuda.synchronize()

    resolved = {k: v if v != "auto" else ("triton" if cuda else "numba" if numba_available() else "torch")
                for k, v in st["impls"].items()}
    rec("impls", impls=st["impls"], resolved=resolved)
    try:  # the bandwidth: a large copy into a preallocated buffer, bytes read + written
        src = torch.empty(st["copy_bytes"] // 4, device=device).uniform_()
        dst = torch.empty_like(src).zero_()
        times, calls = time_calls(lambda: dst.copy_(src), sync, spec["warmup"], st["reps"], st["rep_s"])
        moved = 2 * st["copy_bytes"]
        gbps = moved / statistics.median(times) / 1e9
        rec("bandwidth", bytes_moved=moved, seconds=times, calls=calls, gbps=gbps)
        log(f"scan: copy bandwidth {gbps:.0f} GB/s (read + write)")
    except Exception as e:
        rec("bandwidth", error=one_line(e))
        log(f"scan: copy bandwidth failed: {one_line(e)}")
    src = dst = None
    release(device)
    slowest = 0.0
    for length in sorted(st["lengths"], reverse=True):  # the longest first: the figure that matters most
        left = spec["deadline"] - time.time()
        if left < 2 * slowest + 2:
            rec("skip", length=length, reason=f"scan budget: {left:.0f} s left")
            log(f"scan L {length}: skipped ({left:.0f} s left)")
            continue
        t0 = time.time()
        try:
            scan_length(length, spec, rec, sync)
        except Exception as e:  # e.g. out of memory making the inputs
            rec("skip", length=length, reason=one_line(e))
            log(f"scan L {length}: {one_line(e)}")
        release(device)
        slowest = max(slowest, time.time() - t0)


def jax_length(jax, fns, length: int, spec: dict, rec: Recorder) -> None:
    import jax.numpy as jnp

    st = spec["setting"]
    shape = (st["batch"], length, st["lanes"])
    k = jax.random.split(jax.random.PRNGKey(length), 6)

    def unit(k1, k2):
        return ((jax.random.normal(k1, shape) + 1j * jax.random.normal(k2, shape)) / math.sqrt(2)).astype(
            jnp.complex64)

    r = 0.5 + 0.499 * jax.random.uniform(k[0], shape)
    a = (r * jnp.exp(1j * jnp.pi * (2 * jax.random.uniform(k[1], shape) - 1))).astype(jnp.complex64)
    b, g = unit(k[2], k[3]), unit(k[4], k[5])
    jax.block_until_ready((a, b, g))
    fwd, fwdbwd = fns
    ms = {}
    for phase, fn in (("fwd", lambda: fwd(a, b)), ("fwdbwd", lambda: fwdbwd(a, b, g))):
        times, calls = time_calls(fn, jax.block_until_ready, spec["warmup"], st["reps"], st["rep_s"])
        rec("scan", length=length, label="jax", impl="jax.lax.associative_scan", phase=phase, seconds=times,
            calls=calls)
        ms[phase] = 1e3 * statistics.median(times)
    log(f"scan L {length} jax: fwd {ms['fwd']:.3f} ms, fwd+bwd {ms['fwdbwd']:.3f} ms")


def child_scan_jax(spec: dict) -> None:
    """jax.lax.associative_scan of the same recurrence and sizes (its own process: no torch here)."""
    rec = Recorder(spec["out"])
    try:
        import jax

        backend = jax.default_backend()
        rec("jax", status="ok", version=jax.__version__, backend=backend, devices=[str(d) for d in jax.devices()])
    except Exception as e:  # ImportError, or a broken CUDA plugin
        rec("jax", status="error", error=one_line(e))
        log(f"scan jax: {one_line(e)}")
        return
    log(f"scan jax {jax.__version__}: backend {backend}")

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a2 * a1, a2 * b1 + b2

    def scan_h(a, b):
        return jax.lax.associative_scan(combine, (a, b), axis=1)[1]

    def scan_vjp(a, b, g):
        h, pullback = jax.vjp(scan_h, a, b)
        return h, pullback(g)

    fns = jax.jit(scan_h), jax.jit(scan_vjp)
    slowest = 0.0
    for length in sorted(spec["setting"]["lengths"], reverse=True):
        left = spec["deadline"] - time.time()
        if left < 2 * slowest + 2:
            rec("skip", length=length, reason=f"JAX scan budget: {left:.0f} s left")
            continue
        t0 = time.time()
        try:
            jax_length(jax, fns, length, spec, rec)
        except Exception as e:
            rec("scan", length=length, label="jax", impl="jax.lax.associative_scan", phase="error",
                error=one_line(e))
            log(f"scan L {length} jax: {one_line(e)}")
        slowest = max(slowest, time.time() - t0)


def run_child(spec_json: str) -> int:
    global T_START
    spec = json.loads(spec_json)
    T_START = spec.get("t_start", T_START)  # progress lines count from the parent's start
    {"correctness": child_correctness, "precompile": child_precompile, "speed": child_speed, "s7": child_s7,
     "scan": child_scan, "scan_jax": child_scan_jax}[spec["kind"]](spec)
    return 0


# ================================================================================ parent side (orchestration)


class Proc:
    """A section's process in its own session (its compile workers die with it), with a hard deadline."""

    started: list[Proc] = []  # every one, for the parent's last clean-up

    def __init__(self, label: str, spec: dict, cap: float, env: dict):
        self.label, self.cap = label, cap
        cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
        self.p = subprocess.Popen(cmd, env=env, start_new_session=True)
        self.killed = False
        Proc.started.append(self)

    def poll(self) -> bool:
        """True when finished (killing it when past its cap)."""
        if self.p.poll() is not None:
            return True
        if time.time() >= self.cap:
            self.kill()
            return True
        return False

    def kill(self) -> None:
        if self.p.poll() is not None:
            return
        self.killed = True
        log(f"{self.label}: hard time limit reached, stopping it")
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, sig)
            try:
                self.p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # stray compile workers of the group
            os.killpg(self.p.pid, signal.SIGKILL)


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            out.append(json.loads(line))
    return out


def time_plan(args, budget: float, jax: bool = False) -> dict:
    """Seconds from the start by which each phase must be over (the hard limits). Phase 1 (correctness beside the
    pre-compilation) ends by PHASE1_SHARE of the budget when a timing section follows; the timing sections, alone
    on the device one after the other, share the rest in the proportions of SHARES (the last one present runs to
    the end). With `jax`, "scan torch" is when the scan's torch process must end (the rest is JAX's)."""
    end = budget - REPORT_RESERVE_S
    speed = "speed" in args.sections
    modes = args.modes or []  # not known yet when the correctness section starts (its limit does not depend on it)
    compiled = speed and "compiled" in modes
    timing_follows = speed or "scan" in args.sections or "s7" in args.sections
    plan = {}
    start = 0.0
    if "correctness" in args.sections or compiled:
        start = PHASE1_SHARE * budget if timing_follows else end
        if "correctness" in args.sections:
            plan["correctness"] = start
        if compiled:
            plan["precompile"] = start
    seq = [x for x in ("scan", "s7") if x in args.sections] + [m for m in MODES if speed and m in modes]
    total = sum(SHARES[x] for x in seq)
    done = 0.0
    for x in seq:
        t0 = start + (end - start) * done / total
        done += SHARES[x]
        by = end if x == seq[-1] else start + (end - start) * done / total
        if x == "scan" and jax:
            plan["scan torch"] = by - SCAN_JAX_SHARE * (by - t0)
        plan[x] = by
    return plan


def run_phase(running: list[Proc], queue: list, start=None, slots: int = 0, then: dict | None = None) -> list[Proc]:
    """Wait for `running` and for the queue's processes, at most `slots` of those at a time; returns all started.
    `start(item)` returns None when it is too late to start anything more. `then[label]()`: the process (or None)
    to start when the process of that label ends (a section of two processes in turn)."""
    started, active, workers, then = list(running), list(running), [], dict(then or {})
    while True:
        still = []
        for p in active:
            if not p.poll():
                still.append(p)
            elif p.label in then and (nxt := then.pop(p.label)()) is not None:
                still.append(nxt)
                started.append(nxt)
        active = still
        workers = [p for p in workers if p in active]
        while queue and len(workers) < slots:
            new = start(queue.pop(0))
            if new is None:
                queue.clear()
                break
            workers.append(new)
            active.append(new)
            started.append(new)
        if not active:
            return started
        time.sleep(0.2)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child)

    # the correctness section starts first, while this process imports torch: it decides its device itself
    tmp = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get(
        "PYTHONPATH", "").split(os.pathsep) if p]), PYTHONUNBUFFERED="1")
    if args.smallest:  # everything on the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    cpus = os.cpu_count() or 1
    procs: list[Proc] = []
    phase1 = []
    try:
        if "correctness" in args.sections:
            cap = T_START + time_plan(args, args.budget_s)["correctness"]
            spec = {"t_start": T_START, "kind": "correctness", "smallest": args.smallest, "models": None,
                    "out": str(tmp / "correctness.jsonl"), "deadline": cap - 5, "threads": min(4, cpus)}
            phase1.append(Proc("correctness", spec, cap, env))
        if args.smallest:
            device = "cpu"
        else:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cpu":
                log("no CUDA: running on the CPU at full size, which only fits the budget by skipping "
                    "(try --smallest)")
        if args.modes is None:
            args.modes = ["eager", "compiled"] if device == "cuda" else ["eager"]
        if args.compile and "compiled" not in args.modes:
            args.modes.append("compiled")
        args.modes = [m for m in MODES if m in args.modes]
        args.precision = args.precision or ("fp32" if device == "cpu" and args.smallest else "bf16")
        args.jax_found = jax_found = "scan" in args.sections and importlib.util.find_spec("jax") is not None
        plan = time_plan(args, args.budget_s, jax_found)  # seconds from the start of this process
        caps = {k: T_START + v for k, v in plan.items()}
        settings = {f: family_setting(FAMILIES[f], args.smallest) for f in args.families}
        settings["scan"], settings["s7"] = scan_setting(device, args.smallest), s7_setting(args.smallest)
        base = {"t_start": T_START, "device": device, "smallest": args.smallest, "precision": args.precision,
                "rounds": args.rounds, "warmup": args.warmup, "steps": args.steps}
        log(f"device {device}; plan (s from the start): " + ", ".join(f"{k} by {v:.0f}" for k, v in plan.items()))

        def speed_proc(mode: str, precompiled: dict) -> Proc:
            spec = dict(base, kind="speed", mode=mode, families=args.families, settings=settings,
                        out=str(tmp / f"speed_{mode}.jsonl"), deadline=caps[mode] - 5,
                        min_family_s=5 if args.smallest else 20, precompiled=precompiled)
            return Proc(f"speed {mode}", spec, caps[mode], env)

        def scan_proc() -> Proc:
            cap = caps.get("scan torch", caps["scan"])
            spec = dict(base, kind="scan", setting=settings["scan"], out=str(tmp / "scan.jsonl"), deadline=cap - 5)
            return Proc("scan", spec, cap, env)

        def jax_proc() -> Proc | None:  # after the torch process, alone on the device
            if time.time() > caps["scan"] - 10:
                return None
            jenv = dict(env, XLA_PYTHON_CLIENT_PREALLOCATE="false")
            if device == "cpu":
                jenv["JAX_PLATFORMS"] = "cpu"
            spec = dict(base, kind="scan_jax", setting=settings["scan"], out=str(tmp / "scan_jax.jsonl"),
                        deadline=caps["scan"] - 5)
            return Proc("scan jax", spec, caps["scan"], jenv)

        def s7_proc() -> Proc:
            spec = dict(base, kind="s7", mode="eager", setting=settings["s7"], out=str(tmp / "s7.jsonl"),
                        deadline=caps["s7"] - 5, precompiled={})
            return Proc("s7", spec, caps["s7"], env)

        then = {"scan": jax_proc} if jax_found else {}
        # the sections timed alone on the device, in this order
        alone = [start for name, start in (("scan", scan_proc), ("s7", s7_proc)) if name in plan]
        alone += [lambda mode=m: speed_proc(mode, precompiled) for m in MODES if m in plan]
        precompiled = {}
        if args.smallest:  # nothing measured on the CPU matters: save the time, all but the compiled mode beside
            phase1 += [start() for start in alone[:len(alone) - ("compiled" in plan)]]
            alone = alone[len(alone) - ("compiled" in plan):]
        # phase 1: correctness and, beside it, the compiled-mode models' first compilation in parallel workers
        queue, slots = [], 0
        if "precompile" in plan:
            queue = [(f, m) for f in args.families for m in settings[f]["models"]]
            if device == "cuda":
                mem_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
                slots = max(1, min(4, int(mem_gib // 24), (cpus - 4) // 3))  # ~24 GiB and 3 cores each
            else:
                slots = 1
            (tmp / "precompile").mkdir()

        def start_precompile(item):
            fam, model = item
            if time.time() > caps["precompile"] - 10:
                return None
            spec = dict(base, kind="precompile", model=model, setting=settings[fam],
                        out=str(tmp / "precompile" / f"{model}.jsonl"))
            penv = dict(env, TORCHINDUCTOR_COMPILE_THREADS=str(max(1, min(3, cpus // slots))))
            return Proc(f"precompile {model}", spec, caps["precompile"], penv)

        procs += run_phase(phase1, queue, start_precompile, slots, then)
        if "precompile" in plan:
            for f in args.families:
                for m in settings[f]["models"]:
                    recs = read_records(tmp / "precompile" / f"{m}.jsonl")
                    if recs:
                        precompiled[m] = recs[-1]
                    else:
                        started = any(p.label == f"precompile {m}" for p in procs)
                        precompiled[m] = {"status": "timeout", "error": "not compiled within the pre-compile "
                                          f"budget ({plan['precompile']:.0f} s)" + ("" if started else
                                                                                     ", not started")}
        # then the timing sections, alone on the device
        for start in alone:
            procs += run_phase([start()], [], then=then)
    finally:
        for p in Proc.started:
            p.kill()
    elapsed = time.time() - T_START
    result = collect(args, device, plan, settings, tmp, procs, elapsed)
    report = render(result)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "gpu_bench.md").write_text(report)
    print(report)
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out_dir / 'gpu_bench.json'} and {out_dir / 'gpu_bench.md'}")
    return 0


# ================================================================================ results


def stats_dict(times: dict, name: str, ref: str, mode: str, phase: str) -> dict:
    s = ratio_stats(times, name, ref, mode, phase)
    return {"median": s["median"], "min": s["min"], "max": s["max"], "ci": list(s["ci"]),
            "coverage": s["coverage"]}


def family_rows(fr: dict | None, errs: dict, fam: str, setting: dict, mode: str, why_missing: str,
                skipped: list, times_all: dict, section: str = "") -> list[dict]:
    """The rows of one timed family (speed, or the S7 section's sequence models) from its records."""
    where = f"{section} {mode} {fam}".strip()
    if fr is None or fr["status"] != "ok":
        skipped.append(f"{where}: {fr['reason'] if fr else why_missing}")
        skipped += [f"{where} {m}: {e['error']}" for (f, m), e in errs.items() if f == fam]
        return []
    if fr.get("stopped"):
        skipped.append(f"{where}: {fr['stopped']}")
    ref = setting["models"][0]
    times = {(n, mode): t for n, t in fr["times"].items()}
    times_all.update(times)
    rows = []
    for name in setting["models"]:
        row = {"family": fam, "model": name, "mode": mode, "vanilla": ref}
        if (name, mode) not in times:
            e = errs.get((fam, name), {"status": "skipped", "error": "not run"})
            row.update(status=e["status"], error=e["error"])
            rows.append(row)
            continue
        t = times[name, mode]
        row.update(status="ok", rounds=len(t["train"]),
                   train_ms=1e3 * statistics.median(t["train"]), infer_ms=1e3 * statistics.median(t["infer"]),
                   train_ms_per_round=[1e3 * v for v in t["train"]],
                   infer_ms_per_round=[1e3 * v for v in t["infer"]],
                   train_ratio=stats_dict(times, name, ref, mode, "train"),
                   infer_ratio=stats_dict(times, name, ref, mode, "infer"),
                   train_peak_mib=max(t["peak_train"]) if t["peak_train"] else None,
                   infer_peak_mib=max(t["peak_infer"]) if t["peak_infer"] else None,
                   first_call_s=fr["first_call_s"].get(name))
        rows.append(row)
    return rows


def model_errors(recs: list[dict]) -> dict:
    return {(r["family"], r["model"]): r for r in recs if r["kind"] == "model"}


def jax_status(device: str, found: bool, recs: list[dict], killed: set) -> dict:
    if not found:
        return {"status": "skipped", "note": "jax is not importable here: no JAX comparison"}
    rec = next((r for r in recs if r["kind"] == "jax"), None)
    if rec is None:
        return {"status": "skipped", "note": "hard time limit" if "scan jax" in killed else
                "not run (no time left in the scan's window)"}
    if rec["status"] != "ok":
        return {"status": "error", "note": rec["error"]}
    out = {k: v for k, v in rec.items() if k != "kind"}
    out["comparable"] = rec["backend"] in (("gpu", "cuda") if device == "cuda" else ("cpu",))
    if not out["comparable"]:
        out["note"] = f"JAX ran on its {rec['backend']} backend, not on the {device} ours ran on: not compared"
    return out


def collect_scan(args, device: str, setting: dict, tmp: Path, killed: set, skipped: list) -> dict:
    recs, jrecs = read_records(tmp / "scan.jsonl"), read_records(tmp / "scan_jax.jsonl")
    jax = jax_status(device, args.jax_found, jrecs, killed)
    seconds, calls, errors, diffs, bw, resolved = {}, {}, {}, {}, None, None
    for r in recs + jrecs:
        if r["kind"] == "scan" and r["phase"] == "error":
            errors[r["label"], r["length"]] = r["error"]
        elif r["kind"] == "scan":
            seconds[r["label"], r["length"], r["phase"]] = r["seconds"]
            calls[r["label"], r["length"], r["phase"]] = r["calls"]
        elif r["kind"] == "diff":
            diffs[r["length"]] = {k: r[k] for k in ("h", "grad_a", "grad_b")}
        elif r["kind"] == "bandwidth":
            bw = {k: v for k, v in r.items() if k != "kind"}
        elif r["kind"] == "impls":
            resolved = r["resolved"]
        elif r["kind"] == "skip":
            skipped.append(f"scan L {r['length']}: {r['reason']}")
    if not recs:
        skipped.append("scan: the section produced nothing" + (" (hard time limit)" if "scan" in killed else ""))
    labels = ["ours", "torch"] + (["jax"] if jax["status"] == "ok" else [])
    done = {L for (label, L, _) in seconds if label != "jax"} | {L for (label, L) in errors if label != "jax"} \
        | {r["length"] for r in recs if r["kind"] == "skip"}  # by the torch process
    for L in setting["lengths"]:
        if L not in done:
            skipped.append(f"scan L {L}: " + ("hard time limit" if "scan" in killed else "not run"))
        if "jax" in labels and not any(k[:2] == ("jax", L) for k in seconds) and ("jax", L) not in errors \
                and not any(r["kind"] == "skip" and r["length"] == L for r in jrecs):
            skipped.append(f"scan L {L} jax: " + ("hard time limit" if "scan jax" in killed else "not run"))
    gbps = bw.get("gbps") if bw else None
    rows = []
    for L in setting["lengths"]:
        n = setting["batch"] * L * setting["lanes"]
        row = {"length": L, "batch": setting["batch"], "lanes": setting["lanes"], "elements": n,
               "bytes_fwd": SCAN_BYTES_PER_ELEMENT * n,
               "bound_ms": 1e3 * SCAN_BYTES_PER_ELEMENT * n / (gbps * 1e9) if gbps else None}
        for label in ("ours", "torch", "jax"):
            for phase in ("fwd", "fwdbwd"):
                t = seconds.get((label, L, phase))
                row[f"{label}_{phase}_ms"] = 1e3 * statistics.median(t) if t else None
        comparable = jax.get("comparable", False)
        for phase in ("fwd", "fwdbwd"):
            o, j, t = row[f"ours_{phase}_ms"], row[f"jax_{phase}_ms"], row[f"torch_{phase}_ms"]
            row[f"ours_over_jax_{phase}"] = o / j if o and j and comparable else None
            row[f"ours_over_torch_{phase}"] = o / t if o and t else None
        o, bound = row["ours_fwd_ms"], row["bound_ms"]
        row["ours_fwd_over_bound"] = o / bound if o and bound else None
        row["diff_vs_torch"] = diffs.get(L)
        row["errors"] = {label: e for (label, length), e in errors.items() if length == L}
        row["ms_per_rep"] = {f"{label}_{phase}": [1e3 * v for v in t] for (label, length, phase), t in seconds.items()
                             if length == L}
        row["calls_per_rep"] = {f"{label}_{phase}": c for (label, length, phase), c in calls.items() if length == L}
        rows.append(row)
    return {**{k: v for k, v in setting.items() if k != "impls"}, "impls": setting["impls"], "resolved": resolved,
            "warmup": args.warmup, "bandwidth": bw, "jax": jax, "rows": rows}


def collect(args, device, plan, settings, tmp: Path, procs: list[Proc], elapsed: float) -> dict:
    env, skipped = {}, []
    killed = {p.label for p in procs if p.killed}
    # correctness
    checks, check_plan = [], []
    recs = read_records(tmp / "correctness.jsonl")
    for r in recs:
        if r["kind"] == "env":
            env = env or {k: v for k, v in r.items() if k != "kind"}
        elif r["kind"] == "plan":
            check_plan = r["models"]
        elif r["kind"] == "check":
            checks.append({k: v for k, v in r.items() if k != "kind"})
        elif r["kind"] == "skip":
            skipped.append(f"correctness {r['model']}: {r['reason']}")
    done = {c["model"] for c in checks} | {r["model"] for r in recs if r["kind"] == "skip"}
    for m in check_plan:
        if m not in done:
            skipped.append(f"correctness {m}: " + ("hard time limit" if "correctness" in killed else "not run"))
    if "correctness" in plan and not check_plan:
        skipped.append("correctness: the section produced nothing" + (" (hard time limit)" if "correctness"
                                                                     in killed else ""))
    compare = ("CUDA (fp32, TF32 off) vs CPU" if device == "cuda" else
               "CPU vs a copy of the model on the CPU (no CUDA here: proves the section runs, not the CUDA path)")
    correctness = {"tolerance": TOLERANCE, "comparison": compare, "models": checks,
                   "all_pass": bool(checks) and all(c["verdict"] == "PASS" for c in checks)}
    # speed
    rows, times_all = [], {}
    for mode in args.modes if "speed" in args.sections else []:
        recs = read_records(tmp / f"speed_{mode}.jsonl")
        env = env or next(({k: v for k, v in r.items() if k != "kind"} for r in recs if r["kind"] == "env"), {})
        fam_recs = {r["family"]: r for r in recs if r["kind"] == "family"}
        errs = model_errors(recs)
        for fam in args.families:
            why = "hard time limit" if f"speed {mode}" in killed else "not run"
            rows += family_rows(fam_recs.get(fam), errs, fam, settings[fam], mode, why, skipped, times_all)
    # scan
    scan = collect_scan(args, device, settings["scan"], tmp, killed, skipped) if "scan" in args.sections else None
    if scan is not None:
        env = env or next(({k: v for k, v in r.items() if k != "kind"} for r in read_records(tmp / "scan.jsonl")
                           if r["kind"] == "env"), {})
    # S7
    s7, s7_times = None, {}
    if "s7" in args.sections:
        recs = read_records(tmp / "s7.jsonl")
        env = env or next(({k: v for k, v in r.items() if k != "kind"} for r in recs if r["kind"] == "env"), {})
        fr = next((r for r in recs if r["kind"] == "family"), None)
        why = "hard time limit" if "s7" in killed else "not run"
        s7 = {"setting": settings["s7"], "precision": args.precision, "mode": "eager",
              "rows": family_rows(fr, model_errors(recs), "s7_seq", settings["s7"], "eager", why, skipped, s7_times,
                                  "s7")}
    settings_out = {"precision": args.precision, "warmup": args.warmup, "rounds": args.rounds,
                    "steps": args.steps, "modes": args.modes,
                    "families": {f: settings[f] for f in args.families}}
    return {
        "command": "python " + " ".join([os.path.relpath(os.path.abspath(__file__))] + sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device, "environment": env, "smallest": args.smallest, "budget_s": args.budget_s,
        "sections": args.sections, "plan_s": {k: round(v) for k, v in plan.items()}, "elapsed_s": round(elapsed, 1),
        "settings": settings_out, "correctness": correctness, "speed": rows, "scan": scan, "s7": s7,
        "verdicts": verdicts(args, times_all, scan, s7_times), "skipped": skipped,
    }


def not_target(args) -> str:
    return "" if (not args.smallest and args.precision == "bf16") else \
        " [not the target setting: --smallest / fp32; this only proves the verdicts are computed]"


def verdicts(args, times: dict, scan: dict | None, s7_times: dict) -> list[dict]:
    out = []
    if "speed" in args.sections:
        out += [dict(v, section="speed") for v in speed_verdicts(args, times)]
    if scan is not None:
        out += [dict(v, section="scan") for v in scan_verdicts(args, scan)]
    if "s7" in args.sections:
        ref = S7_MODELS[0]
        label = f"{S7_TARGET_MODEL} eager training step ≤ {S7_TARGET:.2f}× {ref}"
        if (S7_TARGET_MODEL, "eager") in s7_times and (ref, "eager") in s7_times:
            s = stats_dict(s7_times, S7_TARGET_MODEL, ref, "eager", "train")
            out.append({"target": label, "verdict": verdict(s, S7_TARGET),
                        "detail": f"ratio {fmt_ci(s)}{not_target(args)}", "section": "s7"})
        else:
            out.append({"target": label, "verdict": "N/A", "detail": "not measured", "section": "s7"})
    return out


def combine_verdicts(vs: list[str]) -> str:
    """Over the L's: FAIL when one fails, N/A when one was not measured, PASS when all pass, else UNDECIDED."""
    if "FAIL" in vs:
        return "FAIL"
    if "N/A" in vs or not vs:
        return "N/A"
    return "PASS" if all(v == "PASS" for v in vs) else "UNDECIDED"


def scan_verdicts(args, scan: dict) -> list[dict]:
    out, where = [], not_target(args)
    ours = scan["impls"]["ours"]
    jax = scan["jax"]
    for phase, what in (("fwd", "forward"), ("fwdbwd", "forward + backward")):
        label = f"scan {what}: ours (impl={ours!r}) faster than jax.lax.associative_scan at every L"
        if not jax.get("comparable"):
            out.append({"target": label, "verdict": "N/A", "detail": jax.get("note", "JAX not measured")})
            continue
        vs, parts = [], []
        for row in scan["rows"]:
            o, j = row["ms_per_rep"].get(f"ours_{phase}"), row["ms_per_rep"].get(f"jax_{phase}")
            if not o or not j:
                vs.append("N/A")
                parts.append(f"L {row['length']}: not measured")
                continue
            (olo, ohi, _), (jlo, jhi, _) = median_ci(o), median_ci(j)
            v = "PASS" if ohi < jlo else "FAIL" if olo > jhi else "UNDECIDED"
            vs.append(v)
            parts.append(f"L {row['length']}: ours / JAX {row[f'ours_over_jax_{phase}']:.2f} ({v})")
        out.append({"target": label, "verdict": combine_verdicts(vs), "detail": "; ".join(parts) + where})
    label = f"scan forward: ours (impl={ours!r}) within {SCAN_BOUND_TARGET:g}× the memory-bandwidth bound at every L"
    vs, parts = [], []
    for row in scan["rows"]:
        o, bound = row["ms_per_rep"].get("ours_fwd"), row["bound_ms"]
        if not o or not bound:
            vs.append("N/A")
            parts.append(f"L {row['length']}: not measured")
            continue
        lo, hi, _ = median_ci(o)
        v = "PASS" if hi <= SCAN_BOUND_TARGET * bound else "FAIL" if lo > SCAN_BOUND_TARGET * bound else "UNDECIDED"
        vs.append(v)
        parts.append(f"L {row['length']}: ours / bound {row['ours_fwd_over_bound']:.2f} ({v})")
    out.append({"target": label, "verdict": combine_verdicts(vs), "detail": "; ".join(parts) + where})
    return out


def speed_verdicts(args, times: dict) -> list[dict]:
    out = []
    where = not_target(args)

    def have(name, mode):
        return (name, mode) in times

    ref = FAMILIES["resnet50"].models[0]
    for phase, target in (("train", TARGET_TRAIN), ("infer", TARGET_INFER)):
        what = "training step" if phase == "train" else "inference"
        label = f"{TARGET_MODEL} eager {what} ≤ {target:.2f}× {ref}"
        if have(TARGET_MODEL, "eager") and have(ref, "eager"):
            s = stats_dict(times, TARGET_MODEL, ref, "eager", phase)
            out.append({"target": label, "verdict": verdict(s, target),
                        "detail": f"ratio {fmt_ci(s)}{where}"})
        else:
            out.append({"target": label, "verdict": "N/A", "detail": "not measured"})
        label = f"{TARGET_MODEL} eager {what} ratio below {RLA_MODEL}'s (same rounds)"
        if have(TARGET_MODEL, "eager") and have(RLA_MODEL, "eager"):
            s = stats_dict(times, TARGET_MODEL, RLA_MODEL, "eager", phase)
            out.append({"target": label, "verdict": verdict(s, 1.0),
                        "detail": f"time {TARGET_MODEL} / {RLA_MODEL} {fmt_ci(s)}{where}"})
        else:
            out.append({"target": label, "verdict": "N/A", "detail": f"{RLA_MODEL} not measured"
                        if have(TARGET_MODEL, "eager") else "not measured"})
    for phase in ("train", "infer"):
        what = "training step" if phase == "train" else "inference"
        label = f"{TARGET_MODEL} compiled {what} ratio no worse than eager"
        if all(have(n, m) for n in (TARGET_MODEL, ref) for m in ("eager", "compiled")):
            e = stats_dict(times, TARGET_MODEL, ref, "eager", phase)
            c = stats_dict(times, TARGET_MODEL, ref, "compiled", phase)
            v = "PASS" if c["median"] <= e["median"] else "FAIL" if c["ci"][0] > e["ci"][1] else "UNDECIDED"
            out.append({"target": label, "verdict": v, "detail": f"compiled {fmt_ci(c)} vs eager {fmt_ci(e)}{where}"})
        else:
            out.append({"target": label, "verdict": "N/A", "detail": "compiled mode not run" if "compiled" not in
                        args.modes else "not measured in both modes"})
    return out


def fmt_ci(s: dict) -> str:
    return f"{s['median']:.3f} ({s['coverage']:.0%} CI {s['ci'][0]:.3f}–{s['ci'][1]:.3f})"


def fmt_ratio(s: dict, row: dict) -> str:
    if row["model"] == row["vanilla"]:
        return "1"
    return f"{s['median']:.3f} [{s['min']:.2f}–{s['max']:.2f}]"


def fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def render_scan(sc: dict) -> list[str]:
    ours = sc["impls"]["ours"]
    resolved = (sc.get("resolved") or {}).get("ours")
    ours_text = f'impl="{ours}"' + (f" (here: {resolved})" if resolved and resolved != ours else "")
    jax = sc["jax"]
    if jax["status"] == "ok":
        jax_text = (f"`jax.lax.associative_scan` (jax {jax['version']}, {jax['backend']} backend, jit; fwd+bwd: "
                    "`jax.vjp`)" + (f"; {jax['note']}" if jax.get("note") else ""))
    else:
        jax_text = f"{jax['status']}: {jax['note']}"
    bw = sc["bandwidth"] or {}
    if bw.get("gbps"):
        bw_text = (f"{bw['gbps']:.0f} GB/s (`copy_` of {bw['bytes_moved'] // 2 // 2**20} MiB into a preallocated "
                   "buffer, bytes read + written, median)")
    else:
        bw_text = f"not measured ({bw.get('error', 'no record')})"
    lines = ["", f"## Scan: `linear_scan`, {sc['dtype']}, batch {sc['batch']}, {sc['lanes']} lanes; ms per call, "
             f"median of {sc['reps']} repetitions after {sc['warmup']} warm-up call(s)", "",
             f"- ours: {ours_text}; torch path: impl=\"torch\"; JAX: {jax_text}",
             f"- bound: the forward's least traffic ({SCAN_BYTES_PER_ELEMENT} bytes per element: read a and b, write "
             f"h) / the copy bandwidth, {bw_text}",
             "- fwd+bwd: forward, then ∂a and ∂b for a fixed cotangent; max rel diff: ours vs the torch path, "
             "max |Δ| / max |torch path| of h / ∂a / ∂b", "",
             "| L | ours fwd ms | ours fwd+bwd ms | torch path fwd ms | torch path fwd+bwd ms | JAX fwd ms | "
             "JAX fwd+bwd ms | bound fwd ms | ours / JAX fwd | ours / JAX fwd+bwd | ours fwd / bound | "
             "max rel diff h / ∂a / ∂b | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sc["rows"]:
        d = r["diff_vs_torch"]
        diff = "–" if d is None else " / ".join(f"{d[k]:.1e}" for k in ("h", "grad_a", "grad_b"))
        note = "; ".join(f"{k}: {v}" for k, v in r["errors"].items())
        lines.append(f"| {r['length']} | {fmt_ms(r['ours_fwd_ms'])} | {fmt_ms(r['ours_fwdbwd_ms'])} | "
                     f"{fmt_ms(r['torch_fwd_ms'])} | {fmt_ms(r['torch_fwdbwd_ms'])} | {fmt_ms(r['jax_fwd_ms'])} | "
                     f"{fmt_ms(r['jax_fwdbwd_ms'])} | {fmt_ms(r['bound_ms'])} | {fmt_x(r['ours_over_jax_fwd'])} | "
                     f"{fmt_x(r['ours_over_jax_fwdbwd'])} | {fmt_x(r['ours_fwd_over_bound'])} | {diff} | {note} |")
    return lines


def timed_row(r: dict, first: list[str]) -> str:
    """A speed-table row from `first` (the leading cells) on: times, ratios, peaks, rounds, first calls, note."""
    head = "| " + " | ".join(first) + " | "
    if r["status"] != "ok":
        return head + "– | – | – | – | – | – | – | " + f"{r['status']}: {r['error']} |"
    peak = "–" if r["train_peak_mib"] is None else f"{r['train_peak_mib']:.0f} / {r['infer_peak_mib']:.0f}"
    fc = r["first_call_s"] or {}
    return head + (f"{r['train_ms']:.2f} | {fmt_ratio(r['train_ratio'], r)} | {r['infer_ms']:.2f} | "
                   f"{fmt_ratio(r['infer_ratio'], r)} | {peak} | {r['rounds']} | {fc.get('train', 0):.1f} / "
                   f"{fc.get('infer', 0):.1f} | |")


def render_s7(s7: dict) -> list[str]:
    st = s7["setting"]
    prec = "bf16 autocast" if s7["precision"] == "bf16" else s7["precision"]
    lines = ["", f"## S7: sequence classifiers on x ({st['train_batch']}, {st['length']}, {st['in_chans']}) "
             f"(inference batch {st['infer_batch']}), {st['num_classes']} classes, {prec}, eager; time per call, "
             f"median over rounds; ratio = median over rounds of model / {st['models'][0]} (same round) [min–max]",
             ""]
    if not s7["rows"]:
        return lines + ["Nothing measured (see Skipped or cut short)."]
    lines += ["| model | train ms | train ratio | infer ms | infer ratio | peak MiB train / infer | rounds | "
              "first call s train / infer | note |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [timed_row(r, [r["model"]]) for r in s7["rows"]]
    return lines


def render(res: dict) -> str:
    env, st = res["environment"], res["settings"]
    k = env.get("kernels", {})
    if not k:
        kern = "unknown (no section reported)"
    elif not k.get("module"):
        kern = k.get("note", "statelayers.layers.kernels absent")
    else:
        fused = k.get("fused_on_device")
        kern = (f"statelayers.layers.kernels.kernel_mode() = {k.get('setting')!r} (STATELAYERS_KERNELS="
                f"{k.get('env') or 'unset'}), Triton available: {k.get('triton_available')}; fused Triton kernels "
                f"on {res['device']}: {fused}")
    gpu = f"{env['gpu']} ({env['gpu_mem_gib']} GiB), CUDA {env.get('cuda')}" if env.get("gpu") else \
        f"none: CPU ({os.cpu_count()} logical CPUs, {env.get('threads', '?')} torch threads)"
    fams = "; ".join(f"{f} {s['img_size']}²×{s['in_chans']}, batch {s['train_batch']} / {s['infer_batch']}"
                     + (", channels_last" if s["channels_last"] else "") for f, s in st["families"].items())
    lines = [
        f"# GPU benchmark: correctness on CUDA, the cost of aggregation, the scan and S7 ({res['device']})", "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}; wall clock {res['elapsed_s']:.0f} s of a {res['budget_s']:.0f} s budget "
        "(plan, s from the start: " + ", ".join(f"{a} by {b}" for a, b in res["plan_s"].items()) + ")",
        f"- GPU: {gpu}",
        f"- torch {env.get('torch')}, triton {env.get('triton')}, timm {env.get('timm')}, "
        f"Python {env.get('python')}",
        f"- statelayers kernel path: {kern}",
    ]
    if "speed" in res["sections"]:
        lines.append(f"- speed: {st['precision']}" + (" autocast" if st["precision"] == "bf16" else "")
                     + f", modes {' '.join(st['modes'])}, {st['warmup']} warm-up call(s) per model and phase, "
                     f"{st['rounds']} rounds of {st['steps']} call(s) per block; {fams}")
    if "s7" in res["sections"]:
        lines.append(f"- s7: {st['warmup']} warm-up call(s) per model and phase, {st['rounds']} rounds of "
                     f"{st['steps']} call(s) per block")
    if res["smallest"]:
        lines.append("- --smallest: small sizes and batches; proves the script runs, measures nothing of interest")
    c = res["correctness"]
    if c["models"]:
        lines += ["", f"## Correctness: {c['comparison']}, eval, fp32; PASS when max rel diff ≤ {c['tolerance']:g}",
                  "", "| model | batch | input | max abs diff | max abs ref | max rel diff | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for r in c["models"]:
            if r["verdict"] == "ERROR":
                lines.append(f"| {r['model']} | – | – | – | – | – | ERROR: {r['error']} |")
            else:
                lines.append(f"| {r['model']} | {r['batch']} | {'×'.join(map(str, r['input_size']))} | "
                             f"{r['max_abs_diff']:.3g} | {r['max_abs_ref']:.3g} | {r['max_rel_diff']:.2e} | "
                             f"{r['verdict']} |")
        lines += ["", f"Correctness: {'all PASS' if c['all_pass'] else 'NOT all PASS'} "
                  f"({sum(r['verdict'] == 'PASS' for r in c['models'])} of {len(c['models'])} checked)."]
    if res["speed"]:
        lines += ["", "## Speed: time per call, median over rounds; ratio = median over rounds of model / vanilla "
                  "(same round) [min–max]; > 1 is slower", "",
                  "| family | model | mode | train ms | train ratio | infer ms | infer ratio | "
                  "peak MiB train / infer | rounds | first call s train / infer | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [timed_row(r, [r["family"], r["model"], r["mode"]]) for r in res["speed"]]
    if res["scan"] is not None:
        lines += render_scan(res["scan"])
    if res["s7"] is not None:
        lines += render_s7(res["s7"])
    if res["verdicts"]:
        lines += ["", "## Targets (PASS / FAIL when the confidence interval of the median (ratio over rounds, or "
                  "time over repetitions) lies within / beyond the target, UNDECIDED when it straddles it)", ""]
        lines += [f"- {v['verdict']}: {v['target']}: {v['detail']}" for v in res["verdicts"]]
    if res["skipped"]:
        lines += ["", "## Skipped or cut short", ""] + [f"- {s}" for s in res["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
