"""Triton kernels of the S7 scan with its discretisation inside (`s7_ops.s7_scan`).

The plain scan (`scan_triton.py`) reads Λ̄ and B̄u, complex (B, L, P) tensors that S7 builds first: five complex
temporaries and their gradients, more memory traffic than the scan itself. Here each program computes its
elements from what they are made of: Δ (B, L, P) real (a stride-0 broadcast for S5's input-independent Δ),
B u (2, B, L, P) real and imaginary parts, the eigenvalues Λ (P,) and the time steps τ (B, L):

    Λ̄ = exp(Λ Δ τ)       γ = (Λ̄ − 1)/Λ (zoh) · 1 (dirac) · (exp(Λ Δ) − 1)/Λ (async)       b = γ · B u

and padded steps (time ≥ lengths[i]) are the identity. The chunked scan is that of `scan_triton.py` (chunk
totals, `scan_carry`, rescan); its backward runs the adjoint scan with the elements made again, then applies the
chain rule through γ, Λ̄ and Δ in the same pass (PyTorch's convention for complex gradients, ∂ = ∂/∂Re + i ∂/∂Im,
so that a real x feeding a complex z = f(x) gets Re(∂z · conj(f'(x)))):

    ∂(Bu) = g conj(γ)      ∂γ = g conj(Bu)      ∂Λ̄ = g conj(h_prev) (+ ∂γ conj(1/Λ) for zoh)
    ∂w = ∂Λ̄ conj(Λ̄) for w = ΛΔτ:   ∂Λ += ∂w Δτ,   ∂Δ += τ Re(∂w conj(Λ))      (async: the same through exp(ΛΔ))

∂Λ is summed over each program's steps; the per-program sums are added up by the wrapper (one op). τ gets no
gradient (it is data).
"""

import torch
import triton
import triton.language as tl

from ..discretization import DISCRETIZATION_CODES as MODES
from .scan_triton import launch_shape, sample_length, scan_carry, scan_tile, scan_time, store_chunk_aggregate

# the kernels' MODE: their branches test the values (MODE == 0: zoh, MODE == 2: async)
ZOH, DIRAC, ASYNC = MODES["zoh"], MODES["dirac"], MODES["async"]


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi):
    d = br * br + bi * bi
    return (ar * br + ai * bi) / d, (ai * br - ar * bi) / d


@triton.jit
def _cexp(re, im):
    m = tl.exp(re)
    return m * tl.cos(im), m * tl.sin(im)


@triton.jit
def _coefficients(delta, tau, lr, li, MODE: tl.constexpr):
    """Λ̄ = exp(ΛΔτ) and γ on a tile; delta [T, P], tau [T, 1], lr / li [1, P]."""
    step = delta * tau
    a_re, a_im = _cexp(lr * step, li * step)
    if MODE == 0:
        g_re, g_im = _cdiv(a_re - 1.0, a_im, lr, li)
    elif MODE == 1:
        g_re, g_im = a_re * 0.0 + 1.0, a_re * 0.0
    else:
        e_re, e_im = _cexp(lr * delta, li * delta)
        g_re, g_im = _cdiv(e_re - 1.0, e_im, lr, li)
    return a_re, a_im, g_re, g_im


@triton.jit
def _inputs(delta_ptr, tau_ptr, n, t, p, m, L, sd_b, sd_l, sd_p, st_b, st_l, HAS_TAU: tl.constexpr):
    """Δ [T, P] and τ [T, 1] at times t (τ = 1 without time steps); m masks Δ."""
    delta = tl.load(delta_ptr + n * sd_b + t[:, None] * sd_l + p[None, :] * sd_p, mask=m, other=0.0).to(tl.float32)
    if HAS_TAU:
        tau = tl.load(tau_ptr + n * st_b + t * st_l, mask=(t >= 0) & (t < L), other=0.0).to(tl.float32)[:, None]
    else:
        tau = delta * 0.0 + 1.0
    return delta, tau


@triton.jit
def _s7_elements(delta_ptr, bu_ptr, tau_ptr, lam_ptr, gy_ptr, n, s, p, L, P, length,
                 sd_b, sd_l, sd_p, sb_c, sb_b, sb_l, sb_p, st_b, st_l, sg_b, sg_l, sg_p,
                 MODE: tl.constexpr, HAS_TAU: tl.constexpr, REV: tl.constexpr, BACKWARD: tl.constexpr):
    """The scan's (a, b) at scan steps s: the forward's (Λ̄, γ·Bu), or the backward's (conj(Λ̄ of step s − 1), ∂h),
    with the identity where steps are padded or past the end (as scan_triton._elements)."""
    pm = p < P
    lr = tl.load(lam_ptr + p * 2, mask=pm, other=-1.0)[None, :]
    li = tl.load(lam_ptr + p * 2 + 1, mask=pm, other=0.0)[None, :]
    inside = (s[:, None] < L) & pm[None, :]
    t = scan_time(s, L, REV)
    if BACKWARD:
        t_prev = scan_time(s - 1, L, REV)
        va = inside & (s[:, None] >= 1) & (t_prev[:, None] < length)
        delta, tau = _inputs(delta_ptr, tau_ptr, n, t_prev, p, va, L, sd_b, sd_l, sd_p, st_b, st_l, HAS_TAU)
        a_re, a_im, _, _ = _coefficients(delta, tau, lr, li, MODE)
        a_re = tl.where(va, a_re, tl.where(s[:, None] == 0, 0.0, 1.0))
        a_im = tl.where(va, -a_im, 0.0)
        off = n * sg_b + t[:, None] * sg_l + p[None, :] * sg_p
        pair = tl.load(gy_ptr + off[:, :, None] + tl.arange(0, 2)[None, None, :], mask=inside[:, :, None], other=0.0)
        b_re, b_im = tl.split(pair)
    else:
        valid = inside & (t[:, None] < length)
        delta, tau = _inputs(delta_ptr, tau_ptr, n, t, p, valid, L, sd_b, sd_l, sd_p, st_b, st_l, HAS_TAU)
        a_re, a_im, g_re, g_im = _coefficients(delta, tau, lr, li, MODE)
        off = n * sb_b + t[:, None] * sb_l + p[None, :] * sb_p
        u_re = tl.load(bu_ptr + off, mask=valid, other=0.0).to(tl.float32)
        u_im = tl.load(bu_ptr + sb_c + off, mask=valid, other=0.0).to(tl.float32)
        b_re, b_im = _cmul(g_re, g_im, u_re, u_im)
        a_re = tl.where(valid, a_re, 1.0)
        a_im = tl.where(valid, a_im, 0.0)
        b_re = tl.where(valid, b_re, 0.0)
        b_im = tl.where(valid, b_im, 0.0)
    return a_re, a_im, b_re, b_im


@triton.jit
def _s7_aggregate(delta_ptr, bu_ptr, tau_ptr, lam_ptr, gy_ptr, len_ptr, agg_ptr, L, P,
                  sd_b, sd_l, sd_p, sb_c, sb_b, sb_l, sb_p, st_b, st_l, sg_b, sg_l, sg_p,
                  MODE: tl.constexpr, HAS_TAU: tl.constexpr, HAS_LEN: tl.constexpr, REV: tl.constexpr,
                  BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """Chunk totals, as scan_triton._scan_aggregate."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(2)
    s = c * BLOCK_T + tl.arange(0, BLOCK_T)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    length = sample_length(len_ptr, n, L, HAS_LEN)
    a_re, a_im, b_re, b_im = _s7_elements(delta_ptr, bu_ptr, tau_ptr, lam_ptr, gy_ptr, n, s, p, L, P, length,
                                          sd_b, sd_l, sd_p, sb_c, sb_b, sb_l, sb_p, st_b, st_l, sg_b, sg_l, sg_p,
                                          MODE, HAS_TAU, REV, BACKWARD)
    store_chunk_aggregate(agg_ptr, n, c, p, P, a_re, a_im, b_re, b_im, True, BLOCK_T)


@triton.jit
def _s7_apply(delta_ptr, bu_ptr, tau_ptr, lam_ptr, gy_ptr, len_ptr, start_ptr, out_ptr, h_ptr,
              gdelta_ptr, gbu_ptr, glam_ptr, L, P,
              sd_b, sd_l, sd_p, sb_c, sb_b, sb_l, sb_p, st_b, st_l, sg_b, sg_l, sg_p, so_b, so_l, so_p,
              MODE: tl.constexpr, HAS_TAU: tl.constexpr, HAS_LEN: tl.constexpr, REV: tl.constexpr,
              BACKWARD: tl.constexpr, FROM_START: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """Forward: the states x (complex, strides so_*). Backward: the adjoint g, then ∂Δ (strides of a dense (B, L, P)
    tensor, so_*), ∂(Bu) (2, B, L, P) (sb_*) and this program's part of ∂Λ (glam[n, c], 2 rows of P)."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(2)
    s = c * BLOCK_T + tl.arange(0, BLOCK_T)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    length = sample_length(len_ptr, n, L, HAS_LEN)
    a_re, a_im, b_re, b_im = _s7_elements(delta_ptr, bu_ptr, tau_ptr, lam_ptr, gy_ptr, n, s, p, L, P, length,
                                          sd_b, sd_l, sd_p, sb_c, sb_b, sb_l, sb_p, st_b, st_l, sg_b, sg_l, sg_p,
                                          MODE, HAS_TAU, REV, BACKWARD)
    pa_re, pa_im, h_re, h_im = scan_tile(a_re, a_im, b_re, b_im, True)
    if FROM_START:
        row = start_ptr + (n * tl.num_programs(2) + c) * 2 * P + p
        s_re = tl.load(row, mask=pm, other=0.0)
        s_im = tl.load(row + P, mask=pm, other=0.0)
    else:
        s_re = tl.zeros([BLOCK_P], dtype=tl.float32)
        s_im = tl.zeros([BLOCK_P], dtype=tl.float32)
    o_re = pa_re * s_re[None, :] - pa_im * s_im[None, :] + h_re
    o_im = pa_re * s_im[None, :] + pa_im * s_re[None, :] + h_im
    inside = (s[:, None] < L) & pm[None, :]
    t = scan_time(s, L, REV)
    if not BACKWARD:
        off = n * so_b + t[:, None] * so_l + p[None, :] * so_p
        tl.store(out_ptr + off[:, :, None] + tl.arange(0, 2)[None, None, :], tl.join(o_re, o_im),
                 mask=inside[:, :, None])
    else:
        valid = inside & (t[:, None] < length)
        lr = tl.load(lam_ptr + p * 2, mask=pm, other=-1.0)[None, :]
        li = tl.load(lam_ptr + p * 2 + 1, mask=pm, other=0.0)[None, :]
        delta, tau = _inputs(delta_ptr, tau_ptr, n, t, p, valid, L, sd_b, sd_l, sd_p, st_b, st_l, HAS_TAU)
        a_re, a_im, g_re, g_im = _coefficients(delta, tau, lr, li, MODE)
        # the forward's state one step earlier in time order (later in this scan), zero before the first
        nxt = valid & (s[:, None] + 1 < L)
        off_h = n * sg_b + scan_time(s + 1, L, REV)[:, None] * sg_l + p[None, :] * sg_p
        pair = tl.load(h_ptr + off_h[:, :, None] + tl.arange(0, 2)[None, None, :], mask=nxt[:, :, None], other=0.0)
        q_re, q_im = tl.split(pair)
        ga_re, ga_im = _cmul(o_re, o_im, q_re, -q_im)  # ∂Λ̄ = g conj(h_prev)
        off_b = n * sb_b + t[:, None] * sb_l + p[None, :] * sb_p
        u_re = tl.load(bu_ptr + off_b, mask=valid, other=0.0).to(tl.float32)
        u_im = tl.load(bu_ptr + sb_c + off_b, mask=valid, other=0.0).to(tl.float32)
        gu_re, gu_im = _cmul(o_re, o_im, g_re, -g_im)  # ∂(Bu) = g conj(γ)
        tl.store(gbu_ptr + off_b, tl.where(valid, gu_re, 0.0), mask=inside)
        tl.store(gbu_ptr + sb_c + off_b, tl.where(valid, gu_im, 0.0), mask=inside)
        gg_re, gg_im = _cmul(o_re, o_im, u_re, -u_im)  # ∂γ = g conj(Bu)
        glam_re = a_re * 0.0
        glam_im = a_re * 0.0
        gdelta = a_re * 0.0
        if MODE == 0:  # γ = (Λ̄ − 1)/Λ: ∂Λ̄ += ∂γ conj(1/Λ), ∂Λ += ∂γ conj(−(Λ̄ − 1)/Λ²)
            inv_re, inv_im = _cdiv(1.0 + lr * 0.0, lr * 0.0, lr, li)
            t_re, t_im = _cmul(gg_re, gg_im, inv_re, -inv_im)
            ga_re, ga_im = ga_re + t_re, ga_im + t_im
            sq_re, sq_im = _cmul(lr, li, lr, li)
            d_re, d_im = _cdiv(1.0 - a_re, -a_im, sq_re, sq_im)
            t_re, t_im = _cmul(gg_re, gg_im, d_re, -d_im)
            glam_re, glam_im = glam_re + t_re, glam_im + t_im
        elif MODE == 2:  # γ = (e − 1)/Λ, e = exp(ΛΔ)
            e_re, e_im = _cexp(lr * delta, li * delta)
            inv_re, inv_im = _cdiv(1.0 + lr * 0.0, lr * 0.0, lr, li)
            ge_re, ge_im = _cmul(gg_re, gg_im, inv_re, -inv_im)
            sq_re, sq_im = _cmul(lr, li, lr, li)
            d_re, d_im = _cdiv(1.0 - e_re, -e_im, sq_re, sq_im)
            t_re, t_im = _cmul(gg_re, gg_im, d_re, -d_im)
            glam_re, glam_im = glam_re + t_re, glam_im + t_im
            gv_re, gv_im = _cmul(ge_re, ge_im, e_re, -e_im)  # through v = ΛΔ
            glam_re, glam_im = glam_re + gv_re * delta, glam_im + gv_im * delta
            gdelta += gv_re * lr + gv_im * li  # Re(∂v conj(Λ))
        gw_re, gw_im = _cmul(ga_re, ga_im, a_re, -a_im)  # through w = ΛΔτ
        step = delta * tau
        glam_re, glam_im = glam_re + gw_re * step, glam_im + gw_im * step
        gdelta += (gw_re * lr + gw_im * li) * tau
        off_d = n * so_b + t[:, None] * so_l + p[None, :] * so_p
        tl.store(gdelta_ptr + off_d, tl.where(valid, gdelta, 0.0), mask=inside)
        part = glam_ptr + (n * tl.num_programs(2) + c) * 2 * P + p
        tl.store(part, tl.sum(tl.where(valid, glam_re, 0.0), axis=0), mask=pm)
        tl.store(part + P, tl.sum(tl.where(valid, glam_im, 0.0), axis=0), mask=pm)


# ------------------------------------------------------------------------------------------------ wrappers


def _run(delta, bu, lam, tau, lengths, reverse, mode, out=None, gy=None, h=None, g_delta=None, g_bu=None,
         g_lam_part=None, shape=None):
    bsz, length, lanes = delta.shape
    backward = gy is not None
    chunk, block_p, n_chunks, n_lanes = launch_shape(bsz, length, lanes, True)
    grid = (bsz, n_lanes, n_chunks)
    lam_r = torch.view_as_real(lam.contiguous())
    dummy = delta
    gy_r = torch.view_as_real(gy) if backward else None
    h_r = torch.view_as_real(h) if h is not None else None
    out_r = torch.view_as_real(out) if out is not None else None
    sg = gy_r.stride()[:3] if backward else (0, 0, 0)
    so = out_r.stride()[:3] if out is not None else g_delta.stride()
    common = (delta, bu, tau if tau is not None else dummy, lam_r, gy_r if backward else dummy,
              lengths if lengths is not None else dummy)
    strides = (*delta.stride(), *bu.stride(), *(tau.stride() if tau is not None else (0, 0)), *sg)
    flags = dict(MODE=mode, HAS_TAU=tau is not None, HAS_LEN=lengths is not None, REV=reverse, BACKWARD=backward)
    start = None
    if n_chunks > 1:
        f32 = dict(dtype=torch.float32, device=delta.device)
        agg = torch.empty((bsz, n_chunks, 4, lanes), **f32)
        start = torch.empty((bsz, n_chunks, 2, lanes), **f32)
        _s7_aggregate[grid](*common, agg, length, lanes, *strides, **flags, BLOCK_T=chunk, BLOCK_P=block_p)
        scan_carry[(bsz, n_lanes)](agg, agg, start, n_chunks, lanes, 0, 0, COMPLEX=True, HAS_H0=False,
                                   BLOCK_P=block_p)
    _s7_apply[grid](*common, start if start is not None else dummy, out_r if out is not None else dummy,
                    h_r if h_r is not None else dummy, g_delta if g_delta is not None else dummy,
                    g_bu if g_bu is not None else dummy, g_lam_part if g_lam_part is not None else dummy,
                    length, lanes, *strides, *so, **flags, FROM_START=start is not None,
                    BLOCK_T=chunk, BLOCK_P=block_p)
    return n_chunks


def s7_scan_forward(delta, bu, lam, tau, lengths, mode: int, reverse: bool) -> torch.Tensor:
    """x (B, L, P) complex64 from Δ (B, L, P) float32, Bu (2, B, L, P) float32, Λ (P,) complex64, τ (B, L)."""
    out = torch.empty(delta.shape, dtype=torch.complex64, device=delta.device)
    if delta.shape[1]:
        _run(delta, bu, lam, tau, lengths, reverse, mode, out=out)
    return out


def s7_scan_backward(gy, x, delta, bu, lam, tau, lengths, mode: int, reverse: bool):
    """(∂Δ dense (B, L, P), ∂Bu (2, B, L, P), ∂Λ (P,) complex64) from ∂x."""
    bsz, length, lanes = delta.shape
    g_bu = torch.empty_like(bu, dtype=torch.float32)  # bu's strides where it is dense (S7's permuted view is)
    if g_bu.stride() != bu.stride():
        bu, g_bu = bu.contiguous(), g_bu.contiguous()
    g_delta = torch.empty(delta.shape, dtype=torch.float32, device=delta.device)
    if not length:
        return g_delta.zero_(), g_bu.zero_(), torch.zeros_like(lam)
    n_chunks = launch_shape(bsz, length, lanes, True)[2]
    part = torch.empty((bsz, n_chunks, 2, lanes), dtype=torch.float32, device=delta.device)
    gy, x = gy.contiguous(), x.contiguous()  # read with the same strides
    _run(delta, bu, lam, tau, lengths, not reverse, mode, gy=gy, h=x, g_delta=g_delta, g_bu=g_bu, g_lam_part=part)
    g_lam = torch.view_as_complex(part.sum(dim=(0, 1)).transpose(0, 1).contiguous())
    return g_delta, g_bu, g_lam
