"""The input check that every image family runs before its first layer (ResNets and transformers alike).

A wrong input (a PIL image, a 3-D tensor, the wrong channel count, images smaller than the stem's stride,
integer pixels, a size the patch embedding cannot take) otherwise fails deep inside a conv with a shape error
that names none of these.

The check branches on the input's type and shape, which `torch.fx` symbolic tracing cannot follow (its inputs are
`Proxy` objects without values). Each module that calls it therefore registers it with `torch.fx.wrap`: a traced
graph then holds one call of the whole check, which runs on the real tensor whenever the graph runs, so a traced
model refuses wrong inputs with the same one-line errors as the eager one. Every argument but the image is a
plain Python value (never a module), because a traced call can only record such values. A traced graph compiled
with `torch.jit.script` skips the check: TorchScript cannot compile it, and its inputs are typed tensors anyway.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_image_input"]


def check_image_input(
    x: Any,
    in_chans: int,
    min_size: int,
    name: str,
    img_size: tuple[int, int] | None = None,
    size_multiple: tuple[int, int] | None = None,
) -> None:
    """Raise a ValueError that names the problem instead of a conv shape error deep inside.

    `img_size`: the only size the model takes (a ViT/Swin built without `dynamic_img_size`);
    `size_multiple`: what both sides must be multiples of (a patch embedding without padding).
    """
    if not torch.jit.is_scripting():  # TorchScript compiles no branch that this guard excludes
        _check(x, in_chans, min_size, name, img_size, size_multiple)


def _check(
    x: Any, in_chans: int, min_size: int, name: str, img_size: tuple[int, int] | None,
    size_multiple: tuple[int, int] | None,
) -> None:
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
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if img_size is not None and size != tuple(img_size):
        raise ValueError(
            f"{name} was built for {img_size[0]}x{img_size[1]} px images but got {size[0]}x{size[1]}; "
            f"create it with img_size={size} or dynamic_img_size=True"
        )
    if size_multiple is not None and (size[0] % size_multiple[0] or size[1] % size_multiple[1]):
        raise ValueError(f"{name} needs image sizes divisible by the patch size {tuple(size_multiple)}, got {size}")
