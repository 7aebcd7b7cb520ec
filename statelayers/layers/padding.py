"""How padded batches of sequences are written, in one place: the data pads token ids with ``PAD_TOKEN`` and
gives each sequence's length; the layers turn lengths into a mask of valid steps with ``valid_mask``."""

from __future__ import annotations

import torch

__all__ = ["PAD_TOKEN", "valid_mask", "check_lengths", "mask_padding"]

PAD_TOKEN = -1  # token id of padding (an id no vocabulary uses; token encoders map it to a zero vector)


def valid_mask(lengths: torch.Tensor | None, length: int, device: torch.device | None = None) -> torch.Tensor | None:
    """(B, length) bool, True at the steps ``k < lengths[b]`` of each sequence; None when ``lengths`` is None
    (every step valid)."""
    if lengths is None:
        return None
    device = lengths.device if device is None else device
    return torch.arange(length, device=device)[None, :] < lengths.to(device)[:, None]


def check_lengths(lengths: torch.Tensor | None, batch: int, length: int) -> None:
    """ValueError unless ``lengths`` is None or an integer tensor of shape ``(batch,)`` with ``1 <= lengths <= length``.

    The dtype and shape are checked always; the values need their minimum and maximum on the host (a device sync), so
    they are checked only in eager mode: under ``torch.compile`` (``torch.compiler.is_compiling()``) the value check is
    skipped, so that it adds no graph break and no sync to a compiled forward. Call it once where lengths enter a
    model; the layers it calls take them unchecked.
    """
    if lengths is None:
        return
    if (not isinstance(lengths, torch.Tensor) or lengths.dtype == torch.bool or lengths.is_floating_point()
            or lengths.is_complex() or tuple(lengths.shape) != (batch,)):
        got = f"{lengths.dtype} of shape {tuple(lengths.shape)}" if isinstance(lengths, torch.Tensor) \
            else type(lengths).__name__
        raise ValueError(f"lengths must be an integer tensor of shape ({batch},) (one length per sequence), got {got}")
    if lengths.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = (int(v) for v in torch.aminmax(lengths))
    if lo < 1 or hi > length:
        raise ValueError(f"lengths must be between 1 and the padded length {length}, got values from {lo} to {hi}")


def mask_padding(x: torch.Tensor | None, valid: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` (B, L, ...) with the steps past each sequence's length set to 0 (``valid`` (B, L) from ``valid_mask``).

    ``torch.where``, not a multiplication by the mask: NaN·0 is NaN, so whatever the padding holds (NaN, inf) cannot
    reach the valid steps' outputs or a pooled feature through a masked sum."""
    if x is None or valid is None:
        return x
    v = valid.reshape(valid.shape + (1,) * (x.dim() - valid.dim()))
    return torch.where(v, x, torch.zeros((), dtype=x.dtype, device=x.device))
