"""The widened first conv of an S6LA Bottleneck, `conv([x, h])`, three ways, against the x-part alone.

For each ResNet-50 stage (input C = 256/512/1024/2048 channels, P = C/4 outputs, N = 32 state channels, batch 8,
the stage's resolution at 224²), in NCHW and channels_last, under no_grad:

* `x-part alone`: the 1×1 conv of `x` with the first C input slices of the weight (a strided view), and the same
  with a contiguous copy of those slices (what vanilla ResNet-50's own weight looks like): torch's CPU conv may
  pick a different kernel for the two;
* `cat`: one conv of `torch.cat([x, h])`;
* `two convs`: the x-part plus a separate 1×1 conv of `h`, added;
* `GEMM-accumulate`: `statelayers.models._resnet_base.conv_on_concat`, which adds `W_h·h` into the x-part's output
  with one in-place `baddbmm_` / `addmm_`.

Times are medians over `--repeats` calls; ratios are to `x-part alone` (the MAC ratio is (C + N) / C).

    python benchmarks/widened_conv.py --threads 2
    python benchmarks/widened_conv.py --smallest        # seconds: proves the script runs (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time


def _x_part(conv, x, h):
    return conv._conv_forward(x, conv.weight[:, : x.shape[1]], None)


def _x_part_contiguous(conv, x, h):
    return conv._conv_forward(x, conv.weight[:, : x.shape[1]].contiguous(), None)


def _cat(conv, x, h):
    import torch

    return conv(torch.cat([x, h], dim=1))


def _two_convs(conv, x, h):
    c = x.shape[1]
    return conv._conv_forward(x, conv.weight[:, :c], None) + conv._conv_forward(h, conv.weight[:, c:], None)


def _gemm_accumulate(conv, x, h):
    from statelayers.models._resnet_base import conv_on_concat

    return conv_on_concat(conv, x, h)


WAYS = {"x": _x_part, "x_contig": _x_part_contiguous, "cat": _cat, "two": _two_convs, "gemm": _gemm_accumulate}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--smallest", action="store_true", help="batch 1, 1/8 of the resolution, 2 repeats")
    args = p.parse_args(argv)
    scale = 8 if args.smallest else 1
    if args.smallest:
        args.batch_size, args.repeats = 1, 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    def median_ms(fn, *fn_args) -> float:
        fn(*fn_args)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn(*fn_args)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    n = 32
    print(f"# widened 1×1 conv: batch {args.batch_size}, N = {n}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} calls, no_grad\n")
    print("| stage | layout | x-part alone ms | x-part, contiguous weight | MAC ratio | cat | two convs "
          "| GEMM-accumulate |")
    print("|---|---|---|---|---|---|---|---|")
    for stage, (c, size) in enumerate(((256, 56), (512, 28), (1024, 14), (2048, 7)), start=1):
        size = max(size // scale, 1)
        conv = torch.nn.Conv2d(c + n, c // 4, 1, bias=False)
        for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            conv = conv.to(memory_format=fmt)
            x = torch.randn(args.batch_size, c, size, size).contiguous(memory_format=fmt)
            h = torch.randn(args.batch_size, n, size, size).contiguous(memory_format=fmt)
            with torch.no_grad():
                ms = {k: median_ms(way, conv, x, h) for k, way in WAYS.items()}
            r = {k: ms[k] / ms["x"] for k in ms}
            print(f"| {stage} | {name} | {ms['x']:.2f} | {r['x_contig']:.3f} | {(c + n) / c:.3f} | {r['cat']:.3f} "
                  f"| {r['two']:.3f} | {r['gemm']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
