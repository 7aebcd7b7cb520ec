"""The S7 layer's discretisation and scan as one custom op (`s7_triton.py` has the kernels).

    s7_scan(Δ, Bu, Λ, τ, lengths, "zoh" | "dirac" | "async", reverse)
      = linear_scan(*discretization.discretize(Λ, Δ, Bu, τ, ...), lengths=lengths, reverse=reverse)

The right-hand side is the readable reference (tests hold them equal, values and gradients). The op forms
Λ̄ = exp(ΛΔτ) and γ·Bu in the kernels instead of writing them (and their gradients) as complex (B, L, P) tensors
first: on a GPU those temporaries cost more memory traffic than the scan. Complex states only (the real-state and
"direct" variants take the reference).
"""

import torch
from torch import Tensor

from ..discretization import DISCRETIZATION_CODES
from . import check_device

__all__ = ["s7_scan"]


def _kernels():
    from . import s7_triton

    return s7_triton


@torch.library.custom_op("statelayers::s7_scan", mutates_args=())
def _s7_scan(delta: Tensor, bu: Tensor, lam: Tensor, tau: Tensor | None, lengths: Tensor | None, mode: int,
             reverse: bool) -> Tensor:
    return _kernels().s7_scan_forward(delta, bu, lam, tau, lengths, mode, reverse)


@_s7_scan.register_fake
def _(delta, bu, lam, tau, lengths, mode, reverse):
    return delta.new_empty(delta.shape, dtype=torch.complex64)


@torch.library.custom_op("statelayers::s7_scan_backward", mutates_args=())
def _s7_scan_backward(gy: Tensor, x: Tensor, delta: Tensor, bu: Tensor, lam: Tensor, tau: Tensor | None,
                      lengths: Tensor | None, mode: int, reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _kernels().s7_scan_backward(gy, x, delta, bu, lam, tau, lengths, mode, reverse)


@_s7_scan_backward.register_fake
def _(gy, x, delta, bu, lam, tau, lengths, mode, reverse):
    return delta.new_empty(delta.shape, dtype=torch.float32), torch.empty_like(bu), torch.empty_like(lam)


def _setup(ctx, inputs, output):
    delta, bu, lam, tau, lengths, mode, reverse = inputs
    ctx.save_for_backward(delta, bu, lam, tau, lengths, output)
    ctx.mode, ctx.reverse = mode, reverse


@torch.autograd.function.once_differentiable
def _backward(ctx, gy):
    delta, bu, lam, tau, lengths, x = ctx.saved_tensors
    g_delta, g_bu, g_lam = _s7_scan_backward(gy.contiguous(), x, delta, bu, lam, tau, lengths, ctx.mode, ctx.reverse)
    need = ctx.needs_input_grad
    return (g_delta if need[0] else None, g_bu if need[1] else None, g_lam if need[2] else None,
            None, None, None, None)


_s7_scan.register_autograd(_backward, setup_context=_setup)


def s7_scan(delta: Tensor, bu: Tensor, lam: Tensor, tau: Tensor | None = None, lengths: Tensor | None = None,
            discretization: str = "zoh", reverse: bool = False) -> Tensor:
    """The S7 states x (B, L, P) complex64 from Δ (B, L, P) float32 (any strides: S5's broadcast Δ too), the
    input term Bu (2, B, L, P) float32 (real and imaginary parts), the eigenvalues Λ (P,) complex64, the time
    steps τ (B, L) float32 or None, and the valid `lengths` (B,) integers or None. τ gets no gradient."""
    if discretization not in DISCRETIZATION_CODES:
        raise ValueError(f"discretization must be one of {tuple(DISCRETIZATION_CODES)}, got {discretization!r}")
    if delta.dtype != torch.float32 or bu.dtype != torch.float32 or lam.dtype != torch.complex64:
        raise ValueError(f"s7_scan takes float32 Δ and Bu and complex64 Λ, got {delta.dtype}, {bu.dtype}, {lam.dtype}")
    check_device(delta)
    if lengths is not None:
        lengths = lengths.to(device=delta.device, dtype=torch.int64).contiguous()
    tau = None if tau is None else tau.to(torch.float32)
    return _s7_scan(delta, bu, lam, tau, lengths, DISCRETIZATION_CODES[discretization], bool(reverse))
