"""The S6LA state update and read-out as custom ops: one op each for autograd, `torch.compile` and `torch.export`.

The reference is `selective.conv_state_update` / `selective.token_state_update` (torch, autograd) and
`TokenStateUnit.read`; these ops compute the same functions (tests hold them equal, values and gradients) with
far fewer dispatched ops, which is what an S6LA training step pays for on a GPU:

* `conv_update(step, h, u, rms)` — the CNN update. Two Triton kernels forward: a reduction pass over `u`
  (per-channel sums and the sum of squares, split over the pixels of each sample) and an element-wise pass whose
  prologue finishes the reduction and computes Δ, B from the summary (the N×N matrix-vector products are done in
  registers by every program); backward, three: a reduction of g·h and g·u, an element-wise pass writing ∂u and
  ∂h, and the batch reduction of the parameter gradients.
* `token_update(step, h, c, rms)` — the token-model update, one program per sample (the state is (D, N)):
  one kernel forward, two backward (per sample; then the parameter gradients over the batch).
* `token_read(x, h, w_c, n_prefix)` — `x + (x W_Cᵀ) hᵀ` on the tokens after the first `n_prefix`: two GEMMs
  (cuBLAS), the second accumulating into `x` (no separate add); its backward is four GEMMs.

Both updates return the new state in float32 and, from the same pass, its copy in the compute dtype (the dtype of
`u` or `c`), which the next conv or the read-out takes: no separate cast of a whole state. The kernels read their
inputs in their own dtype and strides (NCHW or channels_last), compute in float32, and accept the ablations that
change the update: `selective=False` (constant Δ, B), `rms=False` and `drop_input` (the "inject" diagnostic
ablation: h' = exp(ΔA) ⊙ h). Parameter gradients are reduced over the batch in a fixed order (deterministic).
"""

# no `from __future__ import annotations`: torch.library reads the ops' schemas from real annotations

import torch
from torch import Tensor

from ..selective import RMS_EPS, SelectiveParams
from . import check_device

__all__ = ["conv_update", "token_update", "token_read", "compute_dtype"]

def _kernels():
    # imported on first use: Triton decides between compiled and interpreted kernels when they are defined,
    # from TRITON_INTERPRET, so the variable only has to be set before the first fused call
    from . import s6la_triton

    return s6la_triton


def _step_params(step: SelectiveParams) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor, Tensor]:
    """(dt_down weight or None, dt_up weight or None, dt bias, B weight or constant B, A_log)."""
    if step.selective:
        down = None if step.dt_down is None else step.dt_down.weight
        return down, step.dt_up.weight, step.dt_up.bias, step.wB.weight, step.A_log
    return None, None, step.dt_bias, step.B, step.A_log


# ------------------------------------------------------------------------------------------------ CNN update


@torch.library.custom_op("statelayers::s6la_conv_update", mutates_args=())
def _conv_update(
    u: Tensor, h: Tensor, dt_weight: Tensor | None, dt_bias: Tensor, b_param: Tensor, a_log: Tensor,
    rms: bool, drop_input: bool, copy_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    check_device(u)
    return _kernels().conv_update_forward(u, h, dt_weight, dt_bias, b_param, a_log, rms, drop_input, copy_dtype,
                                          RMS_EPS)


@_conv_update.register_fake
def _(u, h, dt_weight, dt_bias, b_param, a_log, rms, drop_input, copy_dtype):
    b, n = u.shape[:2]
    return (torch.empty_like(u, dtype=torch.float32), torch.empty_like(u, dtype=copy_dtype),
            u.new_empty((b, 4, n), dtype=torch.float32))


@torch.library.custom_op("statelayers::s6la_conv_update_backward", mutates_args=())
def _conv_update_backward(
    grad_h: Tensor | None, grad_hc: Tensor | None, u: Tensor, h: Tensor, dt_weight: Tensor | None,
    dt_bias: Tensor, b_param: Tensor, a_log: Tensor, stats: Tensor, rms: bool, drop_input: bool,
    need_params: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _kernels().conv_update_backward(grad_h, grad_hc, u, h, dt_weight, dt_bias, b_param, a_log, stats, rms,
                                           drop_input, need_params, RMS_EPS)


@_conv_update_backward.register_fake
def _(grad_h, grad_hc, u, h, dt_weight, dt_bias, b_param, a_log, stats, rms, drop_input, need_params):
    def like(p):
        return torch.empty_like(p) if need_params and p is not None else p.new_empty(0) if p is not None \
            else u.new_empty(0)
    return (torch.empty_like(u), torch.empty_like(u, dtype=torch.float32), like(dt_weight), like(dt_bias),
            like(b_param), like(a_log))


def _conv_setup(ctx, inputs, output):
    u, h, dt_weight, dt_bias, b_param, a_log, rms, drop_input, _ = inputs
    ctx.save_for_backward(u, h, dt_weight, dt_bias, b_param, a_log, output[2])
    ctx.flags = (rms, drop_input)
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _conv_backward(ctx, grad_h, grad_hc, _grad_stats):
    u, h, dt_weight, dt_bias, b_param, a_log, stats = ctx.saved_tensors
    need = ctx.needs_input_grad
    if grad_h is None and grad_hc is None:
        return (None,) * 9
    gu, gh, gw, gb, gbp, ga = _conv_update_backward(
        grad_h, grad_hc, u, h, dt_weight, dt_bias, b_param, a_log, stats, *ctx.flags, any(need[2:6])
    )
    return (gu if need[0] else None, gh if need[1] else None, gw if need[2] else None, gb if need[3] else None,
            gbp if need[4] else None, ga if need[5] else None, None, None, None)


_conv_update.register_autograd(_conv_backward, setup_context=_conv_setup)


def conv_update(
    step: SelectiveParams, h: Tensor, u: Tensor, rms: bool = True, drop_input: bool = False,
    copy_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """`selective.conv_state_update(step, h, u, rms).h` and its copy in `copy_dtype` (default `u.dtype`), fused.

    `drop_input` drops the input term (the "inject" ablation): the result is the decayed state alone."""
    down, dt_weight, dt_bias, b_param, a_log = _step_params(step)
    if down is not None:
        raise ValueError("the fused CNN update takes a full-rank Δ projection (dt_rank=None)")
    h_new, h_c, _ = _conv_update(u, h, dt_weight, dt_bias, b_param, a_log, rms, drop_input, copy_dtype or u.dtype)
    return h_new, h_c


# ------------------------------------------------------------------------------------------- token update


@torch.library.custom_op("statelayers::s6la_token_update", mutates_args=())
def _token_update(
    c: Tensor, h: Tensor, dt_down: Tensor | None, dt_up: Tensor | None, dt_bias: Tensor, b_param: Tensor,
    a_log: Tensor, rms: bool, drop_input: bool, copy_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    check_device(c)
    return _kernels().token_update_forward(c, h, dt_down, dt_up, dt_bias, b_param, a_log, rms, drop_input,
                                           copy_dtype, RMS_EPS)


@_token_update.register_fake
def _(c, h, dt_down, dt_up, dt_bias, b_param, a_log, rms, drop_input, copy_dtype):
    b, d = c.shape
    n = a_log.shape[-1]
    r = dt_down.shape[0] if dt_down is not None else 0
    return (c.new_empty((b, d, n), dtype=torch.float32), c.new_empty((b, d, n), dtype=copy_dtype),
            c.new_empty((b, 1 + r + d + n), dtype=torch.float32))


@torch.library.custom_op("statelayers::s6la_token_update_backward", mutates_args=())
def _token_update_backward(
    grad_h: Tensor | None, grad_hc: Tensor | None, c: Tensor, h: Tensor, dt_down: Tensor | None,
    dt_up: Tensor | None, dt_bias: Tensor, b_param: Tensor, a_log: Tensor, stats: Tensor, rms: bool,
    drop_input: bool, need_params: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _kernels().token_update_backward(grad_h, grad_hc, c, h, dt_down, dt_up, dt_bias, b_param, a_log, stats,
                                            rms, drop_input, need_params, RMS_EPS)


@_token_update_backward.register_fake
def _(grad_h, grad_hc, c, h, dt_down, dt_up, dt_bias, b_param, a_log, stats, rms, drop_input, need_params):
    def like(p):
        return torch.empty_like(p) if need_params and p is not None else c.new_empty(0, dtype=torch.float32)
    b, d = c.shape
    return (torch.empty_like(c), c.new_empty((b, d, a_log.shape[-1]), dtype=torch.float32), like(dt_down),
            like(dt_up), like(dt_bias), like(b_param), like(a_log))


def _token_setup(ctx, inputs, output):
    c, h, dt_down, dt_up, dt_bias, b_param, a_log, rms, drop_input, _ = inputs
    ctx.save_for_backward(c, h, dt_down, dt_up, dt_bias, b_param, a_log, output[2])
    ctx.flags = (rms, drop_input)
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _token_backward(ctx, grad_h, grad_hc, _grad_stats):
    c, h, dt_down, dt_up, dt_bias, b_param, a_log, stats = ctx.saved_tensors
    need = ctx.needs_input_grad
    if grad_h is None and grad_hc is None:
        return (None,) * 10
    grads = _token_update_backward(grad_h, grad_hc, c, h, dt_down, dt_up, dt_bias, b_param, a_log, stats,
                                   *ctx.flags, any(need[2:7]))
    return (*(g if n else None for g, n in zip(grads, need[:7])), None, None, None)


_token_update.register_autograd(_token_backward, setup_context=_token_setup)


def token_update(
    step: SelectiveParams, h: Tensor, c: Tensor, rms: bool = True, drop_input: bool = False,
    copy_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """`selective.token_state_update(step, h, c, rms).h` and its copy in `copy_dtype` (default `c.dtype`), fused."""
    down, up, dt_bias, b_param, a_log = _step_params(step)
    if step.selective and down is None:
        raise ValueError("the fused token update takes a low-rank Δ projection (dt_rank=r)")
    h_new, h_c, _ = _token_update(c, h, down, up, dt_bias, b_param, a_log, rms, drop_input, copy_dtype or c.dtype)
    return h_new, h_c


# ---------------------------------------------------------------------------------------------- token read
# The GEMMs run in the dtype of `h` (the state's copy in the compute dtype: bf16 under autocast), the output is in
# the tokens' dtype: under autocast the reference computes `tokens + bmm(wC(tokens), h)` the same way, its
# `wC` and `bmm` in bf16 and the sum in the tokens' (float32) dtype. Autocast is off inside: the dtypes are these.


@torch.library.custom_op("statelayers::s6la_token_read", mutates_args=())
def _token_read(x: Tensor, h: Tensor, w_c: Tensor, n_prefix: int) -> tuple[Tensor, Tensor]:
    b, length, d = x.shape
    with torch.autocast(x.device.type, enabled=False):
        c = torch.mm(x.reshape(-1, d).to(h.dtype), w_c.to(h.dtype).t()).view(b, length, -1)  # C = x W_Cᵀ
        if n_prefix:
            c[:, :n_prefix] = 0  # prefix tokens read nothing: out = x there
        if x.dtype == h.dtype:
            return torch.baddbmm(x, c, h.transpose(1, 2)), c  # the sum accumulated by the GEMM
        return x + torch.bmm(c, h.transpose(1, 2)), c


@_token_read.register_fake
def _(x, h, w_c, n_prefix):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((*x.shape[:2], w_c.shape[0]), dtype=h.dtype))


@torch.library.custom_op("statelayers::s6la_token_read_backward", mutates_args=())
def _token_read_backward(
    grad: Tensor, x: Tensor, h: Tensor, w_c: Tensor, c: Tensor, n_prefix: int
) -> tuple[Tensor, Tensor, Tensor]:
    b, length, d = x.shape
    with torch.autocast(x.device.type, enabled=False):
        g = grad.to(h.dtype)
        gc = torch.bmm(g, h)  # ∂C = ∂out h
        if n_prefix:
            gc[:, :n_prefix] = 0
        gc2 = gc.view(-1, gc.shape[-1])
        w = w_c.to(h.dtype)
        if grad.dtype == h.dtype:
            grad_x = torch.addmm(grad.reshape(-1, d), gc2, w)  # ∂out + ∂C W_C
        else:
            grad_x = grad.reshape(-1, d) + torch.mm(gc2, w)
        grad_w = torch.mm(gc2.t(), x.reshape(-1, d).to(h.dtype)).to(w_c.dtype)  # Σ ∂Cᵀ x
        grad_h = torch.bmm(g.transpose(1, 2), c)  # ∂outᵀ C: (B, D, N)
    return grad_x.view(b, length, d), grad_h, grad_w


@_token_read_backward.register_fake
def _(grad, x, h, w_c, c, n_prefix):
    return (torch.empty_like(x, memory_format=torch.contiguous_format, dtype=grad.dtype), torch.empty_like(h),
            torch.empty_like(w_c))


def _read_setup(ctx, inputs, output):
    x, h, w_c, n_prefix = inputs
    ctx.save_for_backward(x, h, w_c, output[1])
    ctx.n_prefix = n_prefix
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zeros for the unused C


def _read_backward(ctx, grad, _grad_c):
    if grad is None:
        return None, None, None, None
    x, h, w_c, c = ctx.saved_tensors
    grad_x, grad_h, grad_w = _token_read_backward(grad, x, h, w_c, c, ctx.n_prefix)
    need = ctx.needs_input_grad
    return grad_x if need[0] else None, grad_h if need[1] else None, grad_w if need[2] else None, None


_token_read.register_autograd(_read_backward, setup_context=_read_setup)


def token_read(x: Tensor, h: Tensor, w_c: Tensor, n_prefix: int = 0) -> Tensor:
    """`x + (x W_Cᵀ) hᵀ` for the tokens after the first `n_prefix` (which pass unchanged), in `x.dtype`.

    `x` (B, L, D); `h` (B, D, N), the state's copy in the compute dtype, in which the GEMMs run; `w_c` (N, D)."""
    return _token_read(x, h, w_c, n_prefix)[0]


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype a matmul of `t` runs in here: the autocast dtype where autocast is on, else `t.dtype`."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


# MACs of the GEMM op for FlopCounterMode (count_macs): the update ops are element-wise, their matrix-vector
# products negligible next to the state they update
try:
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.statelayers.s6la_token_read)
    def _read_flops(x_shape, h_shape, w_shape, n_prefix, *args, **kwargs) -> int:
        b, length, d = x_shape
        return 2 * 2 * b * length * d * w_shape[0]  # two GEMMs of B·L·D·N multiply-adds

    @register_flop_formula(torch.ops.statelayers.s6la_token_read_backward)
    def _read_backward_flops(grad_shape, x_shape, h_shape, w_shape, c_shape, n_prefix, *args, **kwargs) -> int:
        b, length, d = x_shape
        return 4 * 2 * b * length * d * w_shape[0]  # ∂C, ∂x, ∂W_C and ∂h: four GEMMs
except ImportError:  # torch without register_flop_formula: count_macs then misses the read-out's GEMMs
    pass
