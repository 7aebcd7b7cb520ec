"""How padded batches of sequences are written, in one place: the data pads token ids with ``PAD_TOKEN`` and
gives each sequence's length; the layers turn lengths into a mask of valid steps with ``valid_mask``."""

from __future__ import annotations

import torch

__all__ = ["PAD_TOKEN", "valid_mask"]

PAD_TOKEN = -1  # token id of padding (an id no vocabulary uses; token encoders map it to a zero vector)


def valid_mask(lengths: torch.Tensor | None, length: int, device: torch.device | None = None) -> torch.Tensor | None:
    """(B, length) bool, True at the steps ``k < lengths[b]`` of each sequence; None when ``lengths`` is None
    (every step valid)."""
    if lengths is None:
        return None
    device = lengths.device if device is None else device
    return torch.arange(length, device=device)[None, :] < lengths.to(device)[:, None]
