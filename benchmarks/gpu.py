"""One GPU run: is every image model right on CUDA, and what does layer aggregation cost there?

Made for a lent machine with one NVIDIA GPU (H100 / H200) and a few minutes of it. From the checkout:

    PYTHONPATH=$PWD python benchmarks/gpu.py                          # everything, at most --budget-s (480 s)
    PYTHONPATH=$PWD python benchmarks/gpu.py --sections speed --families resnet50 --modes eager
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

**3. Targets** (printed as verdicts): S6LA-ResNet-50's eager training step ≤ 1.15× vanilla and inference
≤ 1.10×, each below RLA-ResNet-50's ratio in the same rounds; compiled ratios no worse than eager ones. Each is
judged on the per-round ratios (the median's distribution-free confidence interval of benchmarks/overhead.py, which
is the min–max range at 5 rounds): PASS / FAIL when the interval lies within / beyond the target, UNDECIDED when it
straddles it; compiled vs eager: PASS when the compiled median ratio is at most the eager one, FAIL when the
compiled interval lies wholly above the eager interval, UNDECIDED between.

**Time plan.** Each section runs in its own process under a hard time limit, so a hang or a slow compile cannot
eat the rest, and writes its results as it goes: what a limit cuts off is listed as skipped, never lost silently.
With the default `--budget-s 480` (8 min, counted from the start of the command) and both modes, the limits are:
correctness by 36 % of the budget (173 s); beside it, from the start and with the same limit, the compiled-mode
models' first compilation in parallel worker processes (up to 4, each ~24 GiB of GPU memory and 3 cores; a cold
`torch.compile` is the slow part, and the workers leave its results in Inductor's on-disk caches); the eager timing,
alone on the GPU, by 68 % (326 s); the compiled timing (cache hits; a model whose first compilation did not finish
is skipped) by the budget less 15 s (465 s), the rest for stopping what is late and writing the report. Inside a
section, models and families go in priority order (the smallest image models first in the correctness check;
ResNet-50, DeiT-Ti, CIFAR-56, Swin-T, PVTv2-B0, CIFAR-110 in the timing) and the rounds stop early when the next
would not fit. Without the compiled mode the eager timing may run to the end of the budget. An estimate, not a
measurement (no GPU was at hand when this was written): correctness about 1.5 min (the CPU side: the full check took
6 min on a busy 2-core CPU running both sides there), eager timing about 2 min, and the compiled timing gets the
remaining ~2.5 min, which may not reach the last families (they are then listed as skipped). `--smallest --compile`
on that 2-core CPU: a cold compilation of the DeiT-Ti pair alone took about 5 min.

`--smallest`: everything on the CPU (even where CUDA is present) in float32 (bf16 autocast is very slow on CPUs
without native bf16), 9 models checked at small sizes (`SMALLEST_CHECK`), every family with 2–3 models at small
sizes (ResNets 64², DeiT 32², Swin / PVT 64², CIFAR 28²) and batch 2, 1 warm-up, 2 rounds of 1 call, eager only
unless `--compile`; the correctness check and the eager timing run side by side (nothing measured there matters).
35–55 s on 2 CPU cores with OMP_NUM_THREADS=1 (2026-11-28, the machine busy with other jobs). Without `--smallest`
and without CUDA the full-size settings run on the CPU, which only fits the budget by skipping most of it.

Output: the markdown report on stdout and in `OUT_DIR/gpu_bench.md`, everything (per-round times included) in
`OUT_DIR/gpu_bench.json`; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
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
from overhead import ratio_stats, rotate, verdict  # noqa: E402  (the CPU counterpart's statistics)

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
SECTIONS = ("correctness", "speed")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def parse_args(argv=None):
    p = Parser(prog="gpu.py", description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                   help="speed families (run in the order of the default list)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None,
                   help="default: eager compiled on CUDA, eager on CPU and with --smallest")
    p.add_argument("--compile", action="store_true", help="add the compiled mode (e.g. with --smallest)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; --smallest 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per model and phase before the rounds (default 3; --smallest 1; >= 1)")
    p.add_argument("--steps", type=int, default=None, help="calls per timed block (default 5; --smallest 1)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="speed section: bf16 autocast (default) or fp32; --smallest on CPU: fp32")
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


# ================================================================================ child side (imports torch)


def kernel_info(device: str) -> dict:
    """Which S6LA implementation runs: statelayers.kernels' setting, guarded (the module may not exist)."""
    info = {"env": os.environ.get("STATELAYERS_KERNELS")}
    try:
        import importlib

        kernels = importlib.import_module("statelayers.kernels")
    except ImportError as e:
        info.update(module=False, note=f"statelayers.kernels absent ({one_line(e, 120)}): the torch path")
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
        model = build_model(name, setting["img_size"]).to(self.device)
        fmt = torch.channels_last if setting["channels_last"] else torch.contiguous_format
        model = model.to(memory_format=fmt)
        self.model = model
        self.fn = torch.compile(model) if compiled else model
        self.opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        c, s = setting["in_chans"], setting["img_size"]
        classes = getattr(model, "num_classes", 1000) or 1000
        self.x_train = torch.randn(setting["train_batch"], c, s, s, generator=g).to(self.device, memory_format=fmt)
        self.y = torch.randint(0, classes, (setting["train_batch"],), generator=g).to(self.device)
        self.x_infer = torch.randn(setting["infer_batch"], c, s, s, generator=g).to(self.device, memory_format=fmt)
        self.bf16 = spec["precision"] == "bf16"

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


def time_family(fam_name: str, setting: dict, spec: dict, rec: Recorder) -> None:
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
            r = Runner(name, setting, spec, compiled)
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


def run_child(spec_json: str) -> int:
    global T_START
    spec = json.loads(spec_json)
    T_START = spec.get("t_start", T_START)  # progress lines count from the parent's start
    {"correctness": child_correctness, "precompile": child_precompile, "speed": child_speed}[spec["kind"]](spec)
    return 0


# ================================================================================ parent side (orchestration)


class Proc:
    """A section's process in its own session (its compile workers die with it), with a hard deadline."""

    def __init__(self, label: str, spec: dict, cap: float, env: dict):
        self.label, self.cap = label, cap
        cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
        self.p = subprocess.Popen(cmd, env=env, start_new_session=True)
        self.killed = False

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


def time_plan(args, budget: float) -> dict:
    """Seconds from the start by which each phase must be over (the hard limits)."""
    end = budget - REPORT_RESERVE_S
    speed = "speed" in args.sections
    modes = args.modes or []  # not known yet when the correctness section starts (its limit does not depend on it)
    compiled = speed and "compiled" in modes
    plan = {}
    if "correctness" in args.sections:
        plan["correctness"] = 0.36 * budget if speed else end
    if compiled:
        plan["precompile"] = 0.36 * budget
    if speed and "eager" in modes:
        plan["eager"] = 0.68 * budget if compiled else end
    if compiled:
        plan["compiled"] = end
    return plan


def run_phase(running: list[Proc], queue: list, start=None, slots: int = 0) -> list[Proc]:
    """Wait for `running` and for the queue's processes, at most `slots` of those at a time; returns all started.
    `start(item)` returns None when it is too late to start anything more."""
    started, active, workers = list(running), list(running), []
    while True:
        active = [p for p in active if not p.poll()]
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
        plan = time_plan(args, args.budget_s)  # seconds from the start of this process
        caps = {k: T_START + v for k, v in plan.items()}
        settings = {f: family_setting(FAMILIES[f], args.smallest) for f in args.families}
        base = {"t_start": T_START, "device": device, "smallest": args.smallest, "precision": args.precision,
                "rounds": args.rounds, "warmup": args.warmup, "steps": args.steps}
        log(f"device {device}; plan (s from the start): " + ", ".join(f"{k} by {v:.0f}" for k, v in plan.items()))

        def speed_proc(mode: str, precompiled: dict) -> Proc:
            spec = dict(base, kind="speed", mode=mode, families=args.families, settings=settings,
                        out=str(tmp / f"speed_{mode}.jsonl"), deadline=caps[mode] - 5,
                        min_family_s=5 if args.smallest else 20, precompiled=precompiled)
            return Proc(f"speed {mode}", spec, caps[mode], env)

        timing = [m for m in MODES if m in plan]
        if args.smallest and "eager" in timing:  # nothing measured on the CPU matters: save the time
            phase1.append(speed_proc(timing.pop(0), {}))
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

        procs += run_phase(phase1, queue, start_precompile, slots)
        precompiled = {}
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
        # phases 2 and 3: the timing, alone on the device
        for mode in timing:
            procs += run_phase([speed_proc(mode, precompiled)], [])
    finally:
        for p in procs + phase1:
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
        errs = {}
        for r in recs:
            if r["kind"] == "model":
                errs[r["family"], r["model"]] = r
        for fam in args.families:
            setting = settings[fam]
            fr = fam_recs.get(fam)
            if fr is None or fr["status"] != "ok":
                why = fr["reason"] if fr else ("hard time limit" if f"speed {mode}" in killed else "not run")
                skipped.append(f"{mode} {fam}: {why}")
                for (f, m), e in errs.items():
                    if f == fam:
                        skipped.append(f"{mode} {fam} {m}: {e['error']}")
                continue
            if fr.get("stopped"):
                skipped.append(f"{mode} {fam}: {fr['stopped']}")
            ref = setting["models"][0]
            times = {(n, mode): t for n, t in fr["times"].items()}
            times_all.update(times)
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
    settings_out = {"precision": args.precision, "warmup": args.warmup, "rounds": args.rounds,
                    "steps": args.steps, "modes": args.modes, "families": settings}
    return {
        "command": "python " + " ".join([os.path.relpath(os.path.abspath(__file__))] + sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device, "environment": env, "smallest": args.smallest, "budget_s": args.budget_s,
        "plan_s": {k: round(v) for k, v in plan.items()}, "elapsed_s": round(elapsed, 1), "settings": settings_out,
        "correctness": correctness, "speed": rows, "verdicts": verdicts(args, times_all, rows),
        "skipped": skipped,
    }


def verdicts(args, times: dict, rows: list[dict]) -> list[dict]:
    out = []
    where = "" if (not args.smallest and args.precision == "bf16") else \
        " [not the target setting: --smallest / fp32; this only proves the verdicts are computed]"

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


def render(res: dict) -> str:
    env, st = res["environment"], res["settings"]
    k = env.get("kernels", {})
    if not k:
        kern = "unknown (no section reported)"
    elif not k.get("module"):
        kern = k.get("note", "statelayers.kernels absent")
    else:
        fused = k.get("fused_on_device")
        kern = (f"statelayers.kernels.kernel_mode() = {k.get('setting')!r} (STATELAYERS_KERNELS="
                f"{k.get('env') or 'unset'}), Triton available: {k.get('triton_available')}; fused Triton kernels "
                f"on {res['device']}: {fused}")
    gpu = f"{env['gpu']} ({env['gpu_mem_gib']} GiB), CUDA {env.get('cuda')}" if env.get("gpu") else \
        f"none: CPU ({os.cpu_count()} logical CPUs, {env.get('threads', '?')} torch threads)"
    fams = "; ".join(f"{f} {s['img_size']}²×{s['in_chans']}, batch {s['train_batch']} / {s['infer_batch']}"
                     + (", channels_last" if s["channels_last"] else "") for f, s in st["families"].items())
    lines = [
        f"# GPU benchmark: correctness on CUDA and the cost of aggregation ({res['device']})", "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}; wall clock {res['elapsed_s']:.0f} s of a {res['budget_s']:.0f} s budget "
        "(plan, s from the start: " + ", ".join(f"{a} by {b}" for a, b in res["plan_s"].items()) + ")",
        f"- GPU: {gpu}",
        f"- torch {env.get('torch')}, triton {env.get('triton')}, timm {env.get('timm')}, "
        f"Python {env.get('python')}",
        f"- statelayers kernel path: {kern}",
        f"- speed: {st['precision']}" + (" autocast" if st["precision"] == "bf16" else "")
        + f", modes {' '.join(st['modes'])}, {st['warmup']} warm-up call(s) per model and phase, "
        f"{st['rounds']} rounds of {st['steps']} call(s) per block; {fams}",
    ]
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
        for r in res["speed"]:
            if r["status"] != "ok":
                lines.append(f"| {r['family']} | {r['model']} | {r['mode']} | – | – | – | – | – | – | – | "
                             f"{r['status']}: {r['error']} |")
                continue
            peak = "–" if r["train_peak_mib"] is None else f"{r['train_peak_mib']:.0f} / {r['infer_peak_mib']:.0f}"
            fc = r["first_call_s"] or {}
            lines.append(f"| {r['family']} | {r['model']} | {r['mode']} | {r['train_ms']:.2f} | "
                         f"{fmt_ratio(r['train_ratio'], r)} | {r['infer_ms']:.2f} | {fmt_ratio(r['infer_ratio'], r)} "
                         f"| {peak} | {r['rounds']} | {fc.get('train', 0):.1f} / {fc.get('infer', 0):.1f} | |")
    if res["verdicts"] and res["speed"]:
        lines += ["", "## Targets (PASS / FAIL when the median ratio's confidence interval over rounds lies within "
                  "/ beyond the target, UNDECIDED when it straddles it)", ""]
        lines += [f"- {v['verdict']}: {v['target']}: {v['detail']}" for v in res["verdicts"]]
    if res["skipped"]:
        lines += ["", "## Skipped or cut short", ""] + [f"- {s}" for s in res["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
