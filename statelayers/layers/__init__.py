"""The layers and their math, shared by both directions of the library.

* ``selective``: the selective-SSM step (Δ, B from the input; ``h ← exp(ΔA)⊙h + ΔB⊙u``) and S6LA's two state
  updates across depth (feature maps, tokens), the readable reference of the fused kernels;
* ``scan``: the linear recurrence ``h_k = a_k ⊙ h_{k-1} + b_k`` across time (reference loop, numba, torch, Triton);
* ``s7``: the S7 layer and its S5-style block;
* ``kernels``: the custom ops and Triton kernels that GPUs run (``STATELAYERS_KERNELS`` chooses the path).
"""

from .s7 import S7, S7Block, hippo_legs_eigenvalues, stable_map, stable_map_inverse
from .scan import linear_scan, linear_scan_reference, numba_available
from .selective import (
    SelectiveParams,
    StepTerms,
    conv_state_update,
    mamba_dt_bias,
    s4d_real_a_log,
    ssm_step,
    state_float,
    token_state_update,
)

__all__ = [
    "S7", "S7Block", "SelectiveParams", "StepTerms", "conv_state_update", "hippo_legs_eigenvalues", "linear_scan",
    "linear_scan_reference", "mamba_dt_bias", "numba_available", "s4d_real_a_log", "ssm_step", "stable_map",
    "stable_map_inverse", "state_float", "token_state_update",
]
