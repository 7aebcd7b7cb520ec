"""Triton kernels of the fused S6LA updates: what they compute is in `s6la_ops.py`, the math in `selective.py`.

Notation (per sample): N state channels, P = H·W pixels (CNN) or D token channels (token models); Δ = softplus(pre),
A = -exp(A_log), decay = exp(ΔA). Every kernel loads its inputs in their own dtype and strides and computes in
float32. The gradient formulas, CNN (u ∈ (N, P), m = mean_p u, s = (Σu²/(NP) + ε)^-½, z = m·s,
pre = W_Δ z + b_Δ, B_raw = W_B z, B = s·B_raw, coef = Δ·B, h' = decay ⊙ h + coef ⊙ u, g = ∂h'):

    ∂decay_n = Σ_p g h          ∂coef_n = Σ_p g u           ∂h = decay ⊙ g
    ∂Δ = ∂coef·B + ∂decay·decay·A       ∂B = ∂coef·Δ         ∂A_log = ∂decay·decay·Δ·A
    ∂pre = ∂Δ·softplus'(pre)            ∂B_raw = ∂B·s        ∂z = W_Δᵀ ∂pre + W_Bᵀ ∂B_raw
    ∂s = Σ ∂z·m + Σ ∂B·B_raw            ∂u = coef ⊙ g + (∂z·s)/P + u · 2(-½ s³ ∂s)/(NP)

and the token update (c ∈ D, u = s·c, x = W_down u, pre = W_up x + b, B = W_B u, h' = decay ⊙ h + (Δ ⊗ B) ⊙ u):

    ∂Δ_d = Σ_n g·h·decay·A + u_d Σ_n g B_n        ∂u_d = Δ_d Σ_n g B_n + (W_downᵀ ∂x + W_Bᵀ ∂B)_d
    ∂B_n = Σ_d g Δ_d u_d        ∂x = W_upᵀ ∂pre        ∂c = s ∂u - (s³/D)(Σ ∂u·c) c
"""

import os

import torch
import triton
import triton.language as tl

# Launch shapes. On a GPU: aim for about 1024 programs per launch (8 per SM of an H100), splitting a sample's
# pixels over several programs when the batch alone would leave the device idle, with tiles of at most 4096
# elements (registers). Triton's interpreter (TRITON_INTERPRET=1, how CI runs these kernels on CPU) costs time per
# program and per operation, not per element: there, one program per sample and whole-tensor tiles. Tests set
# these two numbers to cover the split and multi-tile paths under the interpreter as well.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
TARGET_PROGRAMS = 1 if INTERPRET else 1024
MAX_TILE = 1 << 16 if INTERPRET else 4096


@triton.jit
def _softplus(x):
    # torch's softplus (beta 1, threshold 20) as max(x, 0) + log1p(exp(-|x|)), log1p done accurately
    e = tl.exp(-tl.abs(x))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + log1p)


@triton.jit
def _softplus_grad(x):
    return tl.where(x > 20.0, 1.0, tl.sigmoid(x))


def _flat_strides(t: torch.Tensor):
    """Strides (batch, channel, pixel) of a (B, C, H, W) tensor whose pixels lie on one stride, else None."""
    _, _, hh, ww = t.shape
    sb, sc, sh, sw = t.stride()
    if hh == 1:
        return sb, sc, sw
    if ww == 1 or sh == ww * sw:
        return sb, sc, sw if ww > 1 else sh
    return None


def _flat(t: torch.Tensor):
    s = _flat_strides(t)
    if s is None:  # a layout other than NCHW or channels_last: one copy
        t = t.contiguous()
        s = _flat_strides(t)
    return t, s


def _pixel_split(b: int, p: int, block_p: int) -> tuple[int, int]:
    """(programs per sample, pixels per program, a multiple of block_p)."""
    split = max(1, min(triton.cdiv(p, block_p), triton.cdiv(TARGET_PROGRAMS, b)))
    chunk = triton.cdiv(triton.cdiv(p, split), block_p) * block_p
    return triton.cdiv(p, chunk), chunk


def _blocks(n: int, p: int) -> tuple[int, int]:
    block_n = triton.next_power_of_2(n)
    block_p = max(16, min(triton.next_power_of_2(p), MAX_TILE // block_n))
    return block_n, block_p


# ------------------------------------------------------------------------------------------------ CNN update


@triton.jit
def _conv_fwd_reduce(u_ptr, part_ptr, N, P, CHUNK, su_b, su_n, su_p,
                     BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr):
    """part[b, k] = (Σ_p u, Σ_p u²) per channel over the k-th chunk of sample b's pixels."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, P)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = nm[:, None] & (p[None, :] < end)
        x = tl.load(u_ptr + b * su_b + n[:, None] * su_n + p[None, :] * su_p, mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(x, axis=1)
        acc2 += tl.sum(x * x, axis=1)
    out = part_ptr + (b * tl.num_programs(1) + k) * 2 * N + n
    tl.store(out, acc, mask=nm)
    tl.store(out + N, acc2, mask=nm)


@triton.jit
def _conv_sample_stats(part_ptr, b, SPLIT, N, inv_np, eps, n, nm, RMS: tl.constexpr, BLOCK_S: tl.constexpr):
    """Finish a two-row reduction of sample b: (row 0 summed over the splits, row 1 likewise, s)."""
    sidx = tl.arange(0, BLOCK_S)
    pm = (sidx[:, None] < SPLIT) & nm[None, :]
    base = part_ptr + b * SPLIT * 2 * N + sidx[:, None] * 2 * N + n[None, :]
    r0 = tl.sum(tl.load(base, mask=pm, other=0.0), axis=0)
    r1 = tl.sum(tl.load(base + N, mask=pm, other=0.0), axis=0)
    total = tl.sum(r1, axis=0)
    if RMS:
        s = 1.0 / tl.sqrt(total * inv_np + eps)
    else:
        s = total * 0.0 + 1.0  # a scalar tensor on both branches (a jit function returns one type)
    return r0, r1, s


@triton.jit
def _conv_fwd_update(u_ptr, h_ptr, part_ptr, wdt_ptr, bdt_ptr, bp_ptr, alog_ptr, hout_ptr, hc_ptr, stats_ptr,
                     N, P, SPLIT, CHUNK, inv_p, inv_np, eps,
                     su_b, su_n, su_p, sh_b, sh_n, sh_p, so_b, so_n, so_p,
                     SELECTIVE: tl.constexpr, RMS: tl.constexpr, DROP_INPUT: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr):
    """Prologue: z, s, Δ, B of sample b from the partial sums; then h' = decay ⊙ h + coef ⊙ u on a pixel chunk."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    su, _, s = _conv_sample_stats(part_ptr, b, SPLIT, N, inv_np, eps, n, nm, RMS, BLOCK_S)
    z = su * inv_p * s
    if SELECTIVE:
        wm = nm[:, None] & nm[None, :]
        w_dt = tl.load(wdt_ptr + n[:, None] * N + n[None, :], mask=wm, other=0.0).to(tl.float32)
        pre = tl.sum(w_dt * z[None, :], axis=1) + tl.load(bdt_ptr + n, mask=nm, other=0.0).to(tl.float32)
        w_b = tl.load(bp_ptr + n[:, None] * N + n[None, :], mask=wm, other=0.0).to(tl.float32)
        b_raw = tl.sum(w_b * z[None, :], axis=1)
    else:
        pre = tl.load(bdt_ptr + n, mask=nm, other=0.0).to(tl.float32)
        b_raw = tl.load(bp_ptr + n, mask=nm, other=0.0).to(tl.float32)
    delta = _softplus(pre)
    a = -tl.exp(tl.load(alog_ptr + n, mask=nm, other=0.0).to(tl.float32))
    decay = tl.exp(delta * a)
    coef = delta * (b_raw * s)
    if DROP_INPUT:
        coef = coef * 0.0
    if k == 0:
        st = stats_ptr + b * 4 * N + n
        tl.store(st, z, mask=nm)
        tl.store(st + N, pre, mask=nm)
        tl.store(st + 2 * N, b_raw, mask=nm)
        tl.store(st + 3 * N, z * 0.0 + s, mask=nm)
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, P)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = nm[:, None] & (p[None, :] < end)
        uu = tl.load(u_ptr + b * su_b + n[:, None] * su_n + p[None, :] * su_p, mask=m, other=0.0).to(tl.float32)
        hh = tl.load(h_ptr + b * sh_b + n[:, None] * sh_n + p[None, :] * sh_p, mask=m, other=0.0).to(tl.float32)
        out = decay[:, None] * hh + coef[:, None] * uu
        o = b * so_b + n[:, None] * so_n + p[None, :] * so_p
        tl.store(hout_ptr + o, out, mask=m)
        tl.store(hc_ptr + o, out.to(hc_ptr.dtype.element_ty), mask=m)


@triton.jit
def _load_grad(gh_ptr, ghc_ptr, off_h, off_hc, m, HAS_GH: tl.constexpr, HAS_GHC: tl.constexpr):
    """∂h' in float32: the gradient of the float32 state plus that of its low-precision copy."""
    g = tl.zeros(m.shape, dtype=tl.float32)
    if HAS_GH:
        g += tl.load(gh_ptr + off_h, mask=m, other=0.0).to(tl.float32)
    if HAS_GHC:
        g += tl.load(ghc_ptr + off_hc, mask=m, other=0.0).to(tl.float32)
    return g


@triton.jit
def _conv_bwd_reduce(gh_ptr, ghc_ptr, u_ptr, h_ptr, part_ptr, N, P, CHUNK,
                     sg_b, sg_n, sg_p, sgc_b, sgc_n, sgc_p, su_b, su_n, su_p, sh_b, sh_n, sh_p,
                     HAS_GH: tl.constexpr, HAS_GHC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr):
    """part[b, k] = (Σ_p g h, Σ_p g u) per channel over the k-th chunk of sample b's pixels."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    acc_h = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, P)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = nm[:, None] & (p[None, :] < end)
        g = _load_grad(gh_ptr, ghc_ptr, b * sg_b + n[:, None] * sg_n + p[None, :] * sg_p,
                       b * sgc_b + n[:, None] * sgc_n + p[None, :] * sgc_p, m, HAS_GH, HAS_GHC)
        hh = tl.load(h_ptr + b * sh_b + n[:, None] * sh_n + p[None, :] * sh_p, mask=m, other=0.0).to(tl.float32)
        uu = tl.load(u_ptr + b * su_b + n[:, None] * su_n + p[None, :] * su_p, mask=m, other=0.0).to(tl.float32)
        acc_h += tl.sum(g * hh, axis=1)
        acc_u += tl.sum(g * uu, axis=1)
    out = part_ptr + (b * tl.num_programs(1) + k) * 2 * N + n
    tl.store(out, acc_h, mask=nm)
    tl.store(out + N, acc_u, mask=nm)


@triton.jit
def _conv_bwd_update(gh_ptr, ghc_ptr, u_ptr, part_ptr, wdt_ptr, bp_ptr, alog_ptr, stats_ptr,
                     gu_ptr, gho_ptr, vec_ptr, N, P, SPLIT, CHUNK, inv_p, inv_np,
                     sg_b, sg_n, sg_p, sgc_b, sgc_n, sgc_p, su_b, su_n, su_p, so_b, so_n, so_p,
                     SELECTIVE: tl.constexpr, RMS: tl.constexpr, DROP_INPUT: tl.constexpr,
                     HAS_GH: tl.constexpr, HAS_GHC: tl.constexpr, NEED_GH: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr):
    """Prologue: the per-sample gradient vectors (module docstring); then ∂u and ∂h on a pixel chunk."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    g_decay, g_coef, _ = _conv_sample_stats(part_ptr, b, SPLIT, N, 0.0, 0.0, n, nm, False, BLOCK_S)
    st = stats_ptr + b * 4 * N + n
    z = tl.load(st, mask=nm, other=0.0)
    pre = tl.load(st + N, mask=nm, other=0.0)
    b_raw = tl.load(st + 2 * N, mask=nm, other=0.0)
    s = tl.load(st + 3 * N, mask=nm, other=1.0)
    delta = _softplus(pre)
    a = -tl.exp(tl.load(alog_ptr + n, mask=nm, other=0.0).to(tl.float32))
    decay = tl.exp(delta * a)
    bv = b_raw * s
    coef = delta * bv
    if DROP_INPUT:
        coef = coef * 0.0
        g_coef = g_coef * 0.0
    g_delta = g_coef * bv + g_decay * decay * a
    g_bv = g_coef * delta
    g_alog = g_decay * decay * delta * a
    g_pre = g_delta * _softplus_grad(pre)
    g_braw = g_bv * s
    if SELECTIVE:
        wm = nm[:, None] & nm[None, :]
        w_dt = tl.load(wdt_ptr + n[:, None] * N + n[None, :], mask=wm, other=0.0).to(tl.float32)
        w_b = tl.load(bp_ptr + n[:, None] * N + n[None, :], mask=wm, other=0.0).to(tl.float32)
        g_z = tl.sum(w_dt * g_pre[:, None], axis=0) + tl.sum(w_b * g_braw[:, None], axis=0)
    else:
        g_z = z * 0.0
    if RMS:
        s_scalar = tl.max(tl.where(nm, s, 0.0), axis=0)
        g_s = tl.sum(g_z * (z / s), axis=0) + tl.sum(g_bv * b_raw, axis=0)  # z / s = m
        c2 = -g_s * s_scalar * s_scalar * s_scalar * inv_np  # 2 · (-½ s³ ∂s) / (NP)
    else:
        c2 = 0.0
    c1 = g_z * s * inv_p
    if k == 0:
        vb = vec_ptr + b * 3 * N + n
        tl.store(vb, g_pre, mask=nm)
        tl.store(vb + N, g_braw, mask=nm)
        tl.store(vb + 2 * N, g_alog, mask=nm)
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, P)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = nm[:, None] & (p[None, :] < end)
        g = _load_grad(gh_ptr, ghc_ptr, b * sg_b + n[:, None] * sg_n + p[None, :] * sg_p,
                       b * sgc_b + n[:, None] * sgc_n + p[None, :] * sgc_p, m, HAS_GH, HAS_GHC)
        ou = b * su_b + n[:, None] * su_n + p[None, :] * su_p
        uu = tl.load(u_ptr + ou, mask=m, other=0.0).to(tl.float32)
        gu = coef[:, None] * g + c1[:, None] + c2 * uu
        tl.store(gu_ptr + ou, gu.to(gu_ptr.dtype.element_ty), mask=m)
        if NEED_GH:
            tl.store(gho_ptr + b * so_b + n[:, None] * so_n + p[None, :] * so_p, decay[:, None] * g, mask=m)


@triton.jit
def _conv_bwd_params(vec_ptr, stats_ptr, gwdt_ptr, gbdt_ptr, gbp_ptr, galog_ptr, B, N,
                     SELECTIVE: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """Rows i of the parameter gradients, summed over the batch in a fixed order."""
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    im = i < N
    j = tl.arange(0, BLOCK_N)
    jm = j < N
    acc_w = tl.zeros([BLOCK_I, BLOCK_N], dtype=tl.float32)
    acc_wb = tl.zeros([BLOCK_I, BLOCK_N], dtype=tl.float32)
    acc_pre = tl.zeros([BLOCK_I], dtype=tl.float32)
    acc_br = tl.zeros([BLOCK_I], dtype=tl.float32)
    acc_a = tl.zeros([BLOCK_I], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        bb = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
        bm = bb < B
        row = vec_ptr + bb[:, None] * 3 * N + i[None, :]
        m = bm[:, None] & im[None, :]
        g_pre = tl.load(row, mask=m, other=0.0)  # (BLOCK_B, BLOCK_I)
        g_br = tl.load(row + N, mask=m, other=0.0)
        acc_pre += tl.sum(g_pre, axis=0)
        acc_br += tl.sum(g_br, axis=0)
        acc_a += tl.sum(tl.load(row + 2 * N, mask=m, other=0.0), axis=0)
        if SELECTIVE:
            z = tl.load(stats_ptr + bb[:, None] * 4 * N + j[None, :], mask=bm[:, None] & jm[None, :], other=0.0)
            acc_w += tl.sum(g_pre[:, :, None] * z[:, None, :], axis=0)
            acc_wb += tl.sum(g_br[:, :, None] * z[:, None, :], axis=0)
    tl.store(gbdt_ptr + i, acc_pre, mask=im)
    tl.store(galog_ptr + i, acc_a, mask=im)
    if SELECTIVE:
        wm = im[:, None] & jm[None, :]
        tl.store(gwdt_ptr + i[:, None] * N + j[None, :], acc_w, mask=wm)
        tl.store(gbp_ptr + i[:, None] * N + j[None, :], acc_wb, mask=wm)
    else:
        tl.store(gbp_ptr + i, acc_br, mask=im)


def _batch_block(b: int, other: int) -> int:
    """Samples per step of a batch reduction whose tiles are (samples, `other` elements)."""
    return max(1, min(triton.next_power_of_2(b), MAX_TILE // (other * 4)))


def _params(*ps):
    return [p.contiguous() if p is not None else None for p in ps]


def conv_update_forward(u, h, dt_weight, dt_bias, b_param, a_log, rms, drop_input, copy_dtype, eps):
    bsz, n, hh, ww = u.shape
    p = hh * ww
    u, su = _flat(u)
    h, sh = _flat(h)
    dt_weight, dt_bias, b_param, a_log = _params(dt_weight, dt_bias, b_param, a_log)
    h_out = torch.empty_like(u, dtype=torch.float32)
    h_c = torch.empty_like(u, dtype=copy_dtype)
    so = _flat_strides(h_out)
    block_n, block_p = _blocks(n, p)
    split, chunk = _pixel_split(bsz, p, block_p)
    part = torch.empty((bsz, split, 2, n), dtype=torch.float32, device=u.device)
    stats = torch.empty((bsz, 4, n), dtype=torch.float32, device=u.device)
    grid = (bsz, split)
    _conv_fwd_reduce[grid](u, part, n, p, chunk, *su, BLOCK_N=block_n, BLOCK_P=block_p)
    selective = dt_weight is not None
    _conv_fwd_update[grid](
        u, h, part, dt_weight if selective else dt_bias, dt_bias, b_param, a_log, h_out, h_c, stats,
        n, p, split, chunk, 1.0 / p, 1.0 / (n * p), eps, *su, *sh, *so,
        SELECTIVE=selective, RMS=rms, DROP_INPUT=drop_input,
        BLOCK_N=block_n, BLOCK_P=block_p, BLOCK_S=triton.next_power_of_2(split),
    )
    return h_out, h_c, stats


def _no_grads(like: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Placeholders for gradients that are not computed (distinct tensors: a custom op's outputs may not alias)."""
    return [like.new_empty(0, dtype=torch.float32) for _ in range(k)]


def _grad_param(p, g):
    return g if g.dtype == p.dtype else g.to(p.dtype)


def conv_update_backward(grad_h, grad_hc, u, h, dt_weight, dt_bias, b_param, a_log, stats, rms, drop_input,
                         need_params, eps):
    bsz, n, hh, ww = u.shape
    p = hh * ww
    u, su = _flat(u)
    h, sh = _flat(h)
    has_gh, has_ghc = grad_h is not None, grad_hc is not None
    gh, sg = _flat(grad_h) if has_gh else (u, su)
    ghc, sgc = _flat(grad_hc) if has_ghc else (u, su)
    dt_weight, dt_bias, b_param, a_log = _params(dt_weight, dt_bias, b_param, a_log)
    selective = dt_weight is not None
    grad_u = torch.empty_like(u)
    grad_hin = torch.empty_like(u, dtype=torch.float32)
    block_n, block_p = _blocks(n, p)
    split, chunk = _pixel_split(bsz, p, block_p)
    part = torch.empty((bsz, split, 2, n), dtype=torch.float32, device=u.device)
    vec = torch.empty((bsz, 3, n), dtype=torch.float32, device=u.device)
    grid = (bsz, split)
    _conv_bwd_reduce[grid](gh, ghc, u, h, part, n, p, chunk, *sg, *sgc, *su, *sh,
                           HAS_GH=has_gh, HAS_GHC=has_ghc, BLOCK_N=block_n, BLOCK_P=block_p)
    _conv_bwd_update[grid](
        gh, ghc, u, part, dt_weight if selective else dt_bias, b_param, a_log, stats, grad_u, grad_hin, vec,
        n, p, split, chunk, 1.0 / p, 1.0 / (n * p), *sg, *sgc, *su, *_flat_strides(grad_hin),
        SELECTIVE=selective, RMS=rms, DROP_INPUT=drop_input, HAS_GH=has_gh, HAS_GHC=has_ghc, NEED_GH=True,
        BLOCK_N=block_n, BLOCK_P=block_p, BLOCK_S=triton.next_power_of_2(split),
    )
    if not need_params:
        return (grad_u, grad_hin, *_no_grads(u, 4))
    f32 = dict(dtype=torch.float32, device=u.device)
    g_wdt = torch.empty(dt_weight.shape, **f32) if selective else _no_grads(u, 1)[0]
    g_bdt = torch.empty(dt_bias.shape, **f32)
    g_bp = torch.empty(b_param.shape, **f32)
    g_alog = torch.empty(a_log.shape, **f32)
    block_b = _batch_block(bsz, block_n)
    block_i = max(1, min(block_n, MAX_TILE // (block_b * block_n)))
    _conv_bwd_params[(triton.cdiv(n, block_i),)](vec, stats, g_wdt if selective else g_bdt, g_bdt, g_bp, g_alog,
                                                 bsz, n, SELECTIVE=selective, BLOCK_I=block_i, BLOCK_N=block_n,
                                                 BLOCK_B=block_b)
    grads = [_grad_param(dt_weight, g_wdt) if selective else g_wdt, _grad_param(dt_bias, g_bdt),
             _grad_param(b_param, g_bp), _grad_param(a_log, g_alog)]
    return (grad_u, grad_hin, *grads)


# ------------------------------------------------------------------------------------------- token update


@triton.jit
def _tok_fwd(c_ptr, h_ptr, down_ptr, up_ptr, bias_ptr, bp_ptr, alog_ptr, hout_ptr, hc_ptr, stats_ptr,
             D, N, R, eps, sc_b, sc_d, sh_b, sh_d, sh_n,
             SELECTIVE: tl.constexpr, RMS: tl.constexpr, DROP_INPUT: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    """One program per sample: s, x = W_down u, B = W_B u, then pre, Δ and the state (D, N) chunk by chunk.
    stats[b] = (s, x (R), pre (D), B (N))."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    r = tl.arange(0, BLOCK_R)
    rm = r < R
    st = stats_ptr + b * (1 + R + D + N)
    c_row = c_ptr + b * sc_b
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    if RMS:
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            cc = tl.load(c_row + d * sc_d, mask=d < D, other=0.0).to(tl.float32)
            acc += cc * cc
        s = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / D + eps)
    else:
        s = tl.sum(acc, axis=0) + 1.0  # 1, as a scalar tensor
    tl.store(st, s)
    if SELECTIVE:
        x = tl.zeros([BLOCK_R], dtype=tl.float32)
        b_raw = tl.zeros([BLOCK_N], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            dm = d < D
            uu = tl.load(c_row + d * sc_d, mask=dm, other=0.0).to(tl.float32) * s
            wd = tl.load(down_ptr + r[:, None] * D + d[None, :], mask=rm[:, None] & dm[None, :], other=0.0)
            x += tl.sum(wd.to(tl.float32) * uu[None, :], axis=1)
            wb = tl.load(bp_ptr + n[:, None] * D + d[None, :], mask=nm[:, None] & dm[None, :], other=0.0)
            b_raw += tl.sum(wb.to(tl.float32) * uu[None, :], axis=1)
        tl.store(st + 1 + r, x, mask=rm)
    else:
        b_raw = tl.load(bp_ptr + n, mask=nm, other=0.0).to(tl.float32)
    tl.store(st + 1 + R + D + n, b_raw, mask=nm)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dm = d < D
        uu = tl.load(c_row + d * sc_d, mask=dm, other=0.0).to(tl.float32) * s
        if SELECTIVE:
            wu = tl.load(up_ptr + d[:, None] * R + r[None, :], mask=dm[:, None] & rm[None, :], other=0.0)
            pre = tl.sum(wu.to(tl.float32) * x[None, :], axis=1)
            pre += tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)
        else:
            pre = tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)
        tl.store(st + 1 + R + d, pre, mask=dm)
        delta = _softplus(pre)
        m = dm[:, None] & nm[None, :]
        a = -tl.exp(tl.load(alog_ptr + d[:, None] * N + n[None, :], mask=m, other=0.0).to(tl.float32))
        hh = tl.load(h_ptr + b * sh_b + d[:, None] * sh_d + n[None, :] * sh_n, mask=m, other=0.0).to(tl.float32)
        out = tl.exp(delta[:, None] * a) * hh
        if not DROP_INPUT:
            out += (delta[:, None] * b_raw[None, :]) * uu[:, None]
        o = b * D * N + d[:, None] * N + n[None, :]
        tl.store(hout_ptr + o, out, mask=m)
        tl.store(hc_ptr + o, out.to(hc_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tok_bwd(gh_ptr, ghc_ptr, c_ptr, h_ptr, down_ptr, up_ptr, bp_ptr, alog_ptr, stats_ptr,
             gc_ptr, gho_ptr, vec_ptr, galog_ptr, D, N, R,
             sg_b, sg_d, sg_n, sgc_b, sgc_d, sgc_n, sc_b, sc_d, sh_b, sh_d, sh_n,
             SELECTIVE: tl.constexpr, RMS: tl.constexpr, DROP_INPUT: tl.constexpr, HAS_GH: tl.constexpr,
             HAS_GHC: tl.constexpr, NEED_PARAMS: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    """One program per sample: ∂h, ∂c and the per-sample vectors vec[b] = (∂pre (D), ∂x (R), ∂B (N),
    scratch (D)); galog[b] = this sample's ∂A_log (D, N)."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    r = tl.arange(0, BLOCK_R)
    rm = r < R
    st = stats_ptr + b * (1 + R + D + N)
    vb = vec_ptr + b * (D + R + N + D)
    scratch = vb + D + R + N
    c_row = c_ptr + b * sc_b
    s = tl.load(st)
    b_raw = tl.load(st + 1 + R + D + n, mask=nm, other=0.0)
    if SELECTIVE:
        x_grad = tl.zeros([BLOCK_R], dtype=tl.float32)
    b_grad = tl.zeros([BLOCK_N], dtype=tl.float32)
    # pass 1: ∂h, ∂pre, ∂A_log, the direct part of ∂u, and the sums for ∂x and ∂B
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dm = d < D
        m = dm[:, None] & nm[None, :]
        uu = tl.load(c_row + d * sc_d, mask=dm, other=0.0).to(tl.float32) * s
        pre = tl.load(st + 1 + R + d, mask=dm, other=0.0)
        delta = _softplus(pre)
        a = -tl.exp(tl.load(alog_ptr + d[:, None] * N + n[None, :], mask=m, other=0.0).to(tl.float32))
        decay = tl.exp(delta[:, None] * a)
        g = _load_grad(gh_ptr, ghc_ptr, b * sg_b + d[:, None] * sg_d + n[None, :] * sg_n,
                       b * sgc_b + d[:, None] * sgc_d + n[None, :] * sgc_n, m, HAS_GH, HAS_GHC)
        hh = tl.load(h_ptr + b * sh_b + d[:, None] * sh_d + n[None, :] * sh_n, mask=m, other=0.0).to(tl.float32)
        tl.store(gho_ptr + b * D * N + d[:, None] * N + n[None, :], decay * g, mask=m)
        g_decay = g * hh * decay
        g_delta = tl.sum(g_decay * a, axis=1)
        if NEED_PARAMS:
            tl.store(galog_ptr + b * D * N + d[:, None] * N + n[None, :], g_decay * delta[:, None] * a, mask=m)
        if DROP_INPUT:
            u_direct = uu * 0.0
        else:
            g_v = tl.sum(g * b_raw[None, :], axis=1)  # Σ_n g B_n
            g_delta += g_v * uu
            u_direct = g_v * delta
            b_grad += tl.sum(g * (delta * uu)[:, None], axis=0)
        g_pre = g_delta * _softplus_grad(pre)
        tl.store(vb + d, g_pre, mask=dm)
        tl.store(scratch + d, u_direct, mask=dm)
        if SELECTIVE:
            wu = tl.load(up_ptr + d[:, None] * R + r[None, :], mask=dm[:, None] & rm[None, :], other=0.0)
            x_grad += tl.sum(wu.to(tl.float32) * g_pre[:, None], axis=0)
    if SELECTIVE:
        tl.store(vb + D + r, x_grad, mask=rm)
    tl.store(vb + D + R + n, b_grad, mask=nm)
    tl.debug_barrier()
    # pass 2: ∂u = direct + W_downᵀ ∂x + W_Bᵀ ∂B, and Σ ∂u·c for the normalisation
    dot = tl.zeros([BLOCK_D], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dm = d < D
        gu = tl.load(scratch + d, mask=dm, other=0.0)
        if SELECTIVE:
            wd = tl.load(down_ptr + r[:, None] * D + d[None, :], mask=rm[:, None] & dm[None, :], other=0.0)
            gu += tl.sum(wd.to(tl.float32) * x_grad[:, None], axis=0)
            wb = tl.load(bp_ptr + n[:, None] * D + d[None, :], mask=nm[:, None] & dm[None, :], other=0.0)
            gu += tl.sum(wb.to(tl.float32) * b_grad[:, None], axis=0)
        tl.store(scratch + d, gu, mask=dm)
        if RMS:
            dot += gu * tl.load(c_row + d * sc_d, mask=dm, other=0.0).to(tl.float32)
    tl.debug_barrier()
    # pass 3: ∂c through u = s·c
    k = s * s * s * tl.sum(dot, axis=0) / D
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dm = d < D
        gu = tl.load(scratch + d, mask=dm, other=0.0)
        if RMS:
            gu = s * gu - k * tl.load(c_row + d * sc_d, mask=dm, other=0.0).to(tl.float32)
        tl.store(gc_ptr + b * D + d, gu.to(gc_ptr.dtype.element_ty), mask=dm)


@triton.jit
def _tok_bwd_params(vec_ptr, galog_ptr, stats_ptr, c_ptr, gdown_ptr, gup_ptr, gbias_ptr, gbp_ptr, galog_out_ptr,
                    B, D, N, R, sc_b, sc_d,
                    SELECTIVE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    """The parameter gradients of a chunk of D, summed over the batch in a fixed order."""
    pid = tl.program_id(0)
    d = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = d < D
    n = tl.arange(0, BLOCK_N)
    nm = n < N
    r = tl.arange(0, BLOCK_R)
    rm = r < R
    vw = D + R + N + D
    sw = 1 + R + D + N
    acc_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_alog = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_D, BLOCK_R], dtype=tl.float32)
    acc_down = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    acc_wb = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        bb = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
        bm = bb < B
        bd = bm[:, None] & dm[None, :]
        g_pre = tl.load(vec_ptr + bb[:, None] * vw + d[None, :], mask=bd, other=0.0)  # (B, D)
        acc_bias += tl.sum(g_pre, axis=0)
        m3 = bd[:, :, None] & nm[None, None, :]
        acc_alog += tl.sum(tl.load(galog_ptr + bb[:, None, None] * D * N + d[None, :, None] * N + n[None, None, :],
                                   mask=m3, other=0.0), axis=0)
        g_b = tl.load(vec_ptr + bb[:, None] * vw + D + R + n[None, :], mask=bm[:, None] & nm[None, :], other=0.0)
        if SELECTIVE:
            x = tl.load(stats_ptr + bb[:, None] * sw + 1 + r[None, :], mask=bm[:, None] & rm[None, :], other=0.0)
            acc_up += tl.sum(g_pre[:, :, None] * x[:, None, :], axis=0)
            s = tl.load(stats_ptr + bb * sw, mask=bm, other=0.0)
            uu = tl.load(c_ptr + bb[:, None] * sc_b + d[None, :] * sc_d, mask=bd, other=0.0).to(tl.float32)
            uu = uu * s[:, None]
            g_x = tl.load(vec_ptr + bb[:, None] * vw + D + r[None, :], mask=bm[:, None] & rm[None, :], other=0.0)
            acc_down += tl.sum(g_x[:, :, None] * uu[:, None, :], axis=0)
            acc_wb += tl.sum(g_b[:, :, None] * uu[:, None, :], axis=0)
        else:
            acc_b += tl.sum(g_b, axis=0)
    tl.store(gbias_ptr + d, acc_bias, mask=dm)
    tl.store(galog_out_ptr + d[:, None] * N + n[None, :], acc_alog, mask=dm[:, None] & nm[None, :])
    if SELECTIVE:
        tl.store(gup_ptr + d[:, None] * R + r[None, :], acc_up, mask=dm[:, None] & rm[None, :])
        tl.store(gdown_ptr + r[:, None] * D + d[None, :], acc_down, mask=rm[:, None] & dm[None, :])
        tl.store(gbp_ptr + n[:, None] * D + d[None, :], acc_wb, mask=nm[:, None] & dm[None, :])
    elif pid == 0:
        tl.store(gbp_ptr + n, acc_b, mask=nm)


def _token_blocks(d: int, n: int, r: int) -> tuple[int, int, int]:
    block_n = triton.next_power_of_2(n)
    block_d = max(16, min(triton.next_power_of_2(d), MAX_TILE // 2 // block_n))
    return block_d, block_n, max(16, triton.next_power_of_2(max(r, 1)))


def token_update_forward(c, h, dt_down, dt_up, dt_bias, b_param, a_log, rms, drop_input, copy_dtype, eps):
    bsz, d = c.shape
    n = a_log.shape[-1]
    selective = dt_up is not None
    r = dt_down.shape[0] if selective else 0
    dt_down, dt_up, dt_bias, b_param, a_log = _params(dt_down, dt_up, dt_bias, b_param, a_log)
    h_out = c.new_empty((bsz, d, n), dtype=torch.float32)
    h_c = c.new_empty((bsz, d, n), dtype=copy_dtype)
    stats = c.new_empty((bsz, 1 + r + d + n), dtype=torch.float32)
    block_d, block_n, block_r = _token_blocks(d, n, r)
    _tok_fwd[(bsz,)](
        c, h, dt_down if selective else dt_bias, dt_up if selective else dt_bias, dt_bias, b_param, a_log,
        h_out, h_c, stats, d, n, r, eps, *c.stride(), *h.stride(),
        SELECTIVE=selective, RMS=rms, DROP_INPUT=drop_input, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_R=block_r,
    )
    return h_out, h_c, stats


def token_update_backward(grad_h, grad_hc, c, h, dt_down, dt_up, dt_bias, b_param, a_log, stats, rms, drop_input,
                          need_params, eps):
    bsz, d = c.shape
    n = a_log.shape[-1]
    selective = dt_up is not None
    r = dt_down.shape[0] if selective else 0
    dt_down, dt_up, dt_bias, b_param, a_log = _params(dt_down, dt_up, dt_bias, b_param, a_log)
    has_gh, has_ghc = grad_h is not None, grad_hc is not None
    gh = grad_h if has_gh else h
    ghc = grad_hc if has_ghc else h
    f32 = dict(dtype=torch.float32, device=c.device)
    grad_c = torch.empty((bsz, d), dtype=c.dtype, device=c.device)
    grad_hin = torch.empty((bsz, d, n), **f32)
    vec = torch.empty((bsz, d + r + n + d), **f32)
    galog = torch.empty((bsz, d, n) if need_params else (0,), **f32)
    block_d, block_n, block_r = _token_blocks(d, n, r)
    down = dt_down if selective else dt_bias
    up = dt_up if selective else dt_bias
    _tok_bwd[(bsz,)](
        gh, ghc, c, h, down, up, b_param, a_log, stats, grad_c, grad_hin, vec, galog, d, n, r,
        *gh.stride(), *ghc.stride(), *c.stride(), *h.stride(),
        SELECTIVE=selective, RMS=rms, DROP_INPUT=drop_input, HAS_GH=has_gh, HAS_GHC=has_ghc,
        NEED_PARAMS=need_params, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_R=block_r,
    )
    if not need_params:
        return (grad_c, grad_hin, *_no_grads(c, 5))
    g_down, g_up = (torch.empty(dt_down.shape, **f32), torch.empty(dt_up.shape, **f32)) if selective \
        else _no_grads(c, 2)
    g_bias = torch.empty(dt_bias.shape, **f32)
    g_bp = torch.empty(b_param.shape, **f32)
    g_alog = torch.empty(a_log.shape, **f32)
    widest = max(block_n, block_r)
    block_b = _batch_block(bsz, 16 * widest)
    block_dp = max(16, min(triton.next_power_of_2(d), MAX_TILE // (block_b * widest)))
    _tok_bwd_params[(triton.cdiv(d, block_dp),)](
        vec, galog, stats, c, g_down if selective else g_bias, g_up if selective else g_bias, g_bias, g_bp, g_alog,
        bsz, d, n, r, *c.stride(),
        SELECTIVE=selective, BLOCK_B=block_b, BLOCK_D=block_dp, BLOCK_N=block_n, BLOCK_R=block_r,
    )
    grads = [_grad_param(dt_down, g_down) if selective else g_down, _grad_param(dt_up, g_up) if selective else g_up,
             _grad_param(dt_bias, g_bias), _grad_param(b_param, g_bp), _grad_param(a_log, g_alog)]
    return (grad_c, grad_hin, *grads)


