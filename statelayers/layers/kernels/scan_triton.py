"""Triton kernels of the linear scan `h_k = a_k ⊙ h_{k-1} + b_k` (`statelayers.layers.scan.linear_scan(impl="triton")`).

Parallel over time as well as lanes, so that few lanes and long sequences still fill a GPU: the time axis is cut
into chunks of T steps and, per (sample, block of lanes, chunk), a program

1. `_scan_aggregate`: scans its chunk from zero with `tl.associative_scan` (the operator
   (a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂)) and keeps the chunk's total, the pair that maps the state entering
   the chunk to the state leaving it;
2. `scan_carry` (one program per sample and block of lanes): walks the chunks' totals in order from h0 and
   writes the state entering every chunk;
3. `_scan_apply`: scans its chunk again and writes h = (∏a) · start + (scan of b from zero).

a and b are read twice and h written once: 40 bytes per complex64 element against the 24 of one pass (a sequence
of a single chunk skips steps 1-2 and reads them once). Steps run in "scan order": time order, or reversed time
for `reverse=True`, so every kernel scans forwards along its tile.

The same kernels compute the adjoint (backward): g_k = gy_k + conj(a_{k+1}) g_{k+1} is a scan in the opposite
direction whose a is the forward's a one step earlier in scan order, conjugated (`SHIFT_A`); ∂b = g, and
`_scan_apply` also writes ∂a_k = g_k conj(h_{k-1}) from the forward's states (`GRAD_A`) and
∂h0 = conj(a_first) g_first (`GRAD_H0`). Complex values are (re, im) pairs of float32; bf16 / fp16 inputs are
read as they are and everything is computed in float32.

`scan_time`, `sample_length`, `scan_tile`, `scan_carry` and `launch_shape` are public building blocks: the fused
S7 scan (`s7_triton.py`) is made of them too, with its own elements and apply pass.
"""

import os

import torch
import triton
import triton.language as tl

# Launch shapes (see s6la_triton.py): on a GPU chunks of 16-256 steps, at most 128 chunks (the carry walks them
# one after another), tiles of at most 2048 elements of each of the scan's 2 (real) or 4 (complex) values; in
# Triton's interpreter one chunk up to 4096 steps and wide tiles (its cost is per program and per op). Tests set
# these numbers to cover the multi-chunk path under the interpreter.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_CHUNKS = 128
MIN_CHUNK, MAX_CHUNK = (16, 4096) if INTERPRET else (16, 256)
MAX_TILE = 1 << 16 if INTERPRET else 2048


@triton.jit
def _combine_real(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (ar1 * ar2 - ai1 * ai2, ar1 * ai2 + ai1 * ar2,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def scan_time(s, L, REV: tl.constexpr):
    """Time index of scan step s."""
    if REV:
        return L - 1 - s
    return s


@triton.jit
def _load(ptr, off, mask, COMPLEX: tl.constexpr):
    """(re, im) in float32 of the elements at `off` (in real scalars); im is 0 for real tensors."""
    if COMPLEX:
        pair = tl.load(ptr + off[:, :, None] + tl.arange(0, 2)[None, None, :], mask=mask[:, :, None], other=0.0)
        re, im = tl.split(pair.to(tl.float32))
    else:
        re = tl.load(ptr + off, mask=mask, other=0.0).to(tl.float32)
        im = re * 0.0
    return re, im


@triton.jit
def _store(ptr, off, mask, re, im, COMPLEX: tl.constexpr):
    if COMPLEX:
        tl.store(ptr + off[:, :, None] + tl.arange(0, 2)[None, None, :],
                 tl.join(re, im).to(ptr.dtype.element_ty), mask=mask[:, :, None])
    else:
        tl.store(ptr + off, re.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _elements(a_ptr, b_ptr, n, s, p, L, P, length, sa_b, sa_l, sa_p, sb_b, sb_l, sb_p,
              COMPLEX: tl.constexpr, REV: tl.constexpr, SHIFT_A: tl.constexpr):
    """(a_re, a_im, b_re, b_im) of scan steps s × lanes p of sample n, float32; the identity (a = 1, b = 0) past
    the end and at the sample's padded steps (time ≥ `length`). With SHIFT_A (the backward), a at step s is
    conj(a at step s - 1) (1 where that step is padded, 0 at step 0), and b is read at padded steps too."""
    inside = (s[:, None] < L) & (p[None, :] < P)
    t = scan_time(s, L, REV)
    valid = inside & (t[:, None] < length)
    # the backward's b is ∂h, which padded steps have too (their h is the state carried through)
    b_re, b_im = _load(b_ptr, n * sb_b + t[:, None] * sb_l + p[None, :] * sb_p, inside if SHIFT_A else valid,
                       COMPLEX)
    if SHIFT_A:
        t_prev = scan_time(s - 1, L, REV)
        va = inside & (s[:, None] >= 1) & (t_prev[:, None] < length)
        a_re, a_im = _load(a_ptr, n * sa_b + t_prev[:, None] * sa_l + p[None, :] * sa_p, va, COMPLEX)
        a_im = -a_im
        a_re = tl.where(va | (s[:, None] == 0), a_re, 1.0)  # step 0: 0 (loaded as such); else the identity
    else:
        a_re, a_im = _load(a_ptr, n * sa_b + t[:, None] * sa_l + p[None, :] * sa_p, valid, COMPLEX)
        a_re = tl.where(valid, a_re, 1.0)
    return a_re, a_im, b_re, b_im


@triton.jit
def sample_length(len_ptr, n, L, HAS_LEN: tl.constexpr):
    """The valid length of sample n (L when there are no lengths): steps at or past it are padding."""
    if HAS_LEN:
        return tl.load(len_ptr + n).to(tl.int32)
    return L


@triton.jit
def scan_tile(a_re, a_im, b_re, b_im, COMPLEX: tl.constexpr):
    """Inclusive scan along the tile's time axis: (∏a, h from zero) at every step."""
    if COMPLEX:
        pa_re, pa_im, h_re, h_im = tl.associative_scan((a_re, a_im, b_re, b_im), 0, _combine_complex)
    else:
        pa_re, h_re = tl.associative_scan((a_re, b_re), 0, _combine_real)
        pa_im, h_im = pa_re * 0.0, h_re * 0.0
    return pa_re, pa_im, h_re, h_im


@triton.jit
def _scan_aggregate(a_ptr, b_ptr, len_ptr, agg_ptr, L, P, sa_b, sa_l, sa_p, sb_b, sb_l, sb_p,
                    COMPLEX: tl.constexpr, REV: tl.constexpr, SHIFT_A: tl.constexpr, HAS_LEN: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """agg[n, c] = the total (∏a, h from zero) of chunk c: 4 rows of P floats (re/im of each)."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(2)
    s = c * BLOCK_T + tl.arange(0, BLOCK_T)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    length = sample_length(len_ptr, n, L, HAS_LEN)
    a_re, a_im, b_re, b_im = _elements(a_ptr, b_ptr, n, s, p, L, P, length, sa_b, sa_l, sa_p, sb_b, sb_l, sb_p,
                                       COMPLEX, REV, SHIFT_A)
    store_chunk_aggregate(agg_ptr, n, c, p, P, a_re, a_im, b_re, b_im, COMPLEX, BLOCK_T)


@triton.jit
def store_chunk_aggregate(agg_ptr, n, c, p, P, a_re, a_im, b_re, b_im, COMPLEX: tl.constexpr,
                          BLOCK_T: tl.constexpr):
    """Scan one chunk's elements and store its aggregate (the product of its a's and its last partial state, re and
    im: 4 rows of P) at agg[n, c]; the carry kernel composes these. Steps past the end are the identity."""
    pa_re, pa_im, h_re, h_im = scan_tile(a_re, a_im, b_re, b_im, COMPLEX)
    last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
    out = agg_ptr + (n * tl.num_programs(2) + c) * 4 * P + p
    pm = p < P
    tl.store(out, tl.sum(tl.where(last, pa_re, 0.0), axis=0), mask=pm)
    tl.store(out + P, tl.sum(tl.where(last, pa_im, 0.0), axis=0), mask=pm)
    tl.store(out + 2 * P, tl.sum(tl.where(last, h_re, 0.0), axis=0), mask=pm)
    tl.store(out + 3 * P, tl.sum(tl.where(last, h_im, 0.0), axis=0), mask=pm)


@triton.jit
def scan_carry(agg_ptr, h0_ptr, start_ptr, C, P, s0_b, s0_p,
                COMPLEX: tl.constexpr, HAS_H0: tl.constexpr, BLOCK_P: tl.constexpr):
    """start[n, c] = the state entering chunk c (re and im rows), from h0 (or zero) through the totals."""
    n = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    if HAS_H0:
        if COMPLEX:
            s_re = tl.load(h0_ptr + n * s0_b + p * s0_p, mask=pm, other=0.0).to(tl.float32)
            s_im = tl.load(h0_ptr + n * s0_b + p * s0_p + 1, mask=pm, other=0.0).to(tl.float32)
        else:
            s_re = tl.load(h0_ptr + n * s0_b + p * s0_p, mask=pm, other=0.0).to(tl.float32)
            s_im = s_re * 0.0
    else:
        s_re = tl.zeros([BLOCK_P], dtype=tl.float32)
        s_im = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c in range(C):
        row = (n * C + c) * 4 * P + p
        tl.store(start_ptr + (n * C + c) * 2 * P + p, s_re, mask=pm)
        tl.store(start_ptr + (n * C + c) * 2 * P + P + p, s_im, mask=pm)
        pa_re = tl.load(agg_ptr + row, mask=pm, other=0.0)
        pa_im = tl.load(agg_ptr + row + P, mask=pm, other=0.0)
        h_re = tl.load(agg_ptr + row + 2 * P, mask=pm, other=0.0)
        h_im = tl.load(agg_ptr + row + 3 * P, mask=pm, other=0.0)
        s_re, s_im = pa_re * s_re - pa_im * s_im + h_re, pa_re * s_im + pa_im * s_re + h_im


@triton.jit
def _scan_apply(a_ptr, b_ptr, len_ptr, start_ptr, h0_ptr, out_ptr, h_ptr, ga_ptr, gh0_ptr, L, P,
                sa_b, sa_l, sa_p, sb_b, sb_l, sb_p, so_b, so_l, so_p, sh_b, sh_l, sh_p, s0_b, s0_p,
                COMPLEX: tl.constexpr, REV: tl.constexpr, SHIFT_A: tl.constexpr, HAS_LEN: tl.constexpr,
                FROM_START: tl.constexpr, HAS_H0: tl.constexpr, STORE_OUT: tl.constexpr, GRAD_A: tl.constexpr,
                GRAD_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """out at chunk c = (∏a) · start + (scan from zero); the backward's ∂a and ∂h0 from it (module docstring).
    In the backward (SHIFT_A) padded steps get ∂a = ∂b = 0: their elements were constants."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(2)
    s = c * BLOCK_T + tl.arange(0, BLOCK_T)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    length = sample_length(len_ptr, n, L, HAS_LEN)
    a_re, a_im, b_re, b_im = _elements(a_ptr, b_ptr, n, s, p, L, P, length, sa_b, sa_l, sa_p, sb_b, sb_l, sb_p,
                                       COMPLEX, REV, SHIFT_A)
    pa_re, pa_im, h_re, h_im = scan_tile(a_re, a_im, b_re, b_im, COMPLEX)
    if FROM_START:  # the state entering this chunk, from scan_carry
        row = start_ptr + (n * tl.num_programs(2) + c) * 2 * P + p
        s_re = tl.load(row, mask=pm, other=0.0)
        s_im = tl.load(row + P, mask=pm, other=0.0)
    elif HAS_H0:  # a single chunk: it starts from h0
        s_re = tl.load(h0_ptr + n * s0_b + p * s0_p, mask=pm, other=0.0).to(tl.float32)
        if COMPLEX:
            s_im = tl.load(h0_ptr + n * s0_b + p * s0_p + 1, mask=pm, other=0.0).to(tl.float32)
        else:
            s_im = s_re * 0.0
    else:
        s_re = tl.zeros([BLOCK_P], dtype=tl.float32)
        s_im = tl.zeros([BLOCK_P], dtype=tl.float32)
    o_re = pa_re * s_re[None, :] - pa_im * s_im[None, :] + h_re
    o_im = pa_re * s_im[None, :] + pa_im * s_re[None, :] + h_im
    valid = (s[:, None] < L) & pm[None, :]
    t = scan_time(s, L, REV)
    real_step = t[:, None] < length  # not padded
    if STORE_OUT:
        off = n * so_b + t[:, None] * so_l + p[None, :] * so_p
        if SHIFT_A:  # the backward's ∂b: zero at padded steps
            _store(out_ptr, off, valid, tl.where(real_step, o_re, 0.0), tl.where(real_step, o_im, 0.0), COMPLEX)
        else:
            _store(out_ptr, off, valid, o_re, o_im, COMPLEX)
    if GRAD_A:  # ∂a = g · conj(h of the next scan step), h0 past the last
        nxt = valid & (s[:, None] + 1 < L)
        q_re, q_im = _load(h_ptr, n * sh_b + scan_time(s + 1, L, REV)[:, None] * sh_l + p[None, :] * sh_p, nxt,
                           COMPLEX)
        if HAS_H0:
            at_end = valid & (s[:, None] + 1 == L)
            z_re, z_im = _load(h0_ptr, n * s0_b + (p * s0_p)[None, :] + s[:, None] * 0, at_end, COMPLEX)
            q_re, q_im = q_re + z_re, q_im + z_im
        _store(ga_ptr, n * sa_b + t[:, None] * sa_l + p[None, :] * sa_p, valid,
               tl.where(real_step, o_re * q_re + o_im * q_im, 0.0),
               tl.where(real_step, o_im * q_re - o_re * q_im, 0.0), COMPLEX)
    if GRAD_H0:  # ∂h0 = conj(a) · g at the last scan step (the forward's first; a = 1 there if it is padded)
        if (c + 1) * BLOCK_T >= L:
            last = (s[:, None] == L - 1) & pm[None, :]
            f_re, f_im = _load(a_ptr, n * sa_b + t[:, None] * sa_l + p[None, :] * sa_p, last & real_step, COMPLEX)
            f_re = tl.where(real_step, f_re, 1.0)
            g_re = tl.sum(tl.where(last, f_re * o_re + f_im * o_im, 0.0), axis=0)
            g_im = tl.sum(tl.where(last, f_re * o_im - f_im * o_re, 0.0), axis=0)
            if COMPLEX:
                tl.store(gh0_ptr + n * s0_b + p * s0_p, g_re, mask=pm)
                tl.store(gh0_ptr + n * s0_b + p * s0_p + 1, g_im, mask=pm)
            else:
                tl.store(gh0_ptr + n * s0_b + p * s0_p, g_re, mask=pm)


# ------------------------------------------------------------------------------------------------ wrappers


def _real(t: torch.Tensor | None) -> torch.Tensor | None:
    return torch.view_as_real(t) if t is not None and t.is_complex() else t


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    """(batch, time, lane) strides in real scalars (a complex tensor's real view keeps re, im adjacent)."""
    return tuple(t.stride()[:3])


def launch_shape(bsz: int, length: int, lanes: int, complex_: bool) -> tuple[int, int, int, int]:
    """(chunk length T, lanes per program, number of chunks, number of lane blocks)."""
    chunk = min(MAX_CHUNK, max(MIN_CHUNK, triton.next_power_of_2(triton.cdiv(length, MAX_CHUNKS))))
    if INTERPRET:
        chunk = min(MAX_CHUNK, max(chunk, triton.next_power_of_2(length)))
    tile = MAX_TILE // (2 if complex_ else 1)
    block_p = max(1, min(triton.next_power_of_2(lanes), tile // chunk))
    return chunk, block_p, triton.cdiv(length, chunk), triton.cdiv(lanes, block_p)


def _run(a, b, h0, lengths, out, reverse, shift_a, h=None, g_a=None, g_h0=None, store_out=True):
    """One scan of a (B, L, P) problem in scan order (time order, or reversed with `reverse`)."""
    bsz, length, lanes = b.shape
    complex_ = b.is_complex()
    ar, br, h0r, outr, hr, gar, gh0r = (_real(t) for t in (a, b, h0, out, h, g_a, g_h0))
    chunk, block_p, n_chunks, n_lanes = launch_shape(bsz, length, lanes, complex_)
    grid = (bsz, n_lanes, n_chunks)
    dummy = br
    f32 = dict(dtype=torch.float32, device=b.device)
    start = None
    if n_chunks > 1:
        agg = torch.empty((bsz, n_chunks, 4, lanes), **f32)
        start = torch.empty((bsz, n_chunks, 2, lanes), **f32)
        _scan_aggregate[grid](ar, br, lengths if lengths is not None else dummy, agg, length, lanes, *_strides(ar),
                              *_strides(br), COMPLEX=complex_, REV=reverse, SHIFT_A=shift_a,
                              HAS_LEN=lengths is not None, BLOCK_T=chunk, BLOCK_P=block_p)
        scan_carry[(bsz, n_lanes)](agg, h0r if h0r is not None else agg, start, n_chunks, lanes,
                                   *(h0r.stride()[:2] if h0r is not None else (0, 0)),
                                   COMPLEX=complex_, HAS_H0=h0r is not None, BLOCK_P=block_p)
    s0 = h0r.stride()[:2] if h0r is not None else (0, 0)
    so = _strides(outr) if outr is not None else (0, 0, 0)
    sh = _strides(hr) if hr is not None else (0, 0, 0)
    _scan_apply[grid](
        ar, br, lengths if lengths is not None else dummy, start if start is not None else dummy,
        h0r if h0r is not None else dummy,
        outr if outr is not None else dummy, hr if hr is not None else dummy, gar if gar is not None else dummy,
        gh0r if gh0r is not None else dummy, length, lanes, *_strides(ar), *_strides(br), *so, *sh, *s0,
        COMPLEX=complex_, REV=reverse, SHIFT_A=shift_a, HAS_LEN=lengths is not None, FROM_START=start is not None,
        HAS_H0=h0r is not None,
        STORE_OUT=store_out, GRAD_A=g_a is not None, GRAD_H0=g_h0 is not None, BLOCK_T=chunk, BLOCK_P=block_p,
    )


def scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, lengths: torch.Tensor | None,
                 reverse: bool) -> torch.Tensor:
    """All states, in float32 (or complex64); a and b of one dtype (float32/bf16/fp16 or complex64); steps at or
    past `lengths[i]` (int64, (B,)) are the identity for sample i."""
    out = torch.empty(b.shape, dtype=torch.promote_types(b.dtype, torch.float32), device=b.device)
    if b.shape[1]:
        _run(a, b, h0, lengths, out, reverse, shift_a=False)
    return out


def scan_backward(a, h, h0, lengths, gy, reverse, need_a: bool, need_b: bool, need_h0: bool):
    """(∂a, ∂b, ∂h0) in the dtypes of a, b (= a's) and h0; empty tensors for those not needed."""
    g_b = torch.empty_like(a, memory_format=torch.contiguous_format) if need_b else a.new_empty(0)
    g_a = torch.empty_like(a, memory_format=torch.contiguous_format) if need_a else a.new_empty(0)
    g_h0 = torch.empty_like(h0) if need_h0 and h0 is not None else a.new_empty(0)
    if a.shape[1] and (need_a or need_b or need_h0):
        _run(a, gy, h0, lengths, g_b if need_b else None, not reverse, shift_a=True, h=h,
             g_a=g_a if need_a else None,
             g_h0=g_h0 if need_h0 and h0 is not None else None, store_out=need_b)
    elif need_h0 and h0 is not None:
        g_h0.zero_()
    return g_a, g_b, g_h0
