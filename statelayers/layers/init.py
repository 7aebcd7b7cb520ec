"""The initialisations of the state-space parameters, shared by S6LA and S7.

* ``s4d_real_a_log``: S4D-real's diagonal ``A = -(1..N)``, stored as ``A_log = log(1..N)`` (Mamba; S6LA's A);
* ``mamba_dt_bias``: the bias whose softplus is a log-uniform step size Δ (Mamba's dt init; S6LA's and S7's Δ);
* ``hippo_legs_eigenvalues``: the eigenvalues of HiPPO-LegS's normal part (S5's init; S7's continuous-time Λ).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["s4d_real_a_log", "mamba_dt_bias", "hippo_legs_eigenvalues"]


def s4d_real_a_log(d_state: int, *lead: int) -> torch.Tensor:
    """`log(1..N)` along the last axis, broadcast over `lead` axes (Mamba's `A_log` init)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32).log()
    return a.expand(*lead, d_state).clone()


def mamba_dt_bias(
    n: int, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bias `b` with softplus(b) = dt, dt log-uniform in [dt_min, dt_max] and floored at dt_floor."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    # inverse of softplus: b = dt + log(1 - exp(-dt))
    return (dt + torch.log(-torch.expm1(-dt))).float()


def hippo_legs_eigenvalues(block: int) -> np.ndarray:
    """Eigenvalues of the normal part of HiPPO-LegS of size `block` (S5's initialisation).

    HiPPO-LegS is normal plus low rank: S = A + p pᵀ with p_n = sqrt(n + 1/2) is -I/2 plus a skew
    matrix, so every eigenvalue has real part -1/2 and the imaginary parts are those of the skew part.
    """
    n = np.arange(block)
    q = np.sqrt(2 * n + 1.0)
    a = -np.tril(np.outer(q, q), -1) - np.diag(n + 1.0)
    p = np.sqrt(n + 0.5)
    s = a + np.outer(p, p)
    skew = s - np.diag(np.diag(s))
    imag = np.linalg.eigvalsh(-1j * skew)  # Hermitian: -i × real skew
    return np.diag(s).mean() + 1j * imag
