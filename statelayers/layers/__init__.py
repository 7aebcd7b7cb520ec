"""The layers and their math, shared by both directions of the library (S6LA across depth, S7 across time).

* ``init``: the parameter inits (S4D-real ``A_log``, Mamba's Δ bias, HiPPO-LegS eigenvalues);
* ``precision``: the precision the state is computed in (float32, float64 for float64 models);
* ``selective``: the selective-SSM step (Δ, B from the input; ``h ← exp(ΔA)⊙h + ΔB⊙u``) and S6LA's two state
  updates across depth (feature maps, tokens), the readable reference of the fused kernels;
* ``discretization``: the stable map of S7's eigenvalues and the discretisations (zoh, dirac, async) that turn
  them into the scan's elements;
* ``scan``: the linear recurrence ``h_k = a_k ⊙ h_{k-1} + b_k`` across time (reference loop, numba, torch, Triton);
* ``padding``: how padded batches are written (``PAD_TOKEN``) and the lengths → valid-steps mask;
* ``s7``: the S7 layer and its S5-style block;
* ``mamba``: S6, Mamba's block (the Mamba baseline) on the same scan and selective-SSM step;
* ``kernels``: the custom ops and Triton kernels that GPUs run (``STATELAYERS_KERNELS`` chooses the path).
"""

from .discretization import discretize, stable_map, stable_map_inverse
from .init import hippo_legs_eigenvalues, mamba_dt_bias, s4d_real_a_log
from .mamba import S6, S6Block
from .padding import PAD_TOKEN, valid_mask
from .precision import state_float, state_like
from .s7 import S7, S7Block
from .scan import linear_scan, linear_scan_reference, numba_available
from .selective import SelectiveParams, StepTerms, conv_state_update, ssm_step, token_state_update

__all__ = [
    "PAD_TOKEN", "S6", "S6Block", "S7", "S7Block", "SelectiveParams", "StepTerms", "conv_state_update", "discretize",
    "hippo_legs_eigenvalues", "linear_scan", "linear_scan_reference", "mamba_dt_bias", "numba_available",
    "s4d_real_a_log", "ssm_step", "stable_map", "stable_map_inverse", "state_float", "state_like",
    "token_state_update", "valid_mask",
]
