"""The linear recurrence `h_k = a_k ⊙ h_{k-1} + b_k` along time, with gradients (the S7 scan).

    linear_scan(a, b, h0=None, *, reverse=False, impl="auto")   # fast, (B, L, P) → (B, L, P)
    linear_scan_reference(a, b, h0=None, *, reverse=False)      # the specification: a Python loop

`a`, `b` are `(batch, time, lanes)`, real or complex, of one dtype; `h_{-1} = h0` (`(batch, lanes)`,
zeros by default). `reverse=True` runs from the last step to the first (`h_L = h0`), for
bidirectional layers. float16/bfloat16 inputs are computed and returned in float32: the state is
kept in float32 as everywhere in this package (`precision.py`), because the small decays that carry
information over thousands of steps do not survive half precision.

Implementations (`impl`), chosen by measurement on the 2-core CPU this project runs on (design
note scan.md; `benchmarks/scan.py` measures them again):

* `"numba"` — one sequential pass over memory in a compiled kernel, lanes innermost (the layout's
  contiguous axis, so the lane loop vectorises), and a fused hand-written backward (one pass that
  writes ∂a and ∂b). The fastest path on CPU. Kernels compile on first use and are cached on disk
  (`cache=True`), per dtype (float32/64, complex64/128). Single-threaded: splitting batches over
  2 threads with `prange` was not faster than one thread (256 MiB float32 forward: 0.16 s on 2
  threads, 0.15-0.18 s on 1), the scan being bound by memory traffic. Measured on a shared
  machine (load average ~3 on 2 cores), so a gain on an idle machine is not ruled out.
* Output and gradient buffers of the fast paths are ordinary torch tensors; on Linux, CPU buffers
  of 8 MiB or more are `madvise`d for transparent huge pages before first use (see `_empty_like`):
  a scan writes each output byte once, so first-touch page faults were most of its time.
* `"torch"` — pure torch, any device. When a time step is small (on CPU ≤ 8 KiB of lanes, 4 KiB
  for complex dtypes; always on other devices) a per-step loop pays Python and dispatch overhead
  thousands of times, so the time axis is cut into chunks of T ≈ √(L/2) steps that are scanned
  side by side: pass 1 gets each chunk's end state from zero and its product of `a`, a short
  loop over chunks gives every chunk's true start state, and pass 2 rescans all chunks from
  those states into the output (2T + L/T torch ops, about twice the memory traffic of one pass,
  no O(L) temporaries). Above that size a plain loop writing each step into a preallocated
  output is faster. On CPU the crossover was
  measured (20× faster for 64 lanes at L = 16k, 2× slower for 64k lanes); on GPUs, where launch
  overhead dominates even more, the chunked form is used throughout (not measured: no GPU here).
  The chunked form multiplies chunk products of `a` into carried states, so for an unstable
  recurrence (|a| > 1 until overflow) it may produce inf/nan where a sequential loop overflows
  differently; for |a| ≤ 1 it is as accurate as the loop.
* `"triton"` — Triton kernels (`kernels/scan_triton.py`), parallel over time as well as lanes: the time
  axis is cut into chunks scanned side by side with `tl.associative_scan`, their totals carried across, and every
  chunk rescanned from its true start; the backward is the same kernels on the adjoint. For CUDA tensors (on
  CPU only in Triton's interpreter, TRITON_INTERPRET=1: slow, for tests). bf16 / fp16 inputs are read as they
  are (no float32 copy); float32, bf16, fp16 and complex64 only.
* `"reference"` — `linear_scan_reference`, autograd through plain torch ops.
* `"auto"` — `"numba"` for CPU tensors when numba imports (numba is optional), `"triton"` for CUDA tensors
  when Triton imports (float64 and complex128 excepted), else `"torch"`.

The fast paths are one custom op (`statelayers::linear_scan`, with its backward registered), so `torch.compile`
sees one opaque op whatever the path (it traced into numba and failed, and would unroll the torch path's loop).

Gradients of the fast paths come from a reverse scan of the adjoint (written here for the forward
direction; `reverse=True` mirrors the time indices):

    g_k   = ∂ℓ/∂h_k (total) = gy_k + conj(a_{k+1}) g_{k+1},   g_{L-1} = gy_{L-1}
    ∂ℓ/∂b_k = g_k,   ∂ℓ/∂a_k = g_k conj(h_{k-1}),   ∂ℓ/∂h0 = conj(a_0) g_0

with the conjugates of PyTorch's complex autograd convention (for real dtypes conj is the
identity). Backward keeps `a` and the output `h` (no other O(L) state). Double backward is not
supported: the fast paths are `once_differentiable` and raise if differentiated twice (use
`impl="reference"` for that).
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .padding import valid_mask

__all__ = ["linear_scan", "linear_scan_reference", "numba_available"]

IMPLS = ("auto", "numba", "triton", "torch", "reference")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.complex64)
_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)
# on CPU, a time step of at most this many bytes of lanes is scanned in chunks (measured crossovers:
# real 8-16 KiB, complex 4-8 KiB, where torch's complex arithmetic costs more per byte)
_CHUNK_MAX_STEP_BYTES = {"real": 8192, "complex": 4096}
_HUGEPAGE, _MADV_HUGEPAGE, _HUGEPAGE_MIN_BYTES = 2 * 2**20, 14, 8 * 2**20
# numba passes that walk time downwards over rows (one time step of lanes) of 512 B - 2 KiB do so
# in blocks of 32 KiB per array (see the numba section)
_TOUCH_ROW_BYTES, _TOUCH_BLOCK_BYTES = (512, 2048), 32 * 1024


# --------------------------------------------------------------------------------------- checks


def _prepare(a, b, h0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate the arguments and bring them to the state dtype (float32 for half inputs)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"linear_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if a.dim() != 3:
        raise ValueError(f"linear_scan: a must have rank 3 (batch, time, lanes), got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"linear_scan: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"linear_scan: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.dtype not in _SUPPORTED:
        raise ValueError(f"linear_scan: unsupported dtype {a.dtype} (floating or complex only)")
    if a.device != b.device:
        raise ValueError(f"linear_scan: a and b must be on the same device, got {a.device} and {b.device}")
    state = torch.promote_types(a.dtype, torch.float32)
    if h0 is not None:
        if not isinstance(h0, torch.Tensor):
            raise ValueError(f"linear_scan: h0 must be a torch.Tensor or None, got {type(h0).__name__}")
        want = (a.shape[0], a.shape[2])
        if tuple(h0.shape) != want:
            raise ValueError(f"linear_scan: h0 must have shape {want} (batch, lanes), got {tuple(h0.shape)}")
        if h0.dtype not in (a.dtype, state):
            raise ValueError(f"linear_scan: h0 must have dtype {a.dtype} (or {state}), got {h0.dtype}")
        if h0.device != a.device:
            raise ValueError(f"linear_scan: h0 must be on {a.device} like a and b, got {h0.device}")
        h0 = h0.to(state)
    return a.to(state), b.to(state), h0


@torch.compiler.assume_constant_result  # for torch.compile: a fact about the environment, not traced
def numba_available() -> bool:
    """True when numba imports, i.e. `impl="numba"` can be used (for CPU tensors)."""
    return _numba_kernels() is not None


# ------------------------------------------------------------------------------------ reference


def linear_scan_reference(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *,
                          reverse: bool = False) -> torch.Tensor:
    """`h_k = a_k * h_{k-1} + b_k`, one time step at a time (the specification of `linear_scan`).

    Autograd runs through the plain torch ops. `unbind` rather than indexing, so that backward
    gathers the per-step gradients once instead of materialising a full-size tensor per step.
    """
    a, b, h0 = _prepare(a, b, h0)
    batch, length, lanes = a.shape
    h = h0 if h0 is not None else a.new_zeros(batch, lanes)
    a_steps, b_steps = a.unbind(1), b.unbind(1)
    order = range(length - 1, -1, -1) if reverse else range(length)
    out = [None] * length
    for k in order:
        h = a_steps[k] * h + b_steps[k]
        out[k] = h
    if not length:
        return a * b  # empty, and still part of the autograd graph
    return torch.stack(out, dim=1)


# ------------------------------------------------------------------------------------- torch path


def _torch_loop(a, b, h0, reverse, out):
    """One torch op per time step, each writing its step of the preallocated `out`."""
    length = a.shape[1]
    prev = h0
    for k in range(length - 1, -1, -1) if reverse else range(length):
        if prev is None:
            out[:, k].copy_(b[:, k])
        else:
            torch.addcmul(b[:, k], a[:, k], prev, out=out[:, k])
        prev = out[:, k]
    return out


def _torch_chunked(a, b, h0, reverse, out):
    """Chunks of T steps scanned side by side; see the module docstring."""
    batch, length, lanes = a.shape
    t_len = max(1, round(math.sqrt(length / 2)))
    n_chunks = length // t_len
    if n_chunks < 2:
        return _torch_loop(a, b, h0, reverse, out)
    span = n_chunks * t_len
    # the chunked part is scanned first; the < T leftover steps (at the far end) afterwards
    part = slice(length - span, length) if reverse else slice(0, span)
    av, bv, ov = (t[:, part].unflatten(1, (n_chunks, t_len)) for t in (a, b, out))
    steps = range(t_len - 1, -1, -1) if reverse else range(t_len)
    chunks = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
    # pass 1: end state of every chunk started from zero, and the product of its a's
    end = bv[:, :, steps[0]].clone()
    prod = av[:, :, steps[0]].clone()
    for t in steps[1:]:
        torch.addcmul(bv[:, :, t], av[:, :, t], end, out=end)
        prod.mul_(av[:, :, t])
    # the true state entering each chunk
    start = torch.empty_like(end)
    prev = h0
    for j in chunks:
        if prev is None:
            start[:, j].zero_()
            prev = end[:, j]
        else:
            start[:, j] = prev
            prev = torch.addcmul(end[:, j], prod[:, j], prev)
    # pass 2: rescan every chunk from its true start into the output
    prev = start
    for t in steps:
        torch.addcmul(bv[:, :, t], av[:, :, t], prev, out=ov[:, :, t])
        prev = ov[:, :, t]
    rest = range(length - span - 1, -1, -1) if reverse else range(span, length)
    prev = out[:, part][:, -1 if not reverse else 0]
    for k in rest:
        torch.addcmul(b[:, k], a[:, k], prev, out=out[:, k])
        prev = out[:, k]
    return out


@functools.cache
def _madvise():
    """libc's madvise, or None where it cannot be had (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def _empty_like(t: torch.Tensor) -> torch.Tensor:
    """`torch.empty_like(t)` (contiguous), asking Linux to back large CPU buffers with huge pages.

    A scan writes its output exactly once, so on CPU its cost is dominated by first-touch page
    faults of the fresh buffer: 4 KiB pages fill at ~2.5 GB/s here against ~11 GB/s for a copy into
    touched memory. `madvise(MADV_HUGEPAGE)` on the (not yet touched) buffer made the numba forward
    3-4x faster for 256 MiB outputs. It is a hint (what torch's own `THP_MEM_ALLOC_ENABLE=1` does
    for every allocation); it has no effect where transparent huge pages are off, and failures
    are ignored.
    """
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    if out.device.type != "cpu" or out.nbytes < _HUGEPAGE_MIN_BYTES or _madvise() is None:
        return out
    start, stop = out.data_ptr(), out.data_ptr() + out.nbytes
    lo = -(-start // _HUGEPAGE) * _HUGEPAGE  # only whole 2 MiB pages inside the buffer
    hi = stop // _HUGEPAGE * _HUGEPAGE
    if hi > lo:
        _madvise()(lo, hi - lo, _MADV_HUGEPAGE)
    return out


def _torch_strategy(a) -> str:
    if a.device.type != "cpu":
        return "chunked"
    step_bytes = a.shape[0] * a.shape[2] * a.element_size()
    limit = _CHUNK_MAX_STEP_BYTES["complex" if a.is_complex() else "real"]
    return "chunked" if step_bytes <= limit else "loop"


def _torch_scan(a, b, h0, reverse, strategy=None):
    """Forward scan of contiguous `(B, L, P)` tensors without autograd; `h0` may be None (zeros)."""
    out = _empty_like(a)
    if a.shape[1] == 0:
        return out
    strategy = strategy or _torch_strategy(a)
    fn = _torch_chunked if strategy == "chunked" else _torch_loop
    return fn(a, b, h0, reverse, out)


def _torch_backward(a, h, h0, gy, reverse, need_a, need_h0, strategy=None):
    """(∂ℓ/∂a, ∂ℓ/∂b, ∂ℓ/∂h0) by a scan of the adjoint in the opposite direction."""
    length = a.shape[1]
    # a_next[k] = conj(a of the step after k); 0 past the last step (the adjoint starts at zero)
    a_next = _empty_like(a)
    if reverse:  # the step after k is k - 1
        a_next[:, 1:] = a[:, :-1].conj()
        a_next[:, :1] = 0
    else:
        a_next[:, :-1] = a[:, 1:].conj()
        a_next[:, -1:] = 0
    g = _torch_scan(a_next, gy, None, not reverse, strategy)
    first = length - 1 if reverse else 0  # the step that reads h0
    g_h0 = None
    if need_h0:
        g_h0 = a[:, first].conj() * g[:, first] if length else torch.zeros_like(h0)
    g_a = None
    if need_a:
        g_a = a_next  # reuse the buffer: a_next is not needed any more
        dst, src, g_k = (g_a[:, :-1], h[:, 1:], g[:, :-1]) if reverse else (g_a[:, 1:], h[:, :-1], g[:, 1:])
        if h.is_complex():  # mul would materialise conj(h) in a temporary; copy_ conjugates in place
            dst.copy_(src.conj())
            dst.mul_(g_k)
        else:
            torch.mul(g_k, src, out=dst)
        if length:
            if h0 is None:
                g_a[:, first].zero_()
            else:
                torch.mul(g[:, first], h0.conj(), out=g_a[:, first])
    return g_a, g, g_h0


# ------------------------------------------------------------------------------------- numba path
# Plain functions, compiled by `_numba_kernels` on first use, so that importing this module does
# not import numba (~1 s). Layout (B, L, P) C-contiguous, lanes innermost; the recurrence's state
# for one batch row of lanes lives in a small scratch array.
#
# Passes that walk time downwards (the forward of reverse=True, the backward of reverse=False) read
# memory row by row in descending order. When a row (one time step of lanes) is 512 B - 2 KiB,
# this CPU's prefetchers followed that badly: the backward took 2-3.5x as long as with rows of
# 256 B or 4 KiB (complex64 with P = 64: 0.79 s against 0.25 s for the same bytes). Such passes
# go through blocks of `block_rows` time steps, from the last block to the first, and first touch
# each block in ascending address order (one load or store per cache line of every array), so
# the descending sweep that follows finds it in cache. For other row sizes the touch cost 5-20%,
# so it is skipped (`block_rows` > L).


def _nb_forward(a, b, h0, out, reverse, block_rows):
    n_batch, length, lanes = a.shape
    # flat views and offsets rather than per-row array views, whose reference counting cost more
    # than the arithmetic when rows are short
    fa, fb, fo, fh0 = a.reshape(-1), b.reshape(-1), out.reshape(-1), h0.reshape(-1)
    state = np.empty(lanes, dtype=out.dtype)
    line = max(1, 64 // a.itemsize)
    touched = 0.0
    for i in range(n_batch):
        for p in range(lanes):
            state[p] = fh0[i * lanes + p]
        hi = length
        while hi > 0:  # one block when ascending
            lo = max(0, hi - block_rows) if reverse else 0
            if reverse and block_rows < length:
                for q in range((i * length + lo) * lanes, (i * length + hi) * lanes, line):
                    touched += (fa[q] + fb[q]).real
                    fo[q] = 0
            for s in range(hi - lo):
                o = (i * length + (hi - 1 - s if reverse else s)) * lanes
                for p in range(lanes):
                    v = fa[o + p] * state[p] + fb[o + p]
                    state[p] = v
                    fo[o + p] = v
            hi = lo
    return touched


def _nb_backward(a, h, h0, gy, g_a, g_b, g_h0, reverse, need_a, need_b, block_rows):
    # carry[p] = conj(a_k) g_k of the step just processed: the adjoint flowing on to the next one
    n_batch, length, lanes = a.shape
    fa, fh, fh0, fgy = a.reshape(-1), h.reshape(-1), h0.reshape(-1), gy.reshape(-1)
    fga, fgb = g_a.reshape(-1), g_b.reshape(-1)
    carry = np.empty(lanes, dtype=a.dtype)
    line = max(1, 64 // a.itemsize)
    touched = 0.0
    for i in range(n_batch):
        for p in range(lanes):
            carry[p] = 0
        # steps 1..L-1 of the adjoint (each reads the state of a neighbouring step), in blocks
        # when they run downwards in time; the step that reads h0 comes last
        hi = length - 1 if reverse else length
        stop = 0 if reverse else 1
        while hi > stop:
            lo = stop if reverse else max(stop, hi - block_rows)
            if not reverse and block_rows < length:
                first, last = (i * length + lo) * lanes, (i * length + hi) * lanes
                for q in range(first, last, line):
                    touched += (fa[q] + fh[q] + fgy[q]).real
                    if need_a:
                        fga[q] = 0
                    if need_b:
                        fgb[q] = 0
            for s in range(hi - lo):
                k = lo + s if reverse else hi - 1 - s
                o = (i * length + k) * lanes
                o_prev = o + lanes if reverse else o - lanes
                # one loop per case: no branch inside the lane loop
                if need_a and need_b:  # ∂a in a second loop: fewer arrays per loop, faster (measured)
                    for p in range(lanes):
                        g = fgy[o + p] + carry[p]
                        fgb[o + p] = g
                        carry[p] = np.conj(fa[o + p]) * g
                    for p in range(lanes):
                        fga[o + p] = fgb[o + p] * np.conj(fh[o_prev + p])
                elif need_a:
                    for p in range(lanes):
                        g = fgy[o + p] + carry[p]
                        fga[o + p] = g * np.conj(fh[o_prev + p])
                        carry[p] = np.conj(fa[o + p]) * g
                else:
                    for p in range(lanes):
                        g = fgy[o + p] + carry[p]
                        fgb[o + p] = g
                        carry[p] = np.conj(fa[o + p]) * g
            hi = lo
        if length:
            o = (i * length + (length - 1 if reverse else 0)) * lanes
            for p in range(lanes):
                g = fgy[o + p] + carry[p]
                if need_b:
                    fgb[o + p] = g
                if need_a:
                    fga[o + p] = g * np.conj(fh0[i * lanes + p])
                carry[p] = np.conj(fa[o + p]) * g
        for p in range(lanes):
            g_h0[i, p] = carry[p]
    return touched


@functools.cache
def _numba_kernels():
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True)
    return jit(_nb_forward), jit(_nb_backward)


def _np(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor (materialising a lazy conjugate or negation)."""
    return t.detach().resolve_conj().resolve_neg().numpy()


def _block_rows(a) -> int:
    """Time steps per block of a descending numba pass; more than L (no blocks) outside the row sizes
    where blocks measured faster. Blocks of 32 KiB per array (5 arrays: 160 KiB, inside L2)."""
    row = a.shape[2] * a.element_size()
    if not _TOUCH_ROW_BYTES[0] <= row <= _TOUCH_ROW_BYTES[1]:
        return a.shape[1] + 1
    return max(1, _TOUCH_BLOCK_BYTES // row)


def _numba_scan(a, b, h0, reverse):
    fwd, _ = _numba_kernels()
    out = _empty_like(a)
    h0 = a.new_zeros(a.shape[0], a.shape[2]) if h0 is None else h0
    fwd(_np(a), _np(b), _np(h0), out.numpy(), reverse, _block_rows(a))
    return out


def _numba_backward(a, h, h0, gy, reverse, need_a, need_b, need_h0):
    _, bwd = _numba_kernels()
    h0 = a.new_zeros(a.shape[0], a.shape[2]) if h0 is None else h0
    need_b_buf = need_b or not need_a  # the kernel writes ∂a or ∂b (or both)
    g_a = _empty_like(a) if need_a else a.new_empty(0, 0, 0)
    g_b = _empty_like(a) if need_b_buf else a.new_empty(0, 0, 0)
    g_h0 = torch.empty_like(h0)
    bwd(_np(a), _np(h), _np(h0), _np(gy), g_a.numpy(), g_b.numpy(), g_h0.numpy(), reverse, need_a, need_b_buf,
        _block_rows(a))
    return (g_a if need_a else None), (g_b if need_b else None), (g_h0 if need_h0 else None)


# ------------------------------------------------------------------------------------- autograd
# One custom op for every fast path (`backend`: "numba", "triton", "torch", "torch:loop" or "torch:chunked"), so
# that autograd, torch.compile and torch.export see one op with its backward, whichever path runs.


def _triton():
    from .kernels import scan_triton  # imported on first use (TRITON_INTERPRET is read when kernels are defined)

    return scan_triton


@torch.library.custom_op("statelayers::linear_scan", mutates_args=())
def _scan_op(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, lengths: torch.Tensor | None, reverse: bool,
             backend: str) -> torch.Tensor:
    """`lengths` only on the Triton path (the others get padded elements made the identity beforehand)."""
    if backend == "numba":
        return _numba_scan(a, b, h0, reverse)
    if backend == "triton":
        return _triton().scan_forward(a, b, h0, lengths, reverse)
    return _torch_scan(a, b, h0, reverse, backend.partition(":")[2] or None)


@_scan_op.register_fake
def _(a, b, h0, lengths, reverse, backend):
    return torch.empty_like(b, dtype=torch.promote_types(b.dtype, torch.float32),
                            memory_format=torch.contiguous_format)


@torch.library.custom_op("statelayers::linear_scan_backward", mutates_args=())
def _scan_backward_op(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, lengths: torch.Tensor | None, gy: torch.Tensor,
    reverse: bool, backend: str, need_a: bool, need_b: bool, need_h0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂a, ∂b, ∂h0); an empty tensor for each one not needed (a custom op returns tensors)."""
    if backend == "triton":
        return _triton().scan_backward(a, h, h0, lengths, gy, reverse, need_a, need_b, need_h0)
    if backend == "numba":
        g_a, g_b, g_h0 = _numba_backward(a, h, h0, gy, reverse, need_a, need_b, need_h0)
    else:
        strategy = backend.partition(":")[2] or None
        g_a, g_b, g_h0 = _torch_backward(a, h, h0, gy, reverse, need_a, need_h0, strategy)
    return tuple(a.new_empty(0) if g is None else g for g in (g_a, g_b if need_b else None, g_h0))


@_scan_backward_op.register_fake
def _(a, h, h0, lengths, gy, reverse, backend, need_a, need_b, need_h0):
    def maybe(need, like):
        return torch.empty_like(like, memory_format=torch.contiguous_format) if need and like is not None \
            else a.new_empty(0)

    return maybe(need_a, a), maybe(need_b, a), maybe(need_h0, h0)


def _scan_setup(ctx, inputs, output):
    a, _, h0, lengths, reverse, backend = inputs
    ctx.reverse, ctx.backend = reverse, backend
    ctx.save_for_backward(a, output, h0, lengths)


@once_differentiable
def _scan_backward(ctx, gy):
    a, h, h0, lengths = ctx.saved_tensors
    need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
    need_h0 = need_h0 and h0 is not None
    g_a, g_b, g_h0 = _scan_backward_op(a, h, h0, lengths, gy.contiguous(), ctx.reverse, ctx.backend, need_a, need_b,
                                       need_h0)
    return (g_a if need_a else None), (g_b if need_b else None), (g_h0 if need_h0 else None), None, None, None


_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


def _scan(a, b, h0, reverse: bool, backend: str, lengths=None) -> torch.Tensor:
    """The fast paths, autocast off (their dtypes are their own); a, b, h0 contiguous, of the path's dtypes."""
    if not torch.amp.is_autocast_available(a.device.type):
        return _scan_op(a, b, h0, lengths, reverse, backend)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return _scan_op(a, b, h0, lengths, reverse, backend)


def _check_lengths(lengths, a) -> torch.Tensor | None:
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (a.shape[0],) or lengths.is_floating_point() \
            or lengths.is_complex():
        got = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise ValueError(f"linear_scan: lengths must be an integer tensor of shape ({a.shape[0]},), got {got}")
    if lengths.device != a.device:
        raise ValueError(f"linear_scan: lengths must be on {a.device} like a and b, got {lengths.device}")
    return lengths.to(torch.int64).contiguous()


def _mask_padded(a, b, lengths):
    """a = 1 and b = 0 at padded steps (time ≥ lengths[i]): the state passes them unchanged."""
    valid = valid_mask(lengths, a.shape[1], a.device)[..., None]
    return torch.where(valid, a, torch.ones_like(a)), torch.where(valid, b, torch.zeros_like(b))


def _auto_impl(a: torch.Tensor) -> str:
    if a.device.type == "cpu":
        return "numba" if numba_available() else "torch"
    from .kernels import triton_available

    return "triton" if a.is_cuda and triton_available() and a.dtype in _TRITON_DTYPES else "torch"


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, reverse: bool = False,
                lengths: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """All states of `h_k = a_k * h_{k-1} + b_k` (k = 0..L-1, `h_{-1} = h0`), shape `(B, L, P)`.

    Args:
        a, b: `(batch, time, lanes)` tensors of one dtype and device; float32/64, complex64/128, or
            float16/bfloat16 (computed and returned in float32). Any strides (copied if needed).
        h0: `(batch, lanes)` initial state, dtype of `a` (or the float32 state dtype); default zeros.
        reverse: run from the last step to the first, `h_k = a_k * h_{k+1} + b_k`, `h_L = h0`.
        lengths: optional `(batch,)` integers: steps `k >= lengths[i]` of sample i are padding, where the state
            passes unchanged (a = 1, b = 0; their a and b get zero gradients), so a reverse scan starts at each
            sample's own end. Not checked against L (that would wait for the device).
        impl: "auto", "numba", "triton", "torch" or "reference" (see the module docstring).

    Differentiable w.r.t. a, b and h0 (once; double backward raises on the fast paths).
    """
    if impl not in IMPLS:
        raise ValueError(f"linear_scan: unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
    a_in, b_in = a, b
    a, b, h0 = _prepare(a, b, h0)
    lengths = _check_lengths(lengths, a)
    if impl == "auto":
        impl = _auto_impl(a_in)
    if lengths is not None and impl != "triton":  # the Triton kernels skip padded steps themselves
        a, b = _mask_padded(a, b, lengths)
        lengths = None
    if impl == "reference":
        return linear_scan_reference(a, b, h0, reverse=reverse)
    if impl == "numba":
        if a.device.type != "cpu":
            raise ValueError(f"linear_scan: impl='numba' runs on CPU tensors only, got device {a.device}")
        if not numba_available():
            raise ValueError("linear_scan: impl='numba' needs numba (pip install numba); impl='torch' needs nothing")
    if impl == "triton":
        from .kernels import check_device

        if a_in.dtype not in _TRITON_DTYPES:
            raise ValueError(f"linear_scan: impl='triton' takes {', '.join(map(str, _TRITON_DTYPES))}, got "
                             f"{a_in.dtype} (impl='torch' takes any)")
        check_device(a_in)
        a, b = a_in, b_in  # half inputs are read as they are: no float32 copy
    h0 = None if h0 is None else h0.contiguous()
    return _scan(a.contiguous(), b.contiguous(), h0, bool(reverse), impl, lengths)
