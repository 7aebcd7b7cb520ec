"""Compile every Triton kernel (fused S6LA updates, linear scan, S7 scan) for a GPU target, without a GPU.

Run by tests/test_kernels.py in a subprocess. Triton's interpreter, which runs the kernels on CPU in the tests,
accepts programs that its compiler rejects (types that differ between branches, unsupported ops). This script
launches the kernel wrappers of `statelayers.layers.kernels.s6la_triton` and `scan_triton` on CPU tensors with the
launches intercepted, and compiles each launch's kernel, with its argument types and constexprs, to a cubin for
the given targets (Triton's own ptxas; no driver is needed). It must run without TRITON_INTERPRET. Prints one line
per compiled kernel variant; exits 1 on the first failure.

    python tests/kernel_compile_check.py [--arch 90 80] [--all]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64",
           torch.int32: "i32"}


def _type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"argument of type {type(value).__name__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", type=int, nargs="+", default=[90])
    p.add_argument("--all", action="store_true",
                   help="every combination of options (default: each constexpr branch taken both ways at least once)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("run without TRITON_INTERPRET=1 (the kernels must be compiled, not interpreted)", file=sys.stderr)
        return 2
    from statelayers.layers.kernels import s6la_triton as K

    compiled: set = set()

    def launch(self, grid):
        def run(*a, **kw):
            names = self.arg_names
            values = dict(zip(names, a)) | kw
            constexprs = {names[i]: values[names[i]] for i in self.constexprs}
            signature = {n: "constexpr" if n in constexprs else _type(values[n]) for n in names}
            key = (self.fn.__name__, tuple(sorted(signature.items())), tuple(sorted(constexprs.items())))
            if key in compiled:
                return
            compiled.add(key)
            for arch in args.arch:
                t0 = time.time()
                src = ASTSource(fn=self, signature=signature, constexprs=constexprs)
                binary = triton.compile(src, target=GPUTarget("cuda", arch, 32))
                assert binary.asm.get("cubin"), "no cubin"
                flags = ",".join(f"{k}={v}" for k, v in constexprs.items() if isinstance(v, bool) and v)
                print(f"sm_{arch} {self.fn.__name__} [{flags}] {time.time() - t0:.1f}s", flush=True)

        return run

    JITFunction.__getitem__ = launch  # intercept `kernel[grid](...)`: compile instead of launching

    bsz, n, hh, ww, d, r = 3, 5, 7, 9, 37, 5
    flag_sets = list(itertools.product((True, False), repeat=3)) if args.all else [(True, True, False),
                                                                                  (False, False, True)]
    for selective, rms, drop in flag_sets:
        default = selective and rms and not drop  # the models' default: also bf16 and a missing gradient
        for dtype in (torch.float32, torch.bfloat16) if default else (torch.float32,):
            u = torch.randn(bsz, n, hh, ww, dtype=dtype)
            h = torch.randn(bsz, n, hh, ww)
            w = torch.randn(n, n) if selective else None
            bp = torch.randn(n, n) if selective else torch.randn(n)
            dtb, alog = torch.randn(n), torch.randn(n)
            h_out, h_c, stats = K.conv_update_forward(u, h, w, dtb, bp, alog, rms, drop, dtype, 1e-6)
            for gh, ghc in ((h_out, h_c), (None, h_c), (h_out, None)) if default else ((h_out, h_c),):
                K.conv_update_backward(gh, ghc, u, h, w, dtb, bp, alog, stats, rms, drop, True, 1e-6)
            c = torch.randn(bsz, d, dtype=dtype)
            ht = torch.randn(bsz, d, n)
            down, up = (torch.randn(r, d), torch.randn(d, r)) if selective else (None, None)
            bpt = torch.randn(n, d) if selective else torch.randn(n)
            out, out_c, st = K.token_update_forward(c, ht, down, up, torch.randn(d), bpt, torch.randn(d, n), rms, drop,
                                                    dtype, 1e-6)
            for gh, ghc in ((out, out_c), (None, out_c)) if default else ((out, out_c),):
                K.token_update_backward(gh, ghc, c, ht, down, up, torch.randn(d), bpt, torch.randn(d, n), st, rms,
                                        drop, True, 1e-6)
    from statelayers.layers.kernels import scan_triton as S

    length = 300  # several chunks on a GPU's launch shape: the aggregate, carry and apply kernels
    for dtype in (torch.float32, torch.bfloat16, torch.complex64):
        a, b = torch.randn(bsz, length, n, dtype=dtype), torch.randn(bsz, length, n, dtype=dtype)
        h0 = torch.randn(bsz, n, dtype=torch.promote_types(dtype, torch.float32))
        lengths = torch.tensor([length, 7, 0])
        every = args.all or dtype == torch.complex64
        for reverse in (False, True) if every else (dtype == torch.bfloat16,):
            for init, lens in ((h0, None), (None, None), (h0, lengths)) if every else ((h0, lengths),):
                h = S.scan_forward(a, b, init, lens, reverse)
                S.scan_backward(a, h, init, lens, h.clone(), reverse, True, True, init is not None)
        S.scan_backward(a, h, None, None, h.clone(), False, False, True, False)  # ∂b only
        S.scan_forward(a[:, :5], b[:, :5], h0, None, False)  # one chunk: starts from h0 directly
    from statelayers.layers.kernels import s7_triton as S7K

    delta = torch.rand(bsz, length, n)
    bu = torch.randn(bsz, length, 2, n).movedim(2, 0)
    lam = torch.complex(-torch.rand(n) - 0.1, torch.randn(n))
    tau, lens = torch.rand(bsz, length), torch.tensor([length, 7, 0])
    s7_cases = list(itertools.product(S7K.MODES.values(), (False, True), ((None, None), (tau, lens))))
    if not args.all:
        s7_cases = [(S7K.ZOH, False, (None, None)), (S7K.DIRAC, True, (tau, lens)), (S7K.ASYNC, False, (tau, lens))]
    for mode, reverse, (t, ln) in s7_cases:
        x = S7K.s7_scan_forward(delta, bu, lam, t, ln, mode, reverse)
        S7K.s7_scan_backward(x.clone(), x, delta, bu, lam, t, ln, mode, reverse)
    print(f"{len(compiled)} kernel variants compiled for sm_{' sm_'.join(map(str, args.arch))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
