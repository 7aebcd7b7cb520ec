"""Speed, memory and accuracy of `statelayers.layers.scan.linear_scan` against the reference loop.

For every (lanes = B·P, L, dtype, impl): forward time (under no_grad) and forward+backward time
(gradients w.r.t. a and b), best of `--repeats` after one warm-up call; the speedup over the
reference loop measured in the same run; the fraction of this machine's copy bandwidth that the
scan reaches, counting the bytes it must move at the least (forward: read a, b, write h;
backward: read a, h, ∂h, write ∂a, ∂b — 3 and 3 + 5 tensor passes); peak memory; and the largest
error against a float64 (complex128) loop on a random subsample of lanes, relative to the largest
float64 value, for h and for the gradients.

Memory: every (lanes, L, dtype, impl) runs in a fresh Python process, which allocates its inputs
(a, b and the output gradient) and loads its kernels first; the peak memory reported is the
growth of the process's peak resident set size over that baseline during the timed runs (Linux
VmHWM, reset before each phase; ru_maxrss where it cannot be reset), i.e. everything the scan
itself allocated (output, gradients, temporaries, allocator slack). tracemalloc cannot see
torch's allocations, so it is not used. `--in-process` (implied by `--smallest`) skips the fresh
processes: faster, but memory a previous row's allocator kept can hide part of a row's peak.
The least the fast paths must allocate is 1 tensor of the input size for the forward (h) and 3
for forward+backward (h, ∂a, ∂b); the table prints that figure beside the measurement.
Combinations whose estimated peak exceeds `--max-gb` are skipped and listed.

    python benchmarks/scan.py                                  # the default grid (several minutes)
    python benchmarks/scan.py --smallest                       # seconds: proves the script runs
    python benchmarks/scan.py --lanes 16384 --lengths 4096 --dtype complex64 --impls numba torch reference
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

# full-size (B, L, P) tensors alive at the peak beyond the inputs a, b (and ∂h for backward), for the
# --max-gb estimate: fast paths h | h, ∂a, ∂b; the reference loop keeps the per-step states and
# their stacked copy, and its backward stacks ∂a and ∂b (measured: 2.5 | 5.6-6.5 tensors).
EXTRA_TENSORS = {"numba": (1, 3), "torch": (1, 3), "reference": (3, 7)}
INPUT_TENSORS = (2, 3)  # a, b | a, b, ∂h


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lanes", type=int, nargs="+", default=[16384, 65536, 262144], help="B·P lanes")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384], help="sequence lengths L")
    p.add_argument("--dtype", nargs="+", default=["float32", "complex64"],
                   choices=["float32", "float64", "complex64", "complex128"])
    p.add_argument("--impls", nargs="+", default=["numba", "torch", "reference"],
                   choices=["numba", "torch", "reference"])
    p.add_argument("--state-size", type=int, default=64, help="P, the contiguous lane axis (B = lanes / P)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch and numba threads")
    p.add_argument("--max-gb", type=float, default=6.0,
                   help="skip combinations whose estimated peak exceeds this (GiB)")
    p.add_argument("--err-lanes", type=int, default=256, help="lanes in the float64 error check")
    p.add_argument("--smallest", action="store_true",
                   help="a tiny setting that runs in seconds (CI); implies --in-process")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh one per measurement (faster; peak memory "
                        "then relies on resetting the kernel's counter and may miss memory the allocator kept)")
    p.add_argument("--out", help="also write the report (markdown) to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout
    args = p.parse_args(argv)
    if args.smallest:
        args.lanes, args.lengths, args.repeats, args.state_size = [256], [64], 1, 16
        args.dtype, args.in_process = ["float32", "complex64"], True
    return args


def itemsize(dtype: str) -> int:
    return {"float32": 4, "float64": 8, "complex64": 8, "complex128": 16}[dtype]


def gib(n: float) -> float:
    return n / 2**30


def estimate_bytes(lanes: int, length: int, dtype: str, impl: str) -> tuple[float, float]:
    one = lanes * length * itemsize(dtype)
    return tuple(one * (i + e) for i, e in zip(INPUT_TENSORS, EXTRA_TENSORS[impl]))


# ------------------------------------------------------------------------------------------ child


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def reset_peak() -> tuple[int, bool]:
    """(baseline bytes, whether the kernel's peak-RSS counter could be reset to the current RSS).

    Linux resets VmHWM when "5" is written to /proc/self/clear_refs; elsewhere the growth of
    ru_maxrss is used, which is exact in a fresh process whose inputs were allocated last.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False  # Linux reports KiB


def peak_growth(base: tuple[int, bool]) -> int:
    if base[1]:
        return _status_bytes("VmHWM") - base[0]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base[0]


def make_inputs(batch, length, lanes_p, dtype, gen):
    import torch

    shape = (batch, length, lanes_p)
    if dtype.is_complex:  # |a| <= sqrt(0.95² + 0.3²) < 1, filled in place (no temporaries)
        a, b, gy = (torch.empty(shape, dtype=dtype) for _ in range(3))
        ar = torch.view_as_real(a)
        ar[..., 0].uniform_(0.85, 0.95, generator=gen)
        ar[..., 1].uniform_(-0.3, 0.3, generator=gen)
        torch.view_as_real(b).normal_(generator=gen)
        torch.view_as_real(gy).normal_(generator=gen)
    else:
        a = torch.empty(shape, dtype=dtype).uniform_(0.9, 1.0, generator=gen)
        b = torch.empty(shape, dtype=dtype).normal_(generator=gen)
        gy = torch.empty(shape, dtype=dtype).normal_(generator=gen)
    return a, b, gy


def float64_truth(a, b, gy):
    """h, ∂a, ∂b of the forward scan by a float64 loop over (lanes, L) slices (independent of statelayers)."""
    import torch

    wide = torch.complex128 if a.dtype.is_complex else torch.float64
    a, b, gy = (t.to(wide) for t in (a, b, gy))
    length = a.shape[1]
    h = torch.zeros_like(a)
    prev = torch.zeros_like(a[:, 0])
    for k in range(length):
        prev = a[:, k] * prev + b[:, k]
        h[:, k] = prev
    ga, gb = torch.zeros_like(a), torch.zeros_like(a)
    g_next = torch.zeros_like(a[:, 0])
    for k in range(length - 1, -1, -1):
        g = gy[:, k] + g_next
        gb[:, k] = g
        ga[:, k] = g * (h[:, k - 1].conj() if k else 0)
        g_next = a[:, k].conj() * g
    return h, ga, gb


def rel_err(x, ref) -> float:
    return ((x.to(ref.dtype) - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def run_child(spec: dict) -> dict:
    import torch

    from statelayers.layers.scan import _torch_strategy, linear_scan

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    lanes_p = min(spec["state_size"], spec["lanes"])
    batch = spec["lanes"] // lanes_p
    length, impl, repeats = spec["length"], spec["impl"], spec["repeats"]
    gen = torch.Generator().manual_seed(0)
    a, b, gy = make_inputs(batch, length, lanes_p, dtype, gen)
    # the float64 subsample, taken before timing
    n_err = min(spec["err_lanes"], batch * lanes_p)
    pick = torch.randperm(batch * lanes_p, generator=gen)[:n_err]
    bi, pi = pick // lanes_p, pick % lanes_p
    sub = lambda t: t[bi, :, pi]  # noqa: E731  (n_err, L)
    h64, ga64, gb64 = float64_truth(sub(a), sub(b), sub(gy))
    # one-time costs (numba loading its compiled kernels, ~100 MiB of LLVM) before any baseline
    tiny = [t[:1, :2, :1].clone().requires_grad_() for t in (a, b)]
    linear_scan(*tiny, impl=impl).abs().sum().backward()
    res = {"strategy": _torch_strategy(a) if impl == "torch" else ""}

    if spec["fwd"]:
        base = reset_peak()
        best = float("inf")
        with torch.no_grad():
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                y = linear_scan(a, b, impl=impl)
                dt = time.perf_counter() - t0
                if i:
                    best = min(best, dt)
                if i < repeats:
                    del y
        res["fwd_s"] = best
        res["fwd_err"] = rel_err(sub(y), h64)
        del y
        res["fwd_peak"] = peak_growth(base)

    if spec["bwd"]:
        base = reset_peak()
        a.requires_grad_(True)
        b.requires_grad_(True)
        best = float("inf")
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            y = linear_scan(a, b, impl=impl)
            ga, gb = torch.autograd.grad(y, (a, b), gy)
            dt = time.perf_counter() - t0
            if i:
                best = min(best, dt)
            if i < repeats:
                del y, ga, gb
        res["fb_s"] = best
        res["grad_err"] = max(rel_err(sub(ga), ga64), rel_err(sub(gb), gb64))
        res["fb_peak"] = peak_growth(base)
    return res


# ----------------------------------------------------------------------------------------- parent


def copy_bandwidth(n_bytes: int, threads: int) -> tuple[float, float]:
    """(GB/s into a preallocated buffer, GB/s into fresh memory), counting read + write."""
    import torch

    torch.set_num_threads(threads)
    src = torch.randn(n_bytes // 4)
    dst = torch.empty_like(src).zero_()
    pre = fresh = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        pre = min(pre, time.perf_counter() - t0)
        t0 = time.perf_counter()
        c = src.clone()
        fresh = min(fresh, time.perf_counter() - t0)
        del c
    return 2 * n_bytes / pre / 1e9, 2 * n_bytes / fresh / 1e9


def versions() -> str:
    import torch

    try:
        import numba

        nb = numba.__version__
    except ImportError:
        nb = "not installed"
    return f"torch {torch.__version__}, numba {nb}, Python {platform.python_version()}"


def measure(spec: dict, env: dict, in_process: bool) -> dict:
    if in_process:
        return run_child(spec)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"measurement failed: {spec}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        mode = "unknown"
    return f"transparent huge pages: {mode}, THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}"


def fmt_ratio(ref, x):
    return f"{ref / x:.2f}×" if ref and x else "–"


def main(argv=None):
    from statelayers.tools.profile import cpu_model
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    bw_bytes = 16 * 2**20 if args.smallest else 256 * 2**20
    bw, bw_fresh = copy_bandwidth(bw_bytes, args.threads)
    budget = args.max_gb * 2**30
    rows, skipped = [], []
    t_start = time.perf_counter()
    for dtype in args.dtype:
        for length in args.lengths:
            for lanes in args.lanes:
                results = {}
                for impl in args.impls:
                    est_f, est_fb = estimate_bytes(lanes, length, dtype, impl)
                    do_f, do_fb = est_f <= budget, est_fb <= budget
                    if not do_fb:
                        what = "fwd+bwd" if do_f else "fwd and fwd+bwd"
                        skipped.append(f"{impl} {dtype} lanes={lanes} L={length}: {what} "
                                       f"(needs ~{gib(est_fb if do_f else est_f):.1f} GiB > {args.max_gb:g})")
                    if not (do_f or do_fb):
                        continue
                    spec = dict(lanes=lanes, length=length, dtype=dtype, impl=impl, repeats=args.repeats,
                                threads=args.threads, state_size=args.state_size, err_lanes=args.err_lanes,
                                fwd=do_f, bwd=do_fb)
                    results[impl] = measure(spec, env, args.in_process)
                    print(f"  [{time.perf_counter() - t_start:6.0f} s] {dtype} lanes={lanes} L={length} {impl}: "
                          f"{results[impl]}", file=sys.stderr, flush=True)
                ref = results.get("reference", {})
                one = lanes * length * itemsize(dtype)
                for impl, r in results.items():
                    name = impl + (f" ({r['strategy']})" if r.get("strategy") else "")
                    f_s, fb_s = r.get("fwd_s"), r.get("fb_s")
                    f_bw = f"{100 * 3 * one / f_s / 1e9 / bw:.0f}%" if f_s else "–"
                    fb_bw = f"{100 * 8 * one / fb_s / 1e9 / bw:.0f}%" if fb_s else "–"
                    mem_f = f"{gib(r['fwd_peak']):.2f}" if "fwd_peak" in r else "–"
                    mem_fb = f"{gib(r['fb_peak']):.2f}" if "fb_peak" in r else "–"
                    least = f"{gib(one):.2f} / {gib(3 * one):.2f}"
                    rows.append([f"{lanes:,}", f"{length:,}", dtype, name,
                                 f"{f_s:.4f}" if f_s else "–", fmt_ratio(ref.get("fwd_s"), f_s), f_bw,
                                 f"{fb_s:.4f}" if fb_s else "–", fmt_ratio(ref.get("fb_s"), fb_s), fb_bw,
                                 f"{mem_f} / {mem_fb}", least,
                                 f"{r['fwd_err']:.1e}" if "fwd_err" in r else "–",
                                 f"{r['grad_err']:.1e}" if "grad_err" in r else "–"])

    header = ["lanes", "L", "dtype", "impl", "fwd s", "fwd vs ref", "fwd % copy BW", "fwd+bwd s", "f+b vs ref",
              "f+b % copy BW", "peak RSS growth GiB (fwd / f+b)", "least GiB (fwd / f+b)", "fwd rel err",
              "grad rel err"]
    lines = [
        "# linear_scan benchmark",
        "",
        f"- command: `python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), load average {os.getloadavg()[0]:.2f} at the end",
        f"- threads: {args.threads} (torch and numba); {versions()}",
        f"- copy bandwidth (read + write, {bw_bytes // 2**20} MiB `copy_` into a preallocated buffer): "
        f"{bw:.1f} GB/s; into freshly allocated memory (`clone`, page faults): {bw_fresh:.1f} GB/s; {thp_mode()}",
        f"- peak memory: {'in this process' if args.in_process else 'a fresh process per row'}, growth of the "
        "peak resident set over the inputs (Linux VmHWM reset through /proc/self/clear_refs, else ru_maxrss)",
        f"- layout (B, L, P) with P = {args.state_size}, B = lanes / P; best of {args.repeats} after a warm-up; "
        "fwd under no_grad, fwd+bwd = forward + gradients w.r.t. a and b",
        "- % copy BW: least bytes moved (fwd: 3 tensor passes, fwd+bwd: 8) / time / copy bandwidth; "
        "rel err: max |x − x64| / max |x64| on a subsample of lanes",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if skipped:
        lines += ["", f"Skipped (estimated peak over --max-gb {args.max_gb:g}):", ""]
        lines += [f"- {s}" for s in skipped]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
