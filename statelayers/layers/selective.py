"""The selective state-space step shared by every S6LA variant.

One step of a diagonal selective SSM, discretised as in Mamba:

    A  = -exp(A_log)                 diagonal, A_log initialised to log(1..N)  (S4D-real)
    Δ  = softplus(W_Δ z + b_Δ)        input-dependent step size, b_Δ from Mamba's dt init
    B  = W_B z                        input-dependent input matrix
    Ā  = exp(Δ A)                     zero-order hold
    B̄  = Δ B                          Euler
    h' = Ā ⊙ h + B̄ ⊙ u

`z` is a summary of the current layer output (a pooled feature map, a class token) and `u` is
the signal that enters the state. How Δ, B and u broadcast against `h` depends on the backbone,
so callers shape them and call `ssm_step`; the parameters and numerics live here, the inits in
`init.py` (shared with S7) and the precision rule in `precision.py`. The state arithmetic always
runs in float32, also under autocast: exp(ΔA) of a bf16 Δ loses the small decays that carry
information across many steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .init import mamba_dt_bias, s4d_real_a_log
from .precision import state_float, without_autocast

# s4d_real_a_log, mamba_dt_bias and state_float are defined in init.py and precision.py; they stay listed here
# because this module is also the old import path `statelayers.ssm` (statelayers._compat), star imports included
__all__ = [
    "s4d_real_a_log", "mamba_dt_bias", "SelectiveParams", "StepTerms", "ssm_step", "state_float",
    "conv_state_update", "token_state_update", "RMS_EPS",
]

# the precision follows the input's dtype, which torch.fx symbolic tracing does not know: a traced graph calls
# state_float as one step, which picks the dtype when the graph runs
torch.fx.wrap("state_float")

RMS_EPS = 1e-6  # the epsilon of S6LA's RMS normalisation of the state input (the fused kernels take the same)


class StepTerms(NamedTuple):
    """The new state, its decayed part and the step size, kept for diagnostics and ablations (no extra compute)."""

    h: torch.Tensor
    decay: torch.Tensor  # exp(ΔA) ⊙ h_prev
    delta: torch.Tensor  # Δ, as broadcast against the state

    @property
    def inject(self) -> torch.Tensor:
        """The input term ΔB ⊙ u (recomputed as h - decay; diagnostics only)."""
        return self.h - self.decay


def ssm_step(h: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> StepTerms:
    """`h' = exp(delta*A) * h + (delta*b) * u`, all arguments broadcastable, computed in float32.

    `delta` and `b` are usually small (one value per sample and state channel) while `u` and `h`
    are state-sized: `delta*b` is formed first and the input term is fused into one addcmul, so
    the step makes two passes over state-sized memory.
    """
    with without_autocast(h):
        delta = state_float(delta)
        decay = torch.exp(delta * state_float(A)) * state_float(h)
        return StepTerms(torch.addcmul(decay, delta * state_float(b), state_float(u)), decay, delta)


class SelectiveParams(nn.Module):
    """Δ, B and A of one selective SSM step.

    Args:
        d_in: width of the summary vector `z` that Δ and B are computed from.
        d_delta: number of independent step sizes (N for CNN states, D for token states).
        d_state: N, the state size; B has N entries.
        a_shape: shape of `A_log` (its last axis must be N); defaults to `(d_state,)`.
        dt_rank: None for a full `d_in → d_delta` Δ projection, an int r for Mamba's low-rank
            `d_in → r → d_delta`.
        selective: False makes Δ and B learned constants (the paper's "w/o selective" ablation).
        dt_min, dt_max, dt_floor: range of the initial step sizes (Mamba's dt init).
    """

    def __init__(
        self,
        d_in: int,
        d_delta: int,
        d_state: int,
        a_shape: tuple[int, ...] | None = None,
        dt_rank: int | None = None,
        selective: bool = True,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
    ):
        super().__init__()
        a_shape = tuple(a_shape or (d_state,))
        if a_shape[-1] != d_state:
            raise ValueError(f"A_log's last axis must be d_state={d_state}, got shape {a_shape}")
        self.d_in, self.d_delta, self.d_state = d_in, d_delta, d_state
        self.selective = selective
        self.dt_range = (dt_min, dt_max, dt_floor)
        self.A_log = nn.Parameter(s4d_real_a_log(d_state, *a_shape[:-1]))
        if selective:
            if dt_rank is None:
                self.dt_down = None
                self.dt_up = nn.Linear(d_in, d_delta)
            else:
                self.dt_down = nn.Linear(d_in, dt_rank, bias=False)
                self.dt_up = nn.Linear(dt_rank, d_delta)
            self.wB = nn.Linear(d_in, d_state, bias=False)
        else:
            self.dt_bias = nn.Parameter(torch.zeros(d_delta))
            self.B = nn.Parameter(torch.ones(d_state))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's init. Call again after a backbone's generic re-init, which would overwrite it."""
        self.A_log.copy_(s4d_real_a_log(self.d_state, *self.A_log.shape[:-1]))
        bias = mamba_dt_bias(self.d_delta, *self.dt_range)
        if self.selective:
            r = self.dt_up.in_features
            nn.init.uniform_(self.dt_up.weight, -(r**-0.5), r**-0.5)
            self.dt_up.bias.copy_(bias)
            if self.dt_down is not None:
                self.dt_down.reset_parameters()
            self.wB.reset_parameters()
        else:
            self.dt_bias.copy_(bias)
            self.B.fill_(1.0)

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(state_float(self.A_log))

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "dt_bias" if not self.selective else "dt_up.bias"}

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Δ of shape (batch, d_delta) and B of shape (batch, d_state), both in state precision."""
        if not self.selective:
            delta = F.softplus(state_float(self.dt_bias)).expand(z.shape[0], -1)
            # repeat, not expand: a view of a parameter made under no_grad claims requires_grad without a
            # grad_fn, which breaks tools that hook module outputs (FlopCounterMode's module tracker)
            return delta, state_float(self.B).repeat(z.shape[0], 1)
        # in state precision also under autocast: these are (batch, d_in) matrix-vector products, whose cost
        # is nothing next to the precision of Δ, which sets the decay exp(ΔA) (the fused kernels do the same)
        with without_autocast(z):
            z = state_float(z)
            x = z if self.dt_down is None else F.linear(z, state_float(self.dt_down.weight))
            delta = F.softplus(F.linear(x, state_float(self.dt_up.weight), state_float(self.dt_up.bias)))
            return delta, F.linear(z, state_float(self.wB.weight))


# -- the two S6LA updates: the readable reference of the fused kernels in `kernels/s6la_ops.py` ------------------


def conv_state_update(step: SelectiveParams, h: torch.Tensor, u: torch.Tensor, rms: bool = True) -> StepTerms:
    """S6LA's update of a spatial state `h` (B, N, H, W) from `u` (B, N, H, W), a projection of a block's output.

        s  = 1 / RMS(u) per sample over (N, H, W)   (rms=True; else s = 1)
        z  = s · mean_{H,W}(u)                     the summary that Δ and B are computed from
        Δ, B = step(z)
        h' = exp(ΔA) ⊙ h + (Δ · s·B) ⊙ u           i.e. u enters normalised, u_n = s·u

    `s` is folded into the (batch, N) coefficients instead of materialising `u_n` (one pass over `u` fewer).
    """
    u = state_float(u)
    z = u.mean(dim=(2, 3))
    if rms:
        # the per-sample size from the shape, not u[0]: an empty batch (B = 0) passes through like timm's models
        n = u.shape[1] * u.shape[2] * u.shape[3]
        s = torch.rsqrt(torch.linalg.vector_norm(u, dim=(1, 2, 3)).square() / n + RMS_EPS)[:, None]
        z = z * s
    delta, b = step(z)
    if rms:
        b = b * s
    return ssm_step(h, delta[:, :, None, None], step.A[:, None, None], b[:, :, None, None], u)


def token_state_update(step: SelectiveParams, h: torch.Tensor, c: torch.Tensor, rms: bool = True) -> StepTerms:
    """S6LA's update of a token-model state `h` (B, D, N) from a summary token `c` (B, D).

        u  = c / RMS(c) per sample over D            (rms=True; else u = c)
        Δ, B = step(u)                               Δ ∈ (B, D), B ∈ (B, N)
        h' = exp(Δ ⊗ A) ⊙ h + (Δ ⊙ u) ⊗ B            A ∈ (D, N)
    """
    u = state_float(c)
    if rms:
        u = u * torch.rsqrt(u.square().mean(dim=-1, keepdim=True) + RMS_EPS)
    delta, b = step(u)
    return ssm_step(h, delta[:, :, None], step.A, b[:, None, :], u[:, :, None])
