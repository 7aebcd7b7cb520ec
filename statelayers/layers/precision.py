"""The precision the state is computed in, one rule for every layer: float32, or float64 for a float64 model.

The state arithmetic runs in float32 also when the model runs in bfloat16 / float16 (under autocast or cast): the
small decays exp(ΔA) that carry information over many steps do not survive half precision. A float64 model (the
reference tests) keeps float64. Two helpers apply the rule:

* ``state_float(t)``: ``t`` in the state precision that ``t``'s own dtype calls for (half → float32, float32 stays,
  float64 stays; complex dtypes keep their own precision likewise). For inputs and parameters on their way into
  the state arithmetic (S6LA's step, S7's discretisation).
* ``state_like(t, x)``: ``t`` as the *real* dtype that goes with an existing state ``x`` (float64 for float64 and
  complex128 states, float32 otherwise), whatever ``t``'s own dtype. For real terms added to a complex state's
  read-out (S7's skip term D⊙u), where the precision is set by the state, not by ``t``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx

__all__ = ["state_float", "state_like", "without_autocast"]


def state_float(t: torch.Tensor) -> torch.Tensor:
    """`t` in the state's precision: float32, or float64 for a float64 model (reference tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def state_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`t` in the real dtype matching the state `x` (float32, or float64 for float64/complex128 states)."""
    return t.to(torch.float64 if x.dtype in (torch.float64, torch.complex128) else torch.float32)


def without_autocast(t: torch.Tensor):
    """The context the state arithmetic runs in: autocast switched off on `t`'s device, so that a bf16/fp16
    autocast region does not take the matrix products of Δ and B back to half precision.

    Under `torch.fx` symbolic tracing (`t` a Proxy) no context: a graph records operations, not context managers.
    The explicit `state_float` casts stay in the graph, so a traced model computes the state in float32 unless it
    is run under autocast, where its Δ and B products would follow autocast."""
    if isinstance(t, torch.fx.Proxy):
        return contextlib.nullcontext()
    return torch.autocast(device_type=t.device.type, enabled=False)
