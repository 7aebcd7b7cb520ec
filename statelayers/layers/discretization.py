"""From continuous-time eigenvalues to the scan's elements: the stable map and the discretisations (S7).

    stable_map(w)  = -1 / (a w² + b)                     Re Λ for every real w: negative, bounded by -1/b
    Λ̄_k = exp(Λ Δ_k τ_k)                                |Λ̄_k| ≤ 1 whenever Re Λ ≤ 0
    γ_k = (Λ̄_k − 1)/Λ (zoh) · 1 (dirac) · (exp(Λ Δ_k) − 1)/Λ (async)
    (a_k, b_k) = (Λ̄_k, γ_k ⊙ B_k u_k)                   the elements of `scan.linear_scan`

The stable map is StableSSM's (Wang & Li 2024), which S7 adopts: applied to the real part of the continuous-time
eigenvalue, it keeps every discretised transition inside the unit circle for every input. `DISCRETIZATIONS` and
`TRANSITIONS` name the variants the S7 layer (`s7.py`) offers; `discretize` is the readable reference of the fused
kernels (`kernels/s7_ops.s7_scan`), which compute the same elements inside the scan and take the discretisation as
its code in `DISCRETIZATION_CODES`.
"""

from __future__ import annotations

import torch

__all__ = [
    "DISCRETIZATIONS", "DISCRETIZATION_CODES", "TRANSITIONS", "discretize", "stable_map", "stable_map_inverse",
]

DISCRETIZATIONS = ("zoh", "dirac", "async")
# the integer each discretisation is passed to the fused S7 kernels as (kernels/s7_triton.py tests MODE == 0, 2)
DISCRETIZATION_CODES = {"zoh": 0, "dirac": 1, "async": 2}
# how S7 maps its parameter w to Re Λ: stable_map, -exp(w), w clipped below zero, or the paper's discrete map
TRANSITIONS = ("stable", "exp", "clip", "direct")


def stable_map(w: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """StableSSM's reparameterisation `-1 / (a w² + b)`: negative for every w, bounded by -1/b."""
    return -1.0 / (a * w.square() + b)


def stable_map_inverse(lam: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The w ≥ 0 with `stable_map(w) = lam`, for `-1/b ≤ lam < 0`."""
    if (lam >= 0).any() or (lam < -1.0 / b).any():
        raise ValueError(f"stable_map reaches only [-1/b, 0) = [{-1.0 / b:g}, 0); got values in "
                         f"[{lam.min().item():g}, {lam.max().item():g}]")
    return torch.sqrt((-1.0 / lam - b) / a)


def discretize(lam: torch.Tensor, delta: torch.Tensor, bu: torch.Tensor, tau: torch.Tensor | None,
               discretization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan's elements (Λ̄_k, γ_k ⊙ B_k u_k): Λ̄ = exp(Λ Δ τ) and γ = (Λ̄ − 1)/Λ (zoh) · 1 (dirac) ·
    (exp(Λ Δ) − 1)/Λ (async: the input is normalised by the unit step; the gap only decays). The readable
    reference of `kernels/s7_ops.s7_scan`, which computes them inside the scan."""
    step = delta if tau is None else delta * tau.to(delta.dtype)[..., None]
    lam_bar = torch.exp(lam * step)
    if discretization == "zoh":
        bu = (lam_bar - 1.0) / lam * bu
    elif discretization == "async":
        bu = (torch.exp(lam * delta) - 1.0) / lam * bu
    return lam_bar, bu
