"""The input check that every image family runs before its first layer (ResNets and transformers alike).

A wrong input (a PIL image, a 3-D tensor, the wrong channel count, images smaller than the stem's stride,
integer pixels) otherwise fails deep inside a conv with a shape error that names none of these.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_image_input"]


def check_image_input(x: Any, in_chans: int, min_size: int, name: str) -> None:
    """Raise a ValueError that names the problem instead of a conv shape error deep inside."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} expects a torch.Tensor image batch, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{name} was built for {in_chans} input channel(s) but got {x.shape[1]} "
            f"(shape {tuple(x.shape)}); create it with in_chans={x.shape[1]} or convert the images"
        )
    if x.shape[-1] < min_size or x.shape[-2] < min_size:
        raise ValueError(f"{name} needs images of at least {min_size}x{min_size} px, got {x.shape[-2]}x{x.shape[-1]}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point image tensor, got dtype {x.dtype}")
