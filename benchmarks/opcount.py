"""Ops dispatched by one bf16 training step: S6LA / RLA / MRLA against the vanilla network, torch path and fused.

On a GPU an eager op costs a few µs of host time whatever its size, and S6LA's training step was measured at 2.73×
vanilla ResNet-50's time on an H200 where its MACs say 1.06× (BENCHMARKS.md, "S6LA at GPU speed"): the number of
ops set the time. This script counts them, the way the issue states the budget: a `TorchDispatchMode` counts every
op dispatched below autograd in the forward and backward of one training step under bf16 autocast (the second
step, when the parameters' `.grad` already exist; `statelayers.tools.profile.count_step_ops`), batch 2, at 64 px for
ResNet-50, 224 px for DeiT-Ti, Swin-T and PVTv2-B0, 28 px for the CIFAR ResNets (the counts do not depend on the
image size). Each S6LA model is counted twice, in one run: on the torch reference path (`STATELAYERS_KERNELS=torch`,
what CPUs run) and on the fused path (`triton`, what CUDA runs by default); RLA and MRLA have only the torch path.

**Budget** (the issue): fused S6LA / vanilla ≤ 1.30 for ResNet-50 and DeiT-Ti, ≤ 1.60 for CIFAR ResNet-56; the
script prints a verdict per budget and exits 1 if one is over (without `--no-check`).

On a machine without a GPU the fused kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here when no
CUDA device is present): slow, but the ops it dispatches are the same. The counts are exact and the same on every
machine with the same torch version; they take about 5 minutes for every family on one CPU core.

    python benchmarks/opcount.py                         # every family (the table in BENCHMARKS.md)
    python benchmarks/opcount.py --families resnet50     # one family
    python benchmarks/opcount.py --smallest              # CIFAR ResNet-20, ~20 s: proves the script runs (CI)
    python benchmarks/opcount.py --by-op s6la_resnet50   # also list which ops S6LA adds, by name

The S7 table counts `s7_small` and `s5_small` on the torch scan (at L = 4,096) and on the fused Triton path (at L =
64 and 128: the interpreter runs its scans one element at a time; the script checks that the count is the same).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

FAMILIES = {  # family: (vanilla, [aggregation models], input shape of a batch of 2, budget for the fused S6LA)
    "resnet50": ("resnet50", ["s6la_resnet50", "rla_resnet50", "mrla_resnet50"], (2, 3, 64, 64), 1.30),
    "deit_tiny": ("deit_tiny_patch16_224", ["s6la_deit_tiny_patch16_224", "mrla_deit_tiny_patch16_224"],
                  (2, 3, 224, 224), 1.30),
    "cifar_resnet56": ("cifar_resnet56", ["s6la_cifar_resnet56", "rla_cifar_resnet56", "mrla_cifar_resnet56"],
                       (2, 1, 28, 28), 1.60),
    "cifar_resnet110": ("cifar_resnet110", ["s6la_cifar_resnet110", "rla_cifar_resnet110", "mrla_cifar_resnet110"],
                        (2, 1, 28, 28), None),
    "swin_tiny": ("swin_tiny_patch4_window7_224", ["s6la_swin_tiny_patch4_window7_224"], (2, 3, 224, 224), None),
    "pvt_v2_b0": ("pvt_v2_b0", ["s6la_pvt_v2_b0"], (2, 3, 224, 224), None),
}
SMALLEST = {"cifar_resnet20": ("cifar_resnet20", ["s6la_cifar_resnet20"], (2, 1, 28, 28), 1.60)}
# S7 sequence models (8 input channels, batch 2), by scan path: "torch" (scan_impl="torch", the pure-torch scan,
# which CUDA ran before the Triton kernels: its L-dependent chunk loop is one custom op now), "fused" (Triton: the
# discretisation inside the scan kernels). The fused count does not depend on L (the script checks it at two).
S7_MODELS = ("s7_small", "s5_small")
S7_LENGTH, S7_FUSED_LENGTHS = 4096, (64, 128)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all")
    p.add_argument("--smallest", action="store_true", help="CIFAR ResNet-20 only (vanilla and S6LA, CIFAR's budget)")
    p.add_argument("--by-op", nargs="+", default=[], metavar="MODEL",
                   help="also print, per op name, how many more ops MODEL dispatches than its vanilla (each path)")
    p.add_argument("--no-check", action="store_true", help="exit 0 even when a budget is exceeded")
    p.add_argument("--no-s7", action="store_true", help="leave out the S7 sequence models' table")
    p.add_argument("--out", help="append the report (markdown) to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are first defined
    import timm

    import statelayers  # noqa: F401
    from statelayers.layers.kernels import use_kernels
    from statelayers.tools.profile import count_step_ops

    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    families = SMALLEST if args.smallest else {k: FAMILIES[k] for k in (args.families or FAMILIES)}
    unknown = [m for m in args.by_op if not any(m in ms for _, ms, _, _ in families.values())]
    if unknown:
        print(f"error: --by-op {unknown[0]} is not an aggregation model of the chosen families", file=sys.stderr)
        return 2

    def count(name, shape, mode):
        torch.manual_seed(0)
        model = timm.create_model(name).to(device)
        x = torch.randn(shape, device=device)
        with use_kernels(mode):
            return count_step_ops(model, x)

    start = time.time()
    rows, verdicts, details = [], [], []
    for fam, (vanilla, models, shape, budget) in families.items():
        base = count(vanilla, shape, "torch")
        n_base = sum(base.values())
        rows.append([fam, vanilla, "–", f"{n_base:,}", "1.00", "–", f"{base['aten._to_copy.default']}"])
        for name in models:
            paths = ["torch", "triton"] if name.startswith("s6la_") else ["torch"]
            for mode in paths:
                ops = count(name, shape, mode)
                n = sum(ops.values())
                fused = mode == "triton"
                limit = f"≤ {budget:.2f}" if fused and budget else "–"
                rows.append([fam, name, "fused" if fused else "torch", f"{n:,}", f"{n / n_base:.2f}", limit,
                             f"{ops['aten._to_copy.default']}"])
                if fused and budget:
                    ok = n / n_base <= budget
                    verdicts.append((ok, f"- {'PASS' if ok else 'FAIL'}: {name} fused {n / n_base:.2f}× vanilla's "
                                         f"ops (budget {budget:.2f})"))
                if name in args.by_op:
                    diff = {k: ops[k] - base[k] for k in set(ops) | set(base) if ops[k] != base[k]}
                    lines = [f"| {k} | {base[k]} | {ops[k]} | {v:+d} |"
                             for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))]
                    details += ["", f"Ops {name} ({'fused' if fused else 'torch'}) dispatches beyond {vanilla}:", "",
                                "| op | vanilla | model | difference |", "|---|---|---|---|", *lines]
        print(f"[{fam} done, {time.time() - start:.0f} s]", file=sys.stderr, flush=True)

    s7_rows = []
    if not (args.no_s7 or args.smallest):
        for name in S7_MODELS:
            for path, impl, lengths in (("torch", "torch", (S7_LENGTH,)), ("fused", "triton", S7_FUSED_LENGTHS)):
                counts = []
                for length in lengths:
                    torch.manual_seed(0)
                    model = timm.create_model(name, in_chans=8, num_classes=10, scan_impl=impl).to(device)
                    counts.append(sum(count_step_ops(model, torch.randn(2, length, 8, device=device)).values()))
                if len(set(counts)) != 1:
                    print(f"error: {name} {path}: the op count depends on L ({counts})", file=sys.stderr)
                    return 1
                s7_rows.append([name, path, " and ".join(map(str, lengths)), f"{counts[0]:,}"])
        print(f"[s7 done, {time.time() - start:.0f} s]", file=sys.stderr, flush=True)

    header = ["family", "model", "path", "ops per step", "ratio to vanilla", "budget", "casts (_to_copy)"]
    import timm as _timm

    lines = [
        f"- command: `python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; {time.time() - start:.0f} s",
        f"- device: {device}{' (Triton interpreter for the fused kernels)' if device == 'cpu' else ''}; "
        f"torch {torch.__version__}, timm {_timm.__version__}, Python {platform.python_version()}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        *(v for _, v in verdicts),
        *details,
    ]
    if s7_rows:
        lines += ["", "S7 sequence models (8 channels, batch 2, bf16 training step):", "",
                  "| model | scan path | L | ops per step |", "|---|---|---|---|",
                  *("| " + " | ".join(r) + " |" for r in s7_rows)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text + "\n")
    return 0 if args.no_check or all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
