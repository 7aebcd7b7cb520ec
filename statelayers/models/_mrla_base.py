"""What the two MRLA-light baselines share (the ResNet one in `mrla_resnet.py`, the DeiT one in `mrla_deit.py`):
ECA-Net's adaptive kernel size, which sets the width of the 1-D convs that make the layer attention's Q and K, and
the paper their pretrained cfgs name.
"""

from __future__ import annotations

import math

__all__ = ["MRLA_PAPER", "eca_kernel_size"]

MRLA_PAPER = dict(paper_ids="arXiv:2302.03985", paper_name="Cross-Layer Retrospective Retrieving via Layer Attention")


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: t = int(|(log2 C + b) / γ|), made odd by rounding up."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1
