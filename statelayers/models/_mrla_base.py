"""What the two MRLA-light baselines share (the ResNet one in `mrla_resnet.py`, the DeiT one in `mrla_deit.py`):
ECA-Net's adaptive kernel size, which sets the width of the 1-D convs that make the layer attention's Q and K.
"""

from __future__ import annotations

import math

__all__ = ["eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: t = int(|(log2 C + b) / γ|), made odd by rounding up."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1
