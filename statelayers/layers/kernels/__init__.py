"""The kernels that GPUs run, and the setting that chooses between them and the torch references.

* `s6la_ops.py` / `s6la_triton.py`: S6LA's two state updates (and the token read-out) as custom ops with fused
  Triton kernels; the readable reference is `layers/selective.py`;
* `scan_triton.py`: the Triton path of `layers/scan.linear_scan` (`impl="triton"`);
* `s7_ops.py` / `s7_triton.py`: the S7 layer's discretisation fused into the scan; the readable reference is
  `layers/discretization.discretize` followed by `linear_scan`.

Which implementation the S6LA state update (and S7's fused scan) runs:

    STATELAYERS_KERNELS=auto    (default) fused kernels for CUDA tensors when Triton imports, torch elsewhere
    STATELAYERS_KERNELS=torch   the torch reference everywhere
    STATELAYERS_KERNELS=triton  the fused kernels on every device: on CPU this needs TRITON_INTERPRET=1
                                (Triton's interpreter, slow; it is how CI tests the kernels without a GPU)

The variable is read when `statelayers` is imported; `set_kernel_mode` and `use_kernels` change the setting
later. The fused path (`s6la_ops.py`) computes the same function as the torch reference in `selective.py` (tests
hold them equal); it exists because on a GPU the reference's many small ops, not its arithmetic, set the time of
an S6LA training step (BENCHMARKS.md, "S6LA at GPU speed"). Float64 models always run the reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch
import torch.fx

__all__ = [
    "MODES", "kernel_mode", "set_kernel_mode", "use_kernels", "triton_available", "fused_path", "check_device",
]

MODES = ("auto", "torch", "triton")
ENV = "STATELAYERS_KERNELS"
# dtypes the kernels read; the state is float32 for all of them
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{ENV} / kernel mode must be one of {MODES}, got {mode!r}")
    return mode


# checked when first used, so that a bad value is a one-line error of the command that uses it, not an import error
_MODE = os.environ.get(ENV, "auto").strip().lower() or "auto"
_TRITON = importlib.util.find_spec("triton") is not None
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    return _TRITON


def kernel_mode() -> str:
    """The setting: "auto", "torch" or "triton"."""
    return _check_mode(_MODE)


def set_kernel_mode(mode: str) -> None:
    global _MODE
    _MODE = _check_mode(mode)


@contextlib.contextmanager
def use_kernels(mode: str):
    """`with use_kernels("triton"): ...` runs the block with that setting."""
    previous = _MODE
    set_kernel_mode(mode)
    try:
        yield
    finally:
        set_kernel_mode(previous)


def fused_path(t: torch.Tensor) -> bool:
    """Does a computation on `t` (its device and dtype) take the fused kernels under the current setting?

    Plain Python on the tensor's metadata, so `torch.compile` guards on it instead of breaking the graph.
    """
    if isinstance(t, torch.fx.Proxy):
        # torch.fx symbolic tracing: the device and dtype are not known yet, and a graph cannot choose a path when
        # it runs; it records the torch reference, which runs (and gives the same values) on every device
        return False
    mode = kernel_mode()
    if mode == "torch" or t.dtype not in FUSED_DTYPES:
        return False
    if mode == "triton":
        check_device(t)
        return True
    return _TRITON and t.is_cuda


def check_device(t: torch.Tensor) -> None:
    """Raise a ValueError naming the fix when the Triton kernels cannot run on `t`."""
    if not _TRITON:
        raise ValueError(f"{ENV}=triton, but Triton is not installed (pip install triton)")
    if not t.is_cuda and not _INTERPRET:
        raise ValueError(
            "the Triton kernels got CPU tensors: set TRITON_INTERPRET=1 to run them in Triton's interpreter (slow, "
            f"for tests), or take the torch path on CPU ({ENV}=auto for S6LA, impl='auto' for linear_scan)"
        )
